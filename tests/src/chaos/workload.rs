//! The seeded workload. Everything here is relative to the run's start `T0` (a window
//! boundary): the same seed gives the same books, users, event kinds, values, ids, relative
//! times and send order. Absolute times are `T0 + shift + relative`, where the producer's
//! shift only ever grows by whole windows, so window-edge events stay on the edges.
//!
//! What a plan holds:
//! - **events**: views (logged-in and anonymous), downloads, purchases (integer cents, USD),
//!   reviews and ratings, created and later updated with the old value carried; each window
//!   also gets events exactly at its start and at its end minus 1 ms. Every event is sent
//!   when the clock reaches its time, in event-time order.
//! - **duplicates**: about `duplicate_percent`% of the events are published a second time,
//!   the same bytes (same `event_id`), up to [`DUPLICATE_DELAY_MAX_MS`] later — well within
//!   the grace, so their window is still open.
//! - **late events**: a handful timed `late_by` before they are sent, longer than window
//!   plus grace ago, each on a book of its own so its outcome (counted or dead-lettered)
//!   can be read off the stored figures.
//! - **poison**: per round and per event topic, garbage bytes, a valid event of the wrong
//!   type for the topic and a decodable but invalid one (rating 9 on `book.ratings`), plus
//!   garbage on `analytics.aggregated-stats` for the bookstore's ingest.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use folio_domain::events::Event;
use folio_domain::ids::{BookId, EventId, PurchaseId, ReviewId, UserId};
use folio_domain::money::{Currency, Money};
use folio_domain::topics::Topic;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The longest a duplicate delivery trails its original.
pub const DUPLICATE_DELAY_MAX_MS: i64 = 1500;
/// The most distinct users a book sees in one window (the sketch is exact up to 1024).
pub const MAX_USERS_PER_BOOK_WINDOW: usize = 1000;

/// The users who write reviews and ratings of regular books.
const REVIEWERS: i64 = 60;

/// The genres books are spread over.
pub const GENRES: [&str; 5] = ["Science Fiction", "Fantasy", "Mystery", "History", "Poetry"];

/// How big a workload is.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub seed: u64,
    pub window_ms: i64,
    pub grace_ms: i64,
    /// Length of the traffic, in windows.
    pub windows: i64,
    pub regular_books: usize,
    /// Books whose readers come from the whole user base: more than 1024 distinct users
    /// over the run, so their all-time unique counts are HyperLogLog estimates.
    pub big_books: usize,
    pub users: i64,
    pub late_events: usize,
    pub poison_rounds: usize,
    pub duplicate_percent: u32,
}

/// What a book is for in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookRole {
    Regular,
    Big,
    /// Receives exactly one (late) event.
    Late,
    /// Used only by the HTTP traffic through the bookstore (`chaos::http`).
    Http,
}

/// A book to create in the catalog before the run.
#[derive(Debug, Clone)]
pub struct PlannedBook {
    pub title: String,
    pub author: String,
    pub genre: String,
    pub price_cents: i64,
    pub role: BookRole,
}

/// The books of a workload, in creation order.
pub fn catalog(cfg: &WorkloadConfig) -> Vec<PlannedBook> {
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0xb00c);
    let mut out = Vec::new();
    let roles = std::iter::repeat_n(BookRole::Regular, cfg.regular_books)
        .chain(std::iter::repeat_n(BookRole::Big, cfg.big_books))
        .chain(std::iter::repeat_n(BookRole::Late, cfg.late_events));
    for (i, role) in roles.enumerate() {
        out.push(PlannedBook {
            title: format!("Chaos {} #{i}", role_name(role)),
            author: format!("Author {}", i % 7),
            genre: GENRES[rng.gen_range(0..GENRES.len())].to_string(),
            price_cents: 99 * rng.gen_range(1..=40),
            role,
        });
    }
    out
}

fn role_name(r: BookRole) -> &'static str {
    match r {
        BookRole::Regular => "regular",
        BookRole::Big => "big",
        BookRole::Late => "late",
        BookRole::Http => "http",
    }
}

/// A book as created: its id, role and price.
#[derive(Debug, Clone)]
pub struct BookRef {
    pub id: BookId,
    pub role: BookRole,
    pub price_cents: i64,
}

