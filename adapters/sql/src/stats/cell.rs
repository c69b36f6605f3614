//! [`Cell`]: the figures of one statistics row — an aggregate in `window_stats` or a rollup
//! bucket — and the arithmetic that keeps rollups equal to the rows they sum.

use folio_domain::analytics::{Aggregate, Sketch};
use folio_domain::Result;
use sea_orm::sea_query::{Expr, SimpleExpr};
use sea_orm::QueryResult;

use crate::entity::window_stats::Column as Ws;
use crate::error::{corrupt, db_err};
use crate::time::to_ms;

/// The figure columns every statistics table shares, in the order [`Cell::values`] gives.
pub(crate) const FIGURES: [Ws; 20] = [
    Ws::WindowEnd,
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
];

/// The figures a window row holds as plain columns: [`FIGURES`] between the window end and
/// the submitted-rating sum.
pub(crate) const SUMMED_FIGURES: &[Ws] = FIGURES.split_at(1).1.split_at(17).0;

/// Counts are stored as BIGINT; one beyond it is clamped rather than wrapped.
pub(crate) fn count(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The figures of one row. Adding cells is what a rollup is: counters add, times take the
/// earliest first and latest last, the currency is the least code seen (as the queries
/// pick it), and users are the union of the sketches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cell {
    pub(crate) window_end: i64,
    pub(crate) events: i64,
    pub(crate) anonymous: i64,
    pub(crate) first_at: Option<i64>,
    pub(crate) last_at: Option<i64>,
    pub(crate) revenue_cents: i64,
    pub(crate) currency: Option<String>,
    pub(crate) reviews_created: i64,
    pub(crate) reviews_updated: i64,
    pub(crate) review_length_delta: i64,
    pub(crate) ratings_created: i64,
    pub(crate) ratings_updated: i64,
    pub(crate) rating_sum_delta: i64,
    pub(crate) stars: [i64; 5],
    pub(crate) submitted_rating_sum: i64,
    pub(crate) users: Sketch,
}

fn min_opt<T: Ord + Clone>(a: &Option<T>, b: &Option<T>) -> Option<T> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y).clone()),
        (x, None) => x.clone(),
        (None, y) => y.clone(),
    }
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

impl Cell {
    /// The row the sink stores for `a`.
    pub(crate) fn of(a: &Aggregate) -> Cell {
        let f = &a.figures;
        Cell {
            window_end: to_ms(a.window_end),
            events: count(f.events),
            anonymous: count(f.anonymous),
            first_at: f.first_at.map(to_ms),
            last_at: f.last_at.map(to_ms),
            revenue_cents: f.revenue_cents,
            currency: f.currency.map(|c| c.as_str().to_owned()),
            reviews_created: count(f.reviews_created),
            reviews_updated: count(f.reviews_updated),
            review_length_delta: f.review_length_delta,
            ratings_created: count(f.ratings_created),
            ratings_updated: count(f.ratings_updated),
            rating_sum_delta: f.rating_sum_delta,
            stars: f.rating_distribution_delta,
            submitted_rating_sum: f.submitted_rating_sum,
            users: f.users.clone(),
        }
    }

    /// Reads the [`FIGURES`] columns of a row of any statistics table.
    pub(crate) fn from_row(row: &QueryResult) -> Result<Cell> {
        let i = |name: &str| row.try_get::<i64>("", name).map_err(db_err);
        let opt = |name: &str| row.try_get::<Option<i64>>("", name).map_err(db_err);
        let sketch = match row
            .try_get::<Option<Vec<u8>>>("", "users_sketch")
            .map_err(db_err)?
        {
            Some(bytes) => Sketch::from_bytes(&bytes).map_err(corrupt)?,
            None => Sketch::default(),
        };
        Ok(Cell {
            window_end: i("window_end")?,
            events: i("events")?,
            anonymous: i("anonymous")?,
            first_at: opt("first_at")?,
            last_at: opt("last_at")?,
            revenue_cents: i("revenue_cents")?,
            currency: row
                .try_get::<Option<String>>("", "currency")
                .map_err(db_err)?,
            reviews_created: i("reviews_created")?,
            reviews_updated: i("reviews_updated")?,
            review_length_delta: i("review_length_delta")?,
            ratings_created: i("ratings_created")?,
            ratings_updated: i("ratings_updated")?,
            rating_sum_delta: i("rating_sum_delta")?,
            stars: [i("r1")?, i("r2")?, i("r3")?, i("r4")?, i("r5")?],
            submitted_rating_sum: i("submitted_rating_sum")?,
            users: sketch,
        })
    }

    /// The values of [`FIGURES`], in order. An empty sketch is stored as NULL so readers of
    /// unique counts skip the row.
    pub(crate) fn values(&self) -> Vec<SimpleExpr> {
        let sketch = (!self.users.is_empty()).then(|| self.users.to_bytes());
        let s = self.stars;
        vec![
            Expr::val(self.window_end).into(),
            Expr::val(self.events).into(),
            Expr::val(self.anonymous).into(),
            Expr::val(self.first_at).into(),
            Expr::val(self.last_at).into(),
            Expr::val(self.revenue_cents).into(),
            Expr::val(self.currency.clone()).into(),
            Expr::val(self.reviews_created).into(),
            Expr::val(self.reviews_updated).into(),
            Expr::val(self.review_length_delta).into(),
            Expr::val(self.ratings_created).into(),
            Expr::val(self.ratings_updated).into(),
            Expr::val(self.rating_sum_delta).into(),
            Expr::val(s[0]).into(),
            Expr::val(s[1]).into(),
            Expr::val(s[2]).into(),
            Expr::val(s[3]).into(),
            Expr::val(s[4]).into(),
            Expr::val(self.submitted_rating_sum).into(),
            Expr::val(sketch).into(),
        ]
    }

