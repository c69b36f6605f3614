//! [`KafkaPublisher`]: the `RecordPublisher` port over rskafka, batching per partition.
//!
//! `send` picks the partition with Kafka's default partitioner over the topic's real
//! partition count, takes a permit from a bounded budget of in-flight records (waiting, up
//! to `send_deadline`, when it is spent) and hands the record to that partition's lane. A
//! lane is a task that gathers records for up to `linger` or `max_batch_bytes`, produces them
//! as one batch (acks=all: rskafka always sends acks=-1) and returns the permits. One batch
//! per partition is in flight at a time, which keeps records of a partition in order. A
//! flush marker travels down every lane behind the records sent before it.
//!
//! `deliver` goes the same way, but each record carries a [`Tracker`] of its call, so the
//! caller learns which records failed instead of a count: what a failed batch held is
//! handed back rather than dropped.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use folio_domain::partitioner::partition_for_key;
use folio_domain::ports::{OutgoingRecord, RecordPublisher};
use folio_domain::topics::Topic;
use folio_domain::{Error, Result};
use rskafka::chrono::Utc;
use rskafka::client::partition::PartitionClient;
use rskafka::record::Record as RsRecord;
use tokio::sync::{mpsc, oneshot, Notify, RwLock, Semaphore};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::cluster::Cluster;
use crate::errors::{from_rskafka, unavailable};

/// Counters of a publisher, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Records accepted by `send`.
    pub sent: u64,
    /// Records the broker acknowledged.
    pub acked: u64,
    /// Records that could not be delivered.
    pub failed: u64,
    /// Records buffered or awaiting acknowledgement.
    pub in_flight: u64,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    failed: AtomicU64,
}

enum LaneMsg {
    /// A record, its size, and the `deliver` call it belongs to with its index there.
    Record(RsRecord, usize, Option<(Arc<Tracker>, usize)>),
    Flush(oneshot::Sender<()>),
}

/// The outcome of one `deliver` call, filled in by the lanes as its batches settle.
struct Tracker {
    remaining: AtomicU64,
    failed: std::sync::Mutex<Vec<usize>>,
    done: Notify,
}

impl Tracker {
    fn new(records: usize) -> Arc<Self> {
        Arc::new(Tracker {
            remaining: AtomicU64::new(records as u64),
            failed: std::sync::Mutex::new(Vec::new()),
            done: Notify::new(),
        })
    }

    /// Settles `n` records of the call, of which `failed` failed.
    fn settle(&self, failed: impl IntoIterator<Item = usize>, n: u64) {
        let mut failed = failed.into_iter().peekable();
        if failed.peek().is_some() {
            if let Ok(mut f) = self.failed.lock() {
                f.extend(failed);
            }
        }
        if n > 0 && self.remaining.fetch_sub(n, Ordering::AcqRel) == n {
            // `notify_one` keeps a permit, so a waiter that arrives later still wakes.
            self.done.notify_one();
        }
    }

    async fn wait(&self) -> Vec<usize> {
        while self.remaining.load(Ordering::Acquire) > 0 {
            self.done.notified().await;
        }
        let mut failed = self.failed.lock().map(|f| f.clone()).unwrap_or_default();
        failed.sort_unstable();
        failed
    }
}

/// The sending side of one partition's lane.
struct Lane {
    tx: mpsc::UnboundedSender<LaneMsg>,
    /// Bytes sent down the lane and not yet taken into a batch.
    queued: AtomicUsize,
    /// Cuts the lane's linger short: a batch's worth is queued, or a flush is.
    hurry: Notify,
}

impl Lane {
    fn send(&self, m: LaneMsg, max_batch_bytes: usize) -> std::result::Result<(), ()> {
        let (size, flush) = match &m {
            LaneMsg::Record(_, size, _) => (*size, false),
            LaneMsg::Flush(_) => (0, true),
        };
        // Counted before it is queued, so the lane never takes more than was counted.
        let before = self.queued.fetch_add(size, Ordering::AcqRel);
        if self.tx.send(m).is_err() {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            return Err(());
        }
        if flush || (before < max_batch_bytes && before + size >= max_batch_bytes) {
            self.hurry.notify_one();
        }
        Ok(())
    }
}

