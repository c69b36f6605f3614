//! Window statistics: the sink that stores aggregates, the rollups it keeps in step, the
//! retention that prunes per-window rows, and the queries that derive the admin read model.
//!
//! Each row of `window_stats` is one aggregate: the complete figures of one (window, book,
//! source topic, source partition, first offset). Seven rollup tables ([`StatsTable`]) hold
//! the same figure columns summed per hour, day and all time, per book and over every book,
//! and are updated in the transaction that stores the aggregates ([`rollup`]). Queries cut
//! a range into whole days, hours and per-window edges ([`tables`]), and sum them in SQL by
//! the domain's rule tables ([`folio_domain::stats::figures`]: which topic's rows make which
//! figure, which edge of a row's event times a moment reads, which topic's sketch a unique
//! count merges), so the SQL is generated from the same rules the memory store folds by.
//! Lists are ordered by [`folio_domain::stats::rank`], the domain's one tie-break.

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
use folio_domain::stats::figures::{
    Counted, Edge, SumRule, Total, Unique, CURRENCY_TOPIC, MOMENTS, SUMS, UNIQUES,
};
use folio_domain::stats::rank::{self, Direction, Key};
use folio_domain::stats::BookFigures;
use folio_domain::topics::Topic;
use folio_domain::Result;
use sea_orm::sea_query::{Alias, CaseStatement, Expr, Func, Order, SelectStatement, SimpleExpr};
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

/// The column that holds a count of an aggregate.
fn counted(c: Counted) -> Ws {
    match c {
        Counted::Events => Ws::Events,
        Counted::Anonymous => Ws::Anonymous,
        Counted::RevenueCents => Ws::RevenueCents,
        Counted::ReviewsCreated => Ws::ReviewsCreated,
        Counted::ReviewsUpdated => Ws::ReviewsUpdated,
        Counted::ReviewLengthDelta => Ws::ReviewLengthDelta,
        Counted::RatingsCreated => Ws::RatingsCreated,
        Counted::RatingsUpdated => Ws::RatingsUpdated,
        Counted::RatingSumDelta => Ws::RatingSumDelta,
        Counted::Stars(n) => [Ws::R1, Ws::R2, Ws::R3, Ws::R4, Ws::R5][n],
    }
}

/// The SQL of one summed figure: its terms added per row, summed over its topic's rows.
fn sum_expr(rule: &SumRule) -> SimpleExpr {
    let terms = rule.terms.iter().map(|&t| col(counted(t)));
    let row = terms
        .reduce(|acc, t| acc.add(t))
        .unwrap_or_else(|| Expr::val(0i64).into());
    sum_of(rule.topic, row)
}

/// Orders `s` as the domain ranks entries ([`rank::ORDER`]): by the `metric` alias, then by
/// the entry's `identity`.
fn rank_order(s: &mut SelectStatement, metric: &str, identity: SimpleExpr) {
    for (key, dir) in rank::ORDER {
        let order = match dir {
            Direction::Descending => Order::Desc,
            Direction::Ascending => Order::Asc,
        };
        match key {
            Key::Metric => s.order_by(Alias::new(metric), order),
            Key::Identity => s.order_by_expr(identity.clone(), order),
        };
    }
}

/// The alias under which [`figure_exprs`] computes the stats currency.
const CURRENCY: &str = "stats_currency";

/// The select-list that computes [`BookFigures`] (all but unique counts) and the stats
/// currency over the selected rows, by the domain's rules in
/// [`folio_domain::stats::figures`], each under the alias [`read_figures`] reads.
fn figure_exprs() -> Vec<(SimpleExpr, &'static str)> {
    let mut v: Vec<(SimpleExpr, &'static str)> =
        SUMS.iter().map(|r| (sum_expr(r), r.total.name())).collect();
    for r in MOMENTS {
        let c = col(match r.edge {
            Edge::Earliest => Ws::FirstAt,
            Edge::Latest => Ws::LastAt,
        });
        let e = match r.edge {
            Edge::Earliest => Func::min(when(r.topic, c)),
            Edge::Latest => Func::max(when(r.topic, c)),
        };
        v.push((e.into(), r.moment.name()));
    }
    // Any currency of a purchase row: analytics refuses to sum two currencies.
    v.push((
        Func::min(when(CURRENCY_TOPIC, col(Ws::Currency))).into(),
        CURRENCY,
    ));
    v
}

/// The part of [`figure_exprs`] a popular entry shows: the figures it lists and ranks by,
/// fewer sums per row of a long range.
fn popular_exprs() -> Vec<(SimpleExpr, &'static str)> {
    let shown = [
        Total::Views,
        Total::Downloads,
        Total::Purchases,
        Total::RevenueCents,
    ]
    .map(Total::name);
    figure_exprs()
        .into_iter()
        .filter(|(_, alias)| shown.contains(alias) || *alias == CURRENCY)
        .collect()
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
    let mut figures = BookFigures::default();
    for r in SUMS {
        r.total.set(&mut figures, get_i64(row, r.total.name())?);
    }
    for r in MOMENTS {
        let ms = row
            .try_get::<Option<i64>>("", r.moment.name())
            .map_err(db_err)?;
        *r.moment.slot(&mut figures) = from_ms_opt(ms)?;
    }
    let currency = row
        .try_get::<Option<String>>("", CURRENCY)
        .map_err(db_err)?;
    Ok((figures, currency))
}

/// The unique-count sketches of a set of rows, merged per topic by [`Unique::of_topic`].
#[derive(Debug, Default)]
struct Uniques {
    viewers: Sketch,
    downloaders: Sketch,
    purchasers: Sketch,
    users: Sketch,
}

impl Uniques {
    fn sketch(&self, u: Unique) -> &Sketch {
        match u {
            Unique::Viewers => &self.viewers,
            Unique::Downloaders => &self.downloaders,
            Unique::Purchasers => &self.purchasers,
        }
    }

    fn add(&mut self, topic: Topic, users: &Sketch) {
        match Unique::of_topic(topic) {
            Some(Unique::Viewers) => self.viewers.merge(users),
            Some(Unique::Downloaders) => self.downloaders.merge(users),
            Some(Unique::Purchasers) => self.purchasers.merge(users),
            None => {}
        }
        self.users.merge(users);
    }

    /// Fills the figures' unique counts; returns the distinct users behind any event.
    fn fill(&self, f: &mut BookFigures) -> u64 {
        for (u, _) in UNIQUES {
            u.set(f, self.sketch(u).estimate());
        }
        self.users.estimate()
    }
}
