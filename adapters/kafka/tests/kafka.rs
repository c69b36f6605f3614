//! The Kafka adapter against a real broker (`KAFKA_BOOTSTRAP`, e.g. from
//! `scripts/kafka-local start`). Each test uses its own topic prefix and group, so tests
//! share a broker without seeing each other's records.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use folio_domain::partitioner::partition_for_key;
use folio_domain::ports::{
    Assignment, Committed, ConsumerEvent, GroupConsumer, MessageBus, OffsetCommit, OutgoingRecord,
    Record, RecordPublisher,
};
use folio_domain::topics::{Topic, TopicPartition};
use folio_domain::Error;
use folio_kafka::{KafkaBus, KafkaClient, KafkaConfig, KafkaGroupConsumer};

fn bootstrap() -> String {
    match std::env::var("KAFKA_BOOTSTRAP") {
        Ok(b) if !b.trim().is_empty() => b,
        _ => panic!(
            "this suite needs a real Kafka broker and KAFKA_BOOTSTRAP is unset: set \
             KAFKA_BOOTSTRAP=host:port (scripts/kafka-local start prints 127.0.0.1:19092), or \
             run scripts/test, which starts one on either of its paths"
        ),
    }
}

/// A configuration with a prefix no other test (or run) uses.
fn config(test: &str) -> KafkaConfig {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut cfg = KafkaConfig::new(&bootstrap());
    cfg.client_id = format!("folio-test-{test}");
    cfg.topic_prefix = format!("{test}-{}-{}.", std::process::id(), nanos % 1_000_000_000);
    // scripts/kafka-local runs the broker with a 10 s consumer-group session.
    cfg.session_timeout = Duration::from_secs(10);
    cfg.request_deadline = Duration::from_secs(15);
    cfg
}

async fn client(test: &str) -> KafkaClient {
    let c = KafkaClient::connect(config(test))
        .await
        .expect("connects to the broker");
    c.ensure_topics(&Topic::ALL)
        .await
        .expect("provisions topics");
    c
}

/// A passing test removes its topics at its end; a failing one stops before, keeping them.
async fn remove_topics(client: &KafkaClient) {
    client
        .delete_topics(&Topic::ALL)
        .await
        .expect("deletes the test's topics");
}

fn group(client: &KafkaClient, name: &str) -> String {
    format!("{}{name}", client.config().topic_prefix)
}

fn record(topic: Topic, key: &str, i: usize) -> OutgoingRecord {
    OutgoingRecord {
        topic,
        key: key.as_bytes().to_vec(),
        value: format!("{{\"n\":{i}}}").into_bytes(),
        headers: vec![
            ("folio.a".into(), format!("a{i}").into_bytes()),
            ("folio.b".into(), vec![0, 1, 2, i as u8]),
        ],
    }
}

/// What one member has seen: owned partitions and records by partition.
#[derive(Default)]
struct Seen {
    owned: BTreeSet<TopicPartition>,
    assigned: Vec<Assignment>,
    revoked: Vec<TopicPartition>,
    records: BTreeMap<TopicPartition, Vec<Record>>,
}

impl Seen {
    fn apply(&mut self, ev: ConsumerEvent) {
        match ev {
            ConsumerEvent::Assigned(list) => {
                for a in list {
                    assert!(
                        self.owned.insert(a.partition),
                        "{} assigned twice",
                        a.partition
                    );
                    self.assigned.push(a);
                }
            }
            ConsumerEvent::Revoked(list) => {
                for tp in list {
                    assert!(self.owned.remove(&tp), "{tp} revoked but not owned");
                    self.revoked.push(tp);
                }
            }
            ConsumerEvent::Batch(b) => {
                assert!(
                    self.owned.contains(&b.partition),
                    "batch for {} not owned",
                    b.partition
                );
                let got = self.records.entry(b.partition).or_default();
                if let (Some(last), Some(first)) = (got.last(), b.records.first()) {
                    assert_eq!(
                        first.offset,
                        last.offset + 1,
                        "offsets of {} continue",
                        b.partition
                    );
                }
                assert!(b
                    .records
                    .last()
                    .is_some_and(|r| r.offset < b.high_watermark));
                got.extend(b.records);
            }
            ConsumerEvent::Idle => {}
        }
    }

