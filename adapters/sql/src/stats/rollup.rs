//! Keeping the rollups equal to the rows they sum, in the transaction that changes them.
//!
//! The sink records what each stored aggregate changed — a new row, or a row replacing a
//! stored one — in [`RollupChanges`], which then rewrites every affected rollup row once:
//! - counters move by the difference (new minus replaced), so a replacement never counts
//!   twice;
//! - users, first/last times and the currency merge in the new row. That equals the bucket
//!   without the replaced row whenever the new row covers it ([`Cell::covers`]), which an
//!   aggregate covering more offsets of the same window always does;
//! - a replacement that does not cover the row it replaces (figures no analytics service
//!   publishes, but the port allows them) marks its buckets dirty, and those are
//!   recomputed from the next finer table, finest first, before the transaction commits.
//!
//! Writers hold the statistics lock (see `retention`), so a rollup row read here cannot
//! change before it is written back.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use folio_domain::topics::Topic;
use folio_domain::{Error, Result};
use sea_orm::sea_query::{Alias, DynIden, Expr, Func, IntoIden, OnConflict, Query};
use sea_orm::ConnectionTrait;
use tracing::{debug, info};

use super::cell::{Cell, FIGURES};
use super::retention::horizon;
use super::tables::{floor_to, StatsTable, DAY_MS, HOUR_MS};
use crate::entity::window_stats::Column as Ws;
use crate::error::{corrupt, db_err};

/// A rollup row's key: (table, bucket start, book or 0, source topic).
type RollupKey = (StatsTable, i64, i64, Topic);

/// Rollup rows per statement: 23 parameters each stays well below both databases' limits.
const ROWS_PER_STATEMENT: usize = 300;

/// What a set of stored aggregates changes in the rollups, not yet written.
#[derive(Debug, Default)]
pub(crate) struct RollupChanges {
    cells: BTreeMap<RollupKey, Cell>,
    dirty: BTreeSet<RollupKey>,
}