/// Which window edge an event sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// `t = window start`.
    Start,
    /// `t = window end - 1 ms`.
    LastMs,
}

/// The kind-specific part of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    View,
    Download,
    Purchase {
        purchase: i64,
        cents: i64,
    },
    Review {
        review: i64,
        length: u32,
        old_length: Option<u32>,
    },
    Rating {
        rating: u8,
        old: Option<u8>,
    },
}

/// One event of the plan, relative to the run's base time.
#[derive(Debug, Clone)]
pub struct EventSpec {
    /// Event time, ms after the base.
    pub at: i64,
    pub book: BookId,
    /// `None` only for anonymous views.
    pub user: Option<UserId>,
    pub kind: Kind,
    /// The random bits of its UUIDv7 `event_id`.
    pub id_bits: [u8; 10],
    pub edge: Option<Edge>,
}

impl EventSpec {
    /// The event, with times `base_ms + at`.
    pub fn event(&self, base_ms: i64) -> Event {
        let ms = base_ms + self.at;
        let occurred_at = at_ms(ms);
        let event_id = EventId(
            uuid::Builder::from_unix_timestamp_millis(ms.max(0) as u64, &self.id_bits).into_uuid(),
        );
        let book_id = self.book;
        let user = || self.user.unwrap_or(UserId(1));
        match self.kind {
            Kind::View => Event::BookViewed {
                event_id,
                occurred_at,
                book_id,
                user_id: self.user,
            },
            Kind::Download => Event::BookDownloaded {
                event_id,
                occurred_at,
                book_id,
                user_id: user(),
            },
            Kind::Purchase { purchase, cents } => Event::BookPurchased {
                event_id,
                occurred_at,
                book_id,
                user_id: user(),
                purchase_id: PurchaseId(purchase),
                price: Money::new(cents, usd()),
            },
            Kind::Review {
                review,
                length,
                old_length,
            } => Event::BookReviewed {
                event_id,
                occurred_at,
                book_id,
                user_id: user(),
                review_id: ReviewId(review),
                length,
                old_length,
            },
            Kind::Rating { rating, old } => Event::BookRated {
                event_id,
                occurred_at,
                book_id,
                user_id: user(),
                rating,
                old_rating: old,
            },
        }
    }
}

/// The store's currency.
pub fn usd() -> Currency {
    // A valid ISO code; parsing it cannot fail.
    Currency::parse("USD").unwrap_or_else(|_| unreachable!("USD is a valid currency"))
}

/// A UTC time from milliseconds since the epoch.
pub fn at_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// How a poison record is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoisonKind {
    /// Not JSON at all.
    Garbage,
    /// A valid event of a type that belongs on another topic.
    WrongType,
    /// Valid JSON of the right type that fails validation (rating 9, book id 0, a negative
    /// price, a missing field).
    Invalid,
}

/// One poison record.
#[derive(Debug, Clone)]
pub struct PoisonSpec {
    pub topic: Topic,
    pub kind: PoisonKind,
    pub key: Vec<u8>,
    /// Identifies the record in `analytics.dlq`: the `event_id` of the JSON kinds, and a
    /// `chaos-poison#<n>#` marker inside the garbage.
    pub id: EventId,
    pub n: usize,
    pub book: BookId,
    pub user: UserId,
}

impl PoisonSpec {
    /// The marker inside garbage values.
    pub fn marker(n: usize) -> String {
        format!("chaos-poison#{n}#")
    }

