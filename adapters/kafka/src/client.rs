//! The entry point: [`KafkaClient`] wraps the cluster handle and hands out what the apps
//! use: publishers, group members and topic provisioning. It only composes; the parts it
//! hands out know the cluster handle, never this type.

use std::collections::HashMap;

use folio_domain::ports::{PartitionLag, PartitionOffsets, ProducerStats};
use folio_domain::topics::Topic;
use folio_domain::Result;
use tracing::instrument;

use crate::admin::{self, ProvisionReport};
use crate::cluster::Cluster;
use crate::config::KafkaConfig;
use crate::group::KafkaGroupConsumer;
use crate::offsets;
use crate::publisher::KafkaPublisher;

/// A connected Kafka client. Cheap to clone; clones share connections.
#[derive(Clone, Debug)]
pub struct KafkaClient {
    cluster: Cluster,
}

impl KafkaClient {
    /// Connects to the bootstrap brokers (fails with `Unavailable` if none answers within
    /// the request deadline).
    #[instrument(skip(cfg), fields(bootstrap = ?cfg.bootstrap))]
    pub async fn connect(cfg: KafkaConfig) -> Result<Self> {
        Ok(KafkaClient {
            cluster: Cluster::connect(cfg).await?,
        })
    }

    pub fn config(&self) -> &KafkaConfig {
        &self.cluster.cfg
    }

    /// Partition counts of the topics that exist on the broker, by broker-side name.
    pub async fn partition_counts(&self) -> Result<HashMap<String, i32>> {
        self.cluster.partition_counts().await
    }

    /// Creates the missing ones of `topics` with the configured partition counts and
    /// replication (`KafkaConfig::partitions_of`, `Replication::resolve`). A topic that
    /// exists with another count, fewer replicas or a lower `min.insync.replicas` is
    /// reported and logged, never changed.
    #[instrument(skip(self))]
    pub async fn ensure_topics(&self, topics: &[Topic]) -> Result<ProvisionReport> {
        admin::ensure_topics(&self.cluster, topics).await
    }

    /// Deletes those of `topics` that exist under this client's prefix; returns how many it
    /// deleted. The reverse of [`KafkaClient::ensure_topics`], for tearing down an isolated
    /// run (tests, a staging prefix). The services never call it.
    #[instrument(skip(self))]
    pub async fn delete_topics(&self, topics: &[Topic]) -> Result<usize> {
        admin::delete_topics(&self.cluster, topics).await
    }

    /// Whether a broker answers a metadata request now (readiness).
    pub async fn check(&self) -> Result<()> {
        self.cluster.partition_counts().await.map(|_| ())
    }

    /// The lag of every fetcher of this client's group members, from their last fetch.
    pub fn consumer_lag(&self) -> Vec<PartitionLag> {
        self.cluster.observed.lags()
    }

    /// The records of every publisher of this client, summed.
    pub fn producer_stats(&self) -> ProducerStats {
        self.cluster.observed.producer()
    }

    /// Where `group` (behind the configured group prefix) stands on every partition of
    /// `topics` that exists: its committed offset and metadata, the log start and the high
    /// watermark, asked now without joining the group. `Unavailable` when the brokers do
    /// not answer within a few seconds (`offsets::GROUP_OFFSETS_DEADLINE`, or the request
    /// deadline if shorter).
    pub async fn group_offsets(
        &self,
        group: &str,
        topics: &[Topic],
    ) -> Result<Vec<PartitionOffsets>> {
        let name = self.cluster.cfg.group_name(group);
        offsets::group_offsets(&self.cluster, &name, topics).await
    }

    /// A publisher with its own buffers; publishers share this client's connections.
    pub fn publisher(&self) -> KafkaPublisher {
        KafkaPublisher::new(self.cluster.clone())
    }

    /// Joins `group` (behind the configured group prefix) as a new member subscribed to
    /// `topics`. Returns at once; the member joins in the background and its partitions
    /// arrive through `poll`.
    pub async fn group_consumer(
        &self,
        group: &str,
        topics: &[Topic],
    ) -> Result<KafkaGroupConsumer> {
        let name = self.cluster.cfg.group_name(group);
        KafkaGroupConsumer::join(self.cluster.clone(), &name, topics).await
    }
}

/// Shorthand for [`KafkaClient::ensure_topics`].
pub async fn ensure_topics(client: &KafkaClient, topics: &[Topic]) -> Result<ProvisionReport> {
    client.ensure_topics(topics).await
}