    fn count(&self) -> usize {
        self.records.values().map(Vec::len).sum()
    }
}

async fn poll_until(
    c: &mut KafkaGroupConsumer,
    seen: &mut Seen,
    within: Duration,
    done: impl Fn(&Seen) -> bool,
) {
    let start = Instant::now();
    while !done(seen) {
        assert!(
            start.elapsed() < within,
            "condition not met within {within:?}"
        );
        let ev = c.poll(Duration::from_millis(100)).await.expect("poll");
        seen.apply(ev);
    }
}

/// Polls two members in turn until `done`; returns how long it took.
async fn poll_both(
    a: &mut KafkaGroupConsumer,
    sa: &mut Seen,
    b: &mut KafkaGroupConsumer,
    sb: &mut Seen,
    within: Duration,
    done: impl Fn(&Seen, &Seen) -> bool,
) -> Duration {
    let start = Instant::now();
    while !done(sa, sb) {
        assert!(
            start.elapsed() < within,
            "condition not met within {within:?}"
        );
        sa.apply(a.poll(Duration::from_millis(50)).await.expect("poll a"));
        sb.apply(b.poll(Duration::from_millis(50)).await.expect("poll b"));
    }
    start.elapsed()
}

fn all_partitions(topic: Topic) -> BTreeSet<TopicPartition> {
    (0..topic.partitions())
        .map(|p| TopicPartition::new(topic, p))
        .collect()
}

#[tokio::test]
async fn published_records_come_back_exactly_on_the_key_partition() {
    let client = client("exact").await;
    let publisher = client.publisher();
    let topic = Topic::BookViews;
    let n = 300;
    for i in 0..n {
        publisher
            .send(record(topic, &(i % 37).to_string(), i))
            .await
            .expect("send");
    }
    publisher.flush().await.expect("flush");
    let stats = publisher.stats();
    assert_eq!(
        (stats.sent, stats.acked, stats.failed, stats.in_flight),
        (n as u64, n as u64, 0, 0)
    );

    let mut c = client
        .group_consumer(&group(&client, "exact"), &[topic])
        .await
        .expect("joins");
    let mut seen = Seen::default();
    poll_until(&mut c, &mut seen, Duration::from_secs(30), |s| {
        s.count() == n
    })
    .await;
    assert_eq!(seen.owned, all_partitions(topic));
    assert!(
        seen.assigned.iter().all(|a| a.committed.is_none()),
        "a new group has no commits"
    );

    // Every record, on the partition Kafka's partitioner names, in send order per key.
    let mut by_index: BTreeMap<usize, (TopicPartition, Record)> = BTreeMap::new();
    for (tp, records) in &seen.records {
        for (k, r) in records.iter().enumerate() {
            assert_eq!(
                r.offset, k as i64,
                "offsets of {tp} start at 0 and have no gaps"
            );
            let value = String::from_utf8(r.value.clone()).expect("utf8");
            let i: usize = value
                .trim_start_matches("{\"n\":")
                .trim_end_matches('}')
                .parse()
                .expect("index");
            by_index.insert(i, (*tp, r.clone()));
        }
    }
    assert_eq!(by_index.len(), n);
    for (i, (tp, r)) in by_index {
        let sent = record(topic, &(i % 37).to_string(), i);
        assert_eq!(tp.partition, partition_for_key(&sent.key, 3), "record {i}");
        assert_eq!(r.key.as_deref(), Some(sent.key.as_slice()));
        assert_eq!(r.value, sent.value);
        assert_eq!(r.headers, sent.headers);
        assert!(r.timestamp_ms > 1_600_000_000_000);
    }
    c.leave().await.expect("leaves");
    remove_topics(&client).await;
}

