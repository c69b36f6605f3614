use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use folio_domain::partitioner::partition_for_key;
use folio_domain::ports::{
    Assignment, Committed, ConsumerEvent, GroupConsumer, Header, MessageBus, OffsetCommit,
    OutgoingRecord, PartitionLag, PartitionOffsets, Record, RecordBatch, RecordPublisher,
};
use folio_domain::topics::{Topic, TopicPartition};
use folio_domain::{Error, Result};
use tokio::sync::Notify;

/// Sizes of the in-process bus.
#[derive(Debug, Clone, Copy)]
pub struct BusLimits {
    /// Records kept per partition; older ones are dropped (the log start moves on), so the
    /// embedded mode's memory stays bounded however long it runs.
    pub retained_per_partition: usize,
    /// Records handed out in one batch.
    pub max_batch: usize,
}

impl Default for BusLimits {
    fn default() -> Self {
        BusLimits {
            retained_per_partition: 200_000,
            max_batch: 5_000,
        }
    }
}

struct PartitionLog {
    start_offset: i64,
    records: VecDeque<Record>,
}

impl PartitionLog {
    fn end_offset(&self) -> i64 {
        self.start_offset + self.records.len() as i64
    }
}

#[derive(Default)]
struct Group {
    /// member id -> subscribed topics
    members: BTreeMap<u64, Vec<Topic>>,
    committed: HashMap<TopicPartition, Committed>,
}

struct State {
    logs: HashMap<TopicPartition, PartitionLog>,
    groups: HashMap<String, Group>,
    next_member: u64,
    start_ms: i64,
}

