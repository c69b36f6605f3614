//! Window statistics: the sink that stores aggregates, the rollups it keeps in step, the
//! retention that prunes per-window rows, and the queries that derive the admin read model.
//!
//! Each row of `window_stats` is one aggregate: the complete figures of one (window, book,
//! source topic, source partition, first offset). Seven rollup tables ([`StatsTable`]) hold
//! the same figure columns summed per hour, day and all time, per book and over every book,
//! and are updated in the transaction that stores the aggregates ([`rollup`]). Queries cut
//! a range into whole days, hours and per-window edges ([`tables`]), sum them in SQL with
//! the meaning [`folio_domain::stats::StatsFold::add`] gives them (views come from
//! `book.views` rows, revenue from `book.purchases` rows, and so on) and merge the rows'
//! `users_sketch` blobs with [`folio_domain::analytics::Sketch`] for unique counts.

mod cell;
mod query;
mod retention;
mod rollup;
mod sink;
mod tables;

pub use retention::PruneReport;
pub(crate) use rollup::rebuild_rollups;
pub(crate) use tables::StatsTable;

use folio_domain::analytics::Sketch;
use folio_domain::stats::BookFigures;
use folio_domain::topics::Topic;
use folio_domain::Result;
use sea_orm::sea_query::{Alias, CaseStatement, Expr, Func, SimpleExpr};
use sea_orm::QueryResult;

use crate::entity::window_stats::Column as Ws;
use crate::error::db_err;
use crate::time::from_ms_opt;

/// The alias of the union of table stretches every statistics query reads from.
const SRC: &str = "s";

/// A figure column of the union being read, qualified so joins with `books` stay
/// unambiguous.
fn col(c: Ws) -> SimpleExpr {
    Expr::col((Alias::new(SRC), c)).into()
}

fn when(topic: Topic, then: SimpleExpr) -> CaseStatement {
    Expr::case(col(Ws::SourceTopic).eq(topic.name()), then)
}

/// `CAST(...)` to BIGINT: PostgreSQL sums BIGINT into NUMERIC, SQLite into INTEGER; both
/// decode as `i64` after the cast.
fn bigint(e: impl Into<SimpleExpr>) -> SimpleExpr {
    Func::cast_as(e, Alias::new("BIGINT")).into()
}

/// The sum of `e` over rows of `topic`; 0 when there are none.
fn sum_of(topic: Topic, e: SimpleExpr) -> SimpleExpr {
    let sum = Func::sum(when(topic, e).finally(Expr::val(0i64)));
    bigint(Func::coalesce([sum.into(), Expr::val(0i64).into()]))
}

fn sum_col(topic: Topic, c: Ws) -> SimpleExpr {
    sum_of(topic, col(c))
}

/// The select-list that computes [`BookFigures`] (all but unique counts) and the stats
/// currency over the selected rows, each under the alias [`read_figures`] reads.
fn figure_exprs() -> Vec<(SimpleExpr, &'static str)> {
    use Topic::{BookDownloads, BookPurchases, BookRatings, BookReviews, BookViews};
    let mut v = vec![
        (sum_col(BookViews, Ws::Events), "views"),
        (sum_col(BookViews, Ws::Anonymous), "anonymous_views"),
        (sum_col(BookDownloads, Ws::Events), "downloads"),
        (sum_col(BookPurchases, Ws::Events), "purchases"),
        (sum_col(BookPurchases, Ws::RevenueCents), "revenue"),
        (sum_col(BookReviews, Ws::ReviewsCreated), "reviews"),
        (sum_col(BookReviews, Ws::ReviewsUpdated), "review_updates"),
        (
            sum_col(BookReviews, Ws::ReviewLengthDelta),
            "review_length_total",
        ),
        (sum_col(BookRatings, Ws::RatingsCreated), "ratings"),
        (
            sum_of(
                BookRatings,
                col(Ws::RatingsCreated).add(col(Ws::RatingsUpdated)),
            ),
            "rating_events",
        ),
        (sum_col(BookRatings, Ws::RatingSumDelta), "rating_sum"),
        (sum_col(BookRatings, Ws::R1), "dist1"),
        (sum_col(BookRatings, Ws::R2), "dist2"),
        (sum_col(BookRatings, Ws::R3), "dist3"),
        (sum_col(BookRatings, Ws::R4), "dist4"),
        (sum_col(BookRatings, Ws::R5), "dist5"),
    ];
    v.push((
        Func::min(when(BookViews, col(Ws::FirstAt))).into(),
        "first_view_at",
    ));
    v.push((
        Func::max(when(BookViews, col(Ws::LastAt))).into(),
        "last_view_at",
    ));
    v.push((
        Func::max(when(BookPurchases, col(Ws::LastAt))).into(),
        "last_purchase_at",
    ));
    // Any currency of a purchase row: analytics refuses to sum two currencies.
    v.push((
        Func::min(when(BookPurchases, col(Ws::Currency))).into(),
        "stats_currency",
    ));
    v
}

