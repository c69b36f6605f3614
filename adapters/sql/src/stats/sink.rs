//! `StatsSink`: stores aggregates, replacing a stored one (same window, book, source
//! partition and first offset) only with one that covers more of its offsets.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use chrono::Utc;
use folio_domain::analytics::Aggregate;
use folio_domain::ports::{StatsSink, UpsertReport};
use folio_domain::topics::Topic;
use folio_domain::{Error, Result};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, LockType, OnConflict, Query, SimpleExpr};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend};
use tracing::{debug, warn};

use super::col;
use crate::entity::window_stats::{Column as Ws, Entity as WindowStats};
use crate::error::db_err;
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

const DATA: [Ws; 22] = [
    Ws::WindowEnd,
    Ws::NextOffset,
    Ws::Events,
    Ws::Anonymous,
    Ws::FirstAt,
    Ws::LastAt,
    Ws::RevenueCents,
    Ws::Currency,
    Ws::ReviewsCreated,
    Ws::ReviewsUpdated,
    Ws::ReviewLengthDelta,
    Ws::RatingsCreated,
    Ws::RatingsUpdated,
    Ws::RatingSumDelta,
    Ws::R1,
    Ws::R2,
    Ws::R3,
    Ws::R4,
    Ws::R5,
    Ws::SubmittedRatingSum,
    Ws::UsersSketch,
    Ws::StoredAt,
];

fn count(v: u64) -> SimpleExpr {
    Expr::val(i64::try_from(v).unwrap_or(i64::MAX)).into()
}

/// The row values of `a`, in `PK` then `DATA` order.
fn row(a: &Aggregate, stored_at: i64) -> Vec<SimpleExpr> {
    let f = &a.figures;
    let d = f.rating_distribution_delta;
    let sketch = (!f.users.is_empty()).then(|| f.users.to_bytes());
    vec![
        Expr::val(to_ms(a.window_start)).into(),
        Expr::val(a.book_id.get()).into(),
        Expr::val(a.source.topic.name()).into(),
        Expr::val(a.source.partition).into(),
        Expr::val(a.source.first_offset).into(),
        Expr::val(to_ms(a.window_end)).into(),
        Expr::val(a.source.next_offset).into(),
        count(f.events),
        count(f.anonymous),
        Expr::val(f.first_at.map(to_ms)).into(),
        Expr::val(f.last_at.map(to_ms)).into(),
        Expr::val(f.revenue_cents).into(),
        Expr::val(f.currency.map(|c| c.as_str().to_owned())).into(),
        count(f.reviews_created),
        count(f.reviews_updated),
        Expr::val(f.review_length_delta).into(),
        count(f.ratings_created),
        count(f.ratings_updated),
        Expr::val(f.rating_sum_delta).into(),
        Expr::val(d[0]).into(),
        Expr::val(d[1]).into(),
        Expr::val(d[2]).into(),
        Expr::val(d[3]).into(),
        Expr::val(d[4]).into(),
        Expr::val(f.submitted_rating_sum).into(),
        Expr::val(sketch).into(),
        Expr::val(stored_at).into(),
    ]
}

/// The stored `next_offset` of every row that may share a key with `aggregates`.
///
/// It reads by window starts and book ids, a superset of the keys (extra rows are never
/// looked up), because SQLite has no `(a, b) IN ((..), (..))` list. On PostgreSQL the rows are locked
/// until commit, so a concurrent upsert of a stored key waits and the report stays exact.
async fn stored_offsets(
    txn: &DatabaseTransaction,
    aggregates: &[Aggregate],
) -> Result<HashMap<Key, i64>> {
    let mut stored = HashMap::new();
    for chunk in aggregates.chunks(CHUNK) {
        let windows: BTreeSet<i64> = chunk.iter().map(|a| to_ms(a.window_start)).collect();
        let books: BTreeSet<i64> = chunk.iter().map(|a| a.book_id.get()).collect();
        let mut select = Query::select()
            .columns([
                Ws::WindowStart,
                Ws::BookId,
                Ws::SourceTopic,
                Ws::SourcePartition,
                Ws::FirstOffset,
                Ws::NextOffset,
            ])
            .from(WindowStats)
            .and_where(col(Ws::WindowStart).is_in(windows))
            .and_where(col(Ws::BookId).is_in(books))
            .to_owned();
        if txn.get_database_backend() == DbBackend::Postgres {
            select.lock(LockType::Update);
        }
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

#[async_trait]
impl StatsSink for SqlStore {
    async fn upsert(&self, aggregates: &[Aggregate]) -> Result<UpsertReport> {
        let mut report = UpsertReport::default();
        if aggregates.is_empty() {
            return Ok(report);
        }
        let txn = self.begin_write(WindowStats).await?;
        let mut stored = stored_offsets(&txn, aggregates).await?;
        // Decide each aggregate in order, as if upserted one at a time, so duplicates
        // within the batch are reported exactly; only the last winner per key is written.
        let mut winners: HashMap<Key, &Aggregate> = HashMap::new();
        let mut order: Vec<Key> = Vec::new();
        for a in aggregates {
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

        let stored_at = to_ms(Utc::now());
        let mut columns: Vec<Ws> = PK.to_vec();
        columns.extend(DATA);
        let mut written = 0u64;
        for keys in order.chunks(CHUNK) {
            let mut insert = Query::insert();
            insert.into_table(WindowStats).columns(columns.clone());
            for k in keys {
                if let Some(a) = winners.get(k) {
                    insert.values(row(a, stored_at)).map_err(Error::internal)?;
                }
            }
            // The WHERE keeps the rule in the database too: a stored row is only ever
            // replaced by one that covers more offsets, whatever raced this transaction.
            insert.on_conflict(
                OnConflict::columns(PK)
                    .update_columns(DATA)
                    .action_and_where(
                        col(Ws::NextOffset).lt(Expr::col((Alias::new("excluded"), Ws::NextOffset))),
                    )
                    .to_owned(),
            );
            let done = txn
                .execute(txn.get_database_backend().build(&insert))
                .await
                .map_err(db_err)?;
            written += done.rows_affected();
        }
        txn.commit().await.map_err(db_err)?;

        // One row per distinct key decided above.
        let expected = order.len() as u64;
        if written != expected {
            // Only possible when another writer stored one of these keys between our read
            // and our insert; the database kept the row covering more offsets.
            warn!(
                written,
                expected, "window statistics changed concurrently; report is approximate"
            );
            let lost = expected.saturating_sub(written);
            let moved = lost.min(report.inserted);
            report.inserted -= moved;
            report.ignored += moved;
        }
        debug!(?report, "window statistics upserted");
        Ok(report)
    }
}