    /// The record value, with times at `now_ms`.
    pub fn value(&self, now_ms: i64) -> Vec<u8> {
        let at = at_ms(now_ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let id = self.id.to_string();
        let (b, u) = (self.book.get(), self.user.get());
        match self.kind {
            PoisonKind::Garbage => {
                let mut v = vec![0x00, 0xff, 0xfe, b'{'];
                v.extend_from_slice(Self::marker(self.n).as_bytes());
                v.extend_from_slice(b"\x80not json");
                v
            }
            PoisonKind::WrongType => {
                // An event that is valid, but of a type that lives on another topic.
                let v = if self.topic == Topic::BookViews {
                    serde_json::json!({"type": "book_rated", "event_id": id, "occurred_at": at,
                        "book_id": b, "user_id": u, "rating": 4})
                } else {
                    serde_json::json!({"type": "book_viewed", "event_id": id, "occurred_at": at,
                        "book_id": b, "user_id": u})
                };
                v.to_string().into_bytes()
            }
            PoisonKind::Invalid => {
                let v = match self.topic {
                    Topic::BookViews => serde_json::json!({"type": "book_viewed",
                        "event_id": id, "occurred_at": at, "book_id": 0, "user_id": u}),
                    Topic::BookDownloads => serde_json::json!({"type": "book_downloaded",
                        "event_id": id, "occurred_at": at, "book_id": b, "user_id": -5}),
                    Topic::BookPurchases => serde_json::json!({"type": "book_purchased",
                        "event_id": id, "occurred_at": at, "book_id": b, "user_id": u,
                        "purchase_id": 999_999_000 + self.n,
                        "price": {"amount_cents": -100, "currency": "USD"}}),
                    Topic::BookReviews => serde_json::json!({"type": "book_reviewed",
                        "event_id": id, "occurred_at": at, "book_id": b, "user_id": u,
                        "review_id": 999_999_000 + self.n}),
                    _ => serde_json::json!({"type": "book_rated", "event_id": id,
                        "occurred_at": at, "book_id": b, "user_id": u, "rating": 9}),
                };
                v.to_string().into_bytes()
            }
        }
    }
}

/// What a scheduled item sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    /// `plan.events[i]`, the first time.
    Event(usize),
    /// `plan.events[i]` again: the same bytes.
    Duplicate(usize),
    /// `plan.late[i]`.
    Late(usize),
    /// `plan.poison[i]`.
    Poison(usize),
}

/// One send, at `send_at` ms after the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    pub send_at: i64,
    pub what: What,
}

/// A whole workload. `items` is in send order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub events: Vec<EventSpec>,
    /// Whether `events[i]` has a duplicate delivery.
    pub duplicated: Vec<bool>,
    pub late: Vec<EventSpec>,
    pub poison: Vec<PoisonSpec>,
    pub items: Vec<Item>,
    /// Relative time of the last on-time event.
    pub traffic_ms: i64,
}

