//! Which topic feeds which figure: the one mapping from aggregates to a book's figures.
//!
//! An aggregate counts one source topic's events ([`Figures`]). A book's figures
//! ([`BookFigures`]) take some of those counts from some topics: views are the events of
//! `book.views` aggregates, revenue is the revenue of `book.purchases` aggregates, and so on.
//! The tables below state that once. [`super::StatsFold`] carries them out in memory, and the
//! SQL store turns each row into a `SUM(CASE …)`, `MIN` or `MAX` over its figure columns.

use chrono::{DateTime, Utc};

use super::BookFigures;
use crate::analytics::Figures;
use crate::topics::Topic;

/// A count of an aggregate that a book's figure sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    Events,
    Anonymous,
    RevenueCents,
    ReviewsCreated,
    ReviewsUpdated,
    ReviewLengthDelta,
    RatingsCreated,
    RatingsUpdated,
    RatingSumDelta,
    /// The change in current ratings with `n + 1` stars (`n` in 0..5).
    Stars(usize),
}

impl Counted {
    /// The value in `f`. Counts are far below `i64::MAX` (an aggregate counts one window).
    pub fn of(self, f: &Figures) -> i64 {
        let wide = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        match self {
            Counted::Events => wide(f.events),
            Counted::Anonymous => wide(f.anonymous),
            Counted::RevenueCents => f.revenue_cents,
            Counted::ReviewsCreated => wide(f.reviews_created),
            Counted::ReviewsUpdated => wide(f.reviews_updated),
            Counted::ReviewLengthDelta => f.review_length_delta,
            Counted::RatingsCreated => wide(f.ratings_created),
            Counted::RatingsUpdated => wide(f.ratings_updated),
            Counted::RatingSumDelta => f.rating_sum_delta,
            Counted::Stars(n) => f.rating_distribution_delta[n],
        }
    }
}

/// A summed figure of a book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    Views,
    AnonymousViews,
    Downloads,
    Purchases,
    RevenueCents,
    Reviews,
    ReviewUpdates,
    ReviewLengthTotal,
    Ratings,
    RatingEvents,
    RatingSum,
    /// Current ratings with `n + 1` stars.
    Stars(usize),
}

impl Total {
    /// A stable name, used as the column alias of SQL sums.
    pub fn name(self) -> &'static str {
        match self {
            Total::Views => "views",
            Total::AnonymousViews => "anonymous_views",
            Total::Downloads => "downloads",
            Total::Purchases => "purchases",
            Total::RevenueCents => "revenue",
            Total::Reviews => "reviews",
            Total::ReviewUpdates => "review_updates",
            Total::ReviewLengthTotal => "review_length_total",
            Total::Ratings => "ratings",
            Total::RatingEvents => "rating_events",
            Total::RatingSum => "rating_sum",
            Total::Stars(n) => ["dist1", "dist2", "dist3", "dist4", "dist5"][n],
        }
    }

    /// Adds `v` to this figure of `b`. Sums saturate rather than wrap; a count that would go
    /// below zero stays at zero (only a corrupt aggregate could ask for that).
    pub fn add_to(self, b: &mut BookFigures, v: i64) {
        let count = |c: &mut u64| *c = c.saturating_add_signed(v);
        let signed = |s: &mut i64| *s = s.saturating_add(v);
        match self {
            Total::Views => count(&mut b.views),
            Total::AnonymousViews => count(&mut b.anonymous_views),
            Total::Downloads => count(&mut b.downloads),
            Total::Purchases => count(&mut b.purchases),
            Total::RevenueCents => signed(&mut b.revenue_cents),
            Total::Reviews => signed(&mut b.reviews),
            Total::ReviewUpdates => count(&mut b.review_updates),
            Total::ReviewLengthTotal => signed(&mut b.review_length_total),
            Total::Ratings => signed(&mut b.ratings),
            Total::RatingEvents => count(&mut b.rating_events),
            Total::RatingSum => signed(&mut b.rating_sum),
            Total::Stars(n) => signed(&mut b.rating_distribution[n]),
        }
    }

    /// Sets this figure of `b` to a sum computed elsewhere (a database's `SUM`).
    pub fn set(self, b: &mut BookFigures, v: i64) {
        match self {
            Total::Views => b.views = count_of(v),
            Total::AnonymousViews => b.anonymous_views = count_of(v),
            Total::Downloads => b.downloads = count_of(v),
            Total::Purchases => b.purchases = count_of(v),
            Total::RevenueCents => b.revenue_cents = v,
            Total::Reviews => b.reviews = v,
            Total::ReviewUpdates => b.review_updates = count_of(v),
            Total::ReviewLengthTotal => b.review_length_total = v,
            Total::Ratings => b.ratings = v,
            Total::RatingEvents => b.rating_events = count_of(v),
            Total::RatingSum => b.rating_sum = v,
            Total::Stars(n) => b.rating_distribution[n] = v,
        }
    }
}

