//! Decode-and-aggregate throughput of the analytics hot path, on one core, without a bus:
//! JSON records in, per-partition windows out. Prints events per second.
//!
//! `cargo bench -p folio-domain --bench ingest`

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use folio_domain::analytics::{PartitionWindows, WindowSpec};
use folio_domain::events::Event;
use folio_domain::ids::{BookId, EventId, UserId};
use folio_domain::topics::{Topic, TopicPartition};

fn main() {
    let n: usize = std::env::var("FOLIO_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let start: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_default();
    // 200 books, 50k users, events spread over 10 one-minute windows.
    let records: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let at = start + chrono::Duration::milliseconds((i as i64 * 600_000) / n as i64);
            Event::BookViewed {
                event_id: EventId::new_at(at),
                occurred_at: at,
                book_id: BookId(1 + (i % 200) as i64),
                user_id: Some(UserId(1 + (i * 7919 % 50_000) as i64)),
            }
            .encode()
        })
        .collect();
    let bytes: usize = records.iter().map(Vec::len).sum();
    let spec = WindowSpec::new(Duration::from_secs(60), Duration::from_secs(5)).expect("spec");
    for round in 0..3 {
        let mut p = PartitionWindows::resume(TopicPartition::new(Topic::BookViews, 0), spec, None);
        let t = Instant::now();
        let mut published = 0usize;
        for (offset, r) in records.iter().enumerate() {
            let e = Event::decode(r).expect("valid");
            p.ingest(offset as i64, &e);
            if offset % 10_000 == 0 {
                published += p.close_due(0).len();
            }
        }
        p.confirm_caught_up(i64::MAX, n as i64);
        published += p.close_due(i64::MAX).len();
        let secs = t.elapsed().as_secs_f64();
        println!(
            "round {round}: {n} events ({:.0} bytes avg) decoded and aggregated in {secs:.3}s = {:.0} events/s on one core; {published} aggregates",
            bytes as f64 / n as f64,
            n as f64 / secs
        );
    }
}
