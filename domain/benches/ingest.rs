//! The analytics hot path on one core, without a bus: JSON records in, per-partition
//! windows out.
//!
//! - **Throughput**: decode and aggregate a backlog spread over ten one-minute windows;
//!   prints events per second.
//! - **Memory held by open windows**: resident bytes the process gains
//!   while N events sit in one open window of one partition, for growing N. The slope is
//!   what each event held costs; the duplicate check's share is bounded by its horizon.
//!
//! `cargo bench -p folio-domain --bench ingest`
//! (`FOLIO_BENCH_EVENTS` sets the backlog, default 1,000,000.) The last line,
//! `BENCH ingest ...`, is what `scripts/bench` collects.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use folio_domain::analytics::{PartitionWindows, WindowSpec};
use folio_domain::events::Event;
use folio_domain::ids::{BookId, EventId, UserId};
use folio_domain::topics::{Topic, TopicPartition};

/// The process's resident set (bytes), from `/proc/self/statm` (Linux; 0 elsewhere).
fn live() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn main() {
    let n: usize = std::env::var("FOLIO_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let start: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_default();
    let spec = WindowSpec::new(Duration::from_secs(60), Duration::from_secs(5)).expect("spec");
    let tp = TopicPartition::new(Topic::BookViews, 0);
    // 200 books, 50k users, events spread over `span_ms`.
    let record = |i: usize, span_ms: i64| {
        let at = start + chrono::Duration::milliseconds((i as i64 * span_ms) / n as i64);
        Event::BookViewed {
            event_id: EventId::new_at(at),
            occurred_at: at,
            book_id: BookId(1 + (i % 200) as i64),
            user_id: Some(UserId(1 + (i * 7919 % 50_000) as i64)),
        }
    };

    // Memory: every event in one open window (all within its first 50 s).
    let events: Vec<Event> = (0..n).map(|i| record(i, 50_000)).collect();
    let mut p = PartitionWindows::resume(tp, spec, None);
    // Measured first, before the throughput rounds free memory the allocator would reuse.
    let base = live();
    let mut marks = vec![n / 10, n / 4, n / 2, n];
    marks.dedup();
    let mut prev = (0usize, 0usize);
    for (offset, e) in events.iter().enumerate() {
        p.ingest(offset as i64, e);
        if marks.first() == Some(&(offset + 1)) {
            marks.remove(0);
            let held = live().saturating_sub(base);
            let held_events = offset + 1;
            let slope = (held.saturating_sub(prev.1)) as f64
                / (held_events.saturating_sub(prev.0)).max(1) as f64;
            println!(
                "memory: {held_events} events open in one window: {:.1} MiB resident, {:.1} bytes per event held, {:.1} bytes per event since the last mark",
                held as f64 / (1024.0 * 1024.0),
                held as f64 / held_events as f64,
                slope
            );
            prev = (held_events, held);
        }
    }
    assert_eq!(p.open_windows(), 1);
    let (ids, id_bytes) = p.dedup_memory();
    println!(
        "memory: the duplicate check holds {ids} ids in {:.2} MiB (horizon {} offsets)",
        id_bytes as f64 / (1024.0 * 1024.0),
        spec.dedup_horizon()
    );
    drop((p, events));

    // Throughput: ten one-minute windows.
    let records: Vec<Vec<u8>> = (0..n).map(|i| record(i, 600_000).encode()).collect();
    let bytes: usize = records.iter().map(Vec::len).sum();
    let mut best = 0.0f64;
    for round in 0..3 {
        let mut p = PartitionWindows::resume(tp, spec, None);
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
        best = best.max(n as f64 / secs);
    }
    println!("BENCH ingest events={n} best_eps={best:.0}");
}
