//! The outbox relay against the in-memory outbox and a bus that refuses what it is told to.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use folio_domain::events::EventMeta;
use folio_domain::feedback::Stars;
use folio_domain::ids::{BookId, UserId};
use folio_domain::ports::{Outbox, OutgoingRecord, RatingRepository, RecordPublisher};
use folio_domain::services::OutboxRelay;
use folio_domain::{Error, Result};
use folio_memory::{ManualClock, MemoryStore};

/// A bus that acknowledges records except those whose key (the book) is refused.
#[derive(Default)]
struct Bus {
    refused_books: Mutex<HashSet<Vec<u8>>>,
    /// Acknowledged records' keys, in order.
    log: Mutex<Vec<String>>,
}

#[async_trait]
impl RecordPublisher for Bus {
    async fn send(&self, _record: OutgoingRecord) -> Result<()> {
        Err(Error::Internal("the relay delivers".into()))
    }

    async fn flush(&self) -> Result<()> {
        Ok(())
    }

    async fn deliver(&self, records: Vec<OutgoingRecord>) -> Vec<usize> {
        let refused = self.refused_books.lock().expect("refused");
        let mut log = self.log.lock().expect("log");
        let mut failed = Vec::new();
        for (i, r) in records.into_iter().enumerate() {
            if refused.contains(&r.key) {
                failed.push(i);
            } else {
                log.push(String::from_utf8(r.key).expect("utf8"));
            }
        }
        failed
    }
}

async fn rate(store: &MemoryStore, book: i64, user: i64, at_s: i64) {
    let at = Utc
        .timestamp_opt(1_700_000_000 + at_s, 0)
        .single()
        .expect("time");
    store
        .create(
            BookId::parse(book).expect("book"),
            UserId::parse(user).expect("user"),
            Stars::parse(4).expect("stars"),
            EventMeta::new(at),
        )
        .await
        .expect("rated");
}

#[tokio::test]
async fn a_refused_batch_is_retried_before_any_later_row_is_claimed() {
    let store = Arc::new(MemoryStore::new());
    let bus = Arc::new(Bus::default());
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let relay = OutboxRelay::new(store.clone(), bus.clone(), clock.clone());

    // Rows for books 1, 2, 3; book 2's record is refused by the bus.
    for (i, book) in [1, 2, 3].into_iter().enumerate() {
        rate(&store, book, 10, i as i64).await;
    }
    bus.refused_books
        .lock()
        .expect("refused")
        .insert(b"2".to_vec());
    let err = relay.relay_once().await.expect_err("book 2 refused");
    assert!(matches!(err, Error::Unavailable(..)), "{err}");
    assert_eq!(relay.held(), 1);
    assert_eq!(*bus.log.lock().expect("log"), ["1", "3"]);
    assert_eq!(store.backlog().await.expect("backlog"), 1);

    // A later row arrives; the held one still goes first, and alone.
    rate(&store, 4, 10, 10).await;
    let _ = relay.relay_once().await.expect_err("still refused");
    assert_eq!(*bus.log.lock().expect("log"), ["1", "3"]);
    bus.refused_books.lock().expect("refused").clear();
    assert_eq!(relay.relay_once().await.expect("retried"), 1);
    assert_eq!(*bus.log.lock().expect("log"), ["1", "3", "2"]);
    assert_eq!(relay.relay_once().await.expect("the later row"), 1);
    assert_eq!(*bus.log.lock().expect("log"), ["1", "3", "2", "4"]);
    assert_eq!(store.backlog().await.expect("backlog"), 0);
    assert_eq!(relay.relay_once().await.expect("nothing left"), 0);
}

#[tokio::test]
async fn a_held_batch_is_not_given_up_when_its_lease_runs_out() {
    let store = Arc::new(MemoryStore::new());
    let bus = Arc::new(Bus::default());
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let relay = OutboxRelay::new(store.clone(), bus.clone(), clock.clone());
    rate(&store, 7, 1, 0).await;
    bus.refused_books
        .lock()
        .expect("refused")
        .insert(b"7".to_vec());
    let _ = relay.relay_once().await.expect_err("refused");
    // Past the lease, a second relay (another bookstore) may claim it too: both deliver,
    // and consumers de-duplicate. This relay still retries its own first.
    clock.advance(Duration::from_secs(31));
    rate(&store, 8, 1, 1).await;
    bus.refused_books.lock().expect("refused").clear();
    assert_eq!(relay.relay_once().await.expect("retried"), 1);
    assert_eq!(*bus.log.lock().expect("log"), ["7"]);
    assert_eq!(relay.relay_once().await.expect("next"), 1);
    assert_eq!(*bus.log.lock().expect("log"), ["7", "8"]);
}
