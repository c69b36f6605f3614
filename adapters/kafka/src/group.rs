//! [`KafkaGroupConsumer`]: the `GroupConsumer` port with Kafka's consumer group protocol
//! (KIP-848: `ConsumerGroupHeartbeat`, assignment computed by the broker) plus
//! `OffsetFetch`/`OffsetCommit`, over folio's own connections (the `wire` module).
//!
//! Three kinds of task cooperate:
//! - **the heartbeat task** owns a connection to the group coordinator. It joins (member
//!   epoch 0), then heartbeats every interval the broker asks for, always telling the
//!   broker which partitions the worker has taken. It records the broker's target
//!   assignment and epoch in the shared membership state, and it is woken early when the
//!   owned set changes so acknowledgements reach the broker at once. Fenced or unknown, it marks the
//!   member lost and waits until `poll` has revoked everything before joining again.
//! - **`poll`** reconciles: partitions owned but no longer in the target are revoked
//!   (fetchers stopped, `Revoked` returned, the reduced set acknowledged by the next
//!   heartbeat only then); new partitions get their committed offsets (`OffsetFetch`) and a
//!   fetcher, and come back as `Assigned`. Otherwise it hands out fetched batches.
//! - **a fetcher per owned partition** reads with rskafka from the committed offset (or the
//!   earliest one) in large fetches and feeds a bounded channel, so `poll` returns quickly
//!   and the broker is read ahead while the worker is busy.
//!
//! Commits are checked locally first: a partition the member does not own is a `Conflict`
//! and nothing is sent. Dropping the consumer stops every task without leaving, as a crash
//! would: the broker moves the partitions after its session timeout.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use folio_domain::ports::{
    Assignment, Committed, ConsumerEvent, GroupConsumer, OffsetCommit, Record, RecordBatch,
};
use folio_domain::topics::{Topic, TopicPartition};
use folio_domain::{Error, Result};
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions as HeartbeatPartitions;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, GroupId, OffsetCommitRequest,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rskafka::client::error::{Error as RsError, ProtocolError};
use rskafka::client::partition::{OffsetAt, PartitionClient};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, instrument, warn};
use uuid::Uuid;

use crate::classic;
use crate::cluster::{Backoff, Cluster};
use crate::config::{GroupProtocol, KafkaConfig};
use crate::errors::{from_rskafka, unavailable};
use crate::membership::{
    error_name, lose, MemberState, Membership, COORDINATOR_LOAD_IN_PROGRESS,
    COORDINATOR_NOT_AVAILABLE, FENCED_MEMBER_EPOCH, ILLEGAL_GENERATION, NOT_COORDINATOR,
    REBALANCE_IN_PROGRESS, REQUEST_TIMED_OUT, UNKNOWN_MEMBER_ID, UNSUPPORTED_VERSION,
};
use crate::offsets::{self, retry_kind, Asker, Retry};
use crate::wire::{BrokerConnection, ConnectSettings, WireError};

struct FetchState {
    caught_up: AtomicBool,
    error: Mutex<Option<String>>,
    /// High watermark minus position, from the last fetch response (−1 before the first).
    lag: Arc<AtomicI64>,
}

impl FetchState {
    fn set_error(&self, e: Option<String>) {
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

struct Fetcher {
    generation: u64,
    task: JoinHandle<()>,
    state: Arc<FetchState>,
    /// Its slot in the cluster's lag report, removed when the fetcher goes.
    slot: u64,
    cluster: Cluster,
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.task.abort();
        self.cluster.observed.forget(self.slot);
    }
}

struct Fetched {
    generation: u64,
    batch: RecordBatch,
}

/// A member of a consumer group. See the module docs.
pub struct KafkaGroupConsumer {
    cluster: Cluster,
    membership: Arc<Membership>,
    heartbeat: JoinHandle<()>,
    batches_tx: mpsc::Sender<Fetched>,
    batches: mpsc::Receiver<Fetched>,
    fetchers: HashMap<TopicPartition, Fetcher>,
    next_generation: u64,
    offsets: Option<BrokerConnection>,
    settings: ConnectSettings,
    left: bool,
    /// Partition clients for `high_watermarks`, by partition.
    watermarks: HashMap<TopicPartition, Arc<PartitionClient>>,
}

impl std::fmt::Debug for KafkaGroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaGroupConsumer")
            .field("group", &self.membership.group)
            .field("member_id", &self.member_id())
            .finish_non_exhaustive()
    }
}

