//! The bus the configuration names: Kafka when `KAFKA_BOOTSTRAP` is set, else a fresh
//! in-process bus (which only makes sense when both roles share the process, `folio`).

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use folio_domain::ports::MessageBus;
pub use folio_domain::ports::Readiness;
use folio_kafka::KafkaConfig;

use crate::config::BusArgs;

/// Connects to the bus `args` names.
pub async fn connect_bus(args: &BusArgs) -> anyhow::Result<Arc<dyn MessageBus>> {
    match &args.kafka_bootstrap {
        None => Ok(Arc::new(folio_memory::MemoryBus::new())),
        Some(bootstrap) => {
            let mut cfg = KafkaConfig::new(bootstrap);
            cfg.topic_prefix = args.topic_prefix.clone();
            cfg.group_prefix = args.group_prefix.clone();
            cfg.replication_factor = args.kafka_replication_factor;
            cfg.min_insync_replicas = args.kafka_min_insync_replicas;
            cfg.partitions = args.kafka_partitions.clone();
            cfg.group_protocol = args.kafka_group_protocol;
            cfg.group_instance_id = args
                .kafka_group_instance_id
                .clone()
                .filter(|i| !i.trim().is_empty());
            args.security.apply(&mut cfg)?;
            let bus = folio_kafka::KafkaBus::connect(cfg)
                .await
                .with_context(|| format!("connecting to Kafka at {bootstrap}"))?;
            Ok(Arc::new(bus))
        }
    }
}

/// The services that need Kafka refuse to start without it.
pub fn require_kafka(args: &BusArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.kafka_bootstrap.is_some(),
        "set KAFKA_BOOTSTRAP (e.g. 127.0.0.1:19092 from scripts/kafka-local start); \
         to try folio without Kafka run the all-in-one `folio` binary instead"
    );
    Ok(())
}

/// The bus as a readiness check (`kafka` in `/health/ready`): not ready while no broker
/// answers.
pub struct BusReadiness(pub Arc<dyn MessageBus>);

#[async_trait]
impl Readiness for BusReadiness {
    fn name(&self) -> &'static str {
        "kafka"
    }

    async fn check(&self) -> folio_domain::Result<()> {
        self.0.check().await
    }
}
