//! The exact figures of a set of produced events, computed here from first principles (not
//! with folio's own fold), per (book, window): counts, revenue, review and rating deltas,
//! exact sets of users, and first/last times.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use folio_domain::events::Event;
use folio_domain::ids::EventId;
use folio_domain::partitioner::partition_for_key;

/// The figures of one book in one window (or any sum of them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cell {
    pub views: i64,
    pub anonymous: i64,
    pub downloads: i64,
    pub purchases: i64,
    pub revenue_cents: i64,
    pub reviews_created: i64,
    pub review_updates: i64,
    pub review_length_total: i64,
    pub ratings_created: i64,
    pub rating_events: i64,
    pub rating_sum: i64,
    /// Change in how many current ratings have 1..=5 stars.
    pub distribution: [i64; 5],
    pub viewers: BTreeSet<i64>,
    pub downloaders: BTreeSet<i64>,
    pub purchasers: BTreeSet<i64>,
    /// Everyone behind any event.
    pub users: BTreeSet<i64>,
    pub first_view_ms: Option<i64>,
    pub last_view_ms: Option<i64>,
    pub last_purchase_ms: Option<i64>,
}

impl Cell {
    /// Adds one event.
    pub fn add(&mut self, e: &Event) {
        let t = e.occurred_at().timestamp_millis();
        if let Some(u) = e.user_id() {
            self.users.insert(u.get());
        }
        match e {
            Event::BookViewed { user_id, .. } => {
                self.views += 1;
                match user_id {
                    Some(u) => {
                        self.viewers.insert(u.get());
                    }
                    None => self.anonymous += 1,
                }
                self.first_view_ms = Some(self.first_view_ms.map_or(t, |f| f.min(t)));
                self.last_view_ms = Some(self.last_view_ms.map_or(t, |l| l.max(t)));
            }
            Event::BookDownloaded { user_id, .. } => {
                self.downloads += 1;
                self.downloaders.insert(user_id.get());
            }
            Event::BookPurchased { user_id, price, .. } => {
                self.purchases += 1;
                self.revenue_cents += price.amount_cents;
                self.purchasers.insert(user_id.get());
                self.last_purchase_ms = Some(self.last_purchase_ms.map_or(t, |l| l.max(t)));
            }
            Event::BookReviewed {
                length, old_length, ..
            } => match old_length {
                None => {
                    self.reviews_created += 1;
                    self.review_length_total += i64::from(*length);
                }
                Some(old) => {
                    self.review_updates += 1;
                    self.review_length_total += i64::from(*length) - i64::from(*old);
                }
            },
            Event::BookRated {
                rating, old_rating, ..
            } => {
                self.rating_events += 1;
                self.rating_sum += i64::from(*rating);
                self.distribution[usize::from(*rating) - 1] += 1;
                match old_rating {
                    None => self.ratings_created += 1,
                    Some(old) => {
                        self.rating_sum -= i64::from(*old);
                        self.distribution[usize::from(*old) - 1] -= 1;
                    }
                }
            }
        }
    }

