//! The bus contract on the in-process bus: the embedded mode and every unit test built on
//! `MemoryBus` rely on it behaving like Kafka, so it passes the same checks.

use std::sync::Arc;

use folio_domain::ports::MessageBus;
use folio_memory::MemoryBus;

async fn memory_bus(_test: &str) -> anyhow::Result<((), Arc<dyn MessageBus>)> {
    Ok(((), Arc::new(MemoryBus::new())))
}

folio_tests::bus_contract_suite!(memory_bus);