impl Drop for KafkaGroupConsumer {
    fn drop(&mut self) {
        self.heartbeat.abort();
        for f in self.fetchers.values() {
            f.task.abort();
        }
    }
}

impl KafkaGroupConsumer {
    /// Connects to the group's coordinator (failing fast if the broker lacks the consumer
    /// group protocol) and starts joining in the background.
    #[instrument(skip(cluster))]
    pub(crate) async fn join(cluster: Cluster, group: &str, topics: &[Topic]) -> Result<Self> {
        let settings = cluster.settings();
        let conn = cluster
            .coordinator(group)
            .await
            .map_err(WireError::into_domain)?;
        let advertised = conn.version::<ConsumerGroupHeartbeatRequest>();
        let membership = Arc::new(Membership::new(group, Uuid::now_v7().to_string()));
        let mut subscribed: Vec<Topic> = topics.to_vec();
        subscribed.sort();
        subscribed.dedup();
        let protocol = cluster.cfg.group_protocol;
        let heartbeat = match (protocol, advertised) {
            (GroupProtocol::Consumer, Err(e)) => {
                return Err(Error::Internal(format!(
                    "kafka: the broker does not offer the consumer group protocol (KIP-848, Kafka 4.0+): {e}; KAFKA_GROUP_PROTOCOL=classic or auto uses the classic protocol"
                )));
            }
            (GroupProtocol::Classic, _) => {
                info!(
                    group,
                    protocol = "classic",
                    "group protocol: classic, as KAFKA_GROUP_PROTOCOL=classic says"
                );
                tokio::spawn(classic::member_loop(
                    cluster.clone(),
                    membership.clone(),
                    subscribed,
                    conn,
                ))
            }
            (GroupProtocol::Auto, Err(e)) => {
                info!(group, protocol = "classic", reason = %e, "group protocol: classic, as the broker does not advertise ConsumerGroupHeartbeat (KIP-848)");
                tokio::spawn(classic::member_loop(
                    cluster.clone(),
                    membership.clone(),
                    subscribed,
                    conn,
                ))
            }
            (_, Ok(version)) => {
                let auto = protocol == GroupProtocol::Auto;
                if !auto {
                    info!(
                        group,
                        protocol = "consumer",
                        "group protocol: KIP-848, as KAFKA_GROUP_PROTOCOL=consumer says"
                    );
                }
                let (c, m) = (cluster.clone(), membership.clone());
                tokio::spawn(async move {
                    if let Some(conn) =
                        heartbeat_loop(c.clone(), m.clone(), subscribed.clone(), conn, auto).await
                    {
                        info!(group = %m.group, protocol = "classic", "group protocol: classic, as the broker advertises ConsumerGroupHeartbeat v{version} but refused the first heartbeat with UNSUPPORTED_VERSION (KIP-848 switched off)");
                        classic::member_loop(c, m, subscribed, conn).await;
                    }
                })
            }
        };
        let (batches_tx, batches) = mpsc::channel(cluster.cfg.fetch_queue.max(1));
        Ok(KafkaGroupConsumer {
            cluster,
            membership,
            heartbeat,
            batches_tx,
            batches,
            fetchers: HashMap::new(),
            next_generation: 0,
            offsets: None,
            settings,
            left: false,
            watermarks: HashMap::new(),
        })
    }

    pub fn group(&self) -> &str {
        &self.membership.group
    }

    pub fn member_id(&self) -> String {
        self.membership.lock().member_id.clone()
    }

    /// The member epoch last granted by the coordinator (0 before joining).
    pub fn member_epoch(&self) -> i32 {
        self.membership.lock().epoch
    }

    /// The partitions the worker has been given and not had revoked.
    pub fn owned(&self) -> Vec<TopicPartition> {
        self.membership.lock().owned.iter().copied().collect()
    }

    /// Withholds (or resumes) heartbeats while everything else goes on, so tests can make
    /// the coordinator fence a live member. Not for production use.
    #[doc(hidden)]
    pub fn pause_heartbeats(&self, paused: bool) {
        self.membership.paused.store(paused, Ordering::SeqCst);
        self.membership.wake.notify_one();
    }