/// A count is never negative; a negative sum would come from a corrupt row, shown as zero.
fn count_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// One summed figure: the sum of `terms` over the aggregates of `topic`.
#[derive(Debug, Clone, Copy)]
pub struct SumRule {
    pub total: Total,
    pub topic: Topic,
    pub terms: &'static [Counted],
}

const fn sum(total: Total, topic: Topic, terms: &'static [Counted]) -> SumRule {
    SumRule {
        total,
        topic,
        terms,
    }
}

impl SumRule {
    /// What an aggregate of this rule's topic adds to its figure.
    pub fn value(&self, f: &Figures) -> i64 {
        self.terms.iter().map(|t| t.of(f)).sum()
    }
}

/// The rule of `total`.
pub fn rule_of(total: Total) -> &'static SumRule {
    SUMS.iter()
        .find(|r| r.total == total)
        .expect("every total has a rule")
}

/// What one aggregate of `topic` adds to `total`.
pub fn contribution(total: Total, topic: Topic, f: &Figures) -> i64 {
    SUMS.iter()
        .filter(|r| r.total == total && r.topic == topic)
        .map(|r| r.value(f))
        .sum()
}

/// Every summed figure of a book.
pub const SUMS: [SumRule; 16] = {
    use Counted as C;
    use Topic::{BookDownloads, BookPurchases, BookRatings, BookReviews, BookViews};
    [
        sum(Total::Views, BookViews, &[C::Events]),
        sum(Total::AnonymousViews, BookViews, &[C::Anonymous]),
        sum(Total::Downloads, BookDownloads, &[C::Events]),
        sum(Total::Purchases, BookPurchases, &[C::Events]),
        sum(Total::RevenueCents, BookPurchases, &[C::RevenueCents]),
        sum(Total::Reviews, BookReviews, &[C::ReviewsCreated]),
        sum(Total::ReviewUpdates, BookReviews, &[C::ReviewsUpdated]),
        sum(
            Total::ReviewLengthTotal,
            BookReviews,
            &[C::ReviewLengthDelta],
        ),
        sum(Total::Ratings, BookRatings, &[C::RatingsCreated]),
        sum(
            Total::RatingEvents,
            BookRatings,
            &[C::RatingsCreated, C::RatingsUpdated],
        ),
        sum(Total::RatingSum, BookRatings, &[C::RatingSumDelta]),
        sum(Total::Stars(0), BookRatings, &[C::Stars(0)]),
        sum(Total::Stars(1), BookRatings, &[C::Stars(1)]),
        sum(Total::Stars(2), BookRatings, &[C::Stars(2)]),
        sum(Total::Stars(3), BookRatings, &[C::Stars(3)]),
        sum(Total::Stars(4), BookRatings, &[C::Stars(4)]),
    ]
};

/// Which end of an aggregate's event times a moment reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// The aggregate's earliest event, kept as the earliest over all aggregates.
    Earliest,
    /// The aggregate's latest event, kept as the latest over all aggregates.
    Latest,
}

impl Edge {
    pub fn of(self, f: &Figures) -> Option<DateTime<Utc>> {
        match self {
            Edge::Earliest => f.first_at,
            Edge::Latest => f.last_at,
        }
    }

    /// Keeps the earlier or the later of `held` and `seen`.
    pub fn keep(
        self,
        held: Option<DateTime<Utc>>,
        seen: Option<DateTime<Utc>>,
    ) -> Option<DateTime<Utc>> {
        match (held, seen) {
            (Some(x), Some(y)) => Some(match self {
                Edge::Earliest => x.min(y),
                Edge::Latest => x.max(y),
            }),
            (x, None) => x,
            (None, y) => y,
        }
    }
}

