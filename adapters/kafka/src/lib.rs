//! folio's Kafka adapter: the bus ports ([`RecordPublisher`], [`GroupConsumer`],
//! [`MessageBus`]) over Apache Kafka, with rskafka for producing, fetching and topic admin,
//! and folio's own implementation of Kafka's consumer group protocol.
//!
//! # Layout
//! - [`config`]: [`KafkaConfig`], one set of settings (brokers, TLS, SASL, batching,
//!   timeouts, topic prefix) for every connection the adapter opens.
//! - `cluster`: the one cluster handle (configuration, rskafka's client and its
//!   metadata, folio's own connections, the coordinator lookup, the backoff policy) that
//!   the publisher, the fetchers, the group member and the admin each hold. It knows none
//!   of them; a unit test below checks that no module imports one that imports it back.
//! - [`client`]: [`KafkaClient`], the connected entry point that hands out the parts
//!   below; it only composes them.
//! - [`admin`]: topic provisioning ([`KafkaClient::ensure_topics`]) with the configured
//!   partition counts and replication (CreateTopics with `min.insync.replicas`), warnings
//!   for existing topics replicated less than configured, and the reverse
//!   ([`KafkaClient::delete_topics`]) for tearing down an isolated run.
//! - `leaders`: keeps rskafka's cached partition leaders from going stale after a broker
//!   restart or a leader move (refreshed whenever a partition operation fails or the
//!   coordinator returns).
//! - [`publisher`]: [`KafkaPublisher`], per-partition batching with a bounded in-flight
//!   budget, acks=all.
//! - [`group`]: [`KafkaGroupConsumer`], a member of a consumer group (KIP-848
//!   `ConsumerGroupHeartbeat`, `OffsetFetch`, `OffsetCommit`) that reads its partitions with
//!   one fetcher task each.
//!   With `KAFKA_GROUP_PROTOCOL=classic` (or `auto` on a broker without KIP-848) the
//!   member speaks the classic protocol instead (`classic`: JoinGroup, SyncGroup,
//!   Heartbeat, LeaveGroup, with a client-side `assignor`: cooperative-sticky, else
//!   range); `membership` holds the state both share with `poll`.
//! - `offsets`: `OffsetFetch` (building the request, reading the answer) for the group
//!   member and for [`KafkaClient::group_offsets`], where a group stands on its topics
//!   (committed offsets, log starts, high watermarks) without being one of its members.
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

pub mod admin;
mod assignor;
mod classic;
pub mod client;
mod cluster;
pub mod config;
mod errors;
pub mod group;
mod leaders;
mod membership;
mod offsets;
pub mod publisher;
mod wire;

use std::sync::Arc;

use async_trait::async_trait;
use folio_domain::ports::{
    GroupConsumer, MessageBus, PartitionLag, PartitionOffsets, ProducerStats, RecordPublisher,
};
use folio_domain::topics::Topic;
use folio_domain::Result;

pub use admin::{ProvisionReport, Shortfall, ShortfallKind};
pub use client::{ensure_topics, KafkaClient};
pub use config::{
    parse_partitions, tls_config, ClientCertificate, GroupProtocol, KafkaConfig, Replication,
    SaslMechanism, SaslSettings, COMMIT_METADATA_MAX_BYTES,
};
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

    /// A metadata request to any broker.
    async fn check(&self) -> Result<()> {
        self.client.check().await
    }

    fn consumer_lag(&self) -> Vec<PartitionLag> {
        self.client.consumer_lag()
    }

    fn producer_stats(&self) -> ProducerStats {
        self.client.producer_stats()
    }

    /// Asked of the group's coordinator and the partitions' leaders, within a few seconds.
    async fn group_offsets(
        &self,
        group: &str,
        topics: &[Topic],
    ) -> Result<Option<Vec<PartitionOffsets>>> {
        self.client.group_offsets(group, topics).await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    //! The adapter's modules import each other without a loop: every part uses the
    //! cluster handle, and the handle knows none of them.

    use std::collections::{BTreeMap, BTreeSet};

    /// Each module's source, outside its `#[cfg(test)] mod tests`.
    const MODULES: [(&str, &str); 14] = [
        ("admin", include_str!("admin.rs")),
        ("assignor", include_str!("assignor.rs")),
        ("classic", include_str!("classic.rs")),
        ("client", include_str!("client.rs")),
        ("cluster", include_str!("cluster.rs")),
        ("config", include_str!("config.rs")),
        ("errors", include_str!("errors.rs")),
        ("group", include_str!("group.rs")),
        ("leaders", include_str!("leaders.rs")),
        ("membership", include_str!("membership.rs")),
        ("offsets", include_str!("offsets.rs")),
        ("publisher", include_str!("publisher.rs")),
        ("wire", include_str!("wire.rs")),
        ("lib", include_str!("lib.rs")),
    ];

    fn imports() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
        let names: Vec<&str> = MODULES.iter().map(|(n, _)| *n).collect();
        MODULES
            .iter()
            .map(|(name, src)| {
                let body = src.split("#[cfg(test)]\nmod tests").next().unwrap_or(src);
                let used = names
                    .iter()
                    .copied()
                    .filter(|m| *m != *name && *m != "lib")
                    .filter(|m| {
                        body.contains(&format!("crate::{m}::"))
                            || body.contains(&format!("crate::{m};"))
                    })
                    .collect();
                (*name, used)
            })
            .collect()
    }

    #[test]
    fn no_module_imports_one_that_imports_it_back() {
        let graph = imports();
        for (name, _) in MODULES.iter().filter(|(n, _)| *n != "lib") {
            // Depth-first from each module: it must never reach itself.
            let mut stack: Vec<&str> = graph[name].iter().copied().collect();
            let mut seen = BTreeSet::new();
            while let Some(m) = stack.pop() {
                assert_ne!(
                    m, *name,
                    "{name} reaches itself through its imports: {graph:?}"
                );
                if seen.insert(m) {
                    stack.extend(graph[m].iter().copied());
                }
            }
        }
        for part in ["admin", "classic", "group", "publisher"] {
            assert!(
                graph[part].contains("cluster"),
                "{part} uses the cluster handle"
            );
            assert!(
                !graph[part].contains("client"),
                "{part} does not know KafkaClient"
            );
        }
        for leaf in ["cluster", "leaders"] {
            for part in ["admin", "client", "group", "publisher"] {
                assert!(!graph[leaf].contains(part), "{leaf} imports {part}");
            }
        }
    }
}