#[tokio::test]
async fn members_split_partitions_and_the_survivor_takes_all_when_one_leaves() {
    let client = client("split").await;
    let topic = Topic::BookViews;
    let g = group(&client, "split");
    let mut a = client.group_consumer(&g, &[topic]).await.expect("a joins");
    let mut sa = Seen::default();
    poll_until(&mut a, &mut sa, Duration::from_secs(20), |s| {
        s.owned.len() == 3
    })
    .await;

    let mut b = client.group_consumer(&g, &[topic]).await.expect("b joins");
    let mut sb = Seen::default();
    let split = poll_both(
        &mut a,
        &mut sa,
        &mut b,
        &mut sb,
        Duration::from_secs(30),
        |x, y| !x.owned.is_empty() && !y.owned.is_empty() && x.owned.len() + y.owned.len() == 3,
    )
    .await;
    assert!(sa.owned.is_disjoint(&sb.owned));
    println!(
        "two members split {topic} in {split:?}: a={:?} b={:?}",
        sa.owned, sb.owned
    );

    b.leave().await.expect("b leaves");
    let start = Instant::now();
    poll_until(&mut a, &mut sa, Duration::from_secs(10), |s| {
        s.owned.len() == 3
    })
    .await;
    println!("after b left, a owned everything in {:?}", start.elapsed());
    // A member that left cannot poll any more.
    assert!(matches!(
        b.poll(Duration::from_millis(10)).await,
        Err(Error::Conflict(_))
    ));
    a.leave().await.expect("a leaves");
    remove_topics(&client).await;
}

#[tokio::test]
async fn a_silent_member_loses_its_partitions_after_the_session_timeout() {
    let client = client("silent").await;
    let topic = Topic::BookDownloads;
    let g = group(&client, "silent");
    let mut a = client.group_consumer(&g, &[topic]).await.expect("a joins");
    let mut sa = Seen::default();
    poll_until(&mut a, &mut sa, Duration::from_secs(20), |s| {
        s.owned.len() == 3
    })
    .await;
    let mut b = client.group_consumer(&g, &[topic]).await.expect("b joins");
    let mut sb = Seen::default();
    poll_both(
        &mut a,
        &mut sa,
        &mut b,
        &mut sb,
        Duration::from_secs(30),
        |x, y| !y.owned.is_empty() && x.owned.len() + y.owned.len() == 3,
    )
    .await;

    // Dropping stops b's heartbeats without leaving, as a crash would.
    drop(b);
    let start = Instant::now();
    poll_until(&mut a, &mut sa, Duration::from_secs(25), |s| {
        s.owned.len() == 3
    })
    .await;
    let took = start.elapsed();
    println!("after b went silent, a owned everything in {took:?}");
    assert!(
        took >= Duration::from_secs(5),
        "moved before the session expired: {took:?}"
    );
    a.leave().await.expect("a leaves");
    remove_topics(&client).await;
}