impl Plan {
    /// The workload of `cfg` over `books` (ids as created, in [`catalog`] order).
    pub fn generate(cfg: &WorkloadConfig, books: &[BookRef]) -> Plan {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let regular: Vec<&BookRef> = books
            .iter()
            .filter(|b| b.role == BookRole::Regular)
            .collect();
        let big: Vec<&BookRef> = books.iter().filter(|b| b.role == BookRole::Big).collect();
        let late_books: Vec<&BookRef> = books.iter().filter(|b| b.role == BookRole::Late).collect();
        let price: HashMap<BookId, i64> = books.iter().map(|b| (b.id, b.price_cents)).collect();
        let l = cfg.window_ms;
        // Regular books' readers are a loyal minority (repeat visits); big books draw from
        // everyone, so they pass 1024 distinct users over the run.
        let loyal = (cfg.users / 5).max(1);
        // Big books: enough views to see about 2.5 x 1024 visits over the run.
        let big_views = (2600 / cfg.windows.max(1)).clamp(20, 200) as usize;

        #[derive(Clone, Copy)]
        enum Slot {
            View,
            Download,
            Purchase,
            Review,
            Rating,
        }
        /// One planned event: time (ms), book, user, what happens, which window edge.
        type SlotPlan = (i64, BookId, Option<UserId>, Slot, Option<Edge>);
        let mut slots: Vec<SlotPlan> = Vec::new();
        let zipf = |rng: &mut StdRng, n: usize| -> usize {
            // Skewed choice: low indexes are popular.
            let x: f64 = rng.gen_range(0.0..1.0);
            ((x * x * n as f64) as usize).min(n - 1)
        };
        let vary = |rng: &mut StdRng, base: usize| -> usize {
            let lo = base * 7 / 10;
            let hi = base * 13 / 10;
            rng.gen_range(lo..=hi.max(lo))
        };
        for w in 0..cfg.windows {
            let start = w * l;
            let t = |rng: &mut StdRng| start + rng.gen_range(0..l);
            if !regular.is_empty() {
                for _ in 0..vary(&mut rng, 4 * regular.len()) {
                    let b = regular[zipf(&mut rng, regular.len())].id;
                    let user = if rng.gen_ratio(1, 5) {
                        None
                    } else {
                        Some(UserId(rng.gen_range(1..=loyal)))
                    };
                    slots.push((t(&mut rng), b, user, Slot::View, None));
                }
                for (n, slot) in [
                    (30, Slot::Download),
                    (12, Slot::Purchase),
                    (6, Slot::Review),
                    (8, Slot::Rating),
                ] {
                    // Reviewers are a small crowd, so reviews and ratings get updated.
                    let pool = match slot {
                        Slot::Review | Slot::Rating => REVIEWERS.min(loyal),
                        _ => loyal,
                    };
                    for _ in 0..vary(&mut rng, n) {
                        let b = regular[zipf(&mut rng, regular.len())].id;
                        let u = UserId(rng.gen_range(1..=pool));
                        slots.push((t(&mut rng), b, Some(u), slot, None));
                    }
                }
            }
            for (i, b) in big.iter().enumerate() {
                for _ in 0..vary(&mut rng, big_views) {
                    let user = if rng.gen_ratio(1, 10) {
                        None
                    } else {
                        Some(UserId(rng.gen_range(1..=cfg.users)))
                    };
                    slots.push((t(&mut rng), b.id, user, Slot::View, None));
                }
                // The first big book is also downloaded by many.
                let downloads = if i == 0 { big_views * 3 / 4 } else { 2 };
                for _ in 0..vary(&mut rng, downloads) {
                    let u = UserId(rng.gen_range(1..=cfg.users));
                    slots.push((t(&mut rng), b.id, Some(u), Slot::Download, None));
                }
                for slot in [Slot::Purchase, Slot::Rating] {
                    let u = UserId(rng.gen_range(1..=cfg.users));
                    slots.push((t(&mut rng), b.id, Some(u), slot, None));
                }
            }
            // Window edges: two events on the first millisecond, two on the last.
            let pool: Vec<&BookRef> = regular.iter().chain(big.iter()).copied().collect();
            if !pool.is_empty() {
                for (edge, at) in [(Edge::Start, start), (Edge::LastMs, start + l - 1)] {
                    for _ in 0..2 {
                        let b = pool[rng.gen_range(0..pool.len())].id;
                        let u = UserId(rng.gen_range(1..=loyal));
                        let slot = match rng.gen_range(0..5) {
                            0 => Slot::View,
                            1 => Slot::Download,
                            2 => Slot::Purchase,
                            3 => Slot::Review,
                            _ => Slot::Rating,
                        };
                        let user = match slot {
                            Slot::View if rng.gen_ratio(1, 4) => None,
                            _ => Some(u),
                        };
                        slots.push((at, b, user, slot, Some(edge)));
                    }
                }
            }
        }
        // Event-time order, then the stateful parts in that order: a rating or review is
        // created first and updated later, each update carrying the value it replaces.
        slots.sort_by_key(|s| s.0);
        let mut ratings: HashMap<(BookId, UserId), u8> = HashMap::new();
        let mut reviews: HashMap<(BookId, UserId), (i64, u32)> = HashMap::new();
        let mut next_purchase = 1i64;
        let mut next_review = 1i64;
        let mut events = Vec::with_capacity(slots.len());
        for (at, book, user, slot, edge) in slots {
            let kind = match slot {
                Slot::View => Kind::View,
                Slot::Download => Kind::Download,
                Slot::Purchase => {
                    next_purchase += 1;
                    Kind::Purchase {
                        purchase: next_purchase,
                        cents: price.get(&book).copied().unwrap_or(499),
                    }
                }
                Slot::Review => {
                    let key = (book, user.unwrap_or(UserId(1)));
                    let length = rng.gen_range(1..=2000);
                    match reviews.get(&key).copied() {
                        None => {
                            next_review += 1;
                            reviews.insert(key, (next_review, length));
                            Kind::Review {
                                review: next_review,
                                length,
                                old_length: None,
                            }
                        }
                        Some((id, old)) => {
                            reviews.insert(key, (id, length));
                            Kind::Review {
                                review: id,
                                length,
                                old_length: Some(old),
                            }
                        }
                    }
                }
                Slot::Rating => {
                    let key = (book, user.unwrap_or(UserId(1)));
                    let rating = rng.gen_range(1..=5);
                    let old = ratings.insert(key, rating);
                    Kind::Rating { rating, old }
                }
            };
            events.push(EventSpec {
                at,
                book,
                user,
                kind,
                id_bits: rng.gen(),
                edge,
            });
        }

        let mut items: Vec<Item> = Vec::with_capacity(events.len() * 11 / 10);
        let mut duplicated = vec![false; events.len()];
        for (i, e) in events.iter().enumerate() {
            items.push(Item {
                send_at: e.at,
                what: What::Event(i),
            });
            if rng.gen_ratio(cfg.duplicate_percent.min(100), 100) {
                duplicated[i] = true;
                items.push(Item {
                    send_at: e.at + rng.gen_range(0..=DUPLICATE_DELAY_MAX_MS),
                    what: What::Duplicate(i),
                });
            }
        }
        let traffic_ms = cfg.windows * l;

        // Late events: sent between 20 s in and 10 s before the end, timed more than
        // window + grace before they are sent, so every partition's stream time has long
        // passed their window.
        let mut late = Vec::new();
        let lo = 20_000.min(traffic_ms / 3);
        let hi = (traffic_ms - 10_000).max(lo + 1);
        for (i, b) in late_books.iter().enumerate() {
            let send_at = rng.gen_range(lo..hi);
            let late_by = cfg.grace_ms + 3 * l + rng.gen_range(0..l);
            let user = UserId(rng.gen_range(1..=cfg.users));
            let (kind, user) = match i % 4 {
                0 => (Kind::View, None),
                1 => (Kind::View, Some(user)),
                2 => (
                    Kind::Rating {
                        rating: rng.gen_range(1..=5),
                        old: None,
                    },
                    Some(user),
                ),
                _ => (Kind::Download, Some(user)),
            };
            late.push(EventSpec {
                at: send_at - late_by,
                book: b.id,
                user,
                kind,
                id_bits: rng.gen(),
                edge: None,
            });
            items.push(Item {
                send_at,
                what: What::Late(i),
            });
        }

        // Poison: each round, every kind on every event topic, and garbage for the
        // bookstore's aggregate ingest.
        let mut poison = Vec::new();
        let rounds = cfg.poison_rounds.max(1);
        let any_book = regular.first().or(big.first()).map_or(BookId(1), |b| b.id);
        for r in 0..cfg.poison_rounds {
            let base = traffic_ms * (2 * r as i64 + 1) / (2 * rounds as i64);
            let mut add = |rng: &mut StdRng, topic: Topic, kind: PoisonKind| {
                let n = poison.len();
                let user = UserId(rng.gen_range(1..=loyal));
                let book = regular
                    .get(rng.gen_range(0..regular.len().max(1)))
                    .map_or(any_book, |b| b.id);
                let key = match topic {
                    Topic::BookDownloads | Topic::BookPurchases => user.to_string(),
                    _ => book.to_string(),
                };
                poison.push(PoisonSpec {
                    topic,
                    kind,
                    key: key.into_bytes(),
                    id: EventId(uuid::Builder::from_random_bytes(rng.gen()).into_uuid()),
                    n,
                    book,
                    user,
                });
                items.push(Item {
                    send_at: (base + rng.gen_range(0..l * 3)).min(traffic_ms - 1),
                    what: What::Poison(n),
                });
            };
            for topic in Topic::EVENTS {
                for kind in [
                    PoisonKind::Garbage,
                    PoisonKind::WrongType,
                    PoisonKind::Invalid,
                ] {
                    add(&mut rng, topic, kind);
                }
            }
            add(&mut rng, Topic::AggregatedStats, PoisonKind::Garbage);
        }

        // Send order: by send time; an original always before its duplicate.
        items.sort_by_key(|i| i.send_at);
        Plan {
            events,
            duplicated,
            late,
            poison,
            items,
            traffic_ms,
        }
    }