impl RollupChanges {
    /// Records that the row of a (window, book, topic) aggregate is now `new`, replacing
    /// `old` when there was one.
    pub(crate) fn record(
        &mut self,
        window_start: i64,
        book: i64,
        topic: Topic,
        new: &Cell,
        old: Option<&Cell>,
    ) {
        let mut delta = new.clone();
        let mut dirty = false;
        if let Some(old) = old {
            dirty = !new.covers(old);
            delta.subtract_counters(old);
        }
        for table in StatsTable::ROLLUPS {
            let key = (
                table,
                table.grain.bucket(window_start),
                table.book_of(book),
                topic,
            );
            self.cells.entry(key).or_default().absorb(&delta);
            if dirty {
                self.dirty.insert(key);
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// Adds the changes to the stored rollup rows and recomputes dirty ones.
    pub(crate) async fn apply<C: ConnectionTrait>(self, db: &C) -> Result<()> {
        let RollupChanges { cells, dirty } = self;
        let mut by_table: BTreeMap<StatsTable, Vec<(RollupKey, Cell)>> = BTreeMap::new();
        for (key, cell) in cells {
            by_table.entry(key.0).or_default().push((key, cell));
        }
        for (table, changes) in by_table {
            for chunk in changes.chunks(ROWS_PER_STATEMENT) {
                let keys: Vec<RollupKey> = chunk.iter().map(|(k, _)| *k).collect();
                let mut stored = load(db, table, &keys).await?;
                let rows: Vec<(RollupKey, Cell)> = chunk
                    .iter()
                    .map(|(key, delta)| {
                        let mut cell = stored.remove(key).unwrap_or_default();
                        cell.absorb(delta);
                        (*key, cell)
                    })
                    .collect();
                write(db, table, &rows).await?;
            }
        }
        if !dirty.is_empty() {
            debug!(
                buckets = dirty.len(),
                "a replaced aggregate was not covered by its replacement; recomputing its buckets"
            );
        }
        // Sorted by table, and tables sort finest first within a scope, so each bucket is
        // recomputed from rows that are already right.
        for key in dirty {
            recompute(db, key).await?;
        }
        Ok(())
    }
}

fn topic_of(name: &str) -> Result<Topic> {
    Topic::from_name(name).ok_or_else(|| corrupt(format!("source topic {name:?}")))
}

/// The stored rows of `table` under `keys` (all of one table). It selects the cross product
/// of their buckets, books and topics, a superset, because SQLite has no
/// `(a, b) IN ((..), (..))` list; rows not asked for are dropped.
async fn load<C: ConnectionTrait>(
    db: &C,
    table: StatsTable,
    keys: &[RollupKey],
) -> Result<HashMap<RollupKey, Cell>> {
    let buckets: BTreeSet<i64> = keys.iter().map(|k| k.1).collect();
    let books: BTreeSet<i64> = keys.iter().map(|k| k.2).collect();
    let topics: BTreeSet<&'static str> = keys.iter().map(|k| k.3.name()).collect();
    let wanted: BTreeSet<RollupKey> = keys.iter().copied().collect();
    let select = Query::select()
        .columns([Alias::new("bucket_start")])
        .columns([Ws::BookId, Ws::SourceTopic])
        .columns(FIGURES)
        .from(table)
        .and_where(Expr::col(Alias::new("bucket_start")).is_in(buckets))
        .and_where(Expr::col(Ws::BookId).is_in(books))
        .and_where(Expr::col(Ws::SourceTopic).is_in(topics))
        .to_owned();
    let mut out = HashMap::new();
    for row in db
        .query_all(db.get_database_backend().build(&select))
        .await
        .map_err(db_err)?
    {
        let topic: String = row.try_get("", "source_topic").map_err(db_err)?;
        let key = (
            table,
            row.try_get("", "bucket_start").map_err(db_err)?,
            row.try_get("", "book_id").map_err(db_err)?,
            topic_of(&topic)?,
        );
        if wanted.contains(&key) {
            out.insert(key, Cell::from_row(&row)?);
        }
    }
    Ok(out)
}

/// Writes whole rollup rows, replacing what is stored under their keys.
async fn write<C: ConnectionTrait>(
    db: &C,
    table: StatsTable,
    rows: &[(RollupKey, Cell)],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    // An insert's column list is set once, so the key and figure columns go in together.
    let mut columns: Vec<DynIden> = vec![
        Alias::new("bucket_start").into_iden(),
        Ws::BookId.into_iden(),
        Ws::SourceTopic.into_iden(),
    ];
    columns.extend(FIGURES.map(IntoIden::into_iden));
    let mut insert = Query::insert();
    insert.into_table(table).columns(columns);
    for ((_, bucket, book, topic), cell) in rows {
        let mut values = vec![
            Expr::val(*bucket).into(),
            Expr::val(*book).into(),
            Expr::val(topic.name()).into(),
        ];
        values.extend(cell.values());
        insert.values(values).map_err(Error::internal)?;
    }
    insert.on_conflict(
        OnConflict::columns([
            Alias::new("bucket_start"),
            Alias::new("book_id"),
            Alias::new("source_topic"),
        ])
        .update_columns(FIGURES)
        .to_owned(),
    );
    db.execute(db.get_database_backend().build(&insert))
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Rebuilds one rollup row from the rows of the next finer table in its bucket.
async fn recompute<C: ConnectionTrait>(db: &C, key: RollupKey) -> Result<()> {
    let (table, bucket, book, topic) = key;
    let finer = table
        .finer()
        .ok_or_else(|| Error::internal(format!("{} has no finer table", table.name())))?;
    let finer_key = Expr::col(Alias::new(finer.key()));
    let mut select = Query::select()
        .columns(FIGURES)
        .from(finer)
        .and_where(Expr::col(Ws::SourceTopic).eq(topic.name()))
        .to_owned();
    if let Some((lo, hi)) = table.grain.span(bucket) {
        select
            .and_where(finer_key.clone().gte(lo))
            .and_where(finer_key.lt(hi));
    }
    if table.scope == super::tables::Scope::Book {
        select.and_where(Expr::col(Ws::BookId).eq(book));
    }
    let mut cell = Cell::default();
    for row in db
        .query_all(db.get_database_backend().build(&select))
        .await
        .map_err(db_err)?
    {
        cell.absorb(&Cell::from_row(&row)?);
    }
    write(db, table, &[(key, cell)]).await
}

/// Empties the rollups and rebuilds them from `window_stats`, a day at a time through the
/// same [`RollupChanges`] the sink uses. For a database that had statistics before the
/// rollups existed; skipped once anything was pruned, since the rollups are then the only
/// copy of the pruned figures.
pub(crate) async fn rebuild_rollups<C: ConnectionTrait>(db: &C) -> Result<()> {
    // A write first: SQLite then takes the write lock now, so the reads below see the
    // state the writes apply to (see `SqlStore::begin_write`).
    let noop = Query::delete()
        .from_table(Alias::new("stats_horizon"))
        .and_where(Expr::cust("1 = 0"))
        .to_owned();
    db.execute(db.get_database_backend().build(&noop))
        .await
        .map_err(db_err)?;
    if horizon(db).await?.is_some() {
        return Ok(());
    }
    for table in StatsTable::ROLLUPS {
        let delete = Query::delete().from_table(table).to_owned();
        db.execute(db.get_database_backend().build(&delete))
            .await
            .map_err(db_err)?;
    }
    let mut rows = 0u64;
    let mut from = i64::MIN;
    while let Some(first) = first_window_from(db, from).await? {
        let day = floor_to(first, DAY_MS);
        let mut changes = RollupChanges::default();
        // An hour at a time keeps the rows held in memory small whatever the traffic.
        for hour in 0..24 {
            let lo = day + hour * HOUR_MS;
            let select = Query::select()
                .columns([Ws::WindowStart, Ws::BookId, Ws::SourceTopic])
                .columns(FIGURES)
                .from(StatsTable::WINDOWS)
                .and_where(Expr::col(Ws::WindowStart).gte(lo))
                .and_where(Expr::col(Ws::WindowStart).lt(lo + HOUR_MS))
                .to_owned();
            for row in db
                .query_all(db.get_database_backend().build(&select))
                .await
                .map_err(db_err)?
            {
                let topic: String = row.try_get("", "source_topic").map_err(db_err)?;
                changes.record(
                    row.try_get("", "window_start").map_err(db_err)?,
                    row.try_get("", "book_id").map_err(db_err)?,
                    topic_of(&topic)?,
                    &Cell::from_row(&row)?,
                    None,
                );
                rows += 1;
            }
        }
        changes.apply(db).await?;
        from = day + DAY_MS;
    }
    if rows > 0 {
        info!(rows, "rolled up stored window statistics");
    }
    Ok(())
}

async fn first_window_from<C: ConnectionTrait>(db: &C, from: i64) -> Result<Option<i64>> {
    let select = Query::select()
        .expr_as(Func::min(Expr::col(Ws::WindowStart)), Alias::new("first"))
        .from(StatsTable::WINDOWS)
        .and_where(Expr::col(Ws::WindowStart).gte(from))
        .to_owned();
    match db
        .query_one(db.get_database_backend().build(&select))
        .await
        .map_err(db_err)?
    {
        Some(row) => row.try_get("", "first").map_err(db_err),
        None => Ok(None),
    }
}