    fn stop_fetchers(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            if let Some(f) = self.fetchers.remove(tp) {
                f.task.abort();
            }
        }
    }

    /// Turns membership changes into at most one event.
    async fn reconcile(&mut self) -> Result<Option<ConsumerEvent>> {
        let added = {
            let mut st = self.membership.lock();
            if let Some(f) = &st.fatal {
                return Err(Error::Internal(format!(
                    "kafka group {}: {f}",
                    self.membership.group
                )));
            }
            if st.lost {
                st.lost = false;
                let revoked: Vec<TopicPartition> =
                    std::mem::take(&mut st.owned).into_iter().collect();
                drop(st);
                self.stop_fetchers(&revoked);
                self.membership.wake.notify_one();
                return Ok((!revoked.is_empty()).then_some(ConsumerEvent::Revoked(revoked)));
            }
            let Some(target) = st.target.as_ref() else {
                return Ok(None);
            };
            let revoked: Vec<TopicPartition> = st.owned.difference(target).copied().collect();
            if !revoked.is_empty() {
                for tp in &revoked {
                    st.owned.remove(tp);
                }
                drop(st);
                self.stop_fetchers(&revoked);
                // Acknowledge the revocation now that the worker will see it.
                self.membership.wake.notify_one();
                return Ok(Some(ConsumerEvent::Revoked(revoked)));
            }
            let added: Vec<TopicPartition> = target.difference(&st.owned).copied().collect();
            added
        };
        if added.is_empty() {
            return Ok(None);
        }
        let committed = self.fetch_committed(&added).await?;
        let added: Vec<TopicPartition> = {
            let mut st = self.membership.lock();
            if st.lost {
                return Ok(None);
            }
            let still: Vec<TopicPartition> = added
                .into_iter()
                .filter(|tp| st.target.as_ref().is_some_and(|t| t.contains(tp)))
                .collect();
            st.owned.extend(still.iter().copied());
            still
        };
        if added.is_empty() {
            return Ok(None);
        }
        let mut assignments = Vec::with_capacity(added.len());
        for tp in added {
            let c = committed.get(&tp).cloned();
            self.start_fetcher(tp, c.as_ref().map(|c| c.offset));
            assignments.push(Assignment {
                partition: tp,
                committed: c,
            });
        }
        self.membership.wake.notify_one();
        Ok(Some(ConsumerEvent::Assigned(assignments)))
    }

    fn start_fetcher(&mut self, tp: TopicPartition, start: Option<i64>) {
        self.next_generation += 1;
        let (slot, lag) = self
            .cluster
            .observed
            .register_fetcher(&self.membership.group, tp);
        let state = Arc::new(FetchState {
            caught_up: AtomicBool::new(false),
            error: Mutex::new(None),
            lag,
        });
        let task = tokio::spawn(run_fetcher(
            self.cluster.clone(),
            tp,
            start,
            self.next_generation,
            self.batches_tx.clone(),
            state.clone(),
        ));
        if let Some(old) = self.fetchers.insert(
            tp,
            Fetcher {
                generation: self.next_generation,
                task,
                state,
                slot,
                cluster: self.cluster.clone(),
            },
        ) {
            old.task.abort();
        }
    }

    fn is_current(&self, f: &Fetched) -> bool {
        self.fetchers
            .get(&f.batch.partition)
            .is_some_and(|x| x.generation == f.generation)
    }

    /// A connection to the coordinator for offset requests.
    async fn offsets_conn(&mut self) -> Result<&mut BrokerConnection> {
        if self.offsets.as_ref().is_none_or(|c| c.is_broken()) {
            self.offsets = None;
            let c = self
                .cluster
                .coordinator(&self.membership.group)
                .await
                .map_err(WireError::into_domain)?;
            self.offsets = Some(c);
        }
        self.offsets
            .as_mut()
            .ok_or_else(|| Error::Internal("kafka: coordinator connection missing".into()))
    }

    /// Committed offsets (and their metadata) of `partitions`, where the group has some.
    async fn fetch_committed(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, Committed>> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            // A classic group checks no member on fetches; KIP-848 checks the epoch.
            let asker = {
                let st = self.membership.lock();
                match st.classic {
                    Some(_) => Asker {
                        member_id: None,
                        epoch: -1,
                        require_stable: true,
                    },
                    None => Asker {
                        member_id: Some(st.member_id.clone()),
                        epoch: st.epoch,
                        require_stable: true,
                    },
                }
            };
            let req = offsets::fetch_request(
                &self.cluster.cfg,
                &self.membership.group,
                &asker,
                partitions,
            );
            let conn = self.offsets_conn().await?;
            offsets::require_v8(conn)?;
            let resp = match conn.request(&req).await {
                Ok(r) => r,
                Err(e) if e.is_connection() && attempt < 3 => {
                    self.offsets = None;
                    continue;
                }
                Err(e) => return Err(e.into_domain()),
            };
            match offsets::read_answer(&self.cluster.cfg, resp)? {
                (Retry::Ok, out) => return Ok(out),
                _ if attempt >= 10 => {
                    return Err(unavailable(
                        "OffsetFetch kept failing with retriable errors",
                    ))
                }
                (Retry::Reconnect, _) => self.offsets = None,
                _ => {}
            }
            self.wait_for_heartbeat(Duration::from_millis(200)).await;
        }
    }

    async fn wait_for_heartbeat(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.membership.changed.notified()).await;
    }
}

