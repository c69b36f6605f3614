//! Topic admin: creating folio's topics with their partition counts and replication, and
//! reporting (never changing) the ones that exist with less.
//!
//! Provisioning speaks CreateTopics, DescribeConfigs and DescribeCluster over folio's own
//! connection (rskafka's admin client cannot set a topic's configs): it counts the brokers
//! registered in the cluster (fenced ones included, so a broker that is down still counts),
//! fills in the replication defaults ([`Replication::resolve`]), creates the missing topics
//! with `min.insync.replicas`, and warns about every existing topic whose partitions have
//! fewer replicas, or whose `min.insync.replicas` is lower, than configured.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use folio_domain::topics::Topic;
use folio_domain::Result;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{
    CreateTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rskafka::client::error::{Error as RsError, ProtocolError};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::cluster::Cluster;
use crate::config::Replication;
use crate::errors::{from_rskafka, unavailable};
use crate::leaders::UNKNOWN_TOPIC_OR_PARTITION;
use crate::wire::{BrokerConnection, WireError};

// Kafka error codes provisioning acts on.
const REQUEST_TIMED_OUT: i16 = 7;
const BROKER_NOT_AVAILABLE: i16 = 8;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const INVALID_REPLICATION_FACTOR: i16 = 38;
const NOT_CONTROLLER: i16 = 41;
/// DescribeConfigs resource type of a topic.
const TOPIC_RESOURCE: i8 = 2;
const MIN_INSYNC: &str = "min.insync.replicas";

/// What [`ensure_topics`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProvisionReport {
    /// The replication given to the topics created, and expected of those that exist.
    pub replication: Replication,
    /// Brokers registered in the cluster (fenced ones included).
    pub brokers: usize,
    /// Topics created now.
    pub created: Vec<Topic>,
    /// Topics that existed with the expected partition count.
    pub existing: Vec<Topic>,
    /// Topics that exist with another count: (topic, expected, actual). Left as they are:
    /// more partitions than configured is how an operator grows a topic.
    pub mismatched: Vec<(Topic, i32, i32)>,
    /// Existing topics replicated less than configured, each logged as a warning. Left as
    /// they are.
    pub shortfalls: Vec<Shortfall>,
}

impl Default for Replication {
    fn default() -> Self {
        Replication {
            factor: 1,
            min_insync: 1,
        }
    }
}

/// An existing topic replicated less than configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    pub topic: Topic,
    /// Its broker-side name.
    pub name: String,
    pub kind: ShortfallKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShortfallKind {
    /// Its partition with the fewest replicas has `actual`.
    Replicas { configured: i16, actual: i16 },
    /// Its `min.insync.replicas`.
    MinInsync { configured: i16, actual: i16 },
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.name;
        match self.kind {
            ShortfallKind::Replicas { configured, actual } => write!(
                f,
                "topic {name} has partitions with {actual} replica(s), fewer than the replication \
                 factor {configured} (KAFKA_REPLICATION_FACTOR): losing a broker can lose them. \
                 folio never changes an existing topic; add replicas with \
                 kafka-reassign-partitions"
            ),
            ShortfallKind::MinInsync { configured, actual } => write!(
                f,
                "topic {name} has min.insync.replicas={actual}, lower than {configured} \
                 (KAFKA_MIN_INSYNC_REPLICAS): an acknowledged record may be on fewer brokers \
                 than configured. folio never changes an existing topic; raise it with \
                 kafka-configs --alter --entity-type topics --entity-name {name} \
                 --add-config min.insync.replicas={configured}"
            ),
        }
    }
}

/// What the cluster says of an existing topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicState {
    pub partitions: i32,
    /// Replicas of its least replicated partition.
    pub min_replicas: i16,
    /// Its `min.insync.replicas`, if the broker said.
    pub min_insync: Option<i16>,
}

