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
use folio_tests::kafka_env::{postgres, PgEnv};

async fn postgres_store() -> anyhow::Result<(PgEnv, SqlStore)> {
    let pg = postgres().await;
    let scoped = pg.fresh_schema().await?;
    let options = SqlOptions {
        stats_retention: None,
    };
    let store = folio_sql::connect_with(&scoped, options).await?;
    Ok((pg, store))
}

folio_tests::contract_suite!(postgres_store);
