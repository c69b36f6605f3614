use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use folio_domain::events::Event;
use folio_domain::ports::EventPublisher;
use folio_domain::{Error, Result};

/// Keeps every published event, for assertions; or refuses them as a full spool does.
#[derive(Debug, Default)]
pub struct RecordingPublisher {
    events: Mutex<Vec<Event>>,
    refusing: AtomicBool,
}

impl RecordingPublisher {
    pub fn new() -> Self {
        Self::default()
    }

    /// While set, `publish` fails with [`Error::Unavailable`] and keeps nothing.
    pub fn set_refusing(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::Relaxed);
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl EventPublisher for RecordingPublisher {
    async fn publish(&self, event: &Event) -> Result<()> {
        if self.refusing.load(Ordering::Relaxed) {
            return Err(Error::Unavailable("event spool", "full".into()));
        }
        if let Ok(mut e) = self.events.lock() {
            e.push(event.clone());
        }
        Ok(())
    }
}

/// Drops every event: the baseline of the publishing-overhead benchmark.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullPublisher;

#[async_trait]
impl EventPublisher for NullPublisher {
    async fn publish(&self, _event: &Event) -> Result<()> {
        Ok(())
    }
}
