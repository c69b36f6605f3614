//! The bus contract: what every [`MessageBus`] promises the analytics worker and the
//! statistics ingest, checked against the trait alone so the in-process bus and Kafka run
//! the same checks. If the in-process bus passes them, the embedded mode and the unit tests
//! built on it can be trusted to behave like Kafka.
//!
//! - Records come back exactly (key, value, headers by name), in offset order per partition,
//!   on the partition Kafka's partitioner names for their key.
//! - A new member resumes at the committed offset and gets the commit's metadata back.
//! - Two members split the partitions; a member that leaves hands its partitions (and
//!   their commits) to the other.
//! - Committing a partition the member does not own is a `Conflict` and changes nothing.
//!
//! Each check expects a bus of its own (fresh topics and groups) and fails on the first
//! mismatch. [`bus_contract_suite!`] turns them into tests for one bus.
//!
//! Headers are compared as a name -> value map: Kafka's client (rskafka) hands them back
//! ordered by name, and folio never repeats a name.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use folio_domain::partitioner::partition_for_key;
use folio_domain::ports::{
    Assignment, Committed, ConsumerEvent, GroupConsumer, Header, MessageBus, OffsetCommit,
    OutgoingRecord, Record,
};
use folio_domain::topics::{Topic, TopicPartition};
use folio_domain::Error;

/// Generates one `#[tokio::test]` per bus check.
///
/// `$setup` is an async function taking the test's name (for unique topic and group
/// names) and returning `anyhow::Result<(G, Arc<dyn MessageBus>)>`, where `G` is anything
/// that must outlive the test (a container, say).
///
/// ```ignore
/// folio_tests::bus_contract_suite!(kafka_bus);
/// ```
#[macro_export]
macro_rules! bus_contract_suite {
    ($setup:path) => {
        $crate::bus_contract_suite!(@tests $setup;
            keyed_records_come_back_exactly_on_the_key_partition,
            a_new_member_resumes_at_the_committed_offset_with_its_metadata,
            two_members_split_partitions_and_a_leaving_member_hands_them_over,
            commits_of_partitions_not_owned_conflict_and_change_nothing,
        );
    };
    (@tests $setup:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() -> anyhow::Result<()> {
                let (_guard, bus) = $setup(stringify!($check)).await?;
                $crate::bus_contract::$check(bus.as_ref()).await
            }
        )*
    };
}

/// How long any one expectation may take: joining, a rebalance, fetching.
pub const WITHIN: Duration = Duration::from_secs(30);

/// Every partition of `topics`.
pub fn partitions_of(topics: &[Topic]) -> BTreeSet<TopicPartition> {
    topics
        .iter()
        .flat_map(|&t| (0..t.partitions()).map(move |p| TopicPartition::new(t, p)))
        .collect()
}

/// Where Kafka's default partitioner puts `key` on `topic` (the catalog's count).
pub fn partition_of(topic: Topic, key: &[u8]) -> TopicPartition {
    TopicPartition::new(topic, partition_for_key(key, topic.partitions()))
}

