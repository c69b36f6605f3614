//! folio's SQL adapter: the bookstore's database on SQLite (the embedded default) or
//! PostgreSQL, chosen by the URL given to [`connect`].
//!
//! One [`SqlStore`] implements every storage port of the domain: users, the catalog and
//! its files, purchases, reviews and ratings, the transactional outbox, the statistics
//! sink and the admin statistics query, plus a [`Readiness`](folio_domain::ports::Readiness)
//! check. Every statement is written once with SeaORM / SeaQuery and runs on both
//! databases; where they differ in locking, the store says so next to the code.
//!
//! # Layout
//! - `store`: [`connect`], [`migrate`] and [`fresh_schema_url`] (WAL and a busy timeout
//!   on SQLite, migrations under an advisory lock on PostgreSQL), and the transaction
//!   helpers the repositories share.
//! - [`migration`]: the schema, applied at connect; idempotent.
//! - `entity`: one SeaORM entity per table.
//! - `accounts`, `catalog`, `commerce`, `feedback`: the repositories. Purchases,
//!   reviews and ratings write their event to the outbox in the same transaction as
//!   their row.
//! - `outbox`: leases unpublished events to relays (`FOR UPDATE SKIP LOCKED` on
//!   PostgreSQL) and marks them published.
//! - `stats`: the sink that upserts aggregates and keeps hourly, daily and all-time
//!   rollups in step, the retention that prunes per-window rows, and the queries that cut
//!   a range into rollup buckets and per-window edges.
//!
//! # Flow
//! A user action changes a row and, for purchases, reviews and ratings, appends its
//! domain `Event` (JSON) to `outbox` in one transaction; the relay claims those rows,
//! publishes them and marks them published. In the other direction the statistics ingest
//! hands aggregates to [`StatsSink`](folio_domain::ports::StatsSink): each is upserted into
//! `window_stats` under (window, book, source topic, source partition, first offset) unless
//! the stored row already covers as many offsets, so replays change nothing, and the
//! rollups move by exactly what changed in the same transaction. Per-window rows older
//! than the retention ([`SqlOptions`]) are pruned; rollups keep their figures. Admin
//! queries sum rollup buckets and per-window edges in SQL and merge their users sketches
//! for unique counts.
//!
//! Times are stored as BIGINT milliseconds since the Unix epoch (UTC), ids as BIGINT,
//! money as integer cents with a currency code. The decisions behind the schema are in
//! `docs/sql-store.md`.

mod accounts;
mod catalog;
mod commerce;
mod entity;
mod error;
mod feedback;
pub mod migration;
mod outbox;
mod stats;
mod store;
mod time;

pub use catalog::CHUNK_SIZE;
pub use stats::PruneReport;
pub use store::{
    connect, connect_with, drop_fresh_schema, fresh_schema_url, migrate, parse_retention,
    SqlOptions, SqlStore, DEFAULT_STATS_RETENTION, STATS_RETENTION_ENV,
};
