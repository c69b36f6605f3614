//! Retention: per-window rows (`window_stats`, `overview_windows`) older than the horizon
//! are deleted; the rollups keep their figures, so totals over any range stay exact.
//!
//! The horizon (`stats_horizon.pruned_before`, whole hours) only moves forward, under the
//! statistics lock, before any row is deleted:
//! - the sink ignores aggregates of windows starting before it — their stored row, which
//!   decides replace-or-ignore, may be gone, so storing them could count a replay twice;
//! - queries read it in their snapshot and never read per-window rows below it.
//!
//! Deleting after the horizon has moved is then invisible to both, and is done in slices
//! so no transaction grows with the backlog.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use folio_domain::{Error, Result};
use sea_orm::sea_query::{Alias, Expr, Func, OnConflict, Query};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement};
use tracing::{debug, info, warn};

use super::tables::{floor_to, StatsTable, DAY_MS, HOUR_MS};
use crate::error::db_err;
use crate::store::SqlStore;
use crate::time::{from_ms, to_ms};

/// The table holding the horizon, in one row (id 1).
const HORIZON_TABLE: &str = "stats_horizon";

/// The PostgreSQL advisory lock every writer of statistics holds for its transaction
/// ("folio" + 1 in ASCII). It serialises the sink's read-decide-write of aggregates and
/// rollups with other sinks and with horizon moves, so each rollup is read and rewritten
/// by one transaction at a time. SQLite serialises writers by itself.
const STATS_LOCK: i64 = 0x0166_6f6c_696f;

/// How often the sink checks whether the horizon can move. The horizon moves by whole
/// hours, so checking more often would find nothing to do.
const PRUNE_EVERY: Duration = Duration::from_secs(10 * 60);

/// One slice of a prune deletes at most a day of per-window rows.
const SLICE_MS: i64 = DAY_MS;

/// Slices an automatic prune deletes before returning to the sink: a store that has not
/// pruned for a long time catches up a day per run rather than stalling one ingest.
const AUTO_SLICES: usize = 1;

/// What a prune did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Per-window rows of windows starting before this are gone (or going); `None` when
    /// nothing was ever pruned.
    pub horizon: Option<DateTime<Utc>>,
    /// Rows deleted from `window_stats` and `overview_windows` by this call.
    pub deleted_rows: u64,
}

/// Takes the statistics lock for the rest of `txn` (PostgreSQL; a no-op on SQLite, whose
/// write transactions already exclude each other).
pub(crate) async fn lock_stats(txn: &DatabaseTransaction) -> Result<()> {
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [STATS_LOCK.into()],
        ))
        .await
        .map_err(db_err)?;
    }
    Ok(())
}

/// The horizon in ms, `None` when nothing was ever pruned.
pub(crate) async fn horizon<C: ConnectionTrait>(db: &C) -> Result<Option<i64>> {
    let select = Query::select()
        .column(Alias::new("pruned_before"))
        .from(Alias::new(HORIZON_TABLE))
        .and_where(Expr::col(Alias::new("id")).eq(1))
        .to_owned();
    match db
        .query_one(db.get_database_backend().build(&select))
        .await
        .map_err(db_err)?
    {
        Some(row) => Ok(Some(row.try_get("", "pruned_before").map_err(db_err)?)),
        None => Ok(None),
    }
}

async fn set_horizon(txn: &DatabaseTransaction, ms: i64) -> Result<()> {
    let mut upsert = Query::insert();
    upsert
        .into_table(Alias::new(HORIZON_TABLE))
        .columns([Alias::new("id"), Alias::new("pruned_before")])
        .values([1.into(), ms.into()])
        .map_err(Error::internal)?;
    upsert.on_conflict(
        OnConflict::column(Alias::new("id"))
            .update_column(Alias::new("pruned_before"))
            .to_owned(),
    );
    txn.execute(txn.get_database_backend().build(&upsert))
        .await
        .map_err(db_err)?;
    Ok(())
}