/// A moment of a book's activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    FirstView,
    LastView,
    LastPurchase,
}

impl Moment {
    pub fn name(self) -> &'static str {
        match self {
            Moment::FirstView => "first_view_at",
            Moment::LastView => "last_view_at",
            Moment::LastPurchase => "last_purchase_at",
        }
    }

    pub fn slot(self, b: &mut BookFigures) -> &mut Option<DateTime<Utc>> {
        match self {
            Moment::FirstView => &mut b.first_view_at,
            Moment::LastView => &mut b.last_view_at,
            Moment::LastPurchase => &mut b.last_purchase_at,
        }
    }
}

/// One moment: the earliest or latest event time of `topic`'s aggregates.
#[derive(Debug, Clone, Copy)]
pub struct MomentRule {
    pub moment: Moment,
    pub topic: Topic,
    pub edge: Edge,
}

pub const MOMENTS: [MomentRule; 3] = [
    MomentRule {
        moment: Moment::FirstView,
        topic: Topic::BookViews,
        edge: Edge::Earliest,
    },
    MomentRule {
        moment: Moment::LastView,
        topic: Topic::BookViews,
        edge: Edge::Latest,
    },
    MomentRule {
        moment: Moment::LastPurchase,
        topic: Topic::BookPurchases,
        edge: Edge::Latest,
    },
];

/// A unique count of a book: distinct users behind one topic's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unique {
    Viewers,
    Downloaders,
    Purchasers,
}

/// The topic whose users each unique count merges. The users behind any event (the
/// overview's unique users) merge every topic.
pub const UNIQUES: [(Unique, Topic); 3] = [
    (Unique::Viewers, Topic::BookViews),
    (Unique::Downloaders, Topic::BookDownloads),
    (Unique::Purchasers, Topic::BookPurchases),
];

impl Unique {
    /// The unique count `topic`'s users feed, if any.
    pub fn of_topic(topic: Topic) -> Option<Unique> {
        UNIQUES.iter().find(|(_, t)| *t == topic).map(|(u, _)| *u)
    }

    pub fn set(self, b: &mut BookFigures, v: u64) {
        match self {
            Unique::Viewers => b.unique_viewers = v,
            Unique::Downloaders => b.unique_downloaders = v,
            Unique::Purchasers => b.unique_purchasers = v,
        }
    }
}

/// The topic whose aggregates name the currency of a book's revenue.
pub const CURRENCY_TOPIC: Topic = Topic::BookPurchases;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_total_has_one_rule_and_a_distinct_name() {
        let names: std::collections::BTreeSet<&str> = SUMS.iter().map(|r| r.total.name()).collect();
        assert_eq!(names.len(), SUMS.len());
        let moments: std::collections::BTreeSet<&str> =
            MOMENTS.iter().map(|r| r.moment.name()).collect();
        assert_eq!(moments.len(), MOMENTS.len());
        assert!(moments.is_disjoint(&names));
    }

    #[test]
    fn set_and_add_reach_the_same_field() {
        for (i, r) in SUMS.iter().enumerate() {
            let v = i as i64 + 3;
            let (mut added, mut set) = (BookFigures::default(), BookFigures::default());
            r.total.add_to(&mut added, v);
            r.total.set(&mut set, v);
            assert_eq!(added, set, "{:?}", r.total);
            assert_ne!(added, BookFigures::default(), "{:?}", r.total);
        }
    }

    #[test]
    fn counts_saturate_and_never_go_negative() {
        let mut b = BookFigures::default();
        Total::Views.add_to(&mut b, -5);
        assert_eq!(b.views, 0);
        Total::RevenueCents.add_to(&mut b, i64::MAX);
        Total::RevenueCents.add_to(&mut b, 1);
        assert_eq!(b.revenue_cents, i64::MAX);
        Total::Views.set(&mut b, -1);
        assert_eq!(b.views, 0);
    }

    #[test]
    fn edges_keep_the_earlier_or_the_later() {
        let t = |s: i64| DateTime::from_timestamp(s, 0);
        assert_eq!(Edge::Earliest.keep(t(5), t(3)), t(3));
        assert_eq!(Edge::Latest.keep(t(5), t(3)), t(5));
        assert_eq!(Edge::Latest.keep(None, t(3)), t(3));
        assert_eq!(Edge::Earliest.keep(t(5), None), t(5));
    }
}