#[tokio::test]
async fn a_new_member_resumes_at_the_committed_offset_with_its_metadata() {
    let client = client("resume").await;
    let topic = Topic::BookPurchases;
    let publisher = client.publisher();
    for i in 0..20 {
        publisher.send(record(topic, "7", i)).await.expect("send");
    }
    publisher.flush().await.expect("flush");
    let tp = TopicPartition::new(topic, partition_for_key(b"7", 2));
    let g = group(&client, "resume");

    let mut a = client.group_consumer(&g, &[topic]).await.expect("a joins");
    let mut sa = Seen::default();
    poll_until(&mut a, &mut sa, Duration::from_secs(30), |s| {
        s.count() == 20
    })
    .await;
    let metadata = "{\"windows\":[1,2,3],\"note\":\"checkpoint ü\"}".to_string();
    a.commit(&[OffsetCommit {
        partition: tp,
        offset: 12,
        metadata: metadata.clone(),
    }])
    .await
    .expect("commit");
    // Partitions of another topic are not this member's.
    let foreign = TopicPartition::new(Topic::BookViews, 0);
    let err = a
        .commit(&[OffsetCommit {
            partition: foreign,
            offset: 1,
            metadata: String::new(),
        }])
        .await
        .expect_err("foreign commit refused");
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    a.leave().await.expect("a leaves");

    let mut b = client.group_consumer(&g, &[topic]).await.expect("b joins");
    let mut sb = Seen::default();
    poll_until(&mut b, &mut sb, Duration::from_secs(30), |s| s.count() == 8).await;
    let resumed = sb
        .assigned
        .iter()
        .find(|x| x.partition == tp)
        .expect("tp assigned");
    assert_eq!(
        resumed.committed,
        Some(Committed {
            offset: 12,
            metadata
        })
    );
    let offsets: Vec<i64> = sb.records[&tp].iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (12..20).collect::<Vec<_>>());
    b.leave().await.expect("b leaves");
    remove_topics(&client).await;
}

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn provisioning_creates_the_catalog_and_warns_on_a_mismatch() {
    let logs = Logs::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let cfg = config("provision");
    let client = KafkaClient::connect(cfg.clone()).await.expect("connects");
    // Someone made book.views with one partition before folio started.
    let rs = rskafka::client::ClientBuilder::new(cfg.bootstrap.clone())
        .build()
        .await
        .expect("rskafka connects");
    rs.controller_client()
        .expect("controller")
        .create_topic(cfg.topic_name(Topic::BookViews), 1, 1, 10_000)
        .await
        .expect("pre-creates");

    let report = client.ensure_topics(&Topic::ALL).await.expect("provisions");
    assert_eq!(report.mismatched, vec![(Topic::BookViews, 3, 1)]);
    assert_eq!(report.created, Topic::ALL[1..].to_vec());
    let counts = client.partition_counts().await.expect("counts");
    for t in Topic::ALL {
        let want = if t == Topic::BookViews {
            1
        } else {
            t.partitions()
        };
        assert_eq!(counts.get(&cfg.topic_name(t)), Some(&want), "{t}");
    }
    let text = String::from_utf8(logs.0.lock().expect("logs").clone()).expect("utf8");
    assert!(
        text.contains("WARN")
            && text.contains("fewer partitions than configured")
            && text.contains("expected=3")
            && text.contains("actual=1"),
        "warning logged: {text}"
    );
    // It was made with one replica: on a cluster (default factor min(3, brokers) > 1) that
    // is reported too, and left as it is.
    let rep = report.replication;
    assert_eq!(
        rep,
        folio_kafka::Replication::resolve(None, None, report.brokers).expect("defaults")
    );
    let replicas: Vec<_> = report
        .shortfalls
        .iter()
        .filter(|s| matches!(s.kind, folio_kafka::ShortfallKind::Replicas { .. }))
        .map(|s| s.topic)
        .collect();
    if rep.factor > 1 {
        assert_eq!(replicas, vec![Topic::BookViews]);
        assert!(text.contains("fewer than the replication factor"), "{text}");
    } else {
        assert!(replicas.is_empty(), "{:?}", report.shortfalls);
    }

    // Again: nothing to create, the mismatch reported again, nothing changed.
    let again = client
        .ensure_topics(&Topic::ALL)
        .await
        .expect("provisions again");
    assert!(again.created.is_empty());
    assert_eq!(again.existing.len(), 6);
    assert_eq!(again.mismatched, vec![(Topic::BookViews, 3, 1)]);
    assert_eq!(
        again.shortfalls, report.shortfalls,
        "the topics folio made are as configured"
    );

    // The publisher follows the real count: everything lands on partition 0.
    let publisher = client.publisher();
    publisher
        .send(record(Topic::BookViews, "42", 0))
        .await
        .expect("send");
    publisher.flush().await.expect("flush");

    // Tearing down: every topic goes, and then there is nothing left to delete.
    let deleted = client.delete_topics(&Topic::ALL).await.expect("deletes");
    assert_eq!(deleted, Topic::ALL.len());
    let names: Vec<String> = Topic::ALL.iter().map(|t| cfg.topic_name(*t)).collect();
    let mut left = names.len();
    for _ in 0..100 {
        let counts = client.partition_counts().await.expect("counts");
        left = names.iter().filter(|n| counts.contains_key(*n)).count();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "deleted topics gone from metadata");
    let again = client
        .delete_topics(&Topic::ALL)
        .await
        .expect("deletes again");
    assert_eq!(again, 0);
}