/// The in-process event bus: Kafka's model (topics, partitions, offsets, consumer groups,
/// committed offsets with metadata) without a broker. Partition counts come from the topic
/// catalog; keys go through Kafka's partitioner like on a real broker.
#[derive(Clone)]
pub struct MemoryBus {
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
    limits: BusLimits,
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::with_limits(BusLimits::default())
    }

    pub fn with_limits(limits: BusLimits) -> Self {
        // Offsets start past any earlier process's: aggregates are keyed by the offsets
        // they cover, and a restarted in-process bus must not reuse them.
        let base = chrono::Utc::now().timestamp_millis().max(0) * 1_000_000;
        let mut logs = HashMap::new();
        for t in Topic::ALL {
            for p in 0..t.partitions() {
                logs.insert(
                    TopicPartition::new(t, p),
                    PartitionLog {
                        start_offset: base,
                        records: VecDeque::new(),
                    },
                );
            }
        }
        MemoryBus {
            state: Arc::new(Mutex::new(State {
                logs,
                groups: HashMap::new(),
                next_member: 1,
                start_ms: chrono::Utc::now().timestamp_millis(),
            })),
            notify: Arc::new(Notify::new()),
            limits,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a record to an explicit partition (tests use it to plant poison records).
    pub fn append(&self, tp: TopicPartition, key: Option<Vec<u8>>, value: Vec<u8>) -> Result<i64> {
        self.push(tp, key, value, Vec::new())
    }

    fn push(
        &self,
        tp: TopicPartition,
        key: Option<Vec<u8>>,
        value: Vec<u8>,
        headers: Vec<Header>,
    ) -> Result<i64> {
        let offset = {
            let mut st = self.lock();
            let now = st.start_ms.max(chrono::Utc::now().timestamp_millis());
            let log = st
                .logs
                .get_mut(&tp)
                .ok_or_else(|| Error::invalid(format!("no partition {tp}")))?;
            let offset = log.end_offset();
            log.records.push_back(Record {
                offset,
                key,
                value,
                headers,
                timestamp_ms: now,
            });
            while log.records.len() > self.limits.retained_per_partition {
                log.records.pop_front();
                log.start_offset += 1;
            }
            offset
        };
        self.notify.notify_waiters();
        Ok(offset)
    }

    /// Every record currently held for a partition (tests read `analytics.dlq` with it).
    pub fn records(&self, tp: TopicPartition) -> Vec<Record> {
        self.lock()
            .logs
            .get(&tp)
            .map(|l| l.records.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The group's committed position for a partition.
    pub fn committed(&self, group: &str, tp: TopicPartition) -> Option<Committed> {
        self.lock().groups.get(group)?.committed.get(&tp).cloned()
    }

    /// Joins `group` as a new member subscribed to `topics`. Partitions are spread over the
    /// members in join order; members see the change at their next poll.
    pub fn consumer(&self, group: &str, topics: &[Topic]) -> MemoryConsumer {
        let id = {
            let mut st = self.lock();
            let id = st.next_member;
            st.next_member += 1;
            st.groups
                .entry(group.to_string())
                .or_default()
                .members
                .insert(id, topics.to_vec());
            id
        };
        self.notify.notify_waiters();
        MemoryConsumer {
            bus: self.clone(),
            group: group.to_string(),
            member: id,
            owned: BTreeSet::new(),
            positions: HashMap::new(),
            next_partition: 0,
            left: false,
        }
    }

    fn target_assignment(st: &State, group: &str, member: u64) -> BTreeSet<TopicPartition> {
        let Some(g) = st.groups.get(group) else {
            return BTreeSet::new();
        };
        let mut out = BTreeSet::new();
        let mut partitions: Vec<TopicPartition> = Vec::new();
        let topics: BTreeSet<Topic> = g.members.values().flatten().copied().collect();
        for t in topics {
            for p in 0..t.partitions() {
                partitions.push(TopicPartition::new(t, p));
            }
        }
        // Round-robin over the members subscribed to each partition's topic.
        for (i, tp) in partitions.iter().enumerate() {
            let subs: Vec<u64> = g
                .members
                .iter()
                .filter(|(_, ts)| ts.contains(&tp.topic))
                .map(|(id, _)| *id)
                .collect();
            if !subs.is_empty() && subs[i % subs.len()] == member {
                out.insert(*tp);
            }
        }
        out
    }
}

#[async_trait]
impl RecordPublisher for MemoryBus {
    async fn send(&self, record: OutgoingRecord) -> Result<()> {
        let p = partition_for_key(&record.key, record.topic.partitions());
        let tp = TopicPartition::new(record.topic, p);
        self.push(tp, Some(record.key), record.value, record.headers)
            .map(|_| ())
    }

    /// Records are in the log as soon as `send` returns.
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl MessageBus for MemoryBus {
    fn publisher(&self) -> Arc<dyn RecordPublisher> {
        Arc::new(self.clone())
    }

    async fn join(&self, group: &str, topics: &[Topic]) -> Result<Box<dyn GroupConsumer>> {
        Ok(Box::new(self.consumer(group, topics)))
    }

    async fn provision(&self) -> Result<()> {
        Ok(())
    }

    /// Every partition of `topics`, in the order given, from the logs and commits held.
    async fn group_offsets(
        &self,
        group: &str,
        topics: &[Topic],
    ) -> Result<Option<Vec<PartitionOffsets>>> {
        let st = self.lock();
        let committed = st.groups.get(group).map(|g| &g.committed);
        Ok(Some(
            topics
                .iter()
                .flat_map(|t| (0..t.partitions()).map(|p| TopicPartition::new(*t, p)))
                .filter_map(|tp| {
                    let log = st.logs.get(&tp)?;
                    Some(PartitionOffsets {
                        partition: tp,
                        committed: committed.and_then(|c| c.get(&tp)).cloned(),
                        log_start: log.start_offset,
                        high_watermark: log.end_offset(),
                    })
                })
                .collect(),
        ))
    }

    /// Per group and partition with a commit: records past the committed offset.
    fn consumer_lag(&self) -> Vec<PartitionLag> {
        let st = self.lock();
        let mut out: Vec<PartitionLag> = st
            .groups
            .iter()
            .flat_map(|(group, g)| {
                g.committed.iter().filter_map(|(tp, c)| {
                    let log = st.logs.get(tp)?;
                    Some(PartitionLag {
                        group: group.clone(),
                        partition: *tp,
                        lag: (log.end_offset() - c.offset.max(log.start_offset)).max(0),
                    })
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.group, a.partition).cmp(&(&b.group, b.partition)));
        out
    }
}

/// One member of a consumer group on the [`MemoryBus`].
pub struct MemoryConsumer {
    bus: MemoryBus,
    group: String,
    member: u64,
    owned: BTreeSet<TopicPartition>,
    positions: HashMap<TopicPartition, i64>,
    next_partition: usize,
    left: bool,
}

impl MemoryConsumer {
    /// Assignment changes since the last poll, revocations first.
    fn rebalance(&mut self, st: &State) -> Option<ConsumerEvent> {
        let target = MemoryBus::target_assignment(st, &self.group, self.member);
        let revoked: Vec<TopicPartition> = self.owned.difference(&target).copied().collect();
        if !revoked.is_empty() {
            for tp in &revoked {
                self.owned.remove(tp);
                self.positions.remove(tp);
            }
            return Some(ConsumerEvent::Revoked(revoked));
        }
        let added: Vec<TopicPartition> = target.difference(&self.owned).copied().collect();
        if added.is_empty() {
            return None;
        }
        let committed = st.groups.get(&self.group).map(|g| &g.committed);
        let mut out = Vec::new();
        for tp in added {
            let c = committed.and_then(|c| c.get(&tp)).cloned();
            let start = st.logs.get(&tp).map_or(0, |l| l.start_offset);
            self.positions
                .insert(tp, c.as_ref().map_or(start, |c| c.offset.max(start)));
            self.owned.insert(tp);
            out.push(Assignment {
                partition: tp,
                committed: c,
            });
        }
        Some(ConsumerEvent::Assigned(out))
    }

    fn next_batch(&mut self, st: &State, max: usize) -> Option<RecordBatch> {
        let owned: Vec<TopicPartition> = self.owned.iter().copied().collect();
        let n = owned.len();
        for i in 0..n {
            let tp = owned[(self.next_partition + i) % n];
            let Some(log) = st.logs.get(&tp) else {
                continue;
            };
            let pos = self
                .positions
                .get(&tp)
                .copied()
                .unwrap_or(0)
                .max(log.start_offset);
            if pos >= log.end_offset() {
                continue;
            }
            let from = (pos - log.start_offset) as usize;
            let records: Vec<Record> = log.records.iter().skip(from).take(max).cloned().collect();
            let next = pos + records.len() as i64;
            self.positions.insert(tp, next);
            self.next_partition = (self.next_partition + i + 1) % n.max(1);
            return Some(RecordBatch {
                partition: tp,
                records,
                high_watermark: log.end_offset(),
            });
        }
        None
    }
}

#[async_trait]
impl GroupConsumer for MemoryConsumer {
    async fn poll(&mut self, max_wait: Duration) -> Result<ConsumerEvent> {
        if self.left {
            return Err(Error::Conflict("this member has left its group".into()));
        }
        let deadline = tokio::time::Instant::now() + max_wait;
        let notify = self.bus.notify.clone();
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let bus = self.bus.clone();
                let st = bus.lock();
                if let Some(ev) = self.rebalance(&st) {
                    return Ok(ev);
                }
                if let Some(b) = self.next_batch(&st, bus.limits.max_batch) {
                    return Ok(ConsumerEvent::Batch(b));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(ConsumerEvent::Idle);
            }
        }
    }

    async fn commit(&mut self, offsets: &[OffsetCommit]) -> Result<()> {
        let mut st = self.bus.lock();
        let target = MemoryBus::target_assignment(&st, &self.group, self.member);
        if let Some(c) = offsets.iter().find(|c| !target.contains(&c.partition)) {
            return Err(Error::Conflict(format!(
                "partition {} is not owned by this member",
                c.partition
            )));
        }
        let g = st.groups.entry(self.group.clone()).or_default();
        for c in offsets {
            g.committed.insert(
                c.partition,
                Committed {
                    offset: c.offset,
                    metadata: c.metadata.clone(),
                },
            );
        }
        Ok(())
    }

    async fn leave(&mut self) -> Result<()> {
        if !self.left {
            self.left = true;
            if let Some(g) = self.bus.lock().groups.get_mut(&self.group) {
                g.members.remove(&self.member);
            }
            self.bus.notify.notify_waiters();
        }
        Ok(())
    }

    async fn high_watermarks(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, i64)>> {
        let st = self.bus.lock();
        Ok(partitions
            .iter()
            .map(|tp| (*tp, st.logs.get(tp).map_or(0, PartitionLog::end_offset)))
            .collect())
    }
}

impl Drop for MemoryConsumer {
    /// A dropped member is gone at once, like a member whose session expired.
    fn drop(&mut self) {
        if !self.left {
            if let Some(g) = self.bus.lock().groups.get_mut(&self.group) {
                g.members.remove(&self.member);
            }
            self.bus.notify.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn group_offsets_report_each_partition_with_its_commit() -> Result<()> {
        let bus = MemoryBus::with_limits(BusLimits {
            retained_per_partition: 2,
            max_batch: 10,
        });
        let views = TopicPartition::new(Topic::BookViews, 0);
        let first = bus.append(views, None, b"a".to_vec())?;
        for v in [b"b", b"c"] {
            bus.append(views, None, v.to_vec())?;
        }
        let metadata = r#"{"v":4,"read":3}"#.to_string();
        bus.lock()
            .groups
            .entry("g".into())
            .or_default()
            .committed
            .insert(
                views,
                Committed {
                    offset: first + 1,
                    metadata: metadata.clone(),
                },
            );
        let answer = bus
            .group_offsets("g", &[Topic::BookViews])
            .await?
            .expect("the memory bus answers");
        assert_eq!(
            answer,
            (0..3)
                .map(|p| PartitionOffsets {
                    partition: TopicPartition::new(Topic::BookViews, p),
                    committed: (p == 0).then(|| Committed {
                        offset: first + 1,
                        metadata: metadata.clone(),
                    }),
                    // Partition 0 dropped its oldest record (two are kept).
                    log_start: if p == 0 { first + 1 } else { first },
                    high_watermark: if p == 0 { first + 3 } else { first },
                })
                .collect::<Vec<_>>()
        );
        let other = bus
            .group_offsets("other", &Topic::EVENTS)
            .await?
            .expect("answers");
        assert_eq!(other.len(), 12);
        assert!(other.iter().all(|p| p.committed.is_none()));
        Ok(())
    }
}
