//! The admin read model: per-book statistics, the system overview and popular lists, over a
//! range of windows. Derived where all aggregates meet (the bookstore's database).
//!
//! [`StatsFold`] is the one definition of how aggregates add up. The in-memory store uses
//! it directly; the SQL store computes the same sums in SQL and merges sketches with it.
//! [`upsert`] is the one definition of which stored aggregates a new one replaces.

use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

use crate::analytics::{Aggregate, Sketch};
use crate::ids::BookId;
use crate::money::Money;
use crate::Error;

pub mod figures;
pub mod rank;
pub mod upsert;
use figures::{Unique, CURRENCY_TOPIC, MOMENTS, SUMS, UNIQUES};
pub use upsert::{
    covers, decide_upsert, group_of, upsert_into, AggregateGroup, UpsertDecision, Upserted,
};

/// A range of windows: those starting at or after `from` and before `to`. Open ends are
/// unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl TimeRange {
    pub const ALL: TimeRange = TimeRange {
        from: None,
        to: None,
    };

    pub fn new(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Result<Self, Error> {
        if let (Some(f), Some(t)) = (from, to) {
            if f >= t {
                return Err(Error::invalid("`from` must be before `to`"));
            }
        }
        Ok(TimeRange { from, to })
    }

    pub fn contains(&self, window_start: DateTime<Utc>) -> bool {
        self.from.is_none_or(|f| window_start >= f) && self.to.is_none_or(|t| window_start < t)
    }
}

/// How popular books are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PopularSort {
    Views,
    Downloads,
    Purchases,
    Revenue,
}

impl PopularSort {
    /// The figure a popular list is ranked by.
    pub fn total(self) -> figures::Total {
        match self {
            PopularSort::Views => figures::Total::Views,
            PopularSort::Downloads => figures::Total::Downloads,
            PopularSort::Purchases => figures::Total::Purchases,
            PopularSort::Revenue => figures::Total::RevenueCents,
        }
    }

    /// The value `p` is ranked by.
    pub fn of(self, p: &PopularBook) -> i64 {
        match self {
            PopularSort::Views => count(p.views),
            PopularSort::Downloads => count(p.downloads),
            PopularSort::Purchases => count(p.purchases),
            PopularSort::Revenue => p.revenue.map_or(0, |m| m.amount_cents),
        }
    }

    pub fn parse(s: &str) -> Result<Self, Error> {
        match s {
            "views" => Ok(PopularSort::Views),
            "downloads" => Ok(PopularSort::Downloads),
            "purchases" => Ok(PopularSort::Purchases),
            "revenue" => Ok(PopularSort::Revenue),
            other => Err(Error::invalid(format!(
                "sort_by must be one of views, downloads, purchases, revenue; got {other:?}"
            ))),
        }
    }
}

/// One book's figures over a range.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BookFigures {
    pub views: u64,
    pub anonymous_views: u64,
    pub downloads: u64,
    pub purchases: u64,
    /// Revenue in cents of the store currency.
    pub revenue_cents: i64,
    pub reviews: i64,
    pub review_updates: u64,
    pub review_length_total: i64,
    /// Ratings that exist (creates), and rating events (creates and updates).
    pub ratings: i64,
    pub rating_events: u64,
    pub rating_sum: i64,
    /// Current ratings with 1..=5 stars.
    pub rating_distribution: [i64; 5],
    pub unique_viewers: u64,
    pub unique_downloaders: u64,
    pub unique_purchasers: u64,
    pub first_view_at: Option<DateTime<Utc>>,
    pub last_view_at: Option<DateTime<Utc>>,
    pub last_purchase_at: Option<DateTime<Utc>>,
}

impl BookFigures {
    /// Average rating of the ratings counted, if any.
    pub fn average_rating(&self) -> Option<f64> {
        (self.ratings > 0).then(|| self.rating_sum as f64 / self.ratings as f64)
    }

    pub fn average_review_length(&self) -> Option<f64> {
        (self.reviews > 0).then(|| self.review_length_total as f64 / self.reviews as f64)
    }
}