#[tokio::test]
async fn the_bus_provisions_publishes_and_joins() {
    let bus = KafkaBus::connect(config("bus")).await.expect("connects");
    bus.provision().await.expect("provisions");
    let publisher = bus.publisher();
    publisher
        .send(record(Topic::AggregatedStats, "5", 1))
        .await
        .expect("send");
    publisher.flush().await.expect("flush");
    let g = group(bus.client(), "bus");
    let mut c = bus
        .join(&g, &[Topic::AggregatedStats])
        .await
        .expect("joins");
    let start = Instant::now();
    let mut got = 0;
    while got == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no record within 30 s"
        );
        if let ConsumerEvent::Batch(b) = c.poll(Duration::from_millis(100)).await.expect("poll") {
            got += b.records.len();
        }
    }
    assert_eq!(got, 1);
    c.leave().await.expect("leaves");
    remove_topics(bus.client()).await;
}

#[tokio::test]
async fn a_fenced_member_revokes_everything_then_rejoins() {
    let client = client("fenced").await;
    let topic = Topic::BookReviews;
    let tp = TopicPartition::new(topic, 0);
    let mut a = client
        .group_consumer(&group(&client, "fenced"), &[topic])
        .await
        .expect("joins");
    let mut events = Vec::new();
    let start = Instant::now();
    while a.owned().len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(20), "no assignment");
        events.push(a.poll(Duration::from_millis(100)).await.expect("poll"));
    }
    let first_epoch = a.member_epoch();
    assert!(first_epoch > 0);

    // Stuck past the 10 s session: the coordinator removes the member.
    a.pause_heartbeats(true);
    let paused = Instant::now();
    while paused.elapsed() < Duration::from_secs(13) {
        a.poll(Duration::from_millis(200))
            .await
            .expect("poll while paused");
    }
    let err = a
        .commit(&[OffsetCommit {
            partition: tp,
            offset: 0,
            metadata: String::new(),
        }])
        .await
        .expect_err("a removed member cannot commit");
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");

    // Back: it learns it was fenced, gives up everything, then joins afresh.
    a.pause_heartbeats(false);
    let mut seen = Vec::new();
    let resumed = Instant::now();
    loop {
        assert!(
            resumed.elapsed() < Duration::from_secs(20),
            "no rejoin: {seen:?}"
        );
        match a.poll(Duration::from_millis(100)).await.expect("poll") {
            ConsumerEvent::Idle | ConsumerEvent::Batch(_) => {}
            ev => seen.push(ev),
        }
        if a.owned().len() == 2 && !seen.is_empty() {
            break;
        }
    }
    let all: BTreeSet<TopicPartition> = all_partitions(topic);
    match &seen[..] {
        [ConsumerEvent::Revoked(r), ConsumerEvent::Assigned(x)] => {
            assert_eq!(r.iter().copied().collect::<BTreeSet<_>>(), all);
            assert_eq!(x.iter().map(|a| a.partition).collect::<BTreeSet<_>>(), all);
        }
        other => panic!("expected Revoked then Assigned, got {other:?}"),
    }
    println!(
        "fenced member rejoined {:?} after resuming",
        resumed.elapsed()
    );
    a.commit(&[OffsetCommit {
        partition: tp,
        offset: 0,
        metadata: String::new(),
    }])
    .await
    .expect("commits again after rejoining");
    a.leave().await.expect("leaves");
    remove_topics(&client).await;
}