/// Compares an existing topic with the configured replication.
pub fn shortfalls(
    topic: Topic,
    name: &str,
    configured: Replication,
    state: TopicState,
) -> Vec<Shortfall> {
    let mut out = Vec::new();
    let mut add = |kind| {
        out.push(Shortfall {
            topic,
            name: name.to_string(),
            kind,
        })
    };
    if state.min_replicas < configured.factor {
        add(ShortfallKind::Replicas {
            configured: configured.factor,
            actual: state.min_replicas,
        });
    }
    if let Some(actual) = state.min_insync.filter(|m| *m < configured.min_insync) {
        add(ShortfallKind::MinInsync {
            configured: configured.min_insync,
            actual,
        });
    }
    out
}

/// Creates the missing ones of `topics` (partition counts [`KafkaConfig::partitions_of`],
/// replication from the settings) and reports the rest. Retries within the request
/// deadline while no broker answers or too few brokers are up to place the replicas;
/// never creates a topic with fewer replicas than configured.
///
/// [`KafkaConfig::partitions_of`]: crate::config::KafkaConfig::partitions_of
pub(crate) async fn ensure_topics(cluster: &Cluster, topics: &[Topic]) -> Result<ProvisionReport> {
    let cfg = cluster.cfg.clone();
    let give_up = Instant::now() + cfg.request_deadline;
    let mut backoff = cluster.backoff();
    let mut report = ProvisionReport::default();
    let mut pending: Vec<Topic> = topics.to_vec();
    pending.sort();
    pending.dedup();
    let mut last_problem: Option<String>;
    let mut resolved = false;
    // Until every missing topic is created (or found created by another instance).
    loop {
        let attempt = async {
            let mut conn = cluster.any_broker().await?;
            if !resolved {
                report.brokers = cluster_size(&mut conn).await?;
                report.replication = Replication::resolve(
                    cfg.replication_factor,
                    cfg.min_insync_replicas,
                    report.brokers,
                )
                .map_err(Problem::Fatal)?;
                resolved = true;
            }
            let missing = missing_of(&mut conn, cluster, &pending).await?;
            if missing.is_empty() {
                return Ok::<_, Problem>(());
            }
            let replication = report.replication;
            create(&mut conn, cluster, &missing, replication, &mut report).await
        };
        match attempt.await {
            Ok(()) => break,
            Err(Problem::Wire(e)) if e.is_connection() => last_problem = Some(e.to_string()),
            Err(Problem::Wire(e)) => return Err(e.into_domain()),
            Err(Problem::Retry(m)) => last_problem = Some(m),
            Err(Problem::Fatal(e)) => return Err(e),
        }
        if Instant::now() >= give_up {
            return Err(unavailable(format!(
                "provisioning topics did not finish within {:?}: {}",
                cfg.request_deadline,
                last_problem.unwrap_or_default()
            )));
        }
        if let Some(p) = &last_problem {
            warn!(problem = %p, "provisioning topics: retrying");
        }
        backoff.wait().await;
    }
    // Every topic exists now: compare those folio did not create with the settings.
    let existing: Vec<Topic> = pending
        .iter()
        .copied()
        .filter(|t| !report.created.contains(t))
        .collect();
    if !existing.is_empty() {
        let states = describe_with_retry(cluster, give_up, &existing).await?;
        for topic in existing {
            let name = cfg.topic_name(topic);
            let Some(state) = states.get(&topic).copied() else {
                continue;
            };
            let expected = cfg.partitions_of(topic);
            if state.partitions == expected {
                report.existing.push(topic);
            } else if state.partitions > expected {
                info!(topic = %name, expected, actual = state.partitions,
                    "topic has more partitions than folio creates it with (grown by an operator); used as it is");
                report.mismatched.push((topic, expected, state.partitions));
            } else {
                warn!(topic = %name, expected, actual = state.partitions,
                    "topic has fewer partitions than configured; left as it is (folio never repartitions; grow it with kafka-topics --alter --partitions)");
                report.mismatched.push((topic, expected, state.partitions));
            }
            for s in shortfalls(topic, &name, report.replication, state) {
                warn!("{s}");
                report.shortfalls.push(s);
            }
        }
    }
    if !report.created.is_empty() {
        await_visible(cluster, &report.created).await?;
    }
    Ok(report)
}