impl SqlStore {
    /// Prunes per-window statistics older than the configured retention before `now`
    /// (see [`SqlOptions::stats_retention`](crate::SqlOptions)); does nothing when
    /// retention is off. The sink calls this by itself every few minutes.
    pub async fn prune_stats(&self, now: DateTime<Utc>) -> Result<PruneReport> {
        match self.options.stats_retention {
            Some(keep) => self.prune_until(cutoff(now, keep)?, None).await,
            None => Ok(PruneReport::default()),
        }
    }

    /// Deletes per-window statistics of windows starting before the whole hour at or before
    /// `before`. Every total stays exact (rollups keep the figures); histories show hourly
    /// points there, and the sink ignores aggregates of those windows from then on. The
    /// horizon never moves back: a `before` older than it deletes nothing new.
    pub async fn prune_stats_before(&self, before: DateTime<Utc>) -> Result<PruneReport> {
        self.prune_until(to_ms(before), None).await
    }

    /// What the sink runs after storing aggregates: a bounded prune, at most once per
    /// [`PRUNE_EVERY`] per process. Failures are logged; the aggregates are stored anyway.
    pub(crate) async fn prune_if_due(&self) {
        let Some(keep) = self.options.stats_retention else {
            return;
        };
        {
            let mut last = match self.last_prune.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            if last.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let outcome = match cutoff(Utc::now(), keep) {
            Ok(ms) => self.prune_until(ms, Some(AUTO_SLICES)).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(r) if r.deleted_rows > 0 => {
                info!(deleted = r.deleted_rows, horizon = ?r.horizon, "pruned per-window statistics")
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "pruning per-window statistics failed; will retry"),
        }
    }

    /// Moves the horizon to the hour at or before `before_ms` (never back), then deletes
    /// per-window rows below it, at most `max_slices` slices when given.
    async fn prune_until(&self, before_ms: i64, max_slices: Option<usize>) -> Result<PruneReport> {
        let wanted = floor_to(before_ms, HOUR_MS);
        let txn = self.begin_write(Alias::new(HORIZON_TABLE)).await?;
        lock_stats(&txn).await?;
        let current = horizon(&txn).await?;
        let h = match current {
            Some(c) if c >= wanted => c,
            _ => {
                set_horizon(&txn, wanted).await?;
                wanted
            }
        };
        txn.commit().await.map_err(db_err)?;

        let mut deleted = 0;
        let mut slices = 0;
        for table in [StatsTable::WINDOWS, StatsTable::OVERVIEW_WINDOWS] {
            loop {
                if max_slices.is_some_and(|m| slices >= m) {
                    break;
                }
                let Some(oldest) = self.oldest_below(table, h).await? else {
                    break;
                };
                let end = floor_to(oldest, HOUR_MS).saturating_add(SLICE_MS).min(h);
                let delete = Query::delete()
                    .from_table(table)
                    .and_where(Expr::col(Alias::new(table.key())).lt(end))
                    .to_owned();
                let done = self
                    .db
                    .execute(self.backend().build(&delete))
                    .await
                    .map_err(db_err)?;
                deleted += done.rows_affected();
                slices += 1;
                debug!(
                    table = table.name(),
                    end,
                    rows = done.rows_affected(),
                    "pruned a slice"
                );
            }
        }
        Ok(PruneReport {
            horizon: Some(from_ms(h)?),
            deleted_rows: deleted,
        })
    }

    async fn oldest_below(&self, table: StatsTable, h: i64) -> Result<Option<i64>> {
        let key = Expr::col(Alias::new(table.key()));
        let select = Query::select()
            .expr_as(Func::min(key.clone()), Alias::new("oldest"))
            .from(table)
            .and_where(key.lt(h))
            .to_owned();
        match self
            .db
            .query_one(self.backend().build(&select))
            .await
            .map_err(db_err)?
        {
            Some(row) => row.try_get("", "oldest").map_err(db_err),
            None => Ok(None),
        }
    }
}

/// `now - keep` in ms.
fn cutoff(now: DateTime<Utc>, keep: Duration) -> Result<i64> {
    let keep = i64::try_from(keep.as_millis())
        .map_err(|_| Error::invalid("the statistics retention is too long"))?;
    Ok(to_ms(now).saturating_sub(keep))
}