/// One lane per partition of a topic, indexed by partition.
type Lanes = Arc<Vec<Arc<Lane>>>;

/// A topic's lanes, and when its partition count was last asked.
struct TopicLanes {
    lanes: Lanes,
    checked: Instant,
}

struct Shared {
    cluster: Cluster,
    permits: Arc<Semaphore>,
    counters: Counters,
}

/// The Kafka publisher. See the module docs. Cheap to clone; clones share buffers.
#[derive(Clone)]
pub struct KafkaPublisher {
    shared: Arc<Shared>,
    lanes: Arc<RwLock<HashMap<Topic, TopicLanes>>>,
    /// A background check of the partition counts runs.
    recounting: Arc<AtomicBool>,
    /// Failures already reported by a flush.
    reported_failures: Arc<AtomicU64>,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl KafkaPublisher {
    pub(crate) fn new(cluster: Cluster) -> Self {
        let permits = Arc::new(Semaphore::new(cluster.cfg.max_in_flight_records.max(1)));
        KafkaPublisher {
            shared: Arc::new(Shared {
                cluster,
                permits,
                counters: Counters::default(),
            }),
            lanes: Arc::new(RwLock::new(HashMap::new())),
            recounting: Arc::new(AtomicBool::new(false)),
            reported_failures: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn stats(&self) -> PublisherStats {
        let c = &self.shared.counters;
        let sent = c.sent.load(Ordering::Relaxed);
        let acked = c.acked.load(Ordering::Relaxed);
        let failed = c.failed.load(Ordering::Relaxed);
        PublisherStats {
            sent,
            acked,
            failed,
            in_flight: sent.saturating_sub(acked + failed),
        }
    }

    async fn lanes_of(&self, topic: Topic) -> Result<Lanes> {
        if let Some(l) = self.lanes.read().await.get(&topic) {
            if l.checked.elapsed() >= self.shared.cluster.cfg.metadata_refresh {
                self.recount_in_background();
            }
            return Ok(l.lanes.clone());
        }
        let mut lanes = self.lanes.write().await;
        if let Some(l) = lanes.get(&topic) {
            return Ok(l.lanes.clone());
        }
        let name = self.shared.cluster.cfg.topic_name(topic);
        let count = self
            .shared
            .cluster
            .partition_counts()
            .await?
            .get(&name)
            .copied()
            .ok_or_else(|| {
                Error::Internal(format!(
                    "kafka topic {name} does not exist; provision topics first"
                ))
            })?;
        let senders: Vec<_> = (0..count).map(|p| self.start_lane(&name, p)).collect();
        debug!(topic = %name, partitions = count, "publishing lanes started");
        let senders = Arc::new(senders);
        lanes.insert(
            topic,
            TopicLanes {
                lanes: senders.clone(),
                checked: Instant::now(),
            },
        );
        Ok(senders)
    }

    fn start_lane(&self, name: &str, partition: i32) -> Arc<Lane> {
        let (tx, rx) = mpsc::unbounded_channel();
        let lane = Arc::new(Lane {
            tx,
            queued: AtomicUsize::new(0),
            hurry: Notify::new(),
        });
        tokio::spawn(run_lane(
            self.shared.clone(),
            name.to_string(),
            partition,
            lane.clone(),
            rx,
        ));
        lane
    }

    /// Asks the brokers for the partition counts of the topics this publisher uses, and
    /// gives a topic that has grown a lane for each new partition, so records are
    /// partitioned over the new count from then on (as a Java producer does once its
    /// metadata shows the new partitions). A count never shrinks in Kafka.
    fn recount_in_background(&self) {
        if self.recounting.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let counts = this.shared.cluster.partition_counts().await;
            let mut lanes = this.lanes.write().await;
            for (topic, entry) in lanes.iter_mut() {
                entry.checked = Instant::now();
                let name = this.shared.cluster.cfg.topic_name(*topic);
                let Some(&now) = counts.as_ref().ok().and_then(|c| c.get(&name)) else {
                    continue;
                };
                let before = entry.lanes.len() as i32;
                if now > before {
                    let mut grown: Vec<_> = entry.lanes.iter().cloned().collect();
                    grown.extend((before..now).map(|p| this.start_lane(&name, p)));
                    entry.lanes = Arc::new(grown);
                    info!(topic = %name, before, now, "topic has more partitions; publishing over all of them");
                }
            }
            drop(lanes);
            if let Err(e) = counts {
                debug!(error = %e, "partition counts not refreshed");
            }
            this.recounting.store(false, Ordering::Release);
        });
    }
}

impl KafkaPublisher {
    /// Takes a permit and hands the record to its partition's lane.
    async fn enqueue(
        &self,
        record: OutgoingRecord,
        track: Option<(Arc<Tracker>, usize)>,
    ) -> Result<()> {
        let deadline = self.shared.cluster.cfg.send_deadline;
        // A permit at hand needs no timer; only a spent budget waits, up to the deadline.
        let permit = match self.shared.permits.try_acquire() {
            Ok(permit) => permit,
            Err(_) => tokio::time::timeout(deadline, self.shared.permits.acquire())
                .await
                .map_err(|_| unavailable(format!("publish buffer full for {deadline:?}")))?
                .map_err(|_| Error::Internal("kafka publisher closed".into()))?,
        };
        let lanes = self.lanes_of(record.topic).await?;
        let p = partition_for_key(&record.key, lanes.len() as i32);
        let size = record.key.len()
            + record.value.len()
            + record
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        let rs = RsRecord {
            key: Some(record.key),
            value: Some(record.value),
            headers: record.headers.into_iter().collect::<BTreeMap<_, _>>(),
            timestamp: Utc::now(),
        };
        let lane = lanes
            .get(p as usize)
            .ok_or_else(|| Error::Internal(format!("no lane for partition {p}")))?;
        lane.send(
            LaneMsg::Record(rs, size, track),
            self.shared.cluster.cfg.max_batch_bytes,
        )
        .map_err(|_| Error::Internal("kafka publisher lane stopped".into()))?;
        // The lane returns the permit once the record is acknowledged or has failed.
        permit.forget();
        self.shared.counters.sent.fetch_add(1, Ordering::Relaxed);
        self.shared
            .cluster
            .observed
            .sent
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[async_trait]
impl RecordPublisher for KafkaPublisher {
    async fn send(&self, record: OutgoingRecord) -> Result<()> {
        self.enqueue(record, None).await
    }

    async fn deliver(&self, records: Vec<OutgoingRecord>) -> Vec<usize> {
        let n = records.len();
        let tracker = Tracker::new(n);
        for (i, r) in records.into_iter().enumerate() {
            if let Err(e) = self.enqueue(r, Some((tracker.clone(), i))).await {
                debug!(error = %e, "deliver: records not handed to a lane");
                // This one and the rest never reached a lane: they failed here.
                tracker.settle(i..n, (n - i) as u64);
                break;
            }
        }
        tracker.wait().await
    }

    async fn flush(&self) -> Result<()> {
        let all: Vec<Lanes> = self
            .lanes
            .read()
            .await
            .values()
            .map(|l| l.lanes.clone())
            .collect();
        let mut waits = Vec::new();
        for lanes in &all {
            for lane in lanes.iter() {
                let (tx, rx) = oneshot::channel();
                if lane
                    .send(LaneMsg::Flush(tx), self.shared.cluster.cfg.max_batch_bytes)
                    .is_ok()
                {
                    waits.push(rx);
                }
            }
        }
        for w in waits {
            // A lane that stopped has failed its records already; the count below tells.
            let _ = w.await;
        }
        let failed = self.shared.counters.failed.load(Ordering::Relaxed);
        let before = self.reported_failures.swap(failed, Ordering::Relaxed);
        if failed > before {
            return Err(unavailable(format!(
                "{} record(s) could not be delivered since the last flush",
                failed - before
            )));
        }
        Ok(())
    }
}

/// One partition's lane: gathers a batch, produces it, repeats. Ends when the publisher
/// (every sender) is gone and the channel is drained.
///
/// While it gathers it sleeps out the linger instead of waking for every record: senders
/// only queue, and wake it early when a batch's worth is queued or a flush is
/// ([`Lane::send`]). So a busy lane wakes about once per batch, not once per record.
async fn run_lane(
    shared: Arc<Shared>,
    topic: String,
    partition: i32,
    lane: Arc<Lane>,
    mut rx: mpsc::UnboundedReceiver<LaneMsg>,
) {
    let cfg = shared.cluster.cfg.clone();
    let mut client: Option<PartitionClient> = None;
    let mut batch: Vec<RsRecord> = Vec::new();
    let mut tracks: Vec<Option<(Arc<Tracker>, usize)>> = Vec::new();
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut bytes = take(first, &lane, &mut batch, &mut tracks, &mut waiters);
        let until = Instant::now() + cfg.linger;
        let mut closed = false;
        // Gather: whatever is queued now, then more until linger ends, the batch is full,
        // or someone flushes.
        loop {
            while bytes < cfg.max_batch_bytes {
                match rx.try_recv() {
                    Ok(m) => bytes += take(m, &lane, &mut batch, &mut tracks, &mut waiters),
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                }
            }
            let done = closed
                || bytes >= cfg.max_batch_bytes
                || !waiters.is_empty()
                || batch.is_empty()
                || Instant::now() >= until;
            if done {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = lane.hurry.notified() => {}
            }
        }
        if !batch.is_empty() {
            let n = batch.len();
            let result = produce(
                &shared,
                &mut client,
                &topic,
                partition,
                std::mem::take(&mut batch),
            )
            .await;
            let ok = result.is_ok();
            match result {
                Ok(()) => {
                    shared.counters.acked.fetch_add(n as u64, Ordering::Relaxed);
                    let observed = &shared.cluster.observed;
                    observed.acked.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    let returned = tracks.iter().filter(|t| t.is_some()).count();
                    warn!(%topic, partition, records = n, returned, error = %e,
                        "produce failed; records handed back to their deliver calls are retried by their owners, the rest are lost to their senders' next flush");
                    shared.cluster.leaders_in_doubt("a produce failed");
                    shared
                        .counters
                        .failed
                        .fetch_add(n as u64, Ordering::Relaxed);
                    let observed = &shared.cluster.observed;
                    observed.failed.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            shared.permits.add_permits(n);
            for (tracker, index) in tracks.drain(..).flatten() {
                let failed = if ok { None } else { Some(index) };
                tracker.settle(failed, 1);
            }
        }
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
        if closed {
            break;
        }
    }
}

/// Adds a message to the batch being gathered; returns the bytes it adds.
fn take(
    m: LaneMsg,
    lane: &Lane,
    batch: &mut Vec<RsRecord>,
    tracks: &mut Vec<Option<(Arc<Tracker>, usize)>>,
    waiters: &mut Vec<oneshot::Sender<()>>,
) -> usize {
    match m {
        LaneMsg::Record(r, size, track) => {
            lane.queued.fetch_sub(size, Ordering::AcqRel);
            batch.push(r);
            tracks.push(track);
            // Per-record framing overhead, roughly.
            size + 16
        }
        LaneMsg::Flush(w) => {
            waiters.push(w);
            0
        }
    }
}

async fn produce(
    shared: &Shared,
    client: &mut Option<PartitionClient>,
    topic: &str,
    partition: i32,
    records: Vec<RsRecord>,
) -> Result<()> {
    let cfg = &shared.cluster.cfg;
    if client.is_none() {
        let c = shared
            .cluster
            .partition_client(topic.to_string(), partition)
            .await?;
        *client = Some(c);
    }
    let Some(c) = client.as_ref() else {
        return Err(Error::Internal("partition client missing".into()));
    };
    // rskafka bounds its own retries by the backoff deadline; this bounds one attempt that
    // hangs.
    match tokio::time::timeout(
        cfg.request_deadline * 2,
        c.produce(records, cfg.compression),
    )
    .await
    {
        Ok(Ok(_offsets)) => Ok(()),
        Ok(Err(e)) => Err(from_rskafka("produce", e)),
        Err(_) => {
            *client = None;
            Err(unavailable(format!(
                "produce to {topic}/{partition} timed out"
            )))
        }
    }
}
