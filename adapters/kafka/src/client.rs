//! The entry point: [`KafkaClient`] holds the rskafka client and the configuration, and
//! hands out publishers and group members. Topic provisioning lives here too.

use std::collections::HashMap;
use std::sync::Arc;

use folio_domain::topics::Topic;
use folio_domain::Result;
use rskafka::client::error::{Error as RsError, ProtocolError};
use rskafka::client::{Client, ClientBuilder};
use tracing::{info, instrument, warn};

use crate::config::KafkaConfig;
use crate::errors::from_rskafka;
use crate::group::KafkaGroupConsumer;
use crate::leaders::LeaderWatch;
use crate::publisher::KafkaPublisher;
use crate::wire::{connect_any, ConnectSettings};

/// A connected Kafka client. Cheap to clone; clones share connections.
#[derive(Clone, Debug)]
pub struct KafkaClient {
    pub(crate) cfg: Arc<KafkaConfig>,
    pub(crate) rs: Arc<Client>,
    pub(crate) leaders: Arc<LeaderWatch>,
}

/// Connects once over folio's own connection and fails at once if TLS refuses the broker's
/// certificate or the broker refuses the credentials or the mechanism. rskafka retries
/// those like a broken connection until its deadline, then may report only that no broker
/// answered. Any other failure here is left to rskafka's retries.
async fn refused_settings(cfg: &KafkaConfig) -> Result<()> {
    let settings = ConnectSettings::from_config(cfg);
    match tokio::time::timeout(cfg.request_deadline, connect_any(&cfg.bootstrap, &settings)).await {
        Ok(Err(e)) if e.is_refusal() => Err(e.into_domain()),
        _ => Ok(()),
    }
}

/// What [`KafkaClient::ensure_topics`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProvisionReport {
    /// Topics created now.
    pub created: Vec<Topic>,
    /// Topics that existed with the expected partition count.
    pub existing: Vec<Topic>,
    /// Topics that exist with another count: (topic, expected, actual). Left as they are.
    pub mismatched: Vec<(Topic, i32, i32)>,
}

impl KafkaClient {
    /// Connects to the bootstrap brokers (fails with `Unavailable` if none answers within
    /// the request deadline).
    #[instrument(skip(cfg), fields(bootstrap = ?cfg.bootstrap))]
    pub async fn connect(cfg: KafkaConfig) -> Result<Self> {
        let mut b = ClientBuilder::new(cfg.bootstrap.clone())
            .client_id(cfg.client_id.as_str())
            .backoff_config(cfg.backoff())
            .max_message_size(
                (cfg.fetch_max_bytes as usize)
                    .saturating_mul(2)
                    .max(16 * 1024 * 1024),
            );
        if let Some(tls) = &cfg.tls {
            b = b.tls_config(tls.clone());
        }
        if let Some(sasl) = &cfg.sasl {
            b = b.sasl_config(sasl.to_rskafka());
        }
        if cfg.sasl.is_some() || cfg.tls.is_some() {
            refused_settings(&cfg).await?;
        }
        let deadline = cfg.request_deadline;
        let rs = tokio::time::timeout(deadline, b.build())
            .await
            .map_err(|_| {
                crate::errors::unavailable(format!(
                    "no broker of {:?} answered within {deadline:?}",
                    cfg.bootstrap
                ))
            })?
            .map_err(|e| from_rskafka("connect", e))?;
        Ok(KafkaClient {
            cfg: Arc::new(cfg),
            rs: Arc::new(rs),
            leaders: Arc::default(),
        })
    }

    pub fn config(&self) -> &KafkaConfig {
        &self.cfg
    }

    /// Partition counts of the topics that exist on the broker, by broker-side name.
    pub async fn partition_counts(&self) -> Result<HashMap<String, i32>> {
        let topics = self
            .rs
            .list_topics()
            .await
            .map_err(|e| from_rskafka("list topics", e))?;
        Ok(topics
            .into_iter()
            .map(|t| (t.name, t.partitions.len() as i32))
            .collect())
    }

