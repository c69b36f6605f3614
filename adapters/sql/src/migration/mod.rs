//! Schema migrations, applied by [`crate::connect`] and [`crate::migrate`].
//!
//! Every statement is `IF NOT EXISTS`, so a migration that a concurrent instance already
//! applied (or half-applied before a crash on SQLite, where DDL here is not wrapped in one
//! transaction) is harmless to run again. On PostgreSQL `sea-orm-migration` runs the whole
//! set in one transaction and [`crate::connect`] holds an advisory lock around it.

use sea_orm_migration::prelude::*;

mod m20260101_000001_initial;
mod m20260601_000002_stats_rollups;
mod m20261203_000003_catalog_revision;

pub(crate) use m20261203_000003_catalog_revision::CatalogRevision;

/// folio's migrations, oldest first. Add new ones at the end; never edit an applied one.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20260101_000001_initial::Migration),
            Box::new(m20260601_000002_stats_rollups::Migration),
            Box::new(m20261203_000003_catalog_revision::Migration),
        ]
    }
}