/// Why one provisioning attempt stopped.
enum Problem {
    Wire(WireError),
    /// Worth another attempt.
    Retry(String),
    Fatal(folio_domain::Error),
}

impl From<WireError> for Problem {
    fn from(e: WireError) -> Self {
        Problem::Wire(e)
    }
}

/// [`describe`] on a fresh connection until it succeeds, fails for good, or `give_up`.
async fn describe_with_retry(
    cluster: &Cluster,
    give_up: Instant,
    topics: &[Topic],
) -> Result<BTreeMap<Topic, TopicState>> {
    let mut backoff = cluster.backoff();
    loop {
        let problem = match cluster.any_broker().await {
            Ok(mut conn) => match describe(&mut conn, cluster, topics).await {
                Ok(v) => return Ok(v),
                Err(p) => p,
            },
            Err(e) => Problem::Wire(e),
        };
        let why = match problem {
            Problem::Wire(e) if e.is_connection() => e.to_string(),
            Problem::Wire(e) => return Err(e.into_domain()),
            Problem::Retry(m) => m,
            Problem::Fatal(e) => return Err(e),
        };
        if Instant::now() >= give_up {
            return Err(unavailable(format!("describing topics: {why}")));
        }
        backoff.wait().await;
    }
}

/// Brokers registered in the cluster, fenced ones (down, or starting) included: the size
/// the replication default is taken from. Brokers older than DescribeCluster v2 report
/// the unfenced ones only.
async fn cluster_size(conn: &mut BrokerConnection) -> std::result::Result<usize, Problem> {
    let Ok(version) = conn.version::<DescribeClusterRequest>() else {
        // No DescribeCluster (very old brokers): the brokers in the metadata.
        let md = conn.topic_metadata(&[]).await?;
        return Ok(md.brokers.len());
    };
    let mut req = DescribeClusterRequest::default();
    if version >= 2 {
        req = req.with_include_fenced_brokers(true);
    }
    let resp = conn.request(&req).await?;
    if resp.error_code != 0 {
        return Err(Problem::Retry(format!(
            "DescribeCluster failed with error {}",
            resp.error_code
        )));
    }
    Ok(resp.brokers.len())
}

/// Those of `topics` the cluster does not have.
async fn missing_of(
    conn: &mut BrokerConnection,
    cluster: &Cluster,
    topics: &[Topic],
) -> std::result::Result<Vec<Topic>, Problem> {
    let names: Vec<String> = topics.iter().map(|t| cluster.cfg.topic_name(*t)).collect();
    let md = conn.topic_metadata(&names).await?;
    let unknown: Vec<String> = md
        .topics
        .iter()
        .filter(|t| t.error_code == UNKNOWN_TOPIC_OR_PARTITION)
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect();
    Ok(topics
        .iter()
        .copied()
        .filter(|t| unknown.contains(&cluster.cfg.topic_name(*t)))
        .collect())
}

