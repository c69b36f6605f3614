//! Statistics rollups and retention: hourly, daily and all-time sums of `window_stats` per
//! (book, source topic) and over all books, a per-window table over all books, and the
//! retention horizon. Existing aggregates are rolled up once here, so a database that
//! already holds statistics keeps every figure when it upgrades. See `docs/sql-store.md`.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};

use crate::stats::{rebuild_rollups, StatsTable};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20260601_000002_stats_rollups"
    }
}

#[derive(DeriveIden)]
enum Rollup {
    BucketStart,
    BookId,
    SourceTopic,
    WindowEnd,
    Events,
    Anonymous,
    FirstAt,
    LastAt,
    RevenueCents,
    Currency,
    ReviewsCreated,
    ReviewsUpdated,
    ReviewLengthDelta,
    RatingsCreated,
    RatingsUpdated,
    RatingSumDelta,
    R1,
    R2,
    R3,
    R4,
    R5,
    SubmittedRatingSum,
    UsersSketch,
}

#[derive(DeriveIden)]
enum StatsHorizon {
    Table,
    Id,
    PrunedBefore,
}

fn big(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).big_integer().not_null().to_owned()
}

fn counter(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .big_integer()
        .not_null()
        .default(0)
        .to_owned()
}

/// One rollup table: the figure columns of `window_stats` under the key (bucket start,
/// book, source topic). Overview tables use book 0 for "every book", so all seven share
/// one shape and one piece of code.
fn rollup_table(table: StatsTable) -> TableCreateStatement {
    Table::create()
        .table(table)
        .if_not_exists()
        .col(big(Rollup::BucketStart))
        .col(big(Rollup::BookId))
        .col(ColumnDef::new(Rollup::SourceTopic).string().not_null())
        .col(big(Rollup::WindowEnd))
        .col(counter(Rollup::Events))
        .col(counter(Rollup::Anonymous))
        .col(ColumnDef::new(Rollup::FirstAt).big_integer().null())
        .col(ColumnDef::new(Rollup::LastAt).big_integer().null())
        .col(counter(Rollup::RevenueCents))
        .col(ColumnDef::new(Rollup::Currency).string().null())
        .col(counter(Rollup::ReviewsCreated))
        .col(counter(Rollup::ReviewsUpdated))
        .col(counter(Rollup::ReviewLengthDelta))
        .col(counter(Rollup::RatingsCreated))
        .col(counter(Rollup::RatingsUpdated))
        .col(counter(Rollup::RatingSumDelta))
        .col(counter(Rollup::R1))
        .col(counter(Rollup::R2))
        .col(counter(Rollup::R3))
        .col(counter(Rollup::R4))
        .col(counter(Rollup::R5))
        .col(counter(Rollup::SubmittedRatingSum))
        .col(ColumnDef::new(Rollup::UsersSketch).blob().null())
        .primary_key(
            Index::create()
                .col(Rollup::BucketStart)
                .col(Rollup::BookId)
                .col(Rollup::SourceTopic),
        )
        .to_owned()
}

/// Sketch blobs are rewritten whenever their bucket changes, and a dense one is 32 KiB (16 KiB if stored before 2^15 registers).
/// PostgreSQL compresses such values with pglz by default, which made rewriting the
/// all-time rollups of 200 books take ~190 ms per upsert; lz4 takes a seventh of that
/// and still stores them 40% smaller. A server built without lz4 stores them uncompressed instead,
/// which is as fast.
async fn fast_sketch_storage(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let lz4 = db
        .query_one(Statement::from_string(
            DbBackend::Postgres,
            "SELECT 1 AS lz4 FROM pg_settings \
             WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)",
        ))
        .await?
        .is_some();
    let setting = if lz4 {
        "SET COMPRESSION lz4"
    } else {
        "SET STORAGE EXTERNAL"
    };
    let tables = StatsTable::ROLLUPS
        .into_iter()
        .chain([StatsTable::WINDOWS])
        .map(StatsTable::name);
    for table in tables {
        db.execute_unprepared(&format!(
            "ALTER TABLE {table} ALTER COLUMN users_sketch {setting}"
        ))
        .await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in StatsTable::ROLLUPS {
            manager.create_table(rollup_table(table)).await?;
        }
        // Ranges over all books use the primary key (it leads with the bucket); one book's
        // range uses these. The all-time table's key is (0, book, topic) already.
        for (name, table) in [
            ("stats_hourly_book_idx", StatsTable::BOOK_HOURLY),
            ("stats_daily_book_idx", StatsTable::BOOK_DAILY),
        ] {
            manager
                .create_index(
                    Index::create()
                        .if_not_exists()
                        .name(name)
                        .table(table)
                        .col(Rollup::BookId)
                        .col(Rollup::BucketStart)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(StatsHorizon::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(StatsHorizon::Id)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(big(StatsHorizon::PrunedBefore))
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            fast_sketch_storage(manager).await?;
        }
        // In a transaction of its own (a savepoint on PostgreSQL, where the migration is
        // one already): on SQLite a second instance migrating the same file at the same
        // time then rebuilds from a consistent state instead of racing the first one's
        // sink. It empties the rollups first, so running it again never adds twice.
        let txn = manager.get_connection().begin().await?;
        rebuild_rollups(&txn)
            .await
            .map_err(|e| DbErr::Custom(format!("rolling up window statistics: {e}")))?;
        txn.commit().await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(StatsHorizon::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        for table in StatsTable::ROLLUPS {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
