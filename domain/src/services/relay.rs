use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::warn;

use super::publishing::event_record;
use crate::analytics::StopFlag;
use crate::ports::{Clock, Outbox, OutboxEntry, RecordPublisher};
use crate::{Error, Result};

/// Publishes outbox entries in order and marks them published once the bus acknowledged
/// them. A crash between the two republishes them; consumers de-duplicate by `event_id`.
///
/// A batch the bus did not take is kept and retried, with backoff, before anything newer
/// is claimed: later rows never overtake it (their lease would otherwise let them), so
/// after an outage the rows reach the bus in the order they were written.
pub struct OutboxRelay {
    outbox: Arc<dyn Outbox>,
    publisher: Arc<dyn RecordPublisher>,
    clock: Arc<dyn Clock>,
    batch: u32,
    lease: Duration,
    idle_wait: Duration,
    /// Entries of a batch the bus refused, oldest first, retried before anything else.
    retry: Mutex<Vec<OutboxEntry>>,
}

/// The first wait after a failed batch; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

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
            retry: Mutex::new(Vec::new()),
        }
    }

    /// Relays one batch: the entries the bus refused last time, or else newly claimed
    /// ones. Returns how many entries it published; fails when the bus refused some of
    /// them, which are then kept for the next call.
    pub async fn relay_once(&self) -> Result<usize> {
        let held = std::mem::take(&mut *self.retry.lock().unwrap_or_else(|p| p.into_inner()));
        let entries = if held.is_empty() {
            self.outbox
                .claim(self.batch, self.lease, self.clock.now())
                .await?
        } else {
            held
        };
        if entries.is_empty() {
            return Ok(0);
        }
        let failed = self
            .publisher
            .deliver(entries.iter().map(|e| event_record(&e.event)).collect())
            .await;
        let mut failed = failed.into_iter().peekable();
        let mut published = Vec::with_capacity(entries.len());
        let mut refused = Vec::new();
        for (i, e) in entries.into_iter().enumerate() {
            if failed.next_if_eq(&i).is_some() {
                refused.push(e);
            } else {
                published.push(e.id);
            }
        }
        if !published.is_empty() {
            let marked = self
                .outbox
                .mark_published(&published, self.clock.now())
                .await;
            if let Err(e) = marked {
                // They were delivered; left unmarked they are delivered again (consumers
                // de-duplicate), so only what the bus refused is held back.
                self.hold(refused);
                return Err(e);
            }
        }
        if refused.is_empty() {
            return Ok(published.len());
        }
        let n = refused.len();
        self.hold(refused);
        Err(Error::Unavailable(
            "event bus",
            format!("{n} outbox event(s) not acknowledged; retrying them first"),
        ))
    }

    fn hold(&self, entries: Vec<OutboxEntry>) {
        *self.retry.lock().unwrap_or_else(|p| p.into_inner()) = entries;
    }

    /// Entries held back for retry.
    pub fn held(&self) -> usize {
        self.retry.lock().map(|r| r.len()).unwrap_or_default()
    }

    /// Relays until `stop` is set, then once more so committed rows are not left behind.
    pub async fn run(self, stop: StopFlag) {
        let mut backoff = MIN_BACKOFF;
        while !stop.is_stopped() {
            match self.relay_once().await {
                Ok(0) => stop.sleep(self.clock.as_ref(), self.idle_wait).await,
                Ok(_) => backoff = MIN_BACKOFF,
                Err(e) => {
                    warn!(error = %e, retry_in = ?backoff, held = self.held(), "outbox relay failed; retrying");
                    stop.sleep(self.clock.as_ref(), backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
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
