//! The bus contract on a real Kafka broker (`KAFKA_BOOTSTRAP`, or a container under
//! `FOLIO_TESTCONTAINERS=1`). Each test gets its own topics and consumer groups through a
//! unique prefix. Without a broker these tests fail and say how to provide one.

use std::sync::Arc;

use folio_domain::ports::MessageBus;
use folio_kafka::KafkaBus;
use folio_tests::kafka_env::{kafka, KafkaEnv};

async fn kafka_bus(test: &str) -> anyhow::Result<(KafkaEnv, Arc<dyn MessageBus>)> {
    let env = kafka().await;
    let bus = KafkaBus::connect(env.config(test)).await?;
    bus.provision().await?;
    Ok((env, Arc::new(bus)))
}

folio_tests::bus_contract_suite!(kafka_bus);
