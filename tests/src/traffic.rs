//! Synthetic user actions for the runs on a real broker: every kind of event over a set
//! of books and readers, keyed and stamped as the bookstore would, plus the exact figures
//! they must add up to.
//!
//! The expected figures are computed here by plain counting over the events produced, not
//! by folio's aggregation code, so a test comparing them with the stored statistics checks
//! the whole path (partitions, windows, commits, replays, the SQL upsert and queries).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Context;
use chrono::{DateTime, Utc};
use folio_domain::events::Event;
use folio_domain::ids::{BookId, EventId, PurchaseId, ReviewId, UserId};
use folio_domain::money::{Currency, Money};
use folio_domain::ports::RecordPublisher;
use folio_domain::services::event_record;
use folio_domain::stats::BookFigures;
use folio_domain::topics::TopicPartition;

use crate::bus_contract::partition_of;

/// A deterministic stream of user actions and the figures it adds up to.
pub struct Traffic {
    state: u64,
    books: Vec<i64>,
    users: Vec<i64>,
    next_id: i64,
    /// Current review length and rating per (user, book), so updates carry the old value.
    reviews: HashMap<(i64, i64), u32>,
    ratings: HashMap<(i64, i64), u8>,
    /// Every event handed out so far.
    pub events: Vec<Event>,
}

/// The price of a book in the synthetic catalog, in cents.
pub fn price_cents(book: i64) -> i64 {
    100 * (book % 7) + 99
}

impl Traffic {
    /// Actions over books `1..=books` by readers `1..=users`, from a fixed seed.
    pub fn new(seed: u64, books: i64, users: i64) -> Self {
        Traffic {
            state: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            books: (1..=books).collect(),
            users: (1..=users).collect(),
            next_id: 1,
            reviews: HashMap::new(),
            ratings: HashMap::new(),
            events: Vec::new(),
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic, good enough to spread keys.
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 16
    }

    fn pick(&mut self, from: &[i64]) -> i64 {
        from[(self.next() % from.len() as u64) as usize]
    }

    fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    /// `n` new actions stamped now (millisecond precision, as on the wire).
    pub fn batch(&mut self, n: usize) -> Vec<Event> {
        let now = Utc::now();
        let at = DateTime::<Utc>::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
        let usd = Currency::parse("USD").unwrap_or_else(|_| unreachable!("a valid code"));
        let books = self.books.clone();
        let users = self.users.clone();
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let book = self.pick(&books);
            let user = self.pick(&users);
            let event_id = EventId::new_at(at);
            let roll = self.next() % 20;
            let event = match roll {
                0..=7 => Event::BookViewed {
                    event_id,
                    occurred_at: at,
                    book_id: BookId(book),
                    user_id: (roll % 4 != 0).then_some(UserId(user)),
                },
                8..=10 => Event::BookDownloaded {
                    event_id,
                    occurred_at: at,
                    book_id: BookId(book),
                    user_id: UserId(user),
                },
                11..=13 => Event::BookPurchased {
                    event_id,
                    occurred_at: at,
                    book_id: BookId(book),
                    user_id: UserId(user),
                    purchase_id: PurchaseId(self.id()),
                    price: Money::new(price_cents(book), usd),
                },
                14..=16 => {
                    let length = 5 + (self.next() % 200) as u32;
                    let old_length = self.reviews.insert((user, book), length);
                    Event::BookReviewed {
                        event_id,
                        occurred_at: at,
                        book_id: BookId(book),
                        user_id: UserId(user),
                        review_id: ReviewId(self.id()),
                        length,
                        old_length,
                    }
                }
                _ => {
                    let rating = 1 + (self.next() % 5) as u8;
                    let old_rating = self.ratings.insert((user, book), rating);
                    Event::BookRated {
                        event_id,
                        occurred_at: at,
                        book_id: BookId(book),
                        user_id: UserId(user),
                        rating,
                        old_rating,
                    }
                }
            };
            out.push(event);
        }
        self.events.extend(out.iter().cloned());
        out
    }

