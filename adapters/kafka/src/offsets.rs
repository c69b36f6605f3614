//! A group's committed offsets (`OffsetFetch` v8+): the request and the reading of its
//! answer, shared by the group member (`group`, as it takes partitions over) and by the
//! admin question of where a group stands on its topics ([`group_offsets`]), which adds
//! each partition's log start and high watermark.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use folio_domain::ports::{Committed, PartitionOffsets};
use folio_domain::topics::{Topic, TopicPartition};
use folio_domain::{Error, Result};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rskafka::client::partition::OffsetAt;

use crate::cluster::{Backoff, Cluster};
use crate::config::KafkaConfig;
use crate::errors::{from_rskafka, unavailable};
use crate::membership::{
    error_name, COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR,
    REBALANCE_IN_PROGRESS, REQUEST_TIMED_OUT, STALE_MEMBER_EPOCH, UNSTABLE_OFFSET_COMMIT,
};
use crate::wire::{BrokerConnection, WireError};

/// The longest [`group_offsets`] takes (or the request deadline, if shorter): it answers a
/// page, which shows the figure as unavailable rather than wait for brokers that are away.
pub(crate) const GROUP_OFFSETS_DEADLINE: Duration = Duration::from_secs(4);

/// What to do after an error code of an offset request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Retry {
    Ok,
    Later,
    Reconnect,
    No,
}

pub(crate) fn retry_kind(code: i16) -> Retry {
    match code {
        0 => Retry::Ok,
        COORDINATOR_LOAD_IN_PROGRESS
        | UNSTABLE_OFFSET_COMMIT
        | STALE_MEMBER_EPOCH
        | REBALANCE_IN_PROGRESS
        | REQUEST_TIMED_OUT => Retry::Later,
        COORDINATOR_NOT_AVAILABLE | NOT_COORDINATOR => Retry::Reconnect,
        _ => Retry::No,
    }
}

/// Who asks: a member (its id and epoch, checked by a KIP-848 group) or an onlooker (no
/// id, epoch −1: an admin query any group answers).
pub(crate) struct Asker {
    pub(crate) member_id: Option<String>,
    pub(crate) epoch: i32,
    /// Wait for pending transactional offsets (a member resuming work), or take what is
    /// committed now (an onlooker).
    pub(crate) require_stable: bool,
}

impl Asker {
    pub(crate) fn onlooker() -> Self {
        Asker {
            member_id: None,
            epoch: -1,
            require_stable: false,
        }
    }
}

/// The OffsetFetch request for `partitions` of `group` (its broker-side name).
pub(crate) fn fetch_request(
    cfg: &KafkaConfig,
    group: &str,
    asker: &Asker,
    partitions: &[TopicPartition],
) -> OffsetFetchRequest {
    let mut by_topic: BTreeMap<Topic, Vec<i32>> = BTreeMap::new();
    for tp in partitions {
        by_topic.entry(tp.topic).or_default().push(tp.partition);
    }
    OffsetFetchRequest::default()
        .with_require_stable(asker.require_stable)
        .with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_member_id(asker.member_id.clone().map(StrBytes::from_string))
            .with_member_epoch(asker.epoch)
            .with_topics(Some(
                by_topic
                    .iter()
                    .map(|(t, ps)| {
                        OffsetFetchRequestTopics::default()
                            .with_name(TopicName(StrBytes::from_string(cfg.topic_name(*t))))
                            .with_partition_indexes(ps.clone())
                    })
                    .collect(),
            ))])
}

/// Fails unless the broker speaks OffsetFetch v8+ (groups in the request).
pub(crate) fn require_v8(conn: &BrokerConnection) -> Result<()> {
    if conn
        .version::<OffsetFetchRequest>()
        .map_err(WireError::into_domain)?
        < 8
    {
        return Err(Error::Internal(
            "kafka: the broker lacks OffsetFetch v8+".into(),
        ));
    }
    Ok(())
}

/// The committed offsets (and metadata) an OffsetFetch answer holds, with what to do about
/// its retriable error codes ([`Retry::Ok`]: the answer is complete). A code that retrying
/// cannot cure fails.
pub(crate) fn read_answer(
    cfg: &KafkaConfig,
    resp: OffsetFetchResponse,
) -> Result<(Retry, HashMap<TopicPartition, Committed>)> {
    let Some(g) = resp.groups.into_iter().next() else {
        return Err(Error::Internal(
            "kafka: OffsetFetch answered without the group".into(),
        ));
    };
    let mut retry = retry_kind(g.error_code);
    let mut out = HashMap::new();
    for t in g.topics {
        let Some(topic) = cfg.topic_from_name(t.name.0.as_str()) else {
            continue;
        };
        for p in t.partitions {
            if p.error_code != 0 {
                retry = retry.max(retry_kind(p.error_code));
                if retry == Retry::No {
                    return Err(Error::Internal(format!(
                        "kafka: OffsetFetch of {}/{} failed: {}",
                        topic,
                        p.partition_index,
                        error_name(p.error_code)
                    )));
                }
                continue;
            }
            if p.committed_offset >= 0 {
                out.insert(
                    TopicPartition::new(topic, p.partition_index),
                    Committed {
                        offset: p.committed_offset,
                        metadata: p.metadata.map(|m| m.to_string()).unwrap_or_default(),
                    },
                );
            }
        }
    }
    if retry == Retry::No {
        return Err(Error::Internal(format!(
            "kafka: OffsetFetch failed: {}",
            error_name(g.error_code)
        )));
    }
    Ok((retry, out))
}

