//! The analytics pipeline over the in-process bus with a manual clock: events in, windows
//! closed by time and by idleness, aggregates upserted, figures exact, restarts harmless.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use folio_domain::analytics::{window::millis, AnalyticsWorker, WindowSpec, WorkerStats};
use folio_domain::events::Event;
use folio_domain::fixtures;
use folio_domain::ids::BookId;
use folio_domain::ports::{RecordPublisher, StatsQuery};
use folio_domain::services::{event_record, StatsIngest};
use folio_domain::stats::TimeRange;
use folio_domain::topics::{Topic, TopicPartition};
use folio_memory::{ManualClock, MemoryBus, MemoryStore};

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn at(ms: i64) -> DateTime<Utc> {
    millis(T0 + ms)
}

fn view(n: u128, t: i64, book: i64, user: Option<i64>) -> Event {
    fixtures::view(n, T0 + t, book, user)
}

fn purchase(n: u128, t: i64, book: i64, user: i64, cents: i64) -> Event {
    fixtures::purchase(n, T0 + t, book, user, cents)
}

struct Pipeline {
    bus: MemoryBus,
    clock: Arc<ManualClock>,
    store: MemoryStore,
    spec: WindowSpec,
}

impl Pipeline {
    fn new() -> Self {
        Pipeline {
            bus: MemoryBus::new(),
            clock: Arc::new(ManualClock::new(at(0))),
            store: MemoryStore::new(),
            spec: WindowSpec::new(Duration::from_secs(60), Duration::from_secs(5)).expect("spec"),
        }
    }

    fn worker(&self) -> AnalyticsWorker {
        AnalyticsWorker::new(
            Box::new(self.bus.consumer("analytics-service-group", &Topic::EVENTS)),
            Arc::new(self.bus.clone()),
            self.clock.clone(),
            self.spec,
        )
    }

    fn ingest(&self) -> StatsIngest {
        StatsIngest::new(
            Box::new(
                self.bus
                    .consumer("main-app-analytics-group", &[Topic::AggregatedStats]),
            ),
            Arc::new(self.store.clone()),
            Arc::new(self.bus.clone()),
            self.clock.clone(),
        )
    }

    async fn publish(&self, events: &[Event]) {
        for e in events {
            self.bus.send(event_record(e)).await.expect("send");
        }
    }