/// A book's statistics over a range of windows.
#[derive(Debug, Clone, PartialEq)]
pub struct BookStats {
    pub book_id: BookId,
    pub figures: BookFigures,
    pub currency: Option<String>,
}

/// A book's statistics in one window.
#[derive(Debug, Clone, PartialEq)]
pub struct BookWindow {
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub figures: BookFigures,
}

/// The most viewed book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopBook {
    pub book_id: BookId,
    pub title: String,
    pub views: u64,
}

/// The genre with the most views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopGenre {
    pub genre: String,
    /// Books of the genre in the catalog.
    pub book_count: u64,
    pub views: u64,
}

/// The system overview over a range of windows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overview {
    pub totals: BookFigures,
    /// Distinct users behind any event (estimated past the sketch's exact range).
    pub unique_users: u64,
    pub books_with_activity: u64,
    pub most_popular_book: Option<TopBook>,
    pub top_genre: Option<TopGenre>,
    pub currency: Option<String>,
}

/// The overview of one window.
#[derive(Debug, Clone, PartialEq)]
pub struct OverviewWindow {
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub totals: BookFigures,
    pub unique_users: u64,
}

/// One genre's figures over a range of windows, from the books of that genre (deleted
/// ones included: their statistics remain). Unique counts are not split by genre.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenreStats {
    pub genre: String,
    /// Live books of the genre in the catalog.
    pub book_count: u64,
    /// Books of the genre with any event in the range.
    pub books_with_activity: u64,
    pub views: u64,
    pub downloads: u64,
    pub purchases: u64,
    /// Revenue in cents of the store currency.
    pub revenue_cents: i64,
    pub reviews: i64,
    /// Ratings that exist, and the sum of their stars.
    pub ratings: i64,
    pub rating_sum: i64,
}

impl GenreStats {
    /// A genre's row from its books' summed figures.
    pub fn from_figures(genre: String, book_count: u64, books: u64, f: &BookFigures) -> Self {
        GenreStats {
            genre,
            book_count,
            books_with_activity: books,
            views: f.views,
            downloads: f.downloads,
            purchases: f.purchases,
            revenue_cents: f.revenue_cents,
            reviews: f.reviews,
            ratings: f.ratings,
            rating_sum: f.rating_sum,
        }
    }

    pub fn average_rating(&self) -> Option<f64> {
        (self.ratings > 0).then(|| self.rating_sum as f64 / self.ratings as f64)
    }
}

/// Orders a genre breakdown by views ([`rank::ORDER`]: ties by genre in byte order), the
/// order that picks the overview's top genre.
pub fn rank_genres(mut rows: Vec<GenreStats>) -> Vec<GenreStats> {
    rows.sort_by(|a, b| {
        rank::compare(
            (count(a.views), a.genre.as_str()),
            (count(b.views), b.genre.as_str()),
        )
    });
    rows
}

/// A count as the metric [`rank`] compares.
pub fn count(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The newest window the store holds a per-window row for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredWindow {
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
}

/// One entry of a popular list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PopularBook {
    pub rank: u32,
    pub book_id: BookId,
    pub title: String,
    pub views: u64,
    pub downloads: u64,
    pub purchases: u64,
    pub revenue: Option<Money>,
}

/// Accumulates aggregates into figures. Sums are plain additions; unique counts merge
/// sketches per topic, so a user seen in two partitions or windows counts once.
#[derive(Debug, Clone, Default)]
pub struct StatsFold {
    pub figures: BookFigures,
    pub viewers: Sketch,
    pub downloaders: Sketch,
    pub purchasers: Sketch,
    /// Everyone behind any event.
    pub users: Sketch,
    pub currency: Option<String>,
}

impl StatsFold {
    /// Adds one aggregate by the rules of [`figures`]: its topic decides which figures it
    /// feeds.
    pub fn add(&mut self, a: &Aggregate) {
        let (topic, f) = (a.source.topic, &a.figures);
        for rule in SUMS.iter().filter(|r| r.topic == topic) {
            rule.total.add_to(&mut self.figures, rule.value(f));
        }
        for rule in MOMENTS.iter().filter(|r| r.topic == topic) {
            let slot = rule.moment.slot(&mut self.figures);
            *slot = rule.edge.keep(*slot, rule.edge.of(f));
        }
        if let Some(u) = Unique::of_topic(topic) {
            self.sketch(u).merge(&f.users);
        }
        if topic == CURRENCY_TOPIC {
            if let Some(c) = f.currency {
                self.currency.get_or_insert_with(|| c.to_string());
            }
        }
        self.users.merge(&f.users);
    }