/// Where `group` (its broker-side name) stands on every partition of `topics` that exists
/// on the broker: committed offset and metadata, log start, high watermark, in topic then
/// partition order. Asks as an onlooker, so the group needs no member here. Bounded by
/// [`GROUP_OFFSETS_DEADLINE`]: brokers that do not answer by then give `Unavailable`.
pub(crate) async fn group_offsets(
    cluster: &Cluster,
    group: &str,
    topics: &[Topic],
) -> Result<Vec<PartitionOffsets>> {
    let limit = cluster.cfg.request_deadline.min(GROUP_OFFSETS_DEADLINE);
    tokio::time::timeout(limit, ask(cluster, group, topics))
        .await
        .map_err(|_| {
            unavailable(format!(
                "where group {group} stands: no answer within {limit:?}"
            ))
        })?
}

async fn ask(cluster: &Cluster, group: &str, topics: &[Topic]) -> Result<Vec<PartitionOffsets>> {
    let cfg = &cluster.cfg;
    let counts = cluster.partition_counts().await?;
    let mut topics = topics.to_vec();
    topics.sort();
    topics.dedup();
    let partitions: Vec<TopicPartition> = topics
        .iter()
        .flat_map(|t| {
            let n = counts.get(&cfg.topic_name(*t)).copied().unwrap_or(0);
            (0..n).map(move |p| TopicPartition::new(*t, p))
        })
        .collect();
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    let (committed, ends) = tokio::join!(
        committed_offsets(cluster, group, &partitions),
        log_ends(cluster, &partitions)
    );
    let mut committed = committed?;
    Ok(partitions
        .iter()
        .zip(ends?)
        .map(|(tp, (log_start, high_watermark))| PartitionOffsets {
            partition: *tp,
            committed: committed.remove(tp),
            log_start,
            high_watermark,
        })
        .collect())
}

/// The group's commits on `partitions`, asked of its coordinator; retried (reconnecting
/// when the coordinator moved) until the caller's deadline.
async fn committed_offsets(
    cluster: &Cluster,
    group: &str,
    partitions: &[TopicPartition],
) -> Result<HashMap<TopicPartition, Committed>> {
    let req = fetch_request(&cluster.cfg, group, &Asker::onlooker(), partitions);
    let mut backoff = Backoff::starting_at(Duration::from_millis(50), Duration::from_millis(500));
    let mut conn: Option<BrokerConnection> = None;
    loop {
        let c = match conn.as_mut() {
            Some(c) if !c.is_broken() => c,
            _ => conn.insert(
                cluster
                    .coordinator(group)
                    .await
                    .map_err(WireError::into_domain)?,
            ),
        };
        require_v8(c)?;
        match c.request(&req).await {
            Ok(resp) => match read_answer(&cluster.cfg, resp)? {
                (Retry::Ok, out) => return Ok(out),
                (Retry::Reconnect, _) => conn = None,
                _ => {}
            },
            Err(e) if e.is_connection() => conn = None,
            Err(e) => return Err(e.into_domain()),
        }
        backoff.wait().await;
    }
}

/// Each partition's log start and high watermark, from its leader, all asked at once so
/// one slow leader does not hold the others back.
async fn log_ends(cluster: &Cluster, partitions: &[TopicPartition]) -> Result<Vec<(i64, i64)>> {
    let mut asks = tokio::task::JoinSet::new();
    for (i, tp) in partitions.iter().copied().enumerate() {
        let cluster = cluster.clone();
        asks.spawn(async move {
            let pc = cluster
                .partition_client(cluster.cfg.topic_name(tp.topic), tp.partition)
                .await?;
            let ends = tokio::try_join!(
                pc.get_offset(OffsetAt::Earliest),
                pc.get_offset(OffsetAt::Latest)
            );
            ends.map(|ends| (i, ends)).map_err(|e| {
                cluster.leaders_in_doubt("listing the offsets of a partition failed");
                from_rskafka("list offsets", e)
            })
        });
    }
    let mut out = vec![(0, 0); partitions.len()];
    while let Some(done) = asks.join_next().await {
        let (i, ends) =
            done.map_err(|e| Error::Internal(format!("kafka: listing offsets: {e}")))??;
        out[i] = ends;
    }
    Ok(out)
}