    /// Steps the worker and the ingest until neither has anything left to do.
    async fn settle(&self, worker: &mut AnalyticsWorker, ingest: &mut StatsIngest) {
        for _ in 0..40 {
            worker.step().await.expect("worker step");
            ingest.step().await.expect("ingest step");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn windows_close_by_idleness_and_figures_are_exact() {
    let p = Pipeline::new();
    let mut worker = p.worker();
    let mut ingest = p.ingest();
    p.publish(&[
        view(1, 1_000, 7, Some(1)),
        view(2, 2_000, 7, Some(2)),
        view(3, 3_000, 7, None),
        view(4, 4_000, 8, Some(1)),
        purchase(5, 5_000, 7, 1, 1999),
        purchase(6, 6_000, 7, 2, 1999),
        purchase(6, 6_000, 7, 2, 1999), // a duplicate delivery
    ])
    .await;
    p.settle(&mut worker, &mut ingest).await;
    let all = p
        .store
        .book(BookId(7), TimeRange::ALL)
        .await
        .expect("stats");
    assert_eq!(
        all.figures.views, 0,
        "nothing is visible before the window closes"
    );

    // The clock passes end + grace with no new events: the idle window still publishes.
    p.clock.advance(Duration::from_secs(65));
    p.settle(&mut worker, &mut ingest).await;
    let b7 = p
        .store
        .book(BookId(7), TimeRange::ALL)
        .await
        .expect("stats")
        .figures;
    assert_eq!((b7.views, b7.anonymous_views, b7.unique_viewers), (3, 1, 2));
    assert_eq!(
        (b7.purchases, b7.revenue_cents, b7.unique_purchasers),
        (2, 3998, 2)
    );
    assert_eq!(b7.first_view_at, Some(at(1_000)));
    assert_eq!(b7.last_purchase_at, Some(at(6_000)));
    let overview = p.store.overview(TimeRange::ALL).await.expect("overview");
    assert_eq!(overview.totals.views, 4);
    assert_eq!(overview.unique_users, 2);
    let stats = worker.stats();
    assert_eq!(WorkerStats::get(&stats.duplicates), 1);
    assert_eq!(WorkerStats::get(&stats.counted), 6);
}

#[tokio::test(start_paused = true)]
async fn a_restarted_worker_neither_loses_nor_double_counts() {
    let p = Pipeline::new();
    let mut ingest = p.ingest();
    {
        let mut worker = p.worker();
        p.publish(&[view(1, 1_000, 7, Some(1)), view(2, 61_000, 7, Some(2))])
            .await;
        p.clock.set(at(61_000));
        p.settle(&mut worker, &mut ingest).await;
        p.publish(&[view(3, 66_000, 7, Some(3))]).await; // closes window 0 by stream time
        p.settle(&mut worker, &mut ingest).await;
        // The worker dies here without leaving: window 1 is open and uncommitted.
    }
    let before = p
        .store
        .book(BookId(7), TimeRange::ALL)
        .await
        .expect("stats")
        .figures
        .views;
    assert_eq!(before, 1, "window 0 published once");
    let mut worker = p.worker();
    p.publish(&[view(4, 70_000, 7, Some(4))]).await;
    p.clock.set(at(3 * 60_000));
    p.settle(&mut worker, &mut ingest).await;
    let f = p
        .store
        .book(BookId(7), TimeRange::ALL)
        .await
        .expect("stats")
        .figures;
    assert_eq!((f.views, f.unique_viewers), (4, 4));
    let history = p
        .store
        .book_history(BookId(7), TimeRange::ALL)
        .await
        .expect("history");
    let per_window: Vec<(DateTime<Utc>, u64)> = history
        .iter()
        .map(|w| (w.window_start, w.figures.views))
        .collect();
    assert_eq!(per_window, vec![(at(0), 1), (at(60_000), 3)]);
}

#[tokio::test(start_paused = true)]
async fn poison_records_go_to_the_dead_letter_topic_and_consumption_goes_on() {
    let p = Pipeline::new();
    let mut worker = p.worker();
    let mut ingest = p.ingest();
    let tp = TopicPartition::new(Topic::BookViews, 0);
    let first = p
        .bus
        .append(tp, Some(b"7".to_vec()), b"{not json".to_vec())
        .expect("append");
    let wrong_topic = purchase(9, 1_000, 7, 1, 100).encode();
    p.bus
        .append(tp, Some(b"7".to_vec()), wrong_topic)
        .expect("append");
    p.publish(&[view(1, 1_000, 7, Some(1))]).await;
    p.clock.advance(Duration::from_secs(65));
    p.settle(&mut worker, &mut ingest).await;
    let dlq = p.bus.records(TopicPartition::new(Topic::DeadLetters, 0));
    assert_eq!(dlq.len(), 2);
    let header = |r: &folio_domain::ports::Record, name: &str| {
        r.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).to_string())
    };
    assert_eq!(
        header(&dlq[0], "folio.origin.topic").as_deref(),
        Some("book.views")
    );
    assert_eq!(
        header(&dlq[0], "folio.origin.offset").as_deref(),
        Some(first.to_string().as_str())
    );
    assert!(header(&dlq[0], "folio.error").is_some_and(|e| e.starts_with("undecodable")));
    assert_eq!(dlq[0].value, b"{not json".to_vec());
    assert_eq!(
        p.store
            .book(BookId(7), TimeRange::ALL)
            .await
            .expect("stats")
            .figures
            .views,
        1
    );
    assert_eq!(WorkerStats::get(&worker.stats().dead_lettered), 2);
    let committed = p
        .bus
        .committed("analytics-service-group", tp)
        .expect("committed");
    // Everything is published: a new owner folds in from first + 3 on, and re-reads the
    // records before (its duplicate scope) only to learn their event ids.
    assert_eq!(committed.offset, first);
    assert!(
        committed
            .metadata
            .contains(&format!("\"fold\":{}", first + 3)),
        "{}",
        committed.metadata
    );
    // Killed; the next owner re-reads the poison records but does not dead-letter them
    // again.
    drop(worker);
    let mut next = p.worker();
    p.settle(&mut next, &mut ingest).await;
    assert_eq!(
        p.bus
            .records(TopicPartition::new(Topic::DeadLetters, 0))
            .len(),
        2,
        "poison records are dead-lettered once"
    );
    assert_eq!(WorkerStats::get(&next.stats().dead_lettered), 0);
    assert_eq!(WorkerStats::get(&next.stats().replayed), 1);
}

#[tokio::test(start_paused = true)]
async fn two_workers_split_the_partitions_and_the_survivor_takes_over() {
    let p = Pipeline::new();
    let mut ingest = p.ingest();
    let mut a = p.worker();
    let mut b = p.worker();
    for _ in 0..3 {
        a.step().await.expect("step");
        b.step().await.expect("step");
    }
    // Views of books 1..=30 spread over the three view partitions.
    let events: Vec<Event> = (1..=30)
        .map(|i| view(i as u128, 1_000, i, Some(i)))
        .collect();
    p.publish(&events).await;
    for _ in 0..5 {
        a.step().await.expect("step");
        b.step().await.expect("step");
    }
    assert!(WorkerStats::get(&a.stats().counted) > 0 && WorkerStats::get(&b.stats().counted) > 0);
    drop(b); // killed before its window closed
    p.clock.advance(Duration::from_secs(65));
    for _ in 0..20 {
        a.step().await.expect("step");
        ingest.step().await.expect("ingest");
    }
    let o = p.store.overview(TimeRange::ALL).await.expect("overview");
    assert_eq!(
        (o.totals.views, o.unique_users, o.books_with_activity),
        (30, 30, 30)
    );
}

/// A statistics sink whose first upsert fails, as when the database drops the connection
/// of a statement in flight.
struct FailsOnce {
    inner: MemoryStore,
    failed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl folio_domain::ports::StatsSink for FailsOnce {
    async fn upsert(
        &self,
        aggregates: &[folio_domain::analytics::Aggregate],
    ) -> folio_domain::Result<folio_domain::ports::UpsertReport> {
        if !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(folio_domain::Error::Unavailable(
                "database",
                "connection terminated".into(),
            ));
        }
        self.inner.upsert(aggregates).await
    }
}

/// Found by the chaos suite (database connections dropped mid-upsert): the ingest polled the
/// next batch after a failed upsert, and that batch's commit moved the group past the lost
/// one, so its aggregates were never stored.
#[tokio::test(start_paused = true)]
async fn a_failed_upsert_is_retried_before_anything_later_is_committed() {
    let p = Pipeline::new();
    let mut worker = p.worker();
    let mut ingest = StatsIngest::new(
        Box::new(
            p.bus
                .consumer("main-app-analytics-group", &[Topic::AggregatedStats]),
        ),
        Arc::new(FailsOnce {
            inner: p.store.clone(),
            failed: false.into(),
        }),
        Arc::new(p.bus.clone()),
        p.clock.clone(),
    );
    // Window 0 closes; its aggregate reaches the ingest, whose upsert fails.
    p.publish(&[view(1, 1_000, 7, Some(1))]).await;
    p.clock.advance(Duration::from_secs(65));
    for _ in 0..5 {
        worker.step().await.expect("worker step");
    }
    let mut failed = false;
    for _ in 0..10 {
        if ingest.step().await.is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "the first upsert fails");
    // Window 1 closes too; the ingest carries on.
    p.publish(&[view(2, 61_000, 7, Some(2))]).await;
    p.clock.advance(Duration::from_secs(65));
    for _ in 0..10 {
        worker.step().await.expect("worker step");
        let _ = ingest.step().await;
    }
    let history: Vec<(DateTime<Utc>, u64)> = p
        .store
        .book_history(BookId(7), TimeRange::ALL)
        .await
        .expect("history")
        .iter()
        .map(|w| (w.window_start, w.figures.views))
        .collect();
    assert_eq!(history, vec![(at(0), 1), (at(60_000), 1)]);
    let committed = p
        .bus
        .committed(
            "main-app-analytics-group",
            TopicPartition::new(Topic::AggregatedStats, 0),
        )
        .map(|c| c.offset);
    let end = p
        .bus
        .records(TopicPartition::new(Topic::AggregatedStats, 0))
        .len() as i64;
    assert!(committed.is_none_or(|c| c <= end));
}

/// Found by the chaos suite (an analytics instance frozen with SIGSTOP): views appended on
/// time while the worker was paused must be read before their window closes on idleness,
/// however far the clock moved meanwhile. Before the fix, the first batch after the pause
/// (of another partition) let every partition close its windows on the "caught up" it had
/// before the pause, and the views still unread were dead-lettered as late.
#[tokio::test(start_paused = true)]
async fn a_paused_worker_reads_what_arrived_meanwhile_before_closing_on_idleness() {
    let p = Pipeline::new();
    let mut worker = p.worker();
    let mut ingest = p.ingest();
    let part =
        |book: i64| folio_domain::partitioner::partition_for_key(book.to_string().as_bytes(), 3);
    let other = (1..100)
        .find(|b| part(*b) != part(7))
        .expect("a book on another partition");
    p.publish(&[view(1, 1_000, 7, Some(1)), view(2, 1_000, other, Some(1))])
        .await;
    p.settle(&mut worker, &mut ingest).await;
    // The worker pauses; two on-time views arrive; the clock passes end + grace.
    p.publish(&[view(3, 2_000, 7, Some(2)), view(4, 2_000, other, Some(2))])
        .await;
    p.clock.advance(Duration::from_secs(66));
    p.settle(&mut worker, &mut ingest).await;
    for book in [7, other] {
        let f = p
            .store
            .book(BookId(book), TimeRange::ALL)
            .await
            .expect("stats")
            .figures;
        assert_eq!((f.views, f.unique_viewers), (2, 2), "book {book}");
    }
    assert!(
        p.bus
            .records(TopicPartition::new(Topic::DeadLetters, 0))
            .is_empty(),
        "nothing on time is dead-lettered"
    );
}

/// Issue 9: an event whose window closed on idleness corrects the window instead of being
/// dead-lettered; a second copy of it counts once; only an event older than the lateness
/// horizon is dead-lettered, as `too_late`.
#[tokio::test(start_paused = true)]
async fn late_events_correct_their_window_and_only_too_late_ones_are_dead_lettered() {
    let mut p = Pipeline::new();
    p.spec = p
        .spec
        .with_lateness_horizon(Duration::from_secs(600))
        .expect("horizon");
    let mut worker = p.worker();
    let mut ingest = p.ingest();
    p.publish(&[view(1, 1_000, 7, Some(1)), purchase(2, 2_000, 7, 1, 500)])
        .await;
    p.clock.advance(Duration::from_secs(65));
    p.settle(&mut worker, &mut ingest).await;
    // Window 0 is closed and stored. The outage ends: late events of window 0 arrive.
    p.publish(&[
        view(3, 3_000, 7, Some(2)),
        view(3, 3_000, 7, Some(2)),     // delivered twice
        purchase(4, 59_999, 7, 1, 700), // same user, so the same partition as purchase 2
    ])
    .await;
    p.clock.advance(Duration::from_secs(10));
    p.settle(&mut worker, &mut ingest).await;
    // A correction closes on idleness a grace period after it opened.
    p.clock.advance(Duration::from_secs(10));
    p.settle(&mut worker, &mut ingest).await;
    let f = p
        .store
        .book(BookId(7), TimeRange::ALL)
        .await
        .expect("stats")
        .figures;
    assert_eq!(
        (
            f.views,
            f.unique_viewers,
            f.purchases,
            f.unique_purchasers,
            f.revenue_cents
        ),
        (2, 2, 2, 1, 1200)
    );
    let history: Vec<(DateTime<Utc>, u64, u64)> = p
        .store
        .book_history(BookId(7), TimeRange::ALL)
        .await
        .expect("history")
        .iter()
        .map(|w| (w.window_start, w.figures.views, w.figures.purchases))
        .collect();
    assert_eq!(history, vec![(at(0), 2, 2)], "the corrected window");
    // Much later (stream time 20 min): an event 20 minutes old, beyond the 10-minute horizon.
    p.publish(&[view(5, 20 * 60_000, 7, Some(3))]).await;
    p.clock.set(at(20 * 60_000));
    p.settle(&mut worker, &mut ingest).await;
    p.publish(&[view(6, 1_000, 7, Some(9))]).await;
    p.clock.set(at(22 * 60_000)); // past the close of view 5's window
    p.settle(&mut worker, &mut ingest).await;
    let dlq = p.bus.records(TopicPartition::new(Topic::DeadLetters, 0));
    let reasons: Vec<String> = dlq
        .iter()
        .filter_map(|r| {
            r.headers
                .iter()
                .find(|(k, _)| k == "folio.error")
                .map(|(_, v)| String::from_utf8_lossy(v).to_string())
        })
        .collect();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].starts_with("too_late"), "{reasons:?}");
    let stats = worker.stats();
    assert_eq!(
        (
            WorkerStats::get(&stats.late),
            WorkerStats::get(&stats.too_late),
            WorkerStats::get(&stats.corrections),
            WorkerStats::get(&stats.duplicates)
        ),
        (2, 1, 2, 1),
        "late: view 3 and purchase 4; corrections: one per partition"
    );
    assert_eq!(
        p.store
            .book(BookId(7), TimeRange::ALL)
            .await
            .expect("stats")
            .figures
            .views,
        3,
        "views 1, 3 and 5; the too-late view 6 is not counted"
    );
}
