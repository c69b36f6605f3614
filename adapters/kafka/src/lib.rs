//! folio's Kafka adapter: the bus ports ([`RecordPublisher`], [`GroupConsumer`],
//! [`MessageBus`]) over Apache Kafka, with rskafka for producing, fetching and topic admin,
//! and folio's own implementation of Kafka's consumer group protocol.
//!
//! # Layout
//! - [`config`]: [`KafkaConfig`], one set of settings (brokers, TLS, SASL, batching,
//!   timeouts, topic prefix) for every connection the adapter opens.
//! - [`client`]: [`KafkaClient`], the connected entry point; topic provisioning
//!   ([`KafkaClient::ensure_topics`]) with the catalog's partition counts, and its reverse
//!   ([`KafkaClient::delete_topics`]) for tearing down an isolated run.
//! - `leaders`: keeps rskafka's cached partition leaders from going stale after a broker
//!   restart (refreshed whenever a partition operation fails or the coordinator returns).
//! - [`publisher`]: [`KafkaPublisher`], per-partition batching with a bounded in-flight
//!   budget, acks=all.
//! - [`group`]: [`KafkaGroupConsumer`], a member of a consumer group (KIP-848
//!   `ConsumerGroupHeartbeat`, `OffsetFetch`, `OffsetCommit`) that reads its partitions with
//!   one fetcher task each.
//! - `wire`: the small connection layer the group protocol needs and rskafka does not
//!   expose: framing, correlation ids, ApiVersions negotiation, TLS and SASL.
//! - [`KafkaBus`]: the [`MessageBus`] the composition roots take.
//!
//! # Flow
//! Publishing: `send` -> partition by key (murmur2 over the broker's partition count) ->
//! that partition's lane -> one produce request per batch -> acknowledged, permits returned.
//! `flush` sends a marker down every lane and waits for it.
//!
//! Consuming: the heartbeat task keeps the membership and records the broker's target
//! assignment; `poll` turns changes into `Revoked`/`Assigned` (revocations first, and only
//! acknowledged to the broker once the worker has seen them), starts a fetcher per new
//! partition at its committed offset, and otherwise returns fetched batches. `commit`
//! stores offsets with the member's current epoch, so a fenced member cannot overwrite its
//! successor's progress.
//!
//! Headers travel as Kafka record headers. rskafka keeps them in a map, so they come back
//! ordered by name and a repeated name keeps its last value.
//!
//! Decisions and their reasons: `docs/kafka-adapter.md`.

pub mod client;
pub mod config;
mod errors;
pub mod group;
mod leaders;
pub mod publisher;
mod wire;

use std::sync::Arc;

use async_trait::async_trait;
use folio_domain::ports::{GroupConsumer, MessageBus, RecordPublisher};
use folio_domain::topics::Topic;
use folio_domain::Result;

pub use client::{ensure_topics, KafkaClient, ProvisionReport};
pub use config::{tls_config, ClientCertificate, KafkaConfig, SaslMechanism, SaslSettings};
pub use group::KafkaGroupConsumer;
pub use publisher::{KafkaPublisher, PublisherStats};
pub use rskafka::client::partition::Compression;

/// Kafka as folio's [`MessageBus`]: one client (connections shared), a publisher with its
/// own buffers per caller, a new group member per `join`.
#[derive(Debug, Clone)]
pub struct KafkaBus {
    client: KafkaClient,
}

impl KafkaBus {
    /// Connects to the brokers `cfg` names.
    pub async fn connect(cfg: KafkaConfig) -> Result<Self> {
        let client = KafkaClient::connect(cfg).await?;
        Ok(Self::new(client))
    }

    pub fn new(client: KafkaClient) -> Self {
        KafkaBus { client }
    }

    pub fn client(&self) -> &KafkaClient {
        &self.client
    }
}

#[async_trait]
impl MessageBus for KafkaBus {
    /// A new publisher: each loop that flushes and then commits holds its own, so a
    /// failure is always reported to the loop whose records failed.
    fn publisher(&self) -> Arc<dyn RecordPublisher> {
        Arc::new(self.client.publisher())
    }

    async fn join(&self, group: &str, topics: &[Topic]) -> Result<Box<dyn GroupConsumer>> {
        Ok(Box::new(self.client.group_consumer(group, topics).await?))
    }

    async fn provision(&self) -> Result<()> {
        self.client.ensure_topics(&Topic::ALL).await.map(|_| ())
    }
}
