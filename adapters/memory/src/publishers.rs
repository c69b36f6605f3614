use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use folio_domain::events::Event;
use folio_domain::ports::EventPublisher;
use folio_domain::{Error, Result};

/// Keeps every published event, and the time of every event it hears was accepted
/// through the outbox, for assertions; or refuses events as a full spool does.
#[derive(Debug, Default)]
pub struct RecordingPublisher {
    events: Mutex<Vec<Event>>,
    outboxed: Mutex<Vec<DateTime<Utc>>>,
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

    /// When the events accepted through the outbox happened, in the order heard.
    pub fn outboxed_at(&self) -> Vec<DateTime<Utc>> {
        self.outboxed.lock().map(|e| e.clone()).unwrap_or_default()
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

    fn outboxed(&self, occurred_at: DateTime<Utc>) {
        if let Ok(mut e) = self.outboxed.lock() {
            e.push(occurred_at);
        }
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