#[async_trait]
impl GroupConsumer for KafkaGroupConsumer {
    async fn poll(&mut self, max_wait: Duration) -> Result<ConsumerEvent> {
        if self.left {
            return Err(Error::Conflict(format!(
                "member of {} has left the group",
                self.membership.group
            )));
        }
        let deadline = Instant::now() + max_wait;
        // Past the deadline, wait a little longer for partitions still fetching, so `Idle`
        // means caught up.
        let hard = deadline + self.cluster.cfg.fetch_max_wait + Duration::from_millis(500);
        loop {
            if let Some(ev) = self.reconcile().await? {
                return Ok(ev);
            }
            let caught_up = self
                .fetchers
                .values()
                .all(|f| f.state.caught_up.load(Ordering::Acquire));
            while let Ok(f) = self.batches.try_recv() {
                if self.is_current(&f) {
                    return Ok(ConsumerEvent::Batch(f.batch));
                }
            }
            let now = Instant::now();
            if now >= deadline && (caught_up || now >= hard) {
                if !caught_up {
                    if let Some(e) = self.fetchers.values().find_map(|f| f.state.error()) {
                        return Err(unavailable(e));
                    }
                }
                return Ok(ConsumerEvent::Idle);
            }
            let wake_at = if now >= deadline {
                now + Duration::from_millis(10)
            } else {
                deadline
            };
            tokio::select! {
                f = self.batches.recv() => {
                    if let Some(f) = f {
                        if self.is_current(&f) {
                            return Ok(ConsumerEvent::Batch(f.batch));
                        }
                    }
                }
                _ = self.membership.changed.notified() => {}
                _ = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    async fn commit(&mut self, offsets: &[OffsetCommit]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        {
            let st = self.membership.lock();
            if let Some(o) = offsets
                .iter()
                .find(|o| st.lost || !st.owned.contains(&o.partition))
            {
                return Err(Error::Conflict(format!(
                    "{} is not owned by this member of {}",
                    o.partition, self.membership.group
                )));
            }
        }
        let cfg = self.cluster.cfg.clone();
        let mut by_topic: BTreeMap<Topic, Vec<&OffsetCommit>> = BTreeMap::new();
        for o in offsets {
            by_topic.entry(o.partition.topic).or_default().push(o);
        }
        let topics: Vec<OffsetCommitRequestTopic> = by_topic
            .iter()
            .map(|(t, os)| {
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_string(cfg.topic_name(*t))))
                    .with_partitions(
                        os.iter()
                            .map(|o| {
                                OffsetCommitRequestPartition::default()
                                    .with_partition_index(o.partition.partition)
                                    .with_committed_offset(o.offset)
                                    .with_committed_leader_epoch(-1)
                                    .with_committed_metadata(Some(StrBytes::from_string(
                                        o.metadata.clone(),
                                    )))
                            })
                            .collect(),
                    )
            })
            .collect();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let (member_id, epoch, classic) = {
                let st = self.membership.lock();
                (st.member_id.clone(), st.epoch, st.classic.clone())
            };
            let req = OffsetCommitRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(
                    self.membership.group.clone(),
                )))
                .with_generation_id_or_member_epoch(epoch)
                .with_member_id(StrBytes::from_string(member_id))
                .with_group_instance_id(
                    classic
                        .as_ref()
                        .and_then(|c| c.instance_id.clone())
                        .map(StrBytes::from_string),
                )
                .with_topics(topics.clone());
            let conn = self.offsets_conn().await?;
            let resp = match conn.request(&req).await {
                Ok(r) => r,
                Err(e) if e.is_connection() && attempt < 3 => {
                    self.offsets = None;
                    continue;
                }
                Err(e) => return Err(e.into_domain()),
            };
            let mut worst = 0i16;
            for t in &resp.topics {
                for p in &t.partitions {
                    if p.error_code != 0 {
                        debug!(topic = %t.name.0.as_str(), partition = p.partition_index, error = %error_name(p.error_code), "commit refused");
                        worst = p.error_code;
                    }
                }
            }
            // Classic: during a rebalance the generation moves on before this member
            // hears of it; the member loop brings the new one (or declares it lost).
            if classic.is_some() && worst == ILLEGAL_GENERATION {
                worst = REBALANCE_IN_PROGRESS;
            }
            let give_up = if classic.is_some() { 50 } else { 10 };
            match worst {
                0 => return Ok(()),
                FENCED_MEMBER_EPOCH | UNKNOWN_MEMBER_ID | ILLEGAL_GENERATION => {
                    return Err(Error::Conflict(format!(
                        "commit to {} refused: {} (the member was fenced; its partitions moved)",
                        self.membership.group,
                        error_name(worst)
                    )))
                }
                code => match retry_kind(code) {
                    Retry::No => {
                        return Err(Error::Internal(format!(
                            "kafka: commit to {} failed: {}",
                            self.membership.group,
                            error_name(code)
                        )))
                    }
                    _ if attempt >= give_up => {
                        return Err(unavailable(format!(
                            "commit kept failing with {}",
                            error_name(code)
                        )))
                    }
                    Retry::Reconnect => self.offsets = None,
                    _ => {}
                },
            }
            // A stale epoch: the next heartbeat brings the current one.
            self.wait_for_heartbeat(Duration::from_millis(300)).await;
            let st = self.membership.lock();
            if st.lost || offsets.iter().any(|o| !st.owned.contains(&o.partition)) {
                return Err(Error::Conflict(format!(
                    "partitions of {} moved while committing",
                    self.membership.group
                )));
            }
        }
    }

    async fn leave(&mut self) -> Result<()> {
        if self.left {
            return Ok(());
        }
        self.left = true;
        let all: Vec<TopicPartition> = self.fetchers.keys().copied().collect();
        self.stop_fetchers(&all);
        let (tx, rx) = oneshot::channel();
        self.membership.lock().leave = Some(tx);
        self.membership.wake.notify_one();
        let wait = self.settings.timeout + Duration::from_secs(1);
        let result = tokio::time::timeout(wait, rx).await;
        self.heartbeat.abort();
        match result {
            Ok(Ok(Ok(()))) => {
                info!(group = %self.membership.group, "left the group");
                Ok(())
            }
            Ok(Ok(Err(e))) => Err(unavailable(format!(
                "leaving {}: {e}",
                self.membership.group
            ))),
            Ok(Err(_)) => Err(Error::Internal(format!(
                "kafka: heartbeat task of {} stopped before leaving",
                self.membership.group
            ))),
            Err(_) => Err(unavailable(format!(
                "leaving {} timed out",
                self.membership.group
            ))),
        }
    }

    /// Asks each partition's leader now (ListOffsets, latest); a partition without a
    /// leader makes the whole call fail, as a partial answer confirms nothing useful.
    async fn high_watermarks(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, i64)>> {
        // Short of the request deadline: the worker only asks to close idle windows, and
        // can ask again at its next step.
        let limit = self.cluster.cfg.fetch_max_wait + Duration::from_secs(5);
        let mut out = Vec::with_capacity(partitions.len());
        for tp in partitions {
            let pc = match self.watermarks.get(tp) {
                Some(pc) => pc.clone(),
                None => {
                    let name = self.cluster.cfg.topic_name(tp.topic);
                    let pc = tokio::time::timeout(
                        limit,
                        self.cluster.partition_client(name, tp.partition),
                    )
                    .await
                    .map_err(|_| {
                        self.cluster
                            .leaders_in_doubt("no partition leader for the high watermark");
                        unavailable(format!("no leader for {tp} within {limit:?}"))
                    })??;
                    let pc = Arc::new(pc);
                    self.watermarks.insert(*tp, pc.clone());
                    pc
                }
            };
            match tokio::time::timeout(limit, pc.get_offset(OffsetAt::Latest)).await {
                Ok(Ok(hw)) => out.push((*tp, hw)),
                Ok(Err(e)) => {
                    self.watermarks.remove(tp);
                    self.cluster
                        .leaders_in_doubt("listing a high watermark failed");
                    return Err(from_rskafka("list offsets", e));
                }
                Err(_) => {
                    self.watermarks.remove(tp);
                    self.cluster
                        .leaders_in_doubt("listing a high watermark timed out");
                    return Err(unavailable(format!(
                        "the high watermark of {tp} took longer than {limit:?}"
                    )));
                }
            }
        }
        Ok(out)
    }
}

