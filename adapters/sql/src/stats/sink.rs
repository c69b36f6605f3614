//! `StatsSink`: stores aggregates under the domain's upsert rule
//! ([`folio_domain::stats::upsert`]): within a (window, book, source topic, source
//! partition), an aggregate covered by a stored one is ignored, and one that is not
//! replaces every stored row whose offsets it covers (a correction's range is disjoint,
//! so it adds). The rule decides in Rust; SQL then deletes the rows it removed and inserts
//! the rows it added, and the rollups move by exactly that, in one transaction under the
//! statistics lock.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use chrono::Utc;
use folio_domain::analytics::Aggregate;
use folio_domain::analytics::SourceRange;
use folio_domain::ports::{StatsSink, UpsertReport};
use folio_domain::stats::{decide_upsert, UpsertDecision};
use folio_domain::topics::Topic;
use folio_domain::{Error, Result};
use sea_orm::sea_query::{Condition, Expr, Query, SimpleExpr};
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

/// A group of rows: (window start ms, book, source topic, source partition).
type Group = (i64, i64, &'static str, i32);

fn group(k: &Key) -> Group {
    (k.0, k.1, k.2, k.3)
}

/// The stored offset ranges of every group `aggregates` fall in.
///
/// It reads by window starts and book ids, a superset of the groups (extra rows are never
/// looked up), because SQLite has no `(a, b) IN ((..), (..))` list. The caller holds the
/// statistics lock, so the rows cannot change before it writes.
async fn stored_ranges(
    txn: &DatabaseTransaction,
    aggregates: &[&Aggregate],
) -> Result<HashMap<Group, Vec<(i64, i64)>>> {
    let mut stored: HashMap<Group, BTreeSet<(i64, i64)>> = HashMap::new();
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
            let g: Group = (
                r.try_get("", "window_start").map_err(db_err)?,
                r.try_get("", "book_id").map_err(db_err)?,
                topic.name(),
                r.try_get("", "source_partition").map_err(db_err)?,
            );
            stored.entry(g).or_default().insert((
                r.try_get("", "first_offset").map_err(db_err)?,
                r.try_get("", "next_offset").map_err(db_err)?,
            ));
        }
    }
    // Chunks of one batch that share windows and books read the same rows: each once.
    Ok(stored
        .into_iter()
        .map(|(g, rows)| (g, rows.into_iter().collect()))
        .collect())
}

/// Where a row of a group, as decided so far, comes from.
#[derive(Debug, Clone, Copy)]
enum Origin<'a> {
    Stored,
    New(&'a Aggregate),
}

/// A group's rows as the batch's upserts leave them: every range with where it came from.
type Decided<'a> = Vec<(SourceRange, Origin<'a>)>;

/// Keys per exact-key lookup: five parameters each.
const KEYS_PER_LOOKUP: usize = 100;

/// Exactly these keys.
fn keys_condition(keys: &[Key]) -> Condition {
    let mut any = Condition::any();
    for k in keys {
        any = any.add(
            Condition::all()
                .add(Expr::col(Ws::WindowStart).eq(k.0))
                .add(Expr::col(Ws::BookId).eq(k.1))
                .add(Expr::col(Ws::SourceTopic).eq(k.2))
                .add(Expr::col(Ws::SourcePartition).eq(k.3))
                .add(Expr::col(Ws::FirstOffset).eq(k.4)),
        );
    }
    any
}