fn get_i64(row: &QueryResult, name: &str) -> Result<i64> {
    row.try_get::<i64>("", name).map_err(db_err)
}

fn get_u64(row: &QueryResult, name: &str) -> Result<u64> {
    // Counts are never negative; a negative sum would be a corrupt row, shown as zero.
    Ok(u64::try_from(get_i64(row, name)?).unwrap_or(0))
}

/// Reads what [`figure_exprs`] computed. Unique counts stay zero until sketches are merged.
fn read_figures(row: &QueryResult) -> Result<(BookFigures, Option<String>)> {
    let opt_at = |name: &str| -> Result<_> {
        from_ms_opt(row.try_get::<Option<i64>>("", name).map_err(db_err)?)
    };
    let figures = BookFigures {
        views: get_u64(row, "views")?,
        anonymous_views: get_u64(row, "anonymous_views")?,
        downloads: get_u64(row, "downloads")?,
        purchases: get_u64(row, "purchases")?,
        revenue_cents: get_i64(row, "revenue")?,
        reviews: get_i64(row, "reviews")?,
        review_updates: get_u64(row, "review_updates")?,
        review_length_total: get_i64(row, "review_length_total")?,
        ratings: get_i64(row, "ratings")?,
        rating_events: get_u64(row, "rating_events")?,
        rating_sum: get_i64(row, "rating_sum")?,
        rating_distribution: [
            get_i64(row, "dist1")?,
            get_i64(row, "dist2")?,
            get_i64(row, "dist3")?,
            get_i64(row, "dist4")?,
            get_i64(row, "dist5")?,
        ],
        unique_viewers: 0,
        unique_downloaders: 0,
        unique_purchasers: 0,
        first_view_at: opt_at("first_view_at")?,
        last_view_at: opt_at("last_view_at")?,
        last_purchase_at: opt_at("last_purchase_at")?,
    };
    let currency = row
        .try_get::<Option<String>>("", "stats_currency")
        .map_err(db_err)?;
    Ok((figures, currency))
}

/// The unique-count sketches of a set of rows, merged per topic as `StatsFold::add` does.
#[derive(Debug, Default)]
struct Uniques {
    viewers: Sketch,
    downloaders: Sketch,
    purchasers: Sketch,
    users: Sketch,
}

impl Uniques {
    fn add(&mut self, topic: Topic, users: &Sketch) {
        match topic {
            Topic::BookViews => self.viewers.merge(users),
            Topic::BookDownloads => self.downloaders.merge(users),
            Topic::BookPurchases => self.purchasers.merge(users),
            _ => {}
        }
        self.users.merge(users);
    }

    /// Fills the figures' unique counts; returns the distinct users behind any event.
    fn fill(&self, f: &mut BookFigures) -> u64 {
        f.unique_viewers = self.viewers.estimate();
        f.unique_downloaders = self.downloaders.estimate();
        f.unique_purchasers = self.purchasers.estimate();
        self.users.estimate()
    }
}