/// The heartbeat task. See the module docs. With `auto`, a broker refusing the very first
/// heartbeat with UNSUPPORTED_VERSION (Kafka 3.9 advertises the API with the protocol
/// switched off) ends the task with the coordinator connection, for the classic protocol
/// to take over; otherwise it returns `None` once the member has left.
async fn heartbeat_loop(
    cluster: Cluster,
    m: Arc<Membership>,
    topics: Vec<Topic>,
    first: BrokerConnection,
    auto: bool,
) -> Option<BrokerConnection> {
    let cfg = cluster.cfg.clone();
    let names: Vec<String> = topics.iter().map(|t| cfg.topic_name(*t)).collect();
    let mut conn = Some(first);
    let mut next_at = Instant::now();
    let mut backoff = cluster.backoff();
    let mut last_ok: Option<Instant> = None;
    let mut joined = false;
    // The coordinator could not be reached since the last good heartbeat: the broker may
    // have restarted, so the leaders cached for fetching may be stale when it answers.
    let mut outage = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_at) => {}
            _ = m.wake.notified() => {}
        }
        let now = Instant::now();
        let leave = m.lock().leave.take();
        if let Some(ack) = leave {
            let result = if joined {
                send_leave(&m, &mut conn, &cluster).await
            } else {
                Ok(())
            };
            let _ = ack.send(result);
            return None;
        }
        if m.paused.load(Ordering::SeqCst) {
            // The coordinator is left to decide; the local session check must not.
            last_ok = None;
            next_at = now + Duration::from_millis(100);
            continue;
        }
        if m.lock().lost {
            // Rejoin only after poll has revoked everything; it wakes us.
            next_at = now + Duration::from_secs(3600);
            continue;
        }
        // Silent past the session: the broker has fenced us; act on it before it says so.
        if last_ok.is_some_and(|t| now.duration_since(t) > cfg.session_timeout) {
            warn!(group = %m.group, "no heartbeat got through within the session timeout; revoking everything and rejoining");
            lose(&m);
            last_ok = None;
            continue;
        }
        if conn.as_ref().is_none_or(|c| c.is_broken()) {
            match cluster.coordinator(&m.group).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    warn!(group = %m.group, error = %e, "cannot reach the group coordinator");
                    outage = true;
                    next_at = now + backoff.next_pause();
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        if m.lock().ids.len() < topics.len() {
            refresh_ids(&m, c, &names, &cfg).await;
        }
        let req = {
            let st = m.lock();
            heartbeat_request(&m.group, &st, &names, &cfg)
        };
        let resp = match c.request(&req).await {
            Ok(r) => r,
            Err(e) => {
                warn!(group = %m.group, error = %e, "heartbeat failed");
                outage = true;
                conn = None;
                next_at = now + backoff.next_pause();
                continue;
            }
        };
        match resp.error_code {
            UNSUPPORTED_VERSION if auto && !joined => return conn,
            0 => {
                if auto && !joined {
                    info!(group = %m.group, protocol = "consumer", "group protocol: KIP-848, as the broker advertises ConsumerGroupHeartbeat and accepted the first heartbeat");
                }
                joined = true;
                last_ok = Some(now);
                if std::mem::take(&mut outage) {
                    cluster.leaders_in_doubt("the group coordinator answers again");
                }
                backoff.reset();
                let interval = Duration::from_millis(
                    u64::try_from(resp.heartbeat_interval_ms)
                        .unwrap_or(1000)
                        .max(50),
                );
                next_at = now + interval;
                apply_response(&m, c, resp, &names, &cfg).await;
            }
            FENCED_MEMBER_EPOCH | UNKNOWN_MEMBER_ID => {
                warn!(group = %m.group, error = %error_name(resp.error_code), "member fenced; revoking everything and rejoining");
                lose(&m);
                last_ok = None;
            }
            NOT_COORDINATOR | COORDINATOR_NOT_AVAILABLE => {
                debug!(group = %m.group, "coordinator moved");
                conn = None;
                next_at = now + backoff.next_pause();
            }
            COORDINATOR_LOAD_IN_PROGRESS | REQUEST_TIMED_OUT => {
                next_at = now + backoff.next_pause();
            }
            code => {
                let msg = format!(
                    "heartbeat refused: {}{}",
                    error_name(code),
                    resp.error_message
                        .map(|m| format!(" ({})", m.as_str()))
                        .unwrap_or_default()
                );
                let msg = if code == UNSUPPORTED_VERSION {
                    format!("{msg}; the broker must enable the consumer group protocol (group.coordinator.rebalance.protocols)")
                } else {
                    msg
                };
                warn!(group = %m.group, error = %msg, "group membership failed");
                m.lock().fatal = Some(msg);
                m.changed.notify_one();
                next_at = now + Duration::from_secs(3600);
            }
        }
    }
}