/// A classic client: `KAFKA_GROUP_PROTOCOL=classic`, optionally a static member.
async fn classic_client(
    test: &str,
    instance: Option<&str>,
    prefix_of: Option<&KafkaClient>,
) -> KafkaClient {
    let mut cfg = config(test);
    if let Some(other) = prefix_of {
        cfg.topic_prefix = other.config().topic_prefix.clone();
    }
    cfg.group_protocol = folio_kafka::GroupProtocol::Classic;
    cfg.group_instance_id = instance.map(String::from);
    let c = KafkaClient::connect(cfg)
        .await
        .expect("connects to the broker");
    c.ensure_topics(&Topic::ALL)
        .await
        .expect("provisions topics");
    c
}

/// Classic protocol, cooperative-sticky: a second member takes half without the first
/// ever giving up the half it keeps (incremental, KIP-429); a static member that crashes
/// and comes back within the session timeout gets the same partitions back and the other
/// member sees no rebalance at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_members_rebalance_incrementally_and_a_static_member_comes_back() {
    let first = classic_client("classic-static", Some("instance-a"), None).await;
    let topics = [Topic::BookViews, Topic::BookDownloads];
    let all: BTreeSet<TopicPartition> = topics.iter().flat_map(|t| all_partitions(*t)).collect();
    let g = group(&first, "classic");
    let mut a = first.group_consumer(&g, &topics).await.expect("a joins");
    let mut sa = Seen::default();
    poll_until(&mut a, &mut sa, Duration::from_secs(20), |s| s.owned == all).await;

    let dynamic = classic_client("classic-static", None, Some(&first)).await;
    let mut b = dynamic.group_consumer(&g, &topics).await.expect("b joins");
    let mut sb = Seen::default();
    let took = poll_both(
        &mut a,
        &mut sa,
        &mut b,
        &mut sb,
        Duration::from_secs(30),
        |x, y| x.owned.len() == 3 && y.owned.len() == 3,
    )
    .await;
    println!(
        "classic: b took 3 of 6 partitions in {took:?}; a kept {:?}",
        sa.owned
    );
    // a revoked exactly what moved to b, and nothing it kept.
    assert_eq!(
        sa.revoked.len(),
        3,
        "only what moves is revoked: {:?}",
        sa.revoked
    );
    assert!(sa.revoked.iter().all(|tp| sb.owned.contains(tp)));
    assert!(sa.owned.is_disjoint(&sb.owned));

    // a crashes (dropped without leaving); the same instance id comes back at once.
    let kept = sa.owned.clone();
    drop(a);
    let again = classic_client("classic-static", Some("instance-a"), Some(&first)).await;
    let start = Instant::now();
    let mut a2 = again
        .group_consumer(&g, &topics)
        .await
        .expect("a comes back");
    let mut sa2 = Seen::default();
    let revoked_before = sb.revoked.len();
    poll_both(
        &mut a2,
        &mut sa2,
        &mut b,
        &mut sb,
        Duration::from_secs(8),
        |x, _| x.owned == kept,
    )
    .await;
    println!(
        "static member back with {:?} in {:?}",
        sa2.owned,
        start.elapsed()
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "before the session timeout"
    );
    assert_eq!(sb.revoked.len(), revoked_before, "b saw no rebalance");
    a2.leave()
        .await
        .expect("a leaves (static: stays in the group)");
    b.leave().await.expect("b leaves");
    remove_topics(&first).await;
}