/// Creates `missing`. Those refused for a reason that may pass (too few brokers up to
/// place the replicas, the controller moving) make a `Problem::Retry`; the next attempt
/// finds which are still missing.
async fn create(
    conn: &mut BrokerConnection,
    cluster: &Cluster,
    missing: &[Topic],
    replication: Replication,
    report: &mut ProvisionReport,
) -> std::result::Result<(), Problem> {
    let cfg = &cluster.cfg;
    let by_name: HashMap<String, Topic> =
        missing.iter().map(|t| (cfg.topic_name(*t), *t)).collect();
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(i32::try_from(cfg.request_deadline.as_millis()).unwrap_or(i32::MAX))
        .with_topics(
            missing
                .iter()
                .map(|t| {
                    CreatableTopic::default()
                        .with_name(TopicName(StrBytes::from_string(cfg.topic_name(*t))))
                        .with_num_partitions(cfg.partitions_of(*t))
                        .with_replication_factor(replication.factor)
                        .with_configs(vec![CreatableTopicConfig::default()
                            .with_name(StrBytes::from_static_str(MIN_INSYNC))
                            .with_value(Some(StrBytes::from_string(
                                replication.min_insync.to_string(),
                            )))])
                })
                .collect(),
        );
    let resp = conn.request(&req).await?;
    let mut reasons = Vec::new();
    for r in resp.topics {
        let name = r.name.0.to_string();
        let Some(&topic) = by_name.get(&name) else {
            continue;
        };
        let message = r.error_message.as_ref().map_or("", |m| m.as_str());
        match r.error_code {
            0 => {
                info!(topic = %name, partitions = cfg.partitions_of(topic),
                    replication_factor = replication.factor,
                    min_insync_replicas = replication.min_insync, "topic created");
                report.created.push(topic);
            }
            // Another instance won the race: compared with the existing ones.
            TOPIC_ALREADY_EXISTS => {}
            REQUEST_TIMED_OUT
            | BROKER_NOT_AVAILABLE
            | NOT_CONTROLLER
            | INVALID_REPLICATION_FACTOR => {
                reasons.push(format!("{name}: {message}"));
            }
            code => {
                return Err(Problem::Fatal(folio_domain::Error::Internal(format!(
                    "kafka: creating topic {name} failed with error {code}: {message}"
                ))))
            }
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(Problem::Retry(reasons.join("; ")))
    }
}

/// Partition counts, replicas and `min.insync.replicas` of existing topics.
async fn describe(
    conn: &mut BrokerConnection,
    cluster: &Cluster,
    topics: &[Topic],
) -> std::result::Result<BTreeMap<Topic, TopicState>, Problem> {
    let cfg = &cluster.cfg;
    let names: Vec<String> = topics.iter().map(|t| cfg.topic_name(*t)).collect();
    let md = conn.topic_metadata(&names).await?;
    let mut out = BTreeMap::new();
    for t in md.topics {
        let Some(topic) = t
            .name
            .as_ref()
            .and_then(|n| cfg.topic_from_name(n.0.as_str()))
        else {
            continue;
        };
        if t.error_code != 0 || t.partitions.is_empty() {
            return Err(Problem::Retry(format!(
                "metadata of {} answered error {}",
                cfg.topic_name(topic),
                t.error_code
            )));
        }
        let min_replicas = t
            .partitions
            .iter()
            .map(|p| i16::try_from(p.replica_nodes.len()).unwrap_or(i16::MAX))
            .min()
            .unwrap_or(0);
        out.insert(
            topic,
            TopicState {
                partitions: t.partitions.len() as i32,
                min_replicas,
                min_insync: None,
            },
        );
    }
    let req = DescribeConfigsRequest::default().with_resources(
        names
            .iter()
            .map(|n| {
                DescribeConfigsResource::default()
                    .with_resource_type(TOPIC_RESOURCE)
                    .with_resource_name(StrBytes::from_string(n.clone()))
                    .with_configuration_keys(Some(vec![StrBytes::from_static_str(MIN_INSYNC)]))
            })
            .collect(),
    );
    let resp = conn.request(&req).await?;
    for r in resp.results {
        if r.error_code != 0 {
            warn!(topic = %r.resource_name.as_str(), error = r.error_code,
                "cannot read the topic's min.insync.replicas; not checked");
            continue;
        }
        let Some(topic) = cfg.topic_from_name(r.resource_name.as_str()) else {
            continue;
        };
        let value = r
            .configs
            .iter()
            .find(|c| c.name.as_str() == MIN_INSYNC)
            .and_then(|c| c.value.as_ref())
            .and_then(|v| v.as_str().parse::<i16>().ok());
        if let Some(state) = out.get_mut(&topic) {
            state.min_insync = value;
        }
    }
    Ok(out)
}

/// Waits until rskafka's metadata shows every topic of `topics`: the controller
/// acknowledges a creation before every broker's metadata has it, and a publisher started
/// right after provisioning must see the topics.
async fn await_visible(cluster: &Cluster, topics: &[Topic]) -> Result<()> {
    let cfg = &cluster.cfg;
    let give_up = Instant::now() + cfg.request_deadline;
    loop {
        let counts = cluster.partition_counts().await?;
        let missing: Vec<String> = topics
            .iter()
            .map(|t| cfg.topic_name(*t))
            .filter(|n| !counts.contains_key(n))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= give_up {
            return Err(unavailable(format!(
                "created topics {missing:?} did not appear in metadata within {:?}",
                cfg.request_deadline
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Deletes those of `topics` that exist under the configured prefix; returns how many it
/// deleted. The reverse of [`ensure_topics`], for tearing down an isolated run.
pub(crate) async fn delete_topics(cluster: &Cluster, topics: &[Topic]) -> Result<usize> {
    let cfg = &cluster.cfg;
    let existing = cluster.partition_counts().await?;
    let controller = cluster
        .rs
        .controller_client()
        .map_err(|e| from_rskafka("controller", e))?;
    let timeout_ms = i32::try_from(cfg.request_deadline.as_millis()).unwrap_or(i32::MAX);
    let mut deleted = 0;
    for &topic in topics {
        let name = cfg.topic_name(topic);
        if !existing.contains_key(&name) {
            continue;
        }
        match controller.delete_topic(name.clone(), timeout_ms).await {
            Ok(()) => {
                info!(topic = %name, "topic deleted");
                deleted += 1;
            }
            // Someone else deleted it meanwhile.
            Err(RsError::ServerError {
                protocol_error: ProtocolError::UnknownTopicOrPartition,
                ..
            }) => {}
            Err(e) => return Err(from_rskafka("delete topic", e)),
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(factor: i16, min_insync: i16) -> Replication {
        Replication { factor, min_insync }
    }

    fn state(min_replicas: i16, min_insync: Option<i16>) -> TopicState {
        TopicState {
            partitions: 3,
            min_replicas,
            min_insync,
        }
    }

    #[test]
    fn a_topic_replicated_as_configured_or_better_is_fine() {
        let v = Topic::BookViews;
        assert!(shortfalls(v, "book.views", rep(3, 2), state(3, Some(2))).is_empty());
        assert!(shortfalls(v, "book.views", rep(3, 2), state(5, Some(3))).is_empty());
        assert!(shortfalls(v, "book.views", rep(1, 1), state(1, Some(1))).is_empty());
        // A broker that did not say its min.insync.replicas: only replicas are checked.
        assert!(shortfalls(v, "book.views", rep(3, 2), state(3, None)).is_empty());
    }

    #[test]
    fn fewer_replicas_or_a_lower_minimum_are_each_reported_with_the_way_out() {
        let found = shortfalls(
            Topic::BookViews,
            "p-book.views",
            rep(3, 2),
            state(1, Some(1)),
        );
        assert_eq!(
            found.iter().map(|s| s.kind).collect::<Vec<_>>(),
            [
                ShortfallKind::Replicas {
                    configured: 3,
                    actual: 1
                },
                ShortfallKind::MinInsync {
                    configured: 2,
                    actual: 1
                }
            ]
        );
        assert_eq!(
            found[0].to_string(),
            "topic p-book.views has partitions with 1 replica(s), fewer than the replication \
             factor 3 (KAFKA_REPLICATION_FACTOR): losing a broker can lose them. folio never \
             changes an existing topic; add replicas with kafka-reassign-partitions"
        );
        assert!(
            found[1].to_string().starts_with(
                "topic p-book.views has min.insync.replicas=1, lower than 2 (KAFKA_MIN_INSYNC_REPLICAS)"
            ),
            "{}",
            found[1]
        );
        assert!(found[1]
            .to_string()
            .ends_with("--entity-name p-book.views --add-config min.insync.replicas=2"));
        let only_isr = shortfalls(
            Topic::DeadLetters,
            "analytics.dlq",
            rep(3, 2),
            state(3, Some(1)),
        );
        assert_eq!(only_isr.len(), 1);
        assert_eq!(only_isr[0].topic, Topic::DeadLetters);
    }
}