fn heartbeat_request(
    group: &str,
    st: &MemberState,
    names: &[String],
    cfg: &KafkaConfig,
) -> ConsumerGroupHeartbeatRequest {
    let by_id: HashMap<Topic, Uuid> = st.ids.iter().map(|(id, t)| (*t, *id)).collect();
    let mut owned: BTreeMap<Uuid, Vec<i32>> = BTreeMap::new();
    for tp in &st.owned {
        if let Some(id) = by_id.get(&tp.topic) {
            owned.entry(*id).or_default().push(tp.partition);
        }
    }
    // Every heartbeat carries the full state: simpler than tracking what changed, and the
    // coordinator treats repeated values as no change.
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_member_id(StrBytes::from_string(st.member_id.clone()))
        .with_member_epoch(st.epoch)
        .with_rebalance_timeout_ms(
            i32::try_from(cfg.rebalance_timeout.as_millis()).unwrap_or(i32::MAX),
        )
        .with_subscribed_topic_names(Some(
            names
                .iter()
                .map(|n| TopicName(StrBytes::from_string(n.clone())))
                .collect(),
        ))
        .with_server_assignor(cfg.server_assignor.clone().map(StrBytes::from_string))
        .with_topic_partitions(Some(
            owned
                .into_iter()
                .map(|(id, ps)| {
                    HeartbeatPartitions::default()
                        .with_topic_id(id)
                        .with_partitions(ps)
                })
                .collect(),
        ))
}

