//! folio end to end on a real Kafka broker and a real PostgreSQL: HTTP -> Kafka ->
//! analytics -> Kafka -> SQL -> admin API, poison records, and a restart that resumes at
//! the committed offsets, and the pipeline view's analytics lag on Kafka. Each test has
//! its own topics, consumer groups and schema.
//!
//! Without a broker or a database these tests fail, saying how to provide them
//! (`KAFKA_BOOTSTRAP`, `DATABASE_URL=postgres://…`, or `scripts/test`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use folio_domain::analytics::{unread_records, DeadLetter, StopFlag, WindowSpec, WorkerStats};
use folio_domain::ports::{MessageBus, OutgoingRecord, PartitionOffsets};
use folio_domain::topics::{Topic, TopicPartition};
use folio_kafka::KafkaBus;
use folio_memory::SystemClock;
use folio_runtime::analytics::GROUP as ANALYTICS_GROUP;
use folio_tests::app::{spawn_app_with, AppOptions};
use folio_tests::bus_contract::{header_map, partition_of, partitions_of, Member, WITHIN};
use folio_tests::kafka_env::{kafka, postgres, settled_commit};
use folio_tests::scenario::bookstore_scenario;
use folio_tests::stack::Stack;
use folio_tests::traffic::{publish, Traffic};

const WINDOW: Duration = Duration::from_secs(2);
const GRACE: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_scenario_flows_through_kafka_and_postgres_to_exact_admin_figures(
) -> anyhow::Result<()> {
    let kafka = kafka().await;
    let pg = postgres().await;
    let bus = KafkaBus::connect(kafka.config("flow")).await?;
    let app = spawn_app_with(AppOptions {
        bus: Some(Arc::new(bus)),
        database_url: Some(pg.fresh_schema().await?),
        window: WINDOW,
        grace: GRACE,
        ..AppOptions::default()
    })
    .await?;
    let start = Instant::now();
    bookstore_scenario(&app, Duration::from_secs(45)).await?;
    println!("scenario with exact admin figures in {:?}", start.elapsed());
    app.stop().await
}

