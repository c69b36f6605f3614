//! The storage contract suite on the in-memory fakes: the fakes earn trust by passing the
//! same checks as the SQL store.

use folio_memory::MemoryStore;

async fn memory_store() -> anyhow::Result<((), MemoryStore)> {
    Ok(((), MemoryStore::new()))
}

folio_tests::contract_suite!(memory_store);
