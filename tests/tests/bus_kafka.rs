//! The bus contract on a real Kafka broker (`KAFKA_BOOTSTRAP`, or a container under
//! `FOLIO_TESTCONTAINERS=1`), once per group protocol: `auto` (KIP-848 on Kafka 4.x) and
//! `classic` (JoinGroup/SyncGroup with folio's own assignor). Each test gets its own
//! topics and consumer groups through a unique prefix. Without a broker these tests fail
//! and say how to provide one.

use std::sync::Arc;

use folio_domain::ports::MessageBus;
use folio_kafka::{GroupProtocol, KafkaBus};
use folio_tests::kafka_env::{kafka, KafkaEnv};

async fn bus_with(
    protocol: GroupProtocol,
    test: &str,
) -> anyhow::Result<(KafkaEnv, Arc<dyn MessageBus>)> {
    let env = kafka().await.with_protocol(protocol);
    let bus = KafkaBus::connect(env.config(&format!("{}-{test}", protocol.name()))).await?;
    bus.provision().await?;
    Ok((env, Arc::new(bus)))
}

/// `auto`: KIP-848 where the broker has it (Kafka 4.x), classic otherwise.
mod auto {
    use super::*;

    async fn kafka_bus(test: &str) -> anyhow::Result<(KafkaEnv, Arc<dyn MessageBus>)> {
        bus_with(GroupProtocol::Auto, test).await
    }

    folio_tests::bus_contract_suite!(kafka_bus);
}

/// `KAFKA_GROUP_PROTOCOL=classic`.
mod classic {
    use super::*;

    async fn kafka_bus(test: &str) -> anyhow::Result<(KafkaEnv, Arc<dyn MessageBus>)> {
        bus_with(GroupProtocol::Classic, test).await
    }

    folio_tests::bus_contract_suite!(kafka_bus);
}