/// Poison records: bytes that are not JSON, JSON of the wrong shape, and an event with an
/// invalid rating, into every event topic (and garbage into the aggregates topic).
fn poison() -> Vec<(Topic, Vec<u8>)> {
    let mut out = Vec::new();
    for topic in Topic::EVENTS {
        out.push((topic, b"\xff\x00 not json at all".to_vec()));
        out.push((
            topic,
            br#"{"type":"book_viewed","event_id":42,"occurred_at":true,"book_id":"one"}"#.to_vec(),
        ));
        out.push((
            topic,
            br#"{"type":"book_rated","event_id":"0190d1a8-3a10-7cc0-8c1e-5f0b3a9d0e11","occurred_at":"2026-03-01T12:00:00.000Z","book_id":3,"user_id":4,"rating":9}"#.to_vec(),
        ));
    }
    out.push((
        Topic::AggregatedStats,
        b"{\"not\":\"an aggregate\"}".to_vec(),
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_go_to_the_dead_letter_topic_with_their_origin_and_consumption_goes_on(
) -> anyhow::Result<()> {
    let kafka = kafka().await;
    let pg = postgres().await;
    let stack = Stack::start(&kafka, &pg, "poison", WINDOW, GRACE).await?;
    let analytics = stack.analytics().await?;
    let producer = stack.publisher().await?;

    // Poison first, on the partition of one key per topic; valid events after it.
    let poison = poison();
    for (topic, value) in &poison {
        producer
            .send(OutgoingRecord {
                topic: *topic,
                key: b"poison".to_vec(),
                value: value.clone(),
                headers: Vec::new(),
            })
            .await?;
    }
    producer.flush().await?;
    let mut traffic = Traffic::new(11, 8, 15);
    publish(producer.as_ref(), &traffic.batch(300)).await?;
    let poisoned: BTreeSet<TopicPartition> = poison
        .iter()
        .map(|(t, _)| partition_of(*t, b"poison"))
        .collect();
    ensure!(
        poisoned
            .iter()
            .filter(|tp| tp.topic != Topic::AggregatedStats)
            .all(|tp| traffic.partitions().contains(tp)),
        "valid events follow the poison on its partitions"
    );

    let took = stack.await_exact(&traffic, Duration::from_secs(40)).await?;
    println!("300 valid events after 16 poison records counted exactly in {took:?}");
    ensure!(
        analytics.counted() == 300,
        "counted {}",
        analytics.counted()
    );
    ensure!(
        WorkerStats::get(&analytics.stats.dead_lettered) == 15,
        "the analytics service dead-lettered {}",
        WorkerStats::get(&analytics.stats.dead_lettered)
    );

    // Where each poison record sits, as a consumer of its topic sees it.
    let bus = stack.bus().await?;
    let origin_topics: Vec<Topic> = Topic::EVENTS
        .into_iter()
        .chain([Topic::AggregatedStats])
        .collect();
    let mut reader = Member::join(bus.as_ref(), "origin", "probe-origin", &origin_topics).await?;
    let poison_values: BTreeSet<Vec<u8>> = poison.iter().map(|(_, v)| v.clone()).collect();
    let count_poison = |m: &Member| {
        m.records
            .values()
            .flatten()
            .filter(|r| r.key.as_deref() == Some(b"poison".as_slice()))
            .count()
    };
    reader
        .poll_until(WITHIN, "every poison record is read back", |m| {
            count_poison(m) >= poison.len()
        })
        .await?;
    let mut want: BTreeMap<(String, i32, i64), Vec<u8>> = BTreeMap::new();
    for (tp, records) in &reader.records {
        for r in records {
            if r.key.as_deref() == Some(b"poison".as_slice()) {
                ensure!(poison_values.contains(&r.value), "a poison value");
                want.insert(
                    (tp.topic.name().to_string(), tp.partition, r.offset),
                    r.value.clone(),
                );
            }
        }
    }
    reader.leave().await?;

    // The dead letters: each poison record once, with its origin and a reason.
    let mut dlq = Member::join(bus.as_ref(), "dlq", "probe-dlq", &[Topic::DeadLetters]).await?;
    dlq.poll_until(WITHIN, "every dead letter arrives", |m| {
        m.count() >= poison.len()
    })
    .await?;
    let mut got: BTreeMap<(String, i32, i64), Vec<u8>> = BTreeMap::new();
    for r in dlq.records.values().flatten() {
        let h = header_map(&r.headers);
        let text = |name: &str| -> anyhow::Result<String> {
            Ok(String::from_utf8(
                h.get(name)
                    .with_context(|| format!("dead letter without {name}: {h:?}"))?
                    .clone(),
            )?)
        };
        let topic = text(DeadLetter::ORIGIN_TOPIC)?;
        let partition: i32 = text(DeadLetter::ORIGIN_PARTITION)?.parse()?;
        let offset: i64 = text(DeadLetter::ORIGIN_OFFSET)?.parse()?;
        let error = text(DeadLetter::ERROR)?;
        ensure!(
            r.key.as_deref() == Some(topic.as_bytes()),
            "a dead letter is keyed by its source topic"
        );
        let expected_reason = match r.value.as_slice() {
            v if v.starts_with(b"\xff") => "undecodable",
            v if v.starts_with(br#"{"type":"book_viewed""#) => "undecodable",
            v if v.starts_with(br#"{"type":"book_rated""#) => "rating 9 is outside 1..=5",
            _ => "undecodable aggregate",
        };
        ensure!(
            error.contains(expected_reason),
            "{topic}/{partition}@{offset}: reason {error:?} should say {expected_reason:?}"
        );
        ensure!(
            got.insert((topic, partition, offset), r.value.clone())
                .is_none(),
            "one dead letter per poison record"
        );
    }
    ensure!(
        got == want,
        "dead letters by origin:\n{got:#?}\nwhere the poison sits:\n{want:#?}"
    );
    dlq.leave().await?;

    analytics.stop().await?;
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_a_restart_and_kafkas_tool_shows_them() -> anyhow::Result<()> {
    let kafka = kafka().await;
    let pg = postgres().await;
    let mut stack = Stack::start(&kafka, &pg, "restart", WINDOW, GRACE).await?;
    let analytics = stack.analytics().await?;
    let producer = stack.publisher().await?;
    let mut traffic = Traffic::new(7, 12, 40);
    publish(producer.as_ref(), &traffic.batch(400)).await?;
    ensure!(
        traffic.partitions() == partitions_of(&Topic::EVENTS),
        "the first run's events reach every event partition"
    );
    stack.await_exact(&traffic, Duration::from_secs(40)).await?;
    stack.await_settled(&kafka, Duration::from_secs(30)).await?;

    // Both roles stop cleanly; events keep arriving while nothing consumes them.
    analytics.stop().await?;
    stack.stop_bookstore().await?;
    let second = traffic.batch(300);
    publish(producer.as_ref(), &second).await?;

    // Kafka's view of the committed offsets: unmoved while nothing consumes, so the lag is
    // the new events plus the duplicate horizon the analytics group keeps behind its
    // position (docs/decisions.md, 14).
    let new_events = Traffic::per_partition(&second);
    let rows = kafka.describe_group(&stack.cfg, ANALYTICS_GROUP).await?;
    ensure!(
        rows.len() == partitions_of(&Topic::EVENTS).len(),
        "every event partition has a commit: {rows:?}"
    );
    for r in &rows {
        let added = partitions_of(&Topic::EVENTS)
            .into_iter()
            .find(|tp| stack.cfg.topic_name(tp.topic) == r.topic && tp.partition == r.partition)
            .and_then(|tp| new_events.get(&tp).copied())
            .unwrap_or(0);
        let end = r.log_end_offset.unwrap_or(0);
        let settled = settled_commit(end - added);
        ensure!(
            r.current_offset == Some(settled) && r.lag == Some(end - settled),
            "while stopped, {}/{} stays committed at {settled} (lag {}): {r:?}",
            r.topic,
            r.partition,
            end - settled
        );
    }

    // A restart resumes at the committed offsets: it counts only the new events.
    stack.start_bookstore().await?;
    let restarted = stack.analytics().await?;
    let took = stack.await_exact(&traffic, Duration::from_secs(40)).await?;
    println!("after the restart, 700 events exact in {took:?}");
    ensure!(
        restarted.counted() == 300,
        "the restarted instance counted {} events, not just the 300 new ones",
        restarted.counted()
    );
    ensure!(
        WorkerStats::get(&restarted.stats.replayed) == 400,
        "the restarted instance re-read exactly the first run's 400 events (for their ids, \
         inside the duplicate horizon), not {}",
        WorkerStats::get(&restarted.stats.replayed)
    );
    stack.await_settled(&kafka, Duration::from_secs(30)).await?;
    ensure!(
        stack
            .bookstore_metric("folio_ingest_aggregates_ignored_total")
            .await?
            == 0,
        "the restarted bookstore resumed at its committed offsets (no aggregate read twice)"
    );
    stack.await_exact(&traffic, Duration::ZERO).await?;
    restarted.stop().await?;
    stack.stop().await
}

/// Sums what the committed offsets alone would call lag: high watermark − committed offset
/// (log start without a commit). folio's commits trail what it read, so this is not lag.
fn committed_lag(offsets: &[PartitionOffsets]) -> i64 {
    offsets
        .iter()
        .map(|p| p.high_watermark - p.committed.as_ref().map_or(p.log_start, |c| c.offset))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_shows_the_analytics_lag_on_kafka_from_the_read_position() -> anyhow::Result<()>
{
    const EVENTS: usize = 120;
    let kafka = kafka().await;
    let cfg = kafka.config("lag");
    let bus = Arc::new(KafkaBus::connect(cfg.clone()).await?);
    // The bookstore alone, on SQLite: nothing reads the event topics yet.
    let app = spawn_app_with(AppOptions {
        bus: Some(bus.clone()),
        window: WINDOW,
        grace: GRACE,
        analytics: false,
        ..AppOptions::default()
    })
    .await?;
    let mut traffic = Traffic::new(41, 9, 25);
    let events = traffic.batch(EVENTS);
    publish(bus.publisher().as_ref(), &events).await?;

    let before = bus
        .group_offsets(ANALYTICS_GROUP, &Topic::EVENTS)
        .await?
        .context("Kafka says where a group stands")?;
    ensure!(
        before.len() == 12,
        "one entry per event partition (3 + 3 + 2 + 2 + 2), not {}",
        before.len()
    );
    ensure!(
        before
            .iter()
            .all(|p| p.committed.is_none() && p.log_start == 0),
        "a fresh prefix: no commits, logs from 0: {before:?}"
    );
    ensure!(
        unread_records(&before) == EVENTS as u64,
        "before any analytics: {} unread, not {EVENTS}",
        unread_records(&before)
    );
    let shown = app
        .wait_for("/admin/pipeline", Duration::from_secs(15), |p| {
            p["analytics_lag"] == EVENTS as u64
        })
        .await?;
    println!("before analytics: analytics_lag {}", shown["analytics_lag"]);

    // An analytics instance reads everything and commits.
    let stop = StopFlag::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let worker = tokio::spawn(folio_runtime::analytics::run(
        Arc::new(KafkaBus::connect(cfg.clone()).await?),
        Arc::new(SystemClock),
        WindowSpec::new(WINDOW, GRACE)?,
        stop.clone(),
        Some(tx),
    ));
    let stats = rx.await.context("the analytics instance started")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        let now = bus
            .group_offsets(ANALYTICS_GROUP, &Topic::EVENTS)
            .await?
            .context("Kafka says where a group stands")?;
        if unread_records(&now) == 0 {
            break now;
        }
        ensure!(
            Instant::now() < deadline,
            "the analytics group still has {} unread after 60 s: {now:?}",
            unread_records(&now)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(
        WorkerStats::get(&stats.counted) == EVENTS as u64,
        "the instance counted {} events, not {EVENTS}",
        WorkerStats::get(&stats.counted)
    );
    // The commits trail the read position (inside the duplicate horizon they stay at the
    // first offset read), so the committed offsets alone would still say every event.
    ensure!(
        committed_lag(&after) == EVENTS as i64,
        "high watermark − committed offset sums to {}, not {EVENTS}: {after:?}",
        committed_lag(&after)
    );
    let shown = app
        .wait_for("/admin/pipeline", Duration::from_secs(15), |p| {
            p["analytics_lag"] == 0
        })
        .await?;
    println!("after analytics: analytics_lag {}", shown["analytics_lag"]);
    stop.stop();
    worker.await??;
    app.stop().await
}