    fn sketch(&mut self, u: Unique) -> &mut Sketch {
        match u {
            Unique::Viewers => &mut self.viewers,
            Unique::Downloaders => &mut self.downloaders,
            Unique::Purchasers => &mut self.purchasers,
        }
    }

    /// The figures with unique counts filled in from the sketches.
    pub fn finish(mut self) -> (BookFigures, u64) {
        for (u, _) in UNIQUES {
            let n = self.sketch(u).estimate();
            u.set(&mut self.figures, n);
        }
        (self.figures, self.users.estimate())
    }
}

/// Folds aggregates per window start, oldest first.
pub fn fold_by_window<'a>(
    aggs: impl IntoIterator<Item = &'a Aggregate>,
) -> BTreeMap<DateTime<Utc>, (DateTime<Utc>, StatsFold)> {
    let mut out: BTreeMap<DateTime<Utc>, (DateTime<Utc>, StatsFold)> = BTreeMap::new();
    for a in aggs {
        out.entry(a.window_start)
            .or_insert_with(|| (a.window_end, StatsFold::default()))
            .1
            .add(a);
    }
    out
}

/// Ranks books by `sort` ([`rank::ORDER`]: ties by lower id) and keeps the top `limit`.
pub fn rank_popular(mut rows: Vec<PopularBook>, sort: PopularSort, limit: u32) -> Vec<PopularBook> {
    rows.sort_by(|a, b| rank::compare((sort.of(a), &a.book_id), (sort.of(b), &b.book_id)));
    rows.truncate(limit as usize);
    for (i, r) in rows.iter_mut().enumerate() {
        r.rank = i as u32 + 1;
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;

    fn book(id: i64, views: u64, purchases: u64, cents: i64) -> PopularBook {
        PopularBook {
            rank: 0,
            book_id: BookId(id),
            title: format!("Book {id}"),
            views,
            downloads: 0,
            purchases,
            revenue: Some(Money::new(cents, Currency::parse("USD").expect("valid"))),
        }
    }

    #[test]
    fn popular_orders_by_the_metric_and_breaks_ties_by_lower_id() {
        let rows = vec![
            book(3, 5, 1, 500),
            book(1, 9, 0, 0),
            book(2, 5, 2, 300),
            book(4, 0, 1, 900),
        ];
        let by_views: Vec<(u32, i64)> = rank_popular(rows.clone(), PopularSort::Views, 3)
            .iter()
            .map(|p| (p.rank, p.book_id.0))
            .collect();
        assert_eq!(by_views, vec![(1, 1), (2, 2), (3, 3)]);
        let by_revenue: Vec<i64> = rank_popular(rows.clone(), PopularSort::Revenue, 10)
            .iter()
            .map(|p| p.book_id.0)
            .collect();
        assert_eq!(by_revenue, vec![4, 3, 2, 1]);
        let by_purchases: Vec<i64> = rank_popular(rows, PopularSort::Purchases, 2)
            .iter()
            .map(|p| p.book_id.0)
            .collect();
        assert_eq!(by_purchases, vec![2, 3]);
    }

    #[test]
    fn ranges_are_half_open_and_checked() {
        let t = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|d| d.with_timezone(&Utc))
                .ok()
        };
        let r =
            TimeRange::new(t("2026-01-01T00:00:00Z"), t("2026-01-01T00:02:00Z")).expect("valid");
        assert!(r.contains(t("2026-01-01T00:00:00Z").expect("t")));
        assert!(r.contains(t("2026-01-01T00:01:00Z").expect("t")));
        assert!(!r.contains(t("2026-01-01T00:02:00Z").expect("t")));
        assert!(TimeRange::new(t("2026-01-02T00:00:00Z"), t("2026-01-01T00:00:00Z")).is_err());
        assert!(PopularSort::parse("rating").is_err());
    }
}
