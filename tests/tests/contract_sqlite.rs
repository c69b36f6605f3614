//! The storage contract suite on SQLite: a fresh database file per test.
//!
//! Automatic pruning is off: the suite's windows are in March 2026, and a store pruning by
//! the wall clock would drop them. The retention checks prune explicitly instead.

use folio_sql::{SqlOptions, SqlStore};
use tempfile::TempDir;

async fn sqlite_store() -> anyhow::Result<(TempDir, SqlStore)> {
    let dir = tempfile::tempdir()?;
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("folio.db").display()
    );
    let options = SqlOptions {
        stats_retention: None,
    };
    let store = folio_sql::connect_with(&url, options).await?;
    Ok((dir, store))
}

folio_tests::contract_suite!(sqlite_store);
