//! The classic consumer group protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) for
//! brokers without KIP-848 (every Kafka 3.x, most Kafka-compatible brokers), behind the
//! same membership state `poll` reconciles (`membership`), so the worker sees the same
//! `Assigned`/`Revoked` events whichever protocol runs.
//!
//! The member task joins with protocol type `consumer` and two assignors in order of
//! preference, `cooperative-sticky` then `range` (the coordinator picks one every member
//! offers); the member the coordinator elects leader runs it (`assignor`) and hands the
//! result out through SyncGroup. Then it heartbeats until the coordinator announces a
//! rebalance, and joins again:
//! - **cooperative** (KIP-429): it keeps its partitions while rejoining and reports them in
//!   its subscription; the leader leaves out of the new generation every partition that
//!   moves, so the owner revokes it (through `poll`, `Revoked`) and then joins once more,
//!   and that second rebalance hands it over. Nothing is fetched by two members at once.
//! - **eager** (`range`, when some member offers nothing better): everything is revoked
//!   through `poll` before the member joins.
//!
//! Either way a partition leaves this member only after the worker has seen `Revoked`, and
//! until then the member is in a generation the coordinator accepts commits from, so a
//! revoked partition's checkpoint is committed before its next owner reads it.
//!
//! Static membership: with `group.instance.id` set the coordinator knows the member across
//! restarts; a restarted instance rejoining within the session timeout gets its
//! partitions back without a rebalance. So a static member does not send LeaveGroup when
//! it leaves, as Kafka's Java client does not: its partitions move after the session
//! timeout unless it comes back first.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use folio_domain::topics::{Topic, TopicPartition};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::assignor::{
    self, Member, Partitions, Subscription, COOPERATIVE_STICKY, PROTOCOL_TYPE, RANGE,
};
use crate::cluster::Cluster;
use crate::config::KafkaConfig;
use crate::membership::{
    error_name, lose, Classic, Membership, COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE,
    FENCED_INSTANCE_ID, ILLEGAL_GENERATION, MEMBER_ID_REQUIRED, NOT_COORDINATOR,
    REBALANCE_IN_PROGRESS, REQUEST_TIMED_OUT, UNKNOWN_MEMBER_ID,
};
use crate::wire::BrokerConnection;

/// Why a join (JoinGroup + SyncGroup) did not produce an assignment.
#[derive(Debug)]
enum JoinFail {
    /// The group started another rebalance: join again at once.
    Rejoin,
    /// The coordinator no longer knows this member or its generation.
    Lost,
    /// The coordinator moved or is loading: reconnect after a pause.
    Coordinator(String),
    /// A setting to fix (a fenced instance id, an assignor nobody shares).
    Fatal(String),
}

/// The heartbeat interval for a session: a tenth of it, between 100 ms and 3 s (Kafka's
/// Java default), so a rebalance reaches every member quickly.
fn heartbeat_interval(session: Duration) -> Duration {
    (session / 10).clamp(Duration::from_millis(100), Duration::from_secs(3))
}