    /// The counters, for adding and subtracting them together.
    fn counters_mut(&mut self) -> [&mut i64; 15] {
        let [r1, r2, r3, r4, r5] = &mut self.stars;
        [
            &mut self.events,
            &mut self.anonymous,
            &mut self.revenue_cents,
            &mut self.reviews_created,
            &mut self.reviews_updated,
            &mut self.review_length_delta,
            &mut self.ratings_created,
            &mut self.ratings_updated,
            &mut self.rating_sum_delta,
            r1,
            r2,
            r3,
            r4,
            r5,
            &mut self.submitted_rating_sum,
        ]
    }

    fn counters(&self) -> [i64; 15] {
        let s = self.stars;
        [
            self.events,
            self.anonymous,
            self.revenue_cents,
            self.reviews_created,
            self.reviews_updated,
            self.review_length_delta,
            self.ratings_created,
            self.ratings_updated,
            self.rating_sum_delta,
            s[0],
            s[1],
            s[2],
            s[3],
            s[4],
            self.submitted_rating_sum,
        ]
    }

    /// Adds `other` in: what a bucket becomes when one more row falls in it.
    pub(crate) fn absorb(&mut self, other: &Cell) {
        for (mine, theirs) in self.counters_mut().into_iter().zip(other.counters()) {
            *mine = mine.wrapping_add(theirs);
        }
        self.window_end = self.window_end.max(other.window_end);
        self.first_at = min_opt(&self.first_at, &other.first_at);
        self.last_at = max_opt(self.last_at, other.last_at);
        self.currency = min_opt(&self.currency, &other.currency);
        self.users.merge(&other.users);
    }

    /// Takes the counters of `older` away: with [`Cell::absorb`] of the newer row, what a
    /// bucket becomes when a stored row is replaced.
    pub(crate) fn subtract_counters(&mut self, older: &Cell) {
        for (mine, theirs) in self.counters_mut().into_iter().zip(older.counters()) {
            *mine = mine.wrapping_sub(theirs);
        }
    }

    /// Whether everything `older` contributes to a bucket besides its counters — users,
    /// first and last times, currency, window end — is also in `self`. An aggregate that
    /// covers more offsets of the same window always does; then merging the newer row into
    /// a bucket gives exactly the bucket without the older one.
    pub(crate) fn covers(&self, older: &Cell) -> bool {
        // A time the older row had must be matched or passed by the newer one.
        let reaches =
            |new: Option<i64>, old: Option<i64>, ok: fn(&i64, &i64) -> bool| match (new, old) {
                (_, None) => true,
                (None, Some(_)) => false,
                (Some(n), Some(o)) => ok(&n, &o),
            };
        let users = {
            let mut union = self.users.clone();
            union.merge(&older.users);
            union == self.users
        };
        users
            && self.window_end >= older.window_end
            && reaches(self.first_at, older.first_at, i64::le)
            && reaches(self.last_at, older.last_at, i64::ge)
            && (older.currency.is_none() || older.currency == self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(events: i64, users: &[i64], first: i64, last: i64) -> Cell {
        let mut sketch = Sketch::new();
        users.iter().for_each(|&u| sketch.insert_id(u));
        Cell {
            window_end: 60,
            events,
            first_at: Some(first),
            last_at: Some(last),
            stars: [events, 0, 0, 0, -1],
            users: sketch,
            ..Cell::default()
        }
    }

    #[test]
    fn replacing_a_covered_row_equals_summing_without_it() {
        let other = cell(4, &[9], 3, 50);
        let old = cell(2, &[1, 2], 10, 20);
        let new = cell(5, &[1, 2, 3], 5, 30);
        assert!(new.covers(&old));

        let mut bucket = Cell::default();
        bucket.absorb(&other);
        bucket.absorb(&old);
        let mut delta = new.clone();
        delta.subtract_counters(&old);
        bucket.absorb(&delta);

        let mut want = Cell::default();
        want.absorb(&other);
        want.absorb(&new);
        assert_eq!(bucket, want);
    }

    #[test]
    fn a_row_losing_users_or_an_earlier_time_does_not_cover() {
        let old = cell(2, &[1, 2], 10, 20);
        assert!(!cell(3, &[1, 3], 10, 20).covers(&old));
        assert!(!cell(3, &[1, 2], 11, 20).covers(&old));
        assert!(!cell(3, &[1, 2], 10, 19).covers(&old));
        assert!(cell(3, &[1, 2], 10, 20).covers(&old));
        let mut priced = old.clone();
        priced.currency = Some("USD".into());
        assert!(!cell(3, &[1, 2], 10, 20).covers(&priced));
    }
}