    /// The source partitions the events so far landed on.
    pub fn partitions(&self) -> BTreeSet<TopicPartition> {
        self.events
            .iter()
            .map(|e| partition_of(e.topic(), e.key().as_bytes()))
            .collect()
    }

    /// How many events so far landed on each source partition.
    pub fn per_partition(events: &[Event]) -> BTreeMap<TopicPartition, i64> {
        let mut out = BTreeMap::new();
        for e in events {
            *out.entry(partition_of(e.topic(), e.key().as_bytes()))
                .or_default() += 1;
        }
        out
    }

    /// The exact all-time figures of every book with events, and of all books together
    /// with the number of distinct users.
    pub fn expected(&self) -> Expected {
        let mut books: BTreeMap<i64, Counting> = BTreeMap::new();
        let mut all = Counting::default();
        for e in &self.events {
            books.entry(e.book_id().get()).or_default().add(e);
            all.add(e);
        }
        Expected {
            books: books.into_iter().map(|(b, c)| (b, c.figures())).collect(),
            unique_users: all.users.len() as u64,
            totals: all.figures(),
        }
    }
}

/// What the stored statistics must say.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub books: BTreeMap<i64, BookFigures>,
    pub totals: BookFigures,
    pub unique_users: u64,
}

#[derive(Default)]
struct Counting {
    f: BookFigures,
    viewers: BTreeSet<i64>,
    downloaders: BTreeSet<i64>,
    purchasers: BTreeSet<i64>,
    users: BTreeSet<i64>,
}

impl Counting {
    fn add(&mut self, e: &Event) {
        let f = &mut self.f;
        if let Some(u) = e.user_id() {
            self.users.insert(u.get());
        }
        let at = Some(e.occurred_at());
        match e {
            Event::BookViewed { user_id, .. } => {
                f.views += 1;
                match user_id {
                    Some(u) => {
                        self.viewers.insert(u.get());
                    }
                    None => f.anonymous_views += 1,
                }
                f.first_view_at = f.first_view_at.min(at).or(at);
                f.last_view_at = f.last_view_at.max(at);
            }
            Event::BookDownloaded { user_id, .. } => {
                f.downloads += 1;
                self.downloaders.insert(user_id.get());
            }
            Event::BookPurchased { user_id, price, .. } => {
                f.purchases += 1;
                f.revenue_cents += price.amount_cents;
                self.purchasers.insert(user_id.get());
                f.last_purchase_at = f.last_purchase_at.max(at);
            }
            Event::BookReviewed {
                length, old_length, ..
            } => match old_length {
                None => {
                    f.reviews += 1;
                    f.review_length_total += i64::from(*length);
                }
                Some(old) => {
                    f.review_updates += 1;
                    f.review_length_total += i64::from(*length) - i64::from(*old);
                }
            },
            Event::BookRated {
                rating, old_rating, ..
            } => {
                f.rating_events += 1;
                f.rating_sum += i64::from(*rating);
                f.rating_distribution[usize::from(*rating) - 1] += 1;
                match old_rating {
                    None => f.ratings += 1,
                    Some(old) => {
                        f.rating_sum -= i64::from(*old);
                        f.rating_distribution[usize::from(*old) - 1] -= 1;
                    }
                }
            }
        }
    }

    fn figures(&self) -> BookFigures {
        BookFigures {
            unique_viewers: self.viewers.len() as u64,
            unique_downloaders: self.downloaders.len() as u64,
            unique_purchasers: self.purchasers.len() as u64,
            ..self.f.clone()
        }
    }
}

/// Publishes events as the bookstore does (key, JSON value, `event_id`/`type` headers) and
/// waits until the broker acknowledged every one.
pub async fn publish(publisher: &dyn RecordPublisher, events: &[Event]) -> anyhow::Result<()> {
    for e in events {
        publisher
            .send(event_record(e))
            .await
            .context("publishing an event")?;
    }
    publisher.flush().await.context("flushing events")
}
