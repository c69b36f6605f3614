use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::publishing::event_record;
use crate::analytics::StopFlag;
use crate::ports::{Clock, Outbox, RecordPublisher};
use crate::Result;

/// Publishes outbox entries in order and marks them published once the bus acknowledged
/// them. A crash between the two republishes them; consumers de-duplicate by `event_id`.
pub struct OutboxRelay {
    outbox: Arc<dyn Outbox>,
    publisher: Arc<dyn RecordPublisher>,
    clock: Arc<dyn Clock>,
    batch: u32,
    lease: Duration,
    idle_wait: Duration,
}

impl OutboxRelay {
    pub fn new(
        outbox: Arc<dyn Outbox>,
        publisher: Arc<dyn RecordPublisher>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        OutboxRelay {
            outbox,
            publisher,
            clock,
            batch: 500,
            lease: Duration::from_secs(30),
            idle_wait: Duration::from_millis(50),
        }
    }

    /// Relays one batch; returns how many entries it published.
    pub async fn relay_once(&self) -> Result<usize> {
        let entries = self
            .outbox
            .claim(self.batch, self.lease, self.clock.now())
            .await?;
        if entries.is_empty() {
            return Ok(0);
        }
        for e in &entries {
            self.publisher.send(event_record(&e.event)).await?;
        }
        self.publisher.flush().await?;
        let ids: Vec<i64> = entries.iter().map(|e| e.id).collect();
        self.outbox.mark_published(&ids, self.clock.now()).await?;
        Ok(entries.len())
    }

    /// Relays until `stop` is set, then once more so committed rows are not left behind.
    pub async fn run(self, stop: StopFlag) {
        while !stop.is_stopped() {
            match self.relay_once().await {
                Ok(0) => self.clock.sleep(self.idle_wait).await,
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, "outbox relay failed; retrying");
                    self.clock.sleep(Duration::from_secs(1)).await;
                }
            }
        }
        while let Ok(n) = self.relay_once().await {
            if n == 0 {
                break;
            }
        }
    }
}
