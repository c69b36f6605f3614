//! What the analytics fold holds while many events sit in open windows: the process's
//! resident set and the duplicate check's own figure, against events per window and
//! distinct users (docs/contract.md §5: under 256 MB with 10M events in open windows over
//! 1M distinct users).
//!
//! `cargo bench -p folio-domain --bench memory`
//! (`FOLIO_BENCH_EVENTS`, default `1000000,10000000`; `FOLIO_BENCH_USERS`, default
//! `10000,1000000`.)
//!
//! Each (events, users) case runs in a process of its own (this binary again), so one
//! case's freed memory does not hide in the next one's figure. It generates `book_viewed`
//! events on the fly (200 books; users cycle through the distinct ones), all within the
//! first 50 s of ONE one-minute window, so every event is open at once, and folds them into
//! one partition's windows. After every 19th event it re-sends a copy of one of the last
//! `RECENT` events (5% of the records are duplicates, all within the duplicate horizon).
//! The counted views must equal the distinct events exactly, and every copy must be
//! found a duplicate, or the case fails instead of printing a figure. The resident set is
//! `VmRSS` (and its peak `VmHWM`) from `/proc/self/status` once the window holds them all.
//! Each case prints `BENCH memory ...`; the parent's last line, `BENCH memory_max ...`,
//! is what `scripts/bench` collects.

use std::collections::VecDeque;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use folio_domain::analytics::{Ingested, PartitionWindows, WindowSpec};
use folio_domain::events::Event;
use folio_domain::ids::{BookId, EventId, UserId};
use folio_domain::topics::{Topic, TopicPartition};

/// Set in a child: the case it runs, `events,users`.
const CASE: &str = "FOLIO_BENCH_MEMORY_CASE";
/// How many recent events a duplicate is drawn from (far inside the duplicate horizon).
const RECENT: usize = 1024;
/// A copy after every `DUPLICATE_EVERY` events: 1 record in 20 is a duplicate.
const DUPLICATE_EVERY: usize = 19;

fn main() {
    if let Ok(case) = std::env::var(CASE) {
        let mut it = case.split(',').filter_map(|v| v.parse::<usize>().ok());
        let (Some(events), Some(users)) = (it.next(), it.next()) else {
            panic!("{CASE}={case}: expected events,users");
        };
        run_case(events, users);
        return;
    }
    let list = |name: &str, default: &str| -> Vec<usize> {
        std::env::var(name)
            .unwrap_or_else(|_| default.into())
            .split(',')
            .filter_map(|v| v.trim().parse().ok())
            .collect()
    };
    let exe = std::env::current_exe().expect("this benchmark's own path");
    let mut max_rss = 0.0f64;
    let mut figures = Vec::new();
    for events in list("FOLIO_BENCH_EVENTS", "1000000,10000000") {
        for users in list("FOLIO_BENCH_USERS", "10000,1000000") {
            let out = Command::new(&exe)
                .env(CASE, format!("{events},{users}"))
                .output()
                .expect("running a case");
            let text = String::from_utf8_lossy(&out.stdout);
            print!("{text}");
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            assert!(
                out.status.success(),
                "the case of {events} events over {users} users failed ({})",
                out.status
            );
            let rss = text
                .lines()
                .find_map(|l| l.strip_prefix("BENCH memory "))
                .and_then(|l| figure(l, "rss_mib"))
                .expect("the case's BENCH line");
            max_rss = max_rss.max(rss);
            figures.push(format!(
                "e{}_u{}_rss_mib={rss:.1}",
                short(events),
                short(users)
            ));
        }
    }
    println!(
        "BENCH memory_max rss_mib={max_rss:.1} {}",
        figures.join(" ")
    );
}

/// `1000000` as `1M`, `10000` as `10k`.
fn short(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

/// The number after `key=` in a `BENCH` line.
fn figure(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// A line of `/proc/self/status` in MiB (`VmRSS`, `VmHWM`); 0 where it cannot be read.
fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn run_case(events: usize, users: usize) {
    let start: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_default();
    let spec = WindowSpec::new(Duration::from_secs(60), Duration::from_secs(5)).expect("spec");
    let mut p = PartitionWindows::resume(TopicPartition::new(Topic::BookViews, 0), spec, None);
    let rss_before = status_mib("VmRSS");
    let mut recent: VecDeque<Event> = VecDeque::with_capacity(RECENT);
    let (mut offset, mut counted, mut duplicates, mut sent_again) = (0i64, 0usize, 0usize, 0usize);
    let t = Instant::now();
    for i in 0..events {
        let at = start + chrono::Duration::milliseconds((i as i64 * 50_000) / events as i64);
        let event = Event::BookViewed {
            event_id: EventId::new_at(at),
            occurred_at: at,
            book_id: BookId(1 + (i % 200) as i64),
            user_id: Some(UserId(1 + (i * 7919 % users) as i64)),
        };
        match p.ingest(offset, &event) {
            Ingested::Counted => counted += 1,
            other => panic!("event {i} at offset {offset}: {other:?}, expected Counted"),
        }
        offset += 1;
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(event);
        if i % DUPLICATE_EVERY == DUPLICATE_EVERY - 1 {
            let copy = &recent[(i * 31) % recent.len()];
            match p.ingest(offset, copy) {
                Ingested::Duplicate => duplicates += 1,
                other => panic!("a copy at offset {offset}: {other:?}, expected Duplicate"),
            }
            sent_again += 1;
            offset += 1;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let (rss, hwm) = (status_mib("VmRSS"), status_mib("VmHWM"));
    let (ids, id_bytes) = p.dedup_memory();
    assert_eq!(p.open_windows(), 1, "every event in one open window");

    // Close the window and count: the fold's views must be the distinct events, exactly.
    p.confirm_caught_up(i64::MAX, offset);
    let views: u64 = p.close_due(i64::MAX).iter().map(|a| a.figures.events).sum();
    assert_eq!(
        views, events as u64,
        "the window counted {views} views of {events} distinct events ({sent_again} copies sent)"
    );
    assert_eq!(duplicates, sent_again);
    assert_eq!(counted, events);
    let dedup_mib = id_bytes as f64 / (1024.0 * 1024.0);
    println!(
        "{events} events over {users} users in one open window (+{sent_again} duplicates, all caught): VmRSS {rss:.1} MiB (peak {hwm:.1}, {:.1} at start), duplicate check {ids} ids in {dedup_mib:.2} MiB; folded in {secs:.2} s; counted {views} = distinct {events}",
        rss_before
    );
    println!(
        "BENCH memory events={events} users={users} duplicates={sent_again} rss_mib={rss:.1} hwm_mib={hwm:.1} dedup_ids={ids} dedup_mib={dedup_mib:.2} views={views} secs={secs:.2}"
    );
}