    /// Creates the missing ones of `topics` with the catalog's partition counts. A topic
    /// that exists with another count is reported and logged, never repartitioned.
    #[instrument(skip(self))]
    pub async fn ensure_topics(&self, topics: &[Topic]) -> Result<ProvisionReport> {
        let mut report = ProvisionReport::default();
        let mut existing = self.partition_counts().await?;
        let controller = self
            .rs
            .controller_client()
            .map_err(|e| from_rskafka("controller", e))?;
        let timeout_ms = i32::try_from(self.cfg.request_deadline.as_millis()).unwrap_or(i32::MAX);
        for &topic in topics {
            let name = self.cfg.topic_name(topic);
            let expected = topic.partitions();
            if !existing.contains_key(&name) {
                match controller
                    .create_topic(
                        name.clone(),
                        expected,
                        self.cfg.replication_factor,
                        timeout_ms,
                    )
                    .await
                {
                    Ok(()) => {
                        info!(topic = %name, partitions = expected, "topic created");
                        report.created.push(topic);
                        continue;
                    }
                    // Another instance won the race: compare what it made.
                    Err(RsError::ServerError {
                        protocol_error: ProtocolError::TopicAlreadyExists,
                        ..
                    }) => existing = self.partition_counts().await?,
                    Err(e) => return Err(from_rskafka("create topic", e)),
                }
            }
            let actual = existing.get(&name).copied().unwrap_or(expected);
            if actual == expected {
                report.existing.push(topic);
            } else {
                warn!(
                    topic = %name,
                    expected,
                    actual,
                    "topic exists with a different partition count; left as it is (folio never repartitions)"
                );
                report.mismatched.push((topic, expected, actual));
            }
        }
        if !report.created.is_empty() {
            self.await_visible(&report.created).await?;
        }
        Ok(report)
    }

    /// Deletes those of `topics` that exist under this client's prefix; returns how many it
    /// deleted. The reverse of [`KafkaClient::ensure_topics`], for tearing down an isolated
    /// run (tests, a staging prefix). The services never call it.
    #[instrument(skip(self))]
    pub async fn delete_topics(&self, topics: &[Topic]) -> Result<usize> {
        let existing = self.partition_counts().await?;
        let controller = self
            .rs
            .controller_client()
            .map_err(|e| from_rskafka("controller", e))?;
        let timeout_ms = i32::try_from(self.cfg.request_deadline.as_millis()).unwrap_or(i32::MAX);
        let mut deleted = 0;
        for &topic in topics {
            let name = self.cfg.topic_name(topic);
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

    /// Waits until metadata shows every topic of `topics` with all its partitions: the
    /// controller acknowledges a creation before every broker's metadata has it, and a
    /// publisher started right after provisioning must see the topics.
    async fn await_visible(&self, topics: &[Topic]) -> Result<()> {
        let give_up = tokio::time::Instant::now() + self.cfg.request_deadline;
        loop {
            let counts = self.partition_counts().await?;
            let missing: Vec<String> = topics
                .iter()
                .map(|t| self.cfg.topic_name(*t))
                .filter(|n| !counts.contains_key(n))
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= give_up {
                return Err(crate::errors::unavailable(format!(
                    "created topics {missing:?} did not appear in metadata within {:?}",
                    self.cfg.request_deadline
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// A publisher with its own buffers; publishers share this client's connections.
    pub fn publisher(&self) -> KafkaPublisher {
        KafkaPublisher::new(self.clone())
    }

    /// Joins `group` (behind the configured group prefix) as a new member subscribed to
    /// `topics`. Returns at once; the member joins in the background and its partitions
    /// arrive through `poll`.
    pub async fn group_consumer(
        &self,
        group: &str,
        topics: &[Topic],
    ) -> Result<KafkaGroupConsumer> {
        KafkaGroupConsumer::join(self.clone(), &self.cfg.group_name(group), topics).await
    }
}

/// Shorthand for [`KafkaClient::ensure_topics`].
pub async fn ensure_topics(client: &KafkaClient, topics: &[Topic]) -> Result<ProvisionReport> {
    client.ensure_topics(topics).await
}
