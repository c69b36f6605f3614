//! The storage contract suite on SQLite: a fresh database file per test.

use folio_sql::SqlStore;
use tempfile::TempDir;

async fn sqlite_store() -> anyhow::Result<(TempDir, SqlStore)> {
    let dir = tempfile::tempdir()?;
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("folio.db").display()
    );
    let store = folio_sql::connect(&url).await?;
    Ok((dir, store))
}

folio_tests::contract_suite!(sqlite_store);
