//! `StatsSink`: stores aggregates, replacing a stored one (same window, book, source
//! partition and first offset) only with one that covers more of its offsets, and moves
//! the rollups by exactly what changed, in one transaction under the statistics lock.

use std::collections::{BTreeSet, HashMap, HashSet};

use async_trait::async_trait;
use chrono::Utc;
use folio_domain::analytics::Aggregate;
use folio_domain::ports::{StatsSink, UpsertReport};
use folio_domain::topics::Topic;
use folio_domain::{Error, Result};
use sea_orm::sea_query::{Alias, Condition, Expr, OnConflict, Query, SimpleExpr};
use sea_orm::{ConnectionTrait, DatabaseTransaction};
use tracing::{debug, warn};

use super::cell::{Cell, FIGURES};
use super::retention::{horizon, lock_stats};
use super::rollup::RollupChanges;
use crate::entity::window_stats::{Column as Ws, Entity as WindowStats};
use crate::error::{corrupt, db_err};
use crate::store::SqlStore;
use crate::time::to_ms;

/// Aggregates per INSERT statement: 27 parameters each stays far below SQLite's and
/// PostgreSQL's limits on bound parameters.
const CHUNK: usize = 400;

/// The primary key of a row: (window start ms, book, source topic, source partition,
/// first offset).
type Key = (i64, i64, &'static str, i32, i64);

fn key(a: &Aggregate) -> Key {
    (
        to_ms(a.window_start),
        a.book_id.get(),
        a.source.topic.name(),
        a.source.partition,
        a.source.first_offset,
    )
}

const PK: [Ws; 5] = [
    Ws::WindowStart,
    Ws::BookId,
    Ws::SourceTopic,
    Ws::SourcePartition,
    Ws::FirstOffset,
];

/// The columns after the key: the offsets covered, the figures, and when it was stored.
fn data_columns() -> Vec<Ws> {
    let mut columns = vec![Ws::NextOffset];
    columns.extend(FIGURES);
    columns.push(Ws::StoredAt);
    columns
}

/// The row values of `a`, in `PK` then [`data_columns`] order. The figures come from the
/// same [`Cell`] the rollups add up, so both always agree.
fn row(a: &Aggregate, cell: &Cell, stored_at: i64) -> Vec<SimpleExpr> {
    let mut values: Vec<SimpleExpr> = vec![
        Expr::val(to_ms(a.window_start)).into(),
        Expr::val(a.book_id.get()).into(),
        Expr::val(a.source.topic.name()).into(),
        Expr::val(a.source.partition).into(),
        Expr::val(a.source.first_offset).into(),
        Expr::val(a.source.next_offset).into(),
    ];
    values.extend(cell.values());
    values.push(Expr::val(stored_at).into());
    values
}

/// The stored `next_offset` of every row that may share a key with `aggregates`.
///
/// It reads by window starts and book ids, a superset of the keys (extra rows are never
/// looked up), because SQLite has no `(a, b) IN ((..), (..))` list. The caller holds the
/// statistics lock, so the rows cannot change before it writes.
async fn stored_offsets(
    txn: &DatabaseTransaction,
    aggregates: &[&Aggregate],
) -> Result<HashMap<Key, i64>> {
    let mut stored = HashMap::new();
    for chunk in aggregates.chunks(CHUNK) {
        let windows: BTreeSet<i64> = chunk.iter().map(|a| to_ms(a.window_start)).collect();
        let books: BTreeSet<i64> = chunk.iter().map(|a| a.book_id.get()).collect();
        let select = Query::select()
            .columns([
                Ws::WindowStart,
                Ws::BookId,
                Ws::SourceTopic,
                Ws::SourcePartition,
                Ws::FirstOffset,
                Ws::NextOffset,
            ])
            .from(WindowStats)
            .and_where(Expr::col(Ws::WindowStart).is_in(windows))
            .and_where(Expr::col(Ws::BookId).is_in(books))
            .to_owned();
        for r in txn
            .query_all(txn.get_database_backend().build(&select))
            .await
            .map_err(db_err)?
        {
            let topic: String = r.try_get("", "source_topic").map_err(db_err)?;
            let Some(topic) = Topic::from_name(&topic) else {
                continue;
            };
            let k: Key = (
                r.try_get("", "window_start").map_err(db_err)?,
                r.try_get("", "book_id").map_err(db_err)?,
                topic.name(),
                r.try_get("", "source_partition").map_err(db_err)?,
                r.try_get("", "first_offset").map_err(db_err)?,
            );
            stored.insert(k, r.try_get("", "next_offset").map_err(db_err)?);
        }
    }
    Ok(stored)
}

/// Keys per exact-key lookup: five parameters each.
const KEYS_PER_LOOKUP: usize = 100;

/// The stored figures of exactly these keys, for rows about to be replaced.
async fn stored_cells(txn: &DatabaseTransaction, keys: &[Key]) -> Result<HashMap<Key, Cell>> {
    let mut out = HashMap::new();
    for chunk in keys.chunks(KEYS_PER_LOOKUP) {
        let mut any = Condition::any();
        for k in chunk {
            any = any.add(
                Condition::all()
                    .add(Expr::col(Ws::WindowStart).eq(k.0))
                    .add(Expr::col(Ws::BookId).eq(k.1))
                    .add(Expr::col(Ws::SourceTopic).eq(k.2))
                    .add(Expr::col(Ws::SourcePartition).eq(k.3))
                    .add(Expr::col(Ws::FirstOffset).eq(k.4)),
            );
        }
        let select = Query::select()
            .columns(PK)
            .columns(FIGURES)
            .from(WindowStats)
            .cond_where(any)
            .to_owned();
        for r in txn
            .query_all(txn.get_database_backend().build(&select))
            .await
            .map_err(db_err)?
        {
            let topic: String = r.try_get("", "source_topic").map_err(db_err)?;
            let topic = Topic::from_name(&topic)
                .ok_or_else(|| corrupt(format!("source topic {topic:?}")))?;
            let k: Key = (
                r.try_get("", "window_start").map_err(db_err)?,
                r.try_get("", "book_id").map_err(db_err)?,
                topic.name(),
                r.try_get("", "source_partition").map_err(db_err)?,
                r.try_get("", "first_offset").map_err(db_err)?,
            );
            out.insert(k, Cell::from_row(&r)?);
        }
    }
    Ok(out)
}

#[async_trait]
impl StatsSink for SqlStore {
    async fn upsert(&self, aggregates: &[Aggregate]) -> Result<UpsertReport> {
        let mut report = UpsertReport::default();
        if aggregates.is_empty() {
            return Ok(report);
        }
        let txn = self.begin_write(WindowStats).await?;
        lock_stats(&txn).await?;

        // Below the horizon the stored row that tells a replay from a new figure may have
        // been pruned, so such aggregates are ignored rather than risk counting twice.
        let horizon = horizon(&txn).await?;
        let (fresh, stale): (Vec<&Aggregate>, Vec<&Aggregate>) = aggregates
            .iter()
            .partition(|a| horizon.is_none_or(|h| to_ms(a.window_start) >= h));
        if !stale.is_empty() {
            warn!(
                count = stale.len(),
                horizon = ?horizon,
                "ignoring aggregates of windows older than the statistics retention"
            );
            report.ignored += stale.len() as u64;
        }
        let mut stored = stored_offsets(&txn, &fresh).await?;
        let in_database: HashSet<Key> = stored.keys().copied().collect();

        // Decide each aggregate in order, as if upserted one at a time, so duplicates
        // within the batch are reported exactly; only the last winner per key is written.
        let mut winners: HashMap<Key, &Aggregate> = HashMap::new();
        let mut order: Vec<Key> = Vec::new();
        for &a in &fresh {
            let k = key(a);
            match stored.get(&k) {
                None => report.inserted += 1,
                Some(&next) if next < a.source.next_offset => report.replaced += 1,
                // Covers no more than what is stored: a replay (or an older view of it).
                Some(_) => {
                    report.ignored += 1;
                    continue;
                }
            }
            stored.insert(k, a.source.next_offset);
            if winners.insert(k, a).is_none() {
                order.push(k);
            }
        }

        // The rollups move from what the database held to what it will hold.
        let replaced: Vec<Key> = order
            .iter()
            .filter(|k| in_database.contains(k))
            .copied()
            .collect();
        let old = stored_cells(&txn, &replaced).await?;
        let mut changes = RollupChanges::default();
        let mut cells: HashMap<Key, Cell> = HashMap::with_capacity(order.len());
        for k in &order {
            let Some(a) = winners.get(k) else { continue };
            let cell = Cell::of(a);
            changes.record(k.0, k.1, a.source.topic, &cell, old.get(k));
            cells.insert(*k, cell);
        }

        let stored_at = to_ms(Utc::now());
        let mut columns: Vec<Ws> = PK.to_vec();
        columns.extend(data_columns());
        let mut written = 0u64;
        for keys in order.chunks(CHUNK) {
            let mut insert = Query::insert();
            insert.into_table(WindowStats).columns(columns.clone());
            for k in keys {
                if let (Some(a), Some(cell)) = (winners.get(k), cells.get(k)) {
                    insert
                        .values(row(a, cell, stored_at))
                        .map_err(Error::internal)?;
                }
            }
            // The WHERE keeps the rule in the database too: a stored row is only ever
            // replaced by one that covers more offsets.
            insert.on_conflict(
                OnConflict::columns(PK)
                    .update_columns(data_columns())
                    .action_and_where(
                        Expr::col((WindowStats, Ws::NextOffset))
                            .lt(Expr::col((Alias::new("excluded"), Ws::NextOffset))),
                    )
                    .to_owned(),
            );
            let done = txn
                .execute(txn.get_database_backend().build(&insert))
                .await
                .map_err(db_err)?;
            written += done.rows_affected();
        }
        // One row per distinct key decided above. Anything else means the rows changed
        // under the lock, and the rollup changes would be wrong: roll everything back.
        let expected = order.len() as u64;
        if written != expected {
            return Err(Error::internal(format!(
                "window statistics changed under the statistics lock ({written} of {expected} rows written)"
            )));
        }
        if !changes.is_empty() {
            changes.apply(&txn).await?;
        }
        txn.commit().await.map_err(db_err)?;
        debug!(?report, "window statistics upserted");

        self.prune_if_due().await;
        Ok(report)
    }
}