    /// Adds every figure of `other`: sums add, sets unite, first/last widen.
    pub fn merge(&mut self, o: &Cell) {
        self.views += o.views;
        self.anonymous += o.anonymous;
        self.downloads += o.downloads;
        self.purchases += o.purchases;
        self.revenue_cents += o.revenue_cents;
        self.reviews_created += o.reviews_created;
        self.review_updates += o.review_updates;
        self.review_length_total += o.review_length_total;
        self.ratings_created += o.ratings_created;
        self.rating_events += o.rating_events;
        self.rating_sum += o.rating_sum;
        for (d, x) in self.distribution.iter_mut().zip(o.distribution) {
            *d += x;
        }
        self.viewers.extend(&o.viewers);
        self.downloaders.extend(&o.downloaders);
        self.purchasers.extend(&o.purchasers);
        self.users.extend(&o.users);
        self.first_view_ms = min_opt(self.first_view_ms, o.first_view_ms);
        self.last_view_ms = max_opt(self.last_view_ms, o.last_view_ms);
        self.last_purchase_ms = max_opt(self.last_purchase_ms, o.last_purchase_ms);
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// (book id, window start ms).
pub type CellKey = (i64, i64);

/// Where one book's events of one window came from: (book, window start, topic, partition).
pub type SourceKey = (i64, i64, &'static str, i32);

/// The expected figures of every (book, window) with events.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    pub window_ms: i64,
    pub cells: BTreeMap<CellKey, Cell>,
    /// Distinct events per source partition, to point at the aggregate behind a
    /// difference.
    pub sources: BTreeMap<SourceKey, i64>,
    counted: HashSet<EventId>,
}

impl Expected {
    pub fn new(window_ms: i64) -> Self {
        Expected {
            window_ms,
            ..Default::default()
        }
    }

    /// The window start of an instant.
    pub fn window_of(&self, ms: i64) -> i64 {
        ms.div_euclid(self.window_ms) * self.window_ms
    }

    /// Adds an event once: a second event with the same id changes nothing.
    pub fn add(&mut self, e: &Event) -> bool {
        if !self.counted.insert(e.event_id()) {
            return false;
        }
        let w = self.window_of(e.occurred_at().timestamp_millis());
        let book = e.book_id().get();
        self.cells.entry((book, w)).or_default().add(e);
        let topic = e.topic();
        let p = partition_for_key(e.key().as_bytes(), topic.partitions());
        *self.sources.entry((book, w, topic.name(), p)).or_default() += 1;
        true
    }

    /// Every window start with events, oldest first.
    pub fn windows(&self) -> BTreeSet<i64> {
        self.cells.keys().map(|(_, w)| *w).collect()
    }

    /// Every book with events.
    pub fn books(&self) -> BTreeSet<i64> {
        self.cells.keys().map(|(b, _)| *b).collect()
    }

    /// One book's figures over all windows.
    pub fn book_total(&self, book: i64) -> Cell {
        let mut c = Cell::default();
        for (_, cell) in self.cells.range((book, i64::MIN)..=(book, i64::MAX)) {
            c.merge(cell);
        }
        c
    }

    /// Every book's figures in one window.
    pub fn window_total(&self, window: i64) -> Cell {
        let mut c = Cell::default();
        for ((_, w), cell) in &self.cells {
            if *w == window {
                c.merge(cell);
            }
        }
        c
    }

    /// Everything.
    pub fn total(&self) -> Cell {
        let mut c = Cell::default();
        for cell in self.cells.values() {
            c.merge(cell);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::workload::{at_ms, usd};
    use folio_domain::ids::{BookId, PurchaseId, UserId};
    use folio_domain::money::Money;

    fn id(n: u128) -> EventId {
        EventId(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn figures_follow_the_events_and_duplicates_count_once() {
        let mut x = Expected::new(2000);
        let b = BookId(3);
        let rate = |n, ms, rating, old| Event::BookRated {
            event_id: id(n),
            occurred_at: at_ms(ms),
            book_id: b,
            user_id: UserId(9),
            rating,
            old_rating: old,
        };
        let view = Event::BookViewed {
            event_id: id(1),
            occurred_at: at_ms(10_000),
            book_id: b,
            user_id: None,
        };
        assert!(x.add(&view));
        assert!(!x.add(&view), "the same event_id again");
        x.add(&Event::BookViewed {
            event_id: id(2),
            occurred_at: at_ms(11_999),
            book_id: b,
            user_id: Some(UserId(4)),
        });
        x.add(&rate(3, 10_500, 2, None));
        x.add(&rate(4, 12_000, 5, Some(2)));
        x.add(&Event::BookPurchased {
            event_id: id(5),
            occurred_at: at_ms(12_001),
            book_id: b,
            user_id: UserId(4),
            purchase_id: PurchaseId(1),
            price: Money::new(1999, usd()),
        });
        let first = &x.cells[&(3, 10_000)];
        assert_eq!(
            (first.views, first.anonymous, first.viewers.len()),
            (2, 1, 1)
        );
        assert_eq!(
            (first.first_view_ms, first.last_view_ms),
            (Some(10_000), Some(11_999))
        );
        assert_eq!((first.ratings_created, first.rating_sum), (1, 2));
        assert_eq!(first.distribution, [0, 1, 0, 0, 0]);
        let second = &x.cells[&(3, 12_000)];
        assert_eq!(
            (
                second.ratings_created,
                second.rating_events,
                second.rating_sum
            ),
            (0, 1, 3)
        );
        assert_eq!(second.distribution, [0, -1, 0, 0, 1]);
        assert_eq!((second.purchases, second.revenue_cents), (1, 1999));
        let all = x.book_total(3);
        assert_eq!(
            (all.ratings_created, all.rating_sum, all.distribution),
            (1, 5, [0, 0, 0, 0, 1])
        );
        assert_eq!(all.users.len(), 2);
        assert_eq!(x.windows().len(), 2);
    }
}