fn ms(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Partitions by broker-side topic name.
fn by_name(cfg: &KafkaConfig, set: &BTreeSet<TopicPartition>) -> Partitions {
    let mut out = Partitions::new();
    for tp in set {
        out.entry(cfg.topic_name(tp.topic))
            .or_default()
            .insert(tp.partition);
    }
    out
}

/// The classic member of one consumer.
struct ClassicMember {
    cluster: Cluster,
    m: Arc<Membership>,
    cfg: Arc<KafkaConfig>,
    names: Vec<String>,
    instance_id: Option<String>,
    conn: Option<BrokerConnection>,
    member_id: String,
    generation: i32,
    /// The assignor the coordinator chose for the current generation.
    protocol: Option<String>,
}

/// The member task. See the module docs.
pub(crate) async fn member_loop(
    cluster: Cluster,
    m: Arc<Membership>,
    topics: Vec<Topic>,
    first: BrokerConnection,
) {
    let cfg = cluster.cfg.clone();
    let mut names: Vec<String> = topics.iter().map(|t| cfg.topic_name(*t)).collect();
    names.sort();
    let instance_id = cfg.group_instance_id.clone();
    {
        let mut st = m.lock();
        st.classic = Some(Classic {
            instance_id: instance_id.clone(),
        });
        st.member_id = String::new();
        st.epoch = -1;
    }
    let mut me = ClassicMember {
        cluster,
        m,
        cfg,
        names,
        instance_id,
        conn: Some(first),
        member_id: String::new(),
        generation: -1,
        protocol: None,
    };
    me.run().await;
}

impl ClassicMember {
    async fn run(&mut self) {
        let interval = heartbeat_interval(self.cfg.session_timeout);
        let mut backoff = self.cluster.backoff();
        let mut next_at = Instant::now();
        let mut need_join = true;
        let mut pending_revoke = false;
        let mut last_ok: Option<Instant> = None;
        let mut outage = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next_at) => {}
                _ = self.m.wake.notified() => {}
            }
            let now = Instant::now();
            let leave = self.m.lock().leave.take();
            if let Some(ack) = leave {
                let result = self.leave().await;
                let _ = ack.send(result);
                return;
            }
            if self.m.paused.load(Ordering::SeqCst) {
                last_ok = None;
                next_at = now + Duration::from_millis(100);
                continue;
            }
            let (lost, owned, target) = {
                let st = self.m.lock();
                (st.lost, st.owned.clone(), st.target.clone())
            };
            if lost {
                // Rejoin only after poll has revoked everything; it wakes us.
                next_at = now + Duration::from_secs(3600);
                continue;
            }
            if last_ok.is_some_and(|t| now.duration_since(t) > self.cfg.session_timeout) {
                warn!(group = %self.m.group, "no heartbeat got through within the session timeout; revoking everything and rejoining");
                self.lost();
                need_join = true;
                last_ok = None;
                continue;
            }
            let in_target =
                |set: &BTreeSet<TopicPartition>| target.as_ref().is_some_and(|t| set.is_subset(t));
            if pending_revoke && in_target(&owned) {
                // What moved is revoked: the second rebalance hands it over.
                debug!(group = %self.m.group, "revoked what moves; joining again to hand it over");
                pending_revoke = false;
                need_join = true;
            }
            if self.conn.as_ref().is_none_or(|c| c.is_broken()) {
                match self.cluster.coordinator(&self.m.group).await {
                    Ok(c) => self.conn = Some(c),
                    Err(e) => {
                        warn!(group = %self.m.group, error = %e, "cannot reach the group coordinator");
                        outage = true;
                        next_at = now + backoff.next_pause();
                        continue;
                    }
                }
            }
            if need_join {
                let eager = !self
                    .protocol
                    .as_deref()
                    .is_some_and(assignor::is_cooperative);
                if eager && !owned.is_empty() {
                    // Eager: give everything up through poll before joining.
                    self.m.lock().target = Some(BTreeSet::new());
                    self.m.changed.notify_one();
                    next_at = now + interval;
                    continue;
                }
                match self.join_and_sync().await {
                    Ok(assigned) => {
                        need_join = false;
                        backoff.reset();
                        last_ok = Some(Instant::now());
                        if std::mem::take(&mut outage) {
                            self.cluster
                                .leaders_in_doubt("the group coordinator answers again");
                        }
                        let target = self.to_target(&assigned);
                        let owned = self.m.lock().owned.clone();
                        pending_revoke = !owned.is_subset(&target);
                        info!(
                            group = %self.m.group,
                            generation = self.generation,
                            assignor = self.protocol.as_deref().unwrap_or(""),
                            partitions = target.len(),
                            revoking = owned.difference(&target).count(),
                            "joined the group (classic protocol)"
                        );
                        {
                            let mut st = self.m.lock();
                            st.member_id = self.member_id.clone();
                            st.epoch = self.generation;
                            st.target = Some(target);
                        }
                        self.m.changed.notify_one();
                        next_at = Instant::now() + interval;
                    }
                    Err(JoinFail::Rejoin) => next_at = Instant::now(),
                    Err(JoinFail::Lost) => {
                        if !self.m.lock().owned.is_empty() {
                            self.lost();
                        }
                        next_at = Instant::now();
                    }
                    Err(JoinFail::Coordinator(why)) => {
                        debug!(group = %self.m.group, why, "coordinator unavailable while joining");
                        outage = true;
                        self.conn = None;
                        next_at = Instant::now() + backoff.next_pause();
                    }
                    Err(JoinFail::Fatal(msg)) => {
                        self.fatal(msg);
                        next_at = Instant::now() + Duration::from_secs(3600);
                    }
                }
                continue;
            }
            if now < next_at {
                // Woken early (the owned set changed); heartbeat on schedule.
                continue;
            }
            next_at = now + interval;
            match self.heartbeat().await {
                Ok(0) => {
                    last_ok = Some(now);
                    backoff.reset();
                    if std::mem::take(&mut outage) {
                        self.cluster
                            .leaders_in_doubt("the group coordinator answers again");
                    }
                }
                Ok(REBALANCE_IN_PROGRESS) => {
                    last_ok = Some(now);
                    need_join = true;
                    next_at = now;
                }
                Ok(UNKNOWN_MEMBER_ID | ILLEGAL_GENERATION) => {
                    warn!(group = %self.m.group, "member no longer in the generation; revoking everything and rejoining");
                    self.lost();
                    need_join = true;
                    last_ok = None;
                }
                Ok(FENCED_INSTANCE_ID) => {
                    self.fatal(format!(
                        "another member uses group.instance.id {:?} (KAFKA_GROUP_INSTANCE_ID must be unique per instance)",
                        self.instance_id.as_deref().unwrap_or("")
                    ));
                }
                Ok(NOT_COORDINATOR | COORDINATOR_NOT_AVAILABLE) => {
                    self.conn = None;
                    next_at = now + backoff.next_pause();
                }
                Ok(COORDINATOR_LOAD_IN_PROGRESS | REQUEST_TIMED_OUT) => {
                    next_at = now + backoff.next_pause();
                }
                Ok(code) => {
                    warn!(group = %self.m.group, error = %error_name(code), "heartbeat refused; joining again");
                    need_join = true;
                    next_at = now + backoff.next_pause();
                }
                Err(e) => {
                    warn!(group = %self.m.group, error = %e, "heartbeat failed");
                    outage = true;
                    self.conn = None;
                    next_at = now + backoff.next_pause();
                }
            }
        }
    }

    fn lost(&mut self) {
        self.generation = -1;
        lose(&self.m);
    }

    fn fatal(&self, msg: String) {
        warn!(group = %self.m.group, error = %msg, "group membership failed");
        self.m.lock().fatal = Some(msg);
        self.m.changed.notify_one();
    }

    fn to_target(&self, assigned: &Partitions) -> BTreeSet<TopicPartition> {
        let mut out = BTreeSet::new();
        for (name, ps) in assigned {
            match self.cfg.topic_from_name(name) {
                Some(t) => out.extend(ps.iter().map(|p| TopicPartition::new(t, *p))),
                None => warn!(
                    topic = name,
                    "assigned a topic folio does not know; skipped"
                ),
            }
        }
        out
    }

    fn conn(&mut self) -> Result<&mut BrokerConnection, JoinFail> {
        self.conn
            .as_mut()
            .ok_or_else(|| JoinFail::Coordinator("no coordinator connection".into()))
    }

    /// The JoinGroup and SyncGroup answers may be held until every member has rejoined.
    fn join_timeout(&self) -> Duration {
        self.cfg.rebalance_timeout + Duration::from_secs(5)
    }

    async fn join_and_sync(&mut self) -> Result<Partitions, JoinFail> {
        let owned = by_name(&self.cfg, &self.m.lock().owned);
        let sub = |user_data| Subscription {
            topics: self.names.clone(),
            user_data,
            owned: owned.clone(),
            generation: self.generation,
        };
        let fatal = |e: String| JoinFail::Fatal(e);
        let cooperative = assignor::subscription_bytes(&sub(Some(
            assignor::cooperative_user_data(self.generation),
        )))
        .map_err(fatal)?;
        let range = assignor::subscription_bytes(&sub(None)).map_err(fatal)?;
        let timeout = self.join_timeout();
        let resp = loop {
            let req = JoinGroupRequest::default()
                .with_group_id(GroupId(s(&self.m.group)))
                .with_session_timeout_ms(ms(self.cfg.session_timeout))
                .with_rebalance_timeout_ms(ms(self.cfg.rebalance_timeout))
                .with_member_id(s(&self.member_id))
                .with_group_instance_id(self.instance_id.as_deref().map(s))
                .with_protocol_type(s(PROTOCOL_TYPE))
                .with_protocols(vec![
                    JoinGroupRequestProtocol::default()
                        .with_name(s(COOPERATIVE_STICKY))
                        .with_metadata(cooperative.clone()),
                    JoinGroupRequestProtocol::default()
                        .with_name(s(RANGE))
                        .with_metadata(range.clone()),
                ])
                .with_reason(Some(s("folio member joining")));
            let resp = self
                .conn()?
                .request_within(&req, timeout)
                .await
                .map_err(|e| JoinFail::Coordinator(e.to_string()))?;
            match resp.error_code {
                0 => break resp,
                MEMBER_ID_REQUIRED => self.member_id = resp.member_id.to_string(),
                UNKNOWN_MEMBER_ID => {
                    self.member_id.clear();
                    self.generation = -1;
                    return Err(JoinFail::Lost);
                }
                ILLEGAL_GENERATION => {
                    self.generation = -1;
                    return Err(JoinFail::Lost);
                }
                REBALANCE_IN_PROGRESS => return Err(JoinFail::Rejoin),
                code @ (NOT_COORDINATOR
                | COORDINATOR_NOT_AVAILABLE
                | COORDINATOR_LOAD_IN_PROGRESS
                | REQUEST_TIMED_OUT) => return Err(JoinFail::Coordinator(error_name(code))),
                code => {
                    return Err(JoinFail::Fatal(format!(
                        "JoinGroup refused: {}",
                        error_name(code)
                    )))
                }
            }
        };
        self.member_id = resp.member_id.to_string();
        self.generation = resp.generation_id;
        let protocol = resp
            .protocol_name
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default();
        self.protocol = Some(protocol.clone());
        let assignments = if resp.leader.as_str() == self.member_id && !resp.skip_assignment {
            self.lead(&protocol, &resp.members).await?
        } else {
            Vec::new()
        };
        let req = SyncGroupRequest::default()
            .with_group_id(GroupId(s(&self.m.group)))
            .with_generation_id(self.generation)
            .with_member_id(s(&self.member_id))
            .with_group_instance_id(self.instance_id.as_deref().map(s))
            .with_protocol_type(Some(s(PROTOCOL_TYPE)))
            .with_protocol_name(Some(s(&protocol)))
            .with_assignments(assignments);
        let resp = self
            .conn()?
            .request_within(&req, timeout)
            .await
            .map_err(|e| JoinFail::Coordinator(e.to_string()))?;
        match resp.error_code {
            0 => assignor::decode_assignment(resp.assignment).map_err(JoinFail::Fatal),
            REBALANCE_IN_PROGRESS => Err(JoinFail::Rejoin),
            UNKNOWN_MEMBER_ID => {
                self.member_id.clear();
                self.generation = -1;
                Err(JoinFail::Lost)
            }
            ILLEGAL_GENERATION => {
                self.generation = -1;
                Err(JoinFail::Lost)
            }
            code @ (NOT_COORDINATOR | COORDINATOR_NOT_AVAILABLE | COORDINATOR_LOAD_IN_PROGRESS) => {
                Err(JoinFail::Coordinator(error_name(code)))
            }
            FENCED_INSTANCE_ID => Err(JoinFail::Fatal(format!(
                "another member uses group.instance.id {:?}",
                self.instance_id.as_deref().unwrap_or("")
            ))),
            code => Err(JoinFail::Fatal(format!(
                "SyncGroup refused: {}",
                error_name(code)
            ))),
        }
    }

    /// As the elected leader: every member's assignment under `protocol`.
    async fn lead(
        &mut self,
        protocol: &str,
        members: &[kafka_protocol::messages::join_group_response::JoinGroupResponseMember],
    ) -> Result<Vec<SyncGroupRequestAssignment>, JoinFail> {
        let mut parsed = Vec::with_capacity(members.len());
        for mm in members {
            let subscription = assignor::decode_subscription(mm.metadata.clone())
                .unwrap_or_else(|e| {
                    warn!(member = %mm.member_id.as_str(), error = e, "unreadable subscription; the member gets nothing");
                    Subscription::default()
                });
            parsed.push(Member {
                id: mm.member_id.to_string(),
                instance_id: mm.group_instance_id.as_ref().map(|i| i.to_string()),
                subscription,
            });
        }
        let union: BTreeSet<String> = parsed
            .iter()
            .flat_map(|m| m.subscription.topics.iter().cloned())
            .collect();
        let union: Vec<String> = union.into_iter().collect();
        let md = self
            .conn()?
            .topic_metadata(&union)
            .await
            .map_err(|e| JoinFail::Coordinator(format!("metadata for the assignment: {e}")))?;
        let counts: BTreeMap<String, i32> = md
            .topics
            .iter()
            .filter(|t| t.error_code == 0)
            .filter_map(|t| {
                t.name
                    .as_ref()
                    .map(|n| (n.0.to_string(), t.partitions.len() as i32))
            })
            .collect();
        let plan = assignor::assign(protocol, &parsed, &counts).map_err(JoinFail::Fatal)?;
        debug!(group = %self.m.group, protocol, ?plan, "assigned as leader");
        plan.iter()
            .map(|(id, parts)| {
                Ok(SyncGroupRequestAssignment::default()
                    .with_member_id(s(id))
                    .with_assignment(assignor::assignment_bytes(parts).map_err(JoinFail::Fatal)?))
            })
            .collect()
    }

    async fn heartbeat(&mut self) -> Result<i16, String> {
        let req = HeartbeatRequest::default()
            .with_group_id(GroupId(s(&self.m.group)))
            .with_generation_id(self.generation)
            .with_member_id(s(&self.member_id))
            .with_group_instance_id(self.instance_id.as_deref().map(s));
        let c = self
            .conn
            .as_mut()
            .ok_or_else(|| "no coordinator connection".to_string())?;
        c.request(&req)
            .await
            .map(|r| r.error_code)
            .map_err(|e| e.to_string())
    }

    /// LeaveGroup, except for a static member (see the module docs) or one that never
    /// joined.
    async fn leave(&mut self) -> Result<(), String> {
        if self.member_id.is_empty() {
            return Ok(());
        }
        if let Some(id) = &self.instance_id {
            info!(group = %self.m.group, instance = %id, "static member: not leaving, so an instance restarting with the same group.instance.id gets its partitions back; otherwise they move after the session timeout");
            return Ok(());
        }
        if self.conn.as_ref().is_none_or(|c| c.is_broken()) {
            self.conn = Some(
                self.cluster
                    .coordinator(&self.m.group)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        let c = self
            .conn
            .as_mut()
            .ok_or_else(|| "no coordinator connection".to_string())?;
        let version = c
            .version::<LeaveGroupRequest>()
            .map_err(|e| e.to_string())?;
        let req = if version >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s(&self.m.group)))
                .with_members(vec![MemberIdentity::default()
                    .with_member_id(s(&self.member_id))
                    .with_reason(Some(s("folio member leaving")))])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s(&self.m.group)))
                .with_member_id(s(&self.member_id))
        };
        let resp = c
            .request_at(&req, version)
            .await
            .map_err(|e| e.to_string())?;
        let code = resp
            .members
            .iter()
            .map(|m| m.error_code)
            .find(|c| *c != 0)
            .unwrap_or(resp.error_code);
        match code {
            0 | UNKNOWN_MEMBER_ID => Ok(()),
            code => Err(format!("leave refused: {}", error_name(code))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_come_often_enough_to_spread_a_rebalance() {
        assert_eq!(
            heartbeat_interval(Duration::from_secs(45)),
            Duration::from_secs(3)
        );
        assert_eq!(
            heartbeat_interval(Duration::from_secs(10)),
            Duration::from_secs(1)
        );
        assert_eq!(
            heartbeat_interval(Duration::from_millis(500)),
            Duration::from_millis(100)
        );
    }
}
