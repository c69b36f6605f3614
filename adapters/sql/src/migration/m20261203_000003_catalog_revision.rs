//! The catalog's revision: one row whose number every committed change of a book or its
//! file moves, in the same transaction, so every bookstore instance on the database can
//! tell whether its cached book pages are still current (`folio_domain::services::BookCache`).
//! The row is created by the first change (an upsert), so an empty table reads as 0.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000003_catalog_revision"
    }
}

#[derive(DeriveIden)]
pub(crate) enum CatalogRevision {
    Table,
    Id,
    Revision,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(CatalogRevision::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(CatalogRevision::Id)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(CatalogRevision::Revision)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(CatalogRevision::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