    /// How many events sit on a window edge, by edge.
    pub fn edges(&self) -> (usize, usize) {
        let starts = self
            .events
            .iter()
            .filter(|e| e.edge == Some(Edge::Start))
            .count();
        let last = self
            .events
            .iter()
            .filter(|e| e.edge == Some(Edge::LastMs))
            .count();
        (starts, last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(seed: u64) -> WorkloadConfig {
        WorkloadConfig {
            seed,
            window_ms: 2000,
            grace_ms: 4000,
            windows: 20,
            regular_books: 10,
            big_books: 2,
            users: 3000,
            late_events: 4,
            poison_rounds: 2,
            duplicate_percent: 5,
        }
    }

    fn refs(cfg: &WorkloadConfig) -> Vec<BookRef> {
        catalog(cfg)
            .into_iter()
            .enumerate()
            .map(|(i, b)| BookRef {
                id: BookId(i as i64 + 1),
                role: b.role,
                price_cents: b.price_cents,
            })
            .collect()
    }

    fn bytes(plan: &Plan, base: i64) -> Vec<Vec<u8>> {
        plan.events.iter().map(|e| e.event(base).encode()).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_workload() {
        let c = cfg(7);
        let a = Plan::generate(&c, &refs(&c));
        let b = Plan::generate(&c, &refs(&c));
        assert_eq!(bytes(&a, 1_000_000), bytes(&b, 1_000_000));
        assert_eq!(a.items, b.items);
        let other = Plan::generate(&cfg(8), &refs(&c));
        assert_ne!(bytes(&a, 1_000_000), bytes(&other, 1_000_000));
    }

    #[test]
    fn edges_sit_on_window_boundaries_and_events_are_in_time_order() {
        let c = cfg(1);
        let plan = Plan::generate(&c, &refs(&c));
        let (starts, last) = plan.edges();
        assert_eq!((starts, last), (40, 40));
        for e in &plan.events {
            match e.edge {
                Some(Edge::Start) => assert_eq!(e.at % 2000, 0),
                Some(Edge::LastMs) => assert_eq!(e.at % 2000, 1999),
                None => {}
            }
        }
        assert!(plan.events.windows(2).all(|w| w[0].at <= w[1].at));
        // Originals go out when their time comes, duplicates within the delay bound.
        let mut seen = vec![false; plan.events.len()];
        for it in &plan.items {
            match it.what {
                What::Event(i) => {
                    assert_eq!(it.send_at, plan.events[i].at);
                    seen[i] = true;
                }
                What::Duplicate(i) => {
                    assert!(seen[i], "a duplicate goes after its original");
                    assert!(it.send_at - plan.events[i].at <= DUPLICATE_DELAY_MAX_MS);
                }
                What::Late(i) => {
                    assert!(it.send_at - plan.late[i].at > c.window_ms + c.grace_ms);
                }
                What::Poison(_) => {}
            }
        }
    }

    #[test]
    fn updates_carry_the_value_they_replace() {
        let c = cfg(3);
        let plan = Plan::generate(&c, &refs(&c));
        let mut ratings: HashMap<(BookId, Option<UserId>), u8> = HashMap::new();
        let mut updates = 0;
        for e in &plan.events {
            if let Kind::Rating { rating, old } = e.kind {
                let prev = ratings.insert((e.book, e.user), rating);
                assert_eq!(old, prev);
                updates += usize::from(old.is_some());
            }
        }
        assert!(updates > 0, "the workload updates some ratings");
        let dups = plan.duplicated.iter().filter(|d| **d).count();
        assert!(dups > 0 && dups < plan.events.len() / 10);
        assert_eq!(plan.poison.len(), 2 * 16);
        assert_eq!(plan.late.len(), 4);
    }

    #[test]
    fn poison_never_decodes_as_an_event_of_its_topic() {
        let c = cfg(5);
        let plan = Plan::generate(&c, &refs(&c));
        for p in &plan.poison {
            let value = p.value(1_700_000_000_000);
            if let Ok(ev) = Event::decode(&value) {
                assert_ne!(ev.topic(), p.topic, "{:?} decodes on its topic", p.kind);
            }
        }
    }
}
