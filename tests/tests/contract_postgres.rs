//! The storage contract suite on PostgreSQL: each test gets a schema of its own in the
//! database `DATABASE_URL` names.
//!
//! Without PostgreSQL these tests fail, never pass silently: set
//! `DATABASE_URL=postgres://user:password@host:5432/database`, or run `scripts/test`, which
//! starts one.
//!
//! Automatic pruning is off: the suite's windows are in March 2026, and a store pruning by
//! the wall clock would drop them. The retention checks prune explicitly instead.

use folio_sql::{SqlOptions, SqlStore};

async fn postgres_store() -> anyhow::Result<((), SqlStore)> {
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => url,
        Ok(other) => panic!(
            "DATABASE_URL is {other:?}, not PostgreSQL: set \
             DATABASE_URL=postgres://user:password@host:5432/database, or run scripts/test, \
             which starts one"
        ),
        Err(_) => panic!(
            "the PostgreSQL contract tests need a PostgreSQL server and DATABASE_URL is unset: set \
             DATABASE_URL=postgres://user:password@host:5432/database, or run scripts/test, \
             which starts one"
        ),
    };
    let scoped = folio_sql::fresh_schema_url(&url).await?;
    let options = SqlOptions {
        stats_retention: None,
    };
    Ok(((), folio_sql::connect_with(&scoped, options).await?))
}

folio_tests::contract_suite!(postgres_store);
