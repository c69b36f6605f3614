use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use folio_domain::ports::Clock;
use tokio::sync::watch;

/// The wall clock, with tokio's timer for sleeping.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}

/// A clock that moves only when told. `sleep` returns once the clock has been advanced
/// past the wake-up time, so window logic is tested without real waiting.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
    tick: watch::Sender<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        let (tick, _) = watch::channel(start);
        ManualClock {
            now: Mutex::new(start),
            tick,
        }
    }

    pub fn set(&self, t: DateTime<Utc>) {
        if let Ok(mut now) = self.now.lock() {
            *now = t;
        }
        self.tick.send_replace(t);
    }

    pub fn advance(&self, d: Duration) {
        let next = self.now() + chrono::Duration::from_std(d).unwrap_or_default();
        self.set(next);
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.now
            .lock()
            .map(|t| *t)
            .unwrap_or_else(|p| *p.into_inner())
    }

    async fn sleep(&self, d: Duration) {
        let wake = self.now() + chrono::Duration::from_std(d).unwrap_or_default();
        let mut rx = self.tick.subscribe();
        while *rx.borrow_and_update() < wake {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}