async fn refresh_ids(
    m: &Membership,
    c: &mut BrokerConnection,
    names: &[String],
    cfg: &KafkaConfig,
) {
    match c.topic_metadata(names).await {
        Ok(md) => {
            let mut st = m.lock();
            for t in md.topics {
                if t.error_code != 0 || t.topic_id.is_nil() {
                    continue;
                }
                if let Some(topic) = t
                    .name
                    .as_ref()
                    .and_then(|n| cfg.topic_from_name(n.0.as_str()))
                {
                    st.ids.insert(t.topic_id, topic);
                }
            }
        }
        Err(e) => debug!(error = %e, "metadata for topic ids failed"),
    }
}

async fn apply_response(
    m: &Membership,
    c: &mut BrokerConnection,
    resp: ConsumerGroupHeartbeatResponse,
    names: &[String],
    cfg: &KafkaConfig,
) {
    let Some(assignment) = resp.assignment else {
        let mut st = m.lock();
        if let Some(id) = resp.member_id {
            st.member_id = id.to_string();
        }
        st.epoch = resp.member_epoch;
        return;
    };
    if assignment
        .topic_partitions
        .iter()
        .any(|tp| !m.lock().ids.contains_key(&tp.topic_id))
    {
        refresh_ids(m, c, names, cfg).await;
    }
    let mut st = m.lock();
    if let Some(id) = resp.member_id {
        st.member_id = id.to_string();
    }
    st.epoch = resp.member_epoch;
    let mut target = BTreeSet::new();
    for tp in assignment.topic_partitions {
        match st.ids.get(&tp.topic_id) {
            Some(topic) => target.extend(
                tp.partitions
                    .iter()
                    .map(|p| TopicPartition::new(*topic, *p)),
            ),
            None => warn!(topic_id = %tp.topic_id, "assignment names an unknown topic id; skipped"),
        }
    }
    debug!(group = %m.group, epoch = st.epoch, ?target, "assignment received");
    st.target = Some(target);
    drop(st);
    m.changed.notify_one();
}