/// The stored figures of exactly these keys, for rows about to be replaced.
async fn stored_cells(txn: &DatabaseTransaction, keys: &[Key]) -> Result<HashMap<Key, Cell>> {
    let mut out = HashMap::new();
    for chunk in keys.chunks(KEYS_PER_LOOKUP) {
        let any = keys_condition(chunk);
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
        let stored = stored_ranges(&txn, &fresh).await?;

        // Decide each aggregate in order, as if upserted one at a time, with the domain's
        // rule (`folio_domain::stats::decide_upsert`), so duplicates and corrections within
        // the batch are reported exactly. Then delete the stored rows it removed and insert
        // the new rows that remain.
        let mut decided: HashMap<Group, Decided<'_>> = HashMap::new();
        let mut deleted: Vec<Key> = Vec::new();
        for &a in &fresh {
            let k = key(a);
            let rows = decided.entry(group(&k)).or_insert_with(|| {
                stored
                    .get(&group(&k))
                    .into_iter()
                    .flatten()
                    .map(|&(first, next)| {
                        let range = SourceRange {
                            first_offset: first,
                            next_offset: next,
                            ..a.source
                        };
                        (range, Origin::Stored)
                    })
                    .collect()
            });
            let ranges: Vec<SourceRange> = rows.iter().map(|(r, _)| *r).collect();
            match decide_upsert(&ranges, &a.source) {
                UpsertDecision::Ignore => report.ignored += 1,
                UpsertDecision::Store { replaces } => {
                    if replaces.is_empty() {
                        report.inserted += 1;
                    } else {
                        report.replaced += 1;
                    }
                    let mut i = 0;
                    rows.retain(|(r, origin)| {
                        let keep = !replaces.contains(&i);
                        i += 1;
                        if !keep && matches!(origin, Origin::Stored) {
                            deleted.push((k.0, k.1, k.2, k.3, r.first_offset));
                        }
                        keep
                    });
                    rows.push((a.source, Origin::New(a)));
                }
            }
        }
        let inserted: Vec<&Aggregate> = decided
            .values()
            .flatten()
            .filter_map(|(_, o)| match o {
                Origin::New(a) => Some(*a),
                Origin::Stored => None,
            })
            .collect();

        // The rollups move from what the database held to what it will hold: per group, the
        // new rows in, the removed ones out.
        let old = stored_cells(&txn, &deleted).await?;
        let mut removed: HashMap<Group, Cell> = HashMap::new();
        for k in &deleted {
            let cell = old
                .get(k)
                .ok_or_else(|| corrupt(format!("window statistics row {k:?} vanished")))?;
            removed.entry(group(k)).or_default().absorb(cell);
        }
        let mut added: HashMap<Group, (Topic, Cell)> = HashMap::new();
        let mut cells: Vec<(&Aggregate, Cell)> = Vec::with_capacity(inserted.len());
        for a in &inserted {
            let cell = Cell::of(a);
            added
                .entry(group(&key(a)))
                .or_insert_with(|| (a.source.topic, Cell::default()))
                .1
                .absorb(&cell);
            cells.push((a, cell));
        }
        let mut changes = RollupChanges::default();
        for (g, (topic, new)) in &added {
            changes.record(g.0, g.1, *topic, new, removed.get(g));
        }
        if let Some(g) = removed.keys().find(|g| !added.contains_key(*g)) {
            return Err(Error::internal(format!(
                "rows of {g:?} were removed without a replacement"
            )));
        }

        for chunk in deleted.chunks(KEYS_PER_LOOKUP) {
            let delete = Query::delete()
                .from_table(WindowStats)
                .cond_where(keys_condition(chunk))
                .to_owned();
            let done = txn
                .execute(txn.get_database_backend().build(&delete))
                .await
                .map_err(db_err)?;
            if done.rows_affected() != chunk.len() as u64 {
                return Err(Error::internal(
                    "window statistics changed under the statistics lock (rows to replace vanished)",
                ));
            }
        }

        let stored_at = to_ms(Utc::now());
        let mut columns: Vec<Ws> = PK.to_vec();
        columns.extend(data_columns());
        let mut written = 0u64;
        for chunk in cells.chunks(CHUNK) {
            let mut insert = Query::insert();
            insert.into_table(WindowStats).columns(columns.clone());
            for (a, cell) in chunk {
                insert
                    .values(row(a, cell, stored_at))
                    .map_err(Error::internal)?;
            }
            // A plain insert: a row already under a new row's key would mean the rows
            // changed under the statistics lock, and the insert fails.
            let done = txn
                .execute(txn.get_database_backend().build(&insert))
                .await
                .map_err(db_err)?;
            written += done.rows_affected();
        }
        let expected = cells.len() as u64;
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