/// Headers as a name -> value map.
pub fn header_map(headers: &[Header]) -> BTreeMap<String, Vec<u8>> {
    headers.iter().cloned().collect()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A group member and everything it has seen, checked as it arrives: batches only for
/// owned partitions, offsets consecutive from the committed one, below the high watermark.
pub struct Member {
    pub name: &'static str,
    consumer: Box<dyn GroupConsumer>,
    pub owned: BTreeSet<TopicPartition>,
    /// Every assignment received, oldest first.
    pub assigned: Vec<Assignment>,
    pub revoked: Vec<TopicPartition>,
    pub records: BTreeMap<TopicPartition, Vec<Record>>,
    /// `Idle` answers since the counter was last reset.
    pub idle: usize,
    next: HashMap<TopicPartition, Option<i64>>,
}

impl Member {
    pub async fn join(
        bus: &dyn MessageBus,
        name: &'static str,
        group: &str,
        topics: &[Topic],
    ) -> Result<Self> {
        let consumer = bus
            .join(group, topics)
            .await
            .with_context(|| format!("{name} joins {group}"))?;
        Ok(Member {
            name,
            consumer,
            owned: BTreeSet::new(),
            assigned: Vec::new(),
            revoked: Vec::new(),
            records: BTreeMap::new(),
            idle: 0,
            next: HashMap::new(),
        })
    }

    pub fn count(&self) -> usize {
        self.records.values().map(Vec::len).sum()
    }

    /// The latest assignment of `tp`.
    pub fn assignment(&self, tp: TopicPartition) -> Option<&Assignment> {
        self.assigned.iter().rev().find(|a| a.partition == tp)
    }

    pub async fn poll(&mut self, wait: Duration) -> Result<()> {
        let ev = self
            .consumer
            .poll(wait)
            .await
            .with_context(|| format!("{} polls", self.name))?;
        self.apply(ev)
    }

    fn apply(&mut self, ev: ConsumerEvent) -> Result<()> {
        let name = self.name;
        match ev {
            ConsumerEvent::Assigned(list) => {
                for a in list {
                    ensure!(
                        self.owned.insert(a.partition),
                        "{name}: {} assigned while owned",
                        a.partition
                    );
                    self.next
                        .insert(a.partition, a.committed.as_ref().map(|c| c.offset));
                    self.assigned.push(a);
                }
            }
            ConsumerEvent::Revoked(list) => {
                for tp in list {
                    ensure!(self.owned.remove(&tp), "{name}: {tp} revoked but not owned");
                    self.next.remove(&tp);
                    self.revoked.push(tp);
                }
            }
            ConsumerEvent::Batch(b) => {
                let tp = b.partition;
                ensure!(
                    self.owned.contains(&tp),
                    "{name}: a batch of {tp}, not owned"
                );
                let next = self.next.entry(tp).or_insert(None);
                for r in &b.records {
                    if let Some(want) = *next {
                        ensure!(
                            r.offset == want,
                            "{name}: {tp} jumped to offset {} where {want} was next",
                            r.offset
                        );
                    }
                    ensure!(
                        r.offset < b.high_watermark,
                        "{name}: {tp} offset {} at or past the high watermark {}",
                        r.offset,
                        b.high_watermark
                    );
                    *next = Some(r.offset + 1);
                }
                self.records.entry(tp).or_default().extend(b.records);
            }
            ConsumerEvent::Idle => self.idle += 1,
        }
        Ok(())
    }

    pub async fn commit(&mut self, offsets: &[OffsetCommit]) -> folio_domain::Result<()> {
        self.consumer.commit(offsets).await
    }

    pub async fn leave(&mut self) -> Result<()> {
        self.consumer
            .leave()
            .await
            .with_context(|| format!("{} leaves", self.name))
    }

    /// Polls until `done`, failing after `within` with `what`.
    pub async fn poll_until(
        &mut self,
        within: Duration,
        what: &str,
        done: impl Fn(&Member) -> bool,
    ) -> Result<Duration> {
        let start = Instant::now();
        while !done(self) {
            if start.elapsed() > within {
                bail!(
                    "{}: {what} did not happen within {within:?}; owns {:?}, {} records",
                    self.name,
                    self.owned,
                    self.count()
                );
            }
            self.poll(Duration::from_millis(100)).await?;
        }
        Ok(start.elapsed())
    }
}

/// Polls two members in turn until `done` (a rebalance needs both to take part).
pub async fn poll_both_until(
    a: &mut Member,
    b: &mut Member,
    within: Duration,
    what: &str,
    done: impl Fn(&Member, &Member) -> bool,
) -> Result<Duration> {
    let start = Instant::now();
    while !done(a, b) {
        if start.elapsed() > within {
            bail!(
                "{what} did not happen within {within:?}; {} owns {:?}, {} owns {:?}",
                a.name,
                a.owned,
                b.name,
                b.owned
            );
        }
        a.poll(Duration::from_millis(50)).await?;
        b.poll(Duration::from_millis(50)).await?;
    }
    Ok(start.elapsed())
}

fn record(topic: Topic, key: &str, i: usize) -> OutgoingRecord {
    OutgoingRecord {
        topic,
        key: key.as_bytes().to_vec(),
        value: format!("{{\"n\":{i},\"text\":\"caf\u{e9} \u{1f4da}\"}}").into_bytes(),
        // Out of name order on purpose, and one binary value.
        headers: vec![
            ("folio.z".into(), format!("z{i}").into_bytes()),
            ("event_id".into(), format!("id-{i}").into_bytes()),
            ("folio.a".into(), vec![0, 1, 0xff, (i % 256) as u8]),
        ],
    }
}

fn expect_conflict(what: &str, r: folio_domain::Result<()>) -> Result<()> {
    match r {
        Err(Error::Conflict(_)) => Ok(()),
        other => bail!("{what}: expected Conflict, got {other:?}"),
    }
}

/// Records published with keys come back on `partition_for_key(key, count)`, each with its
/// exact key, value and headers, in send order per partition, with consecutive offsets;
/// a new group has no commits; a caught-up member answers `Idle`.
pub async fn keyed_records_come_back_exactly_on_the_key_partition(
    bus: &dyn MessageBus,
) -> Result<()> {
    let topics = [Topic::BookViews, Topic::BookPurchases];
    let started = now_ms();
    let publisher = bus.publisher();
    let mut sent = Vec::new();
    for i in 0..150 {
        let topic = topics[i % 2];
        let r = record(topic, &((i * 7) % 23 + 1).to_string(), i);
        publisher.send(r.clone()).await?;
        sent.push(r);
    }
    // A record with neither headers nor a value.
    let bare = OutgoingRecord {
        topic: Topic::BookViews,
        key: b"bare".to_vec(),
        value: Vec::new(),
        headers: Vec::new(),
    };
    publisher.send(bare.clone()).await?;
    sent.push(bare);
    publisher.flush().await?;

    let mut m = Member::join(bus, "a", "contract-exact", &topics).await?;
    m.poll_until(WITHIN, "every record arrives", |m| m.count() >= sent.len())
        .await?;
    ensure!(
        m.count() == sent.len(),
        "{} records, sent {}",
        m.count(),
        sent.len()
    );
    ensure!(
        m.owned == partitions_of(&topics),
        "one member owns every partition"
    );
    ensure!(
        m.assigned.iter().all(|a| a.committed.is_none()),
        "a new group has no commits: {:?}",
        m.assigned
    );
    let finished = now_ms();
    for tp in partitions_of(&topics) {
        let want: Vec<&OutgoingRecord> = sent
            .iter()
            .filter(|r| partition_of(r.topic, &r.key) == tp)
            .collect();
        ensure!(
            !want.is_empty(),
            "the keys reach every partition ({tp} has none)"
        );
        let got = m.records.get(&tp).map(Vec::as_slice).unwrap_or_default();
        ensure!(
            got.len() == want.len(),
            "{tp}: {} records where the partitioner puts {}",
            got.len(),
            want.len()
        );
        for (g, w) in got.iter().zip(want) {
            ensure!(
                g.key.as_deref() == Some(w.key.as_slice()),
                "{tp} offset {}: key",
                g.offset
            );
            ensure!(g.value == w.value, "{tp} offset {}: value", g.offset);
            ensure!(
                header_map(&g.headers) == header_map(&w.headers),
                "{tp} offset {}: headers {:?} where {:?} were sent",
                g.offset,
                g.headers,
                w.headers
            );
            ensure!(
                (started - 60_000..=finished + 60_000).contains(&g.timestamp_ms),
                "{tp} offset {}: timestamp {} is not about now",
                g.offset,
                g.timestamp_ms
            );
        }
    }
    m.idle = 0;
    m.poll_until(WITHIN, "Idle once caught up", |m| m.idle > 0)
        .await?;
    ensure!(m.count() == sent.len(), "nothing more arrived");
    m.leave().await
}

/// A member commits an offset with metadata and leaves; the next member is assigned the
/// partition with that exact commit and reads from that offset on. A member that left
/// cannot poll.
pub async fn a_new_member_resumes_at_the_committed_offset_with_its_metadata(
    bus: &dyn MessageBus,
) -> Result<()> {
    let topic = Topic::BookPurchases;
    let tp = partition_of(topic, b"7");
    let other = TopicPartition::new(topic, 1 - tp.partition);
    let publisher = bus.publisher();
    let sent: Vec<OutgoingRecord> = (0..20).map(|i| record(topic, "7", i)).collect();
    for r in &sent {
        publisher.send(r.clone()).await?;
    }
    publisher.flush().await?;

    let mut a = Member::join(bus, "a", "contract-resume", &[topic]).await?;
    a.poll_until(WITHIN, "20 records arrive", |m| m.count() >= 20)
        .await?;
    let first = a.records[&tp][0].offset;
    let metadata = r#"{"v":1,"closed":[[0,12]],"note":"checkpoint ü"}"#.to_string();
    a.commit(&[OffsetCommit {
        partition: tp,
        offset: first + 12,
        metadata: metadata.clone(),
    }])
    .await
    .context("the owner commits")?;
    a.leave().await?;
    match a.consumer.poll(Duration::from_millis(10)).await {
        Err(Error::Conflict(_)) => {}
        other => bail!("a member that left polled: {other:?}"),
    }

    let mut b = Member::join(bus, "b", "contract-resume", &[topic]).await?;
    b.poll_until(WITHIN, "the rest arrives", |m| {
        m.count() >= 8 && m.owned.len() == 2
    })
    .await?;
    let resumed = b
        .assignment(tp)
        .ok_or_else(|| anyhow!("{tp} not assigned"))?;
    ensure!(
        resumed.committed
            == Some(Committed {
                offset: first + 12,
                metadata
            }),
        "the commit comes back exactly: {:?}",
        resumed.committed
    );
    ensure!(
        b.assignment(other).is_some_and(|a| a.committed.is_none()),
        "{other} was never committed"
    );
    let got: Vec<(i64, &[u8])> = b.records[&tp]
        .iter()
        .map(|r| (r.offset, r.value.as_slice()))
        .collect();
    let want: Vec<(i64, &[u8])> = (12..20)
        .map(|i| (first + i as i64, sent[i].value.as_slice()))
        .collect();
    ensure!(got == want, "b reads from the committed offset on: {got:?}");
    b.leave().await
}

/// Two members split the partitions evenly and disjointly; records reach only the owner;
/// each commits its own partitions and gets `Conflict` for the other's; when one leaves,
/// the other takes its partitions along with their commits.
pub async fn two_members_split_partitions_and_a_leaving_member_hands_them_over(
    bus: &dyn MessageBus,
) -> Result<()> {
    let topics = [Topic::BookViews, Topic::BookDownloads];
    let all = partitions_of(&topics);
    let group = "contract-split";
    let mut a = Member::join(bus, "a", group, &topics).await?;
    a.poll_until(WITHIN, "a owns everything", |m| m.owned == all)
        .await?;

    let mut b = Member::join(bus, "b", group, &topics).await?;
    poll_both_until(&mut a, &mut b, WITHIN, "an even split", |a, b| {
        a.owned.len() == 3 && b.owned.len() == 3 && a.owned.is_disjoint(&b.owned)
    })
    .await?;
    let revoked: BTreeSet<TopicPartition> = a.revoked.iter().copied().collect();
    ensure!(
        revoked == b.owned,
        "what a gave up ({revoked:?}) is what b got ({:?})",
        b.owned
    );

    let publisher = bus.publisher();
    let sent: Vec<OutgoingRecord> = (0..60)
        .map(|i| record(topics[i % 2], &(i % 13 + 100).to_string(), i))
        .collect();
    for r in &sent {
        publisher.send(r.clone()).await?;
    }
    publisher.flush().await?;
    poll_both_until(&mut a, &mut b, WITHIN, "every record arrives", |a, b| {
        a.count() + b.count() >= sent.len()
    })
    .await?;
    for m in [&a, &b] {
        for tp in &m.owned {
            let want = sent
                .iter()
                .filter(|r| partition_of(r.topic, &r.key) == *tp)
                .count();
            let got = m.records.get(tp).map_or(0, Vec::len);
            ensure!(
                got == want,
                "{} read {got} records of {tp}, not {want}",
                m.name
            );
        }
    }
    ensure!(
        a.count() + b.count() == sent.len(),
        "each record reached one member"
    );

    let ta = *a
        .owned
        .iter()
        .next()
        .ok_or_else(|| anyhow!("a owns nothing"))?;
    let tb = *b
        .owned
        .iter()
        .next()
        .ok_or_else(|| anyhow!("b owns nothing"))?;
    let b_commit = OffsetCommit {
        partition: tb,
        offset: b
            .records
            .get(&tb)
            .map_or(0, |r| r.last().map_or(0, |x| x.offset + 1)),
        metadata: "b was here".into(),
    };
    a.commit(&[OffsetCommit {
        partition: ta,
        offset: 0,
        metadata: "a".into(),
    }])
    .await
    .context("a commits its own partition")?;
    b.commit(std::slice::from_ref(&b_commit))
        .await
        .context("b commits its own partition")?;
    expect_conflict(
        "a commits b's partition",
        a.commit(&[OffsetCommit {
            partition: tb,
            offset: 0,
            metadata: String::new(),
        }])
        .await,
    )?;

    b.leave().await?;
    a.poll_until(WITHIN, "a owns everything again", |m| m.owned == all)
        .await?;
    let handed = a
        .assignment(tb)
        .ok_or_else(|| anyhow!("{tb} not handed over"))?;
    ensure!(
        handed.committed
            == Some(Committed {
                offset: b_commit.offset,
                metadata: b_commit.metadata.clone()
            }),
        "{tb} comes with b's commit: {:?}",
        handed.committed
    );
    a.leave().await
}

/// Commits of partitions the member does not own (another topic, or mixed with owned
/// ones) fail with `Conflict` and store nothing; commits of owned ones are kept.
pub async fn commits_of_partitions_not_owned_conflict_and_change_nothing(
    bus: &dyn MessageBus,
) -> Result<()> {
    let topic = Topic::BookRatings;
    let p0 = TopicPartition::new(topic, 0);
    let p1 = TopicPartition::new(topic, 1);
    // A key for each partition, four records each.
    let keys: Vec<String> = [0, 1]
        .iter()
        .map(|&p| {
            (1..)
                .map(|k: u32| k.to_string())
                .find(|k| partition_for_key(k.as_bytes(), 2) == p)
                .unwrap_or_default()
        })
        .collect();
    let publisher = bus.publisher();
    for (i, key) in keys.iter().cycle().take(8).enumerate() {
        publisher.send(record(topic, key, i)).await?;
    }
    publisher.flush().await?;

    let group = "contract-conflict";
    let mut a = Member::join(bus, "a", group, &[topic]).await?;
    a.poll_until(WITHIN, "a owns both partitions and reads them", |m| {
        m.owned.len() == 2 && m.count() >= 8
    })
    .await?;
    let first = |m: &Member, tp: TopicPartition| m.records[&tp][0].offset;
    let (f0, f1) = (first(&a, p0), first(&a, p1));
    expect_conflict(
        "a commits a partition of a topic it did not subscribe to",
        a.commit(&[OffsetCommit {
            partition: TopicPartition::new(Topic::BookViews, 0),
            offset: 1,
            metadata: String::new(),
        }])
        .await,
    )?;
    expect_conflict(
        "a commits an owned and a foreign partition together",
        a.commit(&[
            OffsetCommit {
                partition: p0,
                offset: f0 + 2,
                metadata: "refused".into(),
            },
            OffsetCommit {
                partition: TopicPartition::new(Topic::BookReviews, 1),
                offset: 1,
                metadata: String::new(),
            },
        ])
        .await,
    )?;
    a.commit(&[OffsetCommit {
        partition: p1,
        offset: f1 + 3,
        metadata: "kept".into(),
    }])
    .await
    .context("a commits an owned partition")?;
    a.leave().await?;

    let mut b = Member::join(bus, "b", group, &[topic]).await?;
    b.poll_until(WITHIN, "b owns both partitions", |m| m.owned.len() == 2)
        .await?;
    let c0 = b.assignment(p0).and_then(|a| a.committed.clone());
    ensure!(c0.is_none(), "the refused commit stored nothing: {c0:?}");
    let c1 = b.assignment(p1).and_then(|a| a.committed.clone());
    ensure!(
        c1 == Some(Committed {
            offset: f1 + 3,
            metadata: "kept".into()
        }),
        "the accepted commit was kept: {c1:?}"
    );
    b.leave().await
}