async fn send_leave(
    m: &Membership,
    conn: &mut Option<BrokerConnection>,
    cluster: &Cluster,
) -> std::result::Result<(), String> {
    if conn.as_ref().is_none_or(|c| c.is_broken()) {
        *conn = Some(
            cluster
                .coordinator(&m.group)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let Some(c) = conn.as_mut() else {
        return Err("no coordinator connection".into());
    };
    let member_id = m.lock().member_id.clone();
    let req = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(m.group.clone())))
        .with_member_id(StrBytes::from_string(member_id))
        .with_member_epoch(-1);
    let resp = c.request(&req).await.map_err(|e| e.to_string())?;
    match resp.error_code {
        0 | UNKNOWN_MEMBER_ID | FENCED_MEMBER_EPOCH => Ok(()),
        code => Err(format!("leave refused: {}", error_name(code))),
    }
}

/// One partition's reader: fetches from `start` (or the earliest offset) for ever, feeding
/// `tx`; stops when aborted or when the consumer is gone.
async fn run_fetcher(
    cluster: Cluster,
    tp: TopicPartition,
    start: Option<i64>,
    generation: u64,
    tx: mpsc::Sender<Fetched>,
    state: Arc<FetchState>,
) {
    let cfg = cluster.cfg.clone();
    let name = cfg.topic_name(tp.topic);
    let mut backoff = cluster.backoff();
    let pc = loop {
        match cluster.partition_client(name.clone(), tp.partition).await {
            Ok(pc) => break pc,
            Err(e) => {
                state.set_error(Some(e.to_string()));
                backoff.wait().await;
            }
        }
    };
    let mut offset = match start {
        Some(o) => o,
        None => earliest(&cluster, &pc, &state).await,
    };
    let max_wait = i32::try_from(cfg.fetch_max_wait.as_millis()).unwrap_or(500);
    loop {
        match pc
            .fetch_records(offset, 1..cfg.fetch_max_bytes, max_wait)
            .await
        {
            Ok((records, high_watermark)) => {
                backoff.reset();
                state.set_error(None);
                let next = records.last().map_or(offset, |r| r.offset + 1);
                state
                    .lag
                    .store((high_watermark - next).max(0), Ordering::Relaxed);
                let Some(last) = records.last().map(|r| r.offset) else {
                    state
                        .caught_up
                        .store(offset >= high_watermark, Ordering::Release);
                    continue;
                };
                let records: Vec<Record> = records
                    .into_iter()
                    .map(|r| Record {
                        offset: r.offset,
                        key: r.record.key,
                        value: r.record.value.unwrap_or_default(),
                        headers: r.record.headers.into_iter().collect(),
                        timestamp_ms: r.record.timestamp.timestamp_millis(),
                    })
                    .collect();
                offset = last + 1;
                let batch = RecordBatch {
                    partition: tp,
                    records,
                    high_watermark,
                };
                if tx.send(Fetched { generation, batch }).await.is_err() {
                    return;
                }
                state
                    .caught_up
                    .store(offset >= high_watermark, Ordering::Release);
            }
            Err(RsError::ServerError {
                protocol_error: ProtocolError::OffsetOutOfRange,
                ..
            }) => {
                let reset = earliest(&cluster, &pc, &state).await;
                warn!(partition = %tp, offset, reset, "offset out of range; resetting to the earliest offset");
                offset = reset;
            }
            Err(e) => {
                let e = from_rskafka("fetch", e);
                warn!(partition = %tp, error = %e, "fetch failed; retrying");
                state.set_error(Some(e.to_string()));
                cluster.leaders_in_doubt("a fetch failed");
                backoff.wait().await;
            }
        }
    }
}

async fn earliest(cluster: &Cluster, pc: &PartitionClient, state: &FetchState) -> i64 {
    let mut backoff: Backoff = cluster.backoff();
    loop {
        match pc.get_offset(OffsetAt::Earliest).await {
            Ok(o) => return o,
            Err(e) => {
                state.set_error(Some(from_rskafka("list offsets", e).to_string()));
                cluster.leaders_in_doubt("listing the earliest offset failed");
                backoff.wait().await;
            }
        }
    }
}
