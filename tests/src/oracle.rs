//! The statistics oracle: what a store must answer, stated field by field from the
//! aggregates it holds, in plain code that shares nothing with the domain's rule tables
//! (`folio_domain::stats::figures`) or its fold. The contract suite checks both stores
//! against it, so a wrong rule in the domain fails there instead of being carried out
//! faithfully by both.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use folio_domain::analytics::{Aggregate, Sketch};
use folio_domain::stats::{BookFigures, PopularBook, PopularSort};
use folio_domain::topics::Topic;

/// Figures added up by hand: views are the events of view aggregates, revenue the revenue
/// of purchase aggregates, and so on.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub figures: BookFigures,
    viewers: Sketch,
    downloaders: Sketch,
    purchasers: Sketch,
    users: Sketch,
    pub currency: Option<String>,
}

impl Tally {
    pub fn add(&mut self, a: &Aggregate) {
        let f = &a.figures;
        let b = &mut self.figures;
        match a.source.topic {
            Topic::BookViews => {
                b.views += f.events;
                b.anonymous_views += f.anonymous;
                self.viewers.merge(&f.users);
                b.first_view_at = earlier(b.first_view_at, f.first_at);
                b.last_view_at = later(b.last_view_at, f.last_at);
            }
            Topic::BookDownloads => {
                b.downloads += f.events;
                self.downloaders.merge(&f.users);
            }
            Topic::BookPurchases => {
                b.purchases += f.events;
                b.revenue_cents += f.revenue_cents;
                self.purchasers.merge(&f.users);
                b.last_purchase_at = later(b.last_purchase_at, f.last_at);
                if self.currency.is_none() {
                    self.currency = f.currency.map(|c| c.to_string());
                }
            }
            Topic::BookReviews => {
                b.reviews += f.reviews_created as i64;
                b.review_updates += f.reviews_updated;
                b.review_length_total += f.review_length_delta;
            }
            Topic::BookRatings => {
                b.ratings += f.ratings_created as i64;
                b.rating_events += f.ratings_created + f.ratings_updated;
                b.rating_sum += f.rating_sum_delta;
                for stars in 0..5 {
                    b.rating_distribution[stars] += f.rating_distribution_delta[stars];
                }
            }
            Topic::AggregatedStats | Topic::DeadLetters => {}
        }
        self.users.merge(&f.users);
    }

    /// The figures with unique counts, and the distinct users behind any event.
    pub fn finish(mut self) -> (BookFigures, u64) {
        self.figures.unique_viewers = self.viewers.estimate();
        self.figures.unique_downloaders = self.downloaders.estimate();
        self.figures.unique_purchasers = self.purchasers.estimate();
        (self.figures, self.users.estimate())
    }
}

fn earlier(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    [a, b].into_iter().flatten().min()
}

fn later(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    [a, b].into_iter().flatten().max()
}

/// Tallies per window start, oldest first, with each window's end.
pub fn tally_by_window<'a>(
    aggs: impl IntoIterator<Item = &'a Aggregate>,
) -> BTreeMap<DateTime<Utc>, (DateTime<Utc>, Tally)> {
    let mut out: BTreeMap<DateTime<Utc>, (DateTime<Utc>, Tally)> = BTreeMap::new();
    for a in aggs {
        out.entry(a.window_start)
            .or_insert_with(|| (a.window_end, Tally::default()))
            .1
            .add(a);
    }
    out
}

/// A popular list: the highest figure first, ties by the lower book id, ranks from 1.
pub fn rank_popular(mut rows: Vec<PopularBook>, sort: PopularSort, limit: u32) -> Vec<PopularBook> {
    let figure = |p: &PopularBook| -> i64 {
        match sort {
            PopularSort::Views => p.views as i64,
            PopularSort::Downloads => p.downloads as i64,
            PopularSort::Purchases => p.purchases as i64,
            PopularSort::Revenue => p.revenue.map_or(0, |m| m.amount_cents),
        }
    };
    rows.sort_by_key(|p| (std::cmp::Reverse(figure(p)), p.book_id));
    rows.truncate(limit as usize);
    for (i, p) in rows.iter_mut().enumerate() {
        p.rank = i as u32 + 1;
    }
    rows
}

/// The entry with the highest count, the lowest key first among equals (a book's id, a
/// genre's name in byte order); none when every count is zero.
pub fn top<K: Ord + Clone>(counts: &BTreeMap<K, u64>) -> Option<(K, u64)> {
    let best = counts.values().copied().max().filter(|v| *v > 0)?;
    counts
        .iter()
        .find(|(_, v)| **v == best)
        .map(|(k, v)| (k.clone(), *v))
}
