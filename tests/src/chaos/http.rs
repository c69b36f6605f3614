//! HTTP traffic through the running `folio-bookstore`: the reader's real path (handler,
//! spool or outbox, relay, Kafka), next to the workload the producer publishes straight to
//! the topics. It works on books of its own, so the direct workload's figures are
//! untouched, and only talks to 127.0.0.1.
//!
//! - **Steady traffic** at a fixed rate and within a fixed budget: logged-in and anonymous
//!   views, downloads of free books and of paid ones (bought, or not: those answer 402),
//!   purchases, reviews and ratings created and then replaced. It goes on through every
//!   fault, the broker and PostgreSQL outages included.
//! - **Bursts** of views on a book reserved for one burst, during which the driver sends
//!   the bookstore SIGTERM or `kill -9`; the book's figures then say exactly what was lost
//!   or counted twice.
//!
//! Every answer is recorded: its status (or that the connection was refused, so nothing
//! was sent, or that no answer came after sending), its latency, and for a 2xx answer what
//! it adds to its book's figures. A request whose fate is unknown (sent without an answer;
//! a write answered 5xx, whose commit may or may not have happened) widens the book's
//! expected range by its effect instead. At the end each book's stored totals must lie in
//! that range — exactly the 2xx figures when nothing was ambiguous — and the events found
//! on the topics (de-duplicated by `event_id`) become the exact per-window expectation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use folio_domain::events::Event;
use folio_domain::ids::BookId;
use folio_domain::ports::{MessageBus, StatsQuery};
use folio_domain::stats::{BookFigures, TimeRange};
use folio_domain::topics::Topic;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::dlq::read_topic;
use super::expect::{Cell, Expected};
use super::producer::now_ms;

/// Every reader's password.
const PASSWORD: &str = "chaos-reader-password";
/// Longest wait for one answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most requests in flight at once (steady traffic and a burst together).
pub const MAX_IN_FLIGHT: usize = 48;

/// What an HTTP book is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Steady traffic: views, downloads, purchases, reviews and ratings.
    Steady,
    /// Views only, in one burst during which the bookstore gets SIGTERM.
    TermBurst,
    /// Views only, in one burst during which the bookstore gets `kill -9`.
    KillBurst,
}

/// A book the HTTP traffic uses.
#[derive(Debug, Clone)]
pub struct HttpBook {
    pub id: i64,
    pub title: String,
    pub genre: String,
    /// 0: free.
    pub price_cents: i64,
    pub has_file: bool,
    pub purpose: Purpose,
}

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    View,
    AnonymousView,
    Download,
    Purchase,
    ReviewCreate,
    ReviewUpdate,
    RatingCreate,
    RatingUpdate,
}

impl Op {
    /// A page or a file: what must keep answering while the broker is away.
    pub fn is_read(self) -> bool {
        matches!(self, Op::View | Op::AnonymousView | Op::Download)
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Status(u16),
    /// The connection was refused: nothing was sent (the bookstore was down).
    Refused,
    /// Sent, but no answer came (a reset, a timeout): it may or may not have happened.
    NoAnswer,
}

impl Outcome {
    fn label(self) -> String {
        match self {
            Outcome::Status(s) => s.to_string(),
            Outcome::Refused => "refused".into(),
            Outcome::NoAnswer => "no answer".into(),
        }
    }

    pub fn ok(self) -> bool {
        matches!(self, Outcome::Status(200..=299))
    }
}

/// One answer.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub sent_ms: i64,
    pub latency_us: u64,
    pub op: Op,
    pub book: i64,
    pub outcome: Outcome,
}

/// What one request adds to its book's figures if it happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Effect {
    pub views: i64,
    pub anonymous: i64,
    pub downloads: i64,
    pub purchases: i64,
    pub revenue_cents: i64,
    pub reviews: i64,
    pub review_updates: i64,
    pub review_length_total: i64,
    pub ratings: i64,
    pub rating_events: i64,
    pub rating_sum: i64,
}

impl Effect {
    const NAMES: [&'static str; 11] = [
        "views",
        "anonymous views",
        "downloads",
        "purchases",
        "revenue (cents)",
        "reviews",
        "review updates",
        "review length total",
        "ratings",
        "rating events",
        "rating sum",
    ];

    fn values(&self) -> [i64; 11] {
        [
            self.views,
            self.anonymous,
            self.downloads,
            self.purchases,
            self.revenue_cents,
            self.reviews,
            self.review_updates,
            self.review_length_total,
            self.ratings,
            self.rating_events,
            self.rating_sum,
        ]
    }

    fn from_values(v: [i64; 11]) -> Self {
        Effect {
            views: v[0],
            anonymous: v[1],
            downloads: v[2],
            purchases: v[3],
            revenue_cents: v[4],
            reviews: v[5],
            review_updates: v[6],
            review_length_total: v[7],
            ratings: v[8],
            rating_events: v[9],
            rating_sum: v[10],
        }
    }

    fn zip(&self, o: &Effect, f: impl Fn(i64, i64) -> i64) -> Effect {
        let (a, b) = (self.values(), o.values());
        Effect::from_values(std::array::from_fn(|i| f(a[i], b[i])))
    }

    fn of_figures(f: &BookFigures) -> Self {
        Effect {
            views: f.views as i64,
            anonymous: f.anonymous_views as i64,
            downloads: f.downloads as i64,
            purchases: f.purchases as i64,
            revenue_cents: f.revenue_cents,
            reviews: f.reviews,
            review_updates: f.review_updates as i64,
            review_length_total: f.review_length_total,
            ratings: f.ratings,
            rating_events: f.rating_events as i64,
            rating_sum: f.rating_sum,
        }
    }

    fn of_cell(c: &Cell) -> Self {
        Effect {
            views: c.views,
            anonymous: c.anonymous,
            downloads: c.downloads,
            purchases: c.purchases,
            revenue_cents: c.revenue_cents,
            reviews: c.reviews_created,
            review_updates: c.review_updates,
            review_length_total: c.review_length_total,
            ratings: c.ratings_created,
            rating_events: c.rating_events,
            rating_sum: c.rating_sum,
        }
    }
}

/// A book's expected figures: `lo` from the 2xx answers, `hi` adding whatever the
/// ambiguous requests may have done.
#[derive(Debug, Clone, Copy, Default)]
pub struct Range {
    pub lo: Effect,
    pub hi: Effect,
    /// Requests whose fate is unknown.
    pub ambiguous: u64,
}

/// What a reader has done to a book, as far as the answers tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// The review's length, or the rating.
    Yes(i64),
    /// An ambiguous request: the reader leaves this book's review (or rating) alone.
    Unknown,
}

#[derive(Debug, Default)]
struct PairState {
    review: Option<Known>,
    rating: Option<Known>,
    bought: bool,
}

/// Everything recorded.
#[derive(Debug, Default)]
struct Ledger {
    samples: Vec<Sample>,
    ranges: BTreeMap<i64, Range>,
    /// Updates whose answer named another old value than the one the traffic knew.
    mismatches: Vec<String>,
}

/// A reader with a token.
#[derive(Debug, Clone)]
struct Reader {
    id: i64,
    token: String,
}

/// One request, with what it adds if it happens.
struct Req {
    op: Op,
    book: i64,
    reader: Option<usize>,
    effect: Effect,
    /// The review or rating value it sets, and the old value it replaces.
    sets: Option<(i64, Option<i64>)>,
    body: Option<serde_json::Value>,
}

/// The bookstore's HTTP API, as the suite's readers and admin use it.
pub struct HttpTraffic {
    base: String,
    client: reqwest::Client,
    admin_token: String,
    readers: Vec<Reader>,
    pub books: Vec<HttpBook>,
    ledger: Mutex<Ledger>,
    pairs: Mutex<HashMap<(usize, i64), PairState>>,
    /// Reader-and-book pairs with a review or rating request in flight.
    busy: Mutex<HashSet<(usize, i64)>>,
    in_flight: Arc<Semaphore>,
    /// Steady requests not sent because too many were in flight.
    pub skipped: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How many steady books and what they are: free with a file, paid with a file.
const STEADY_BOOKS: [(i64, bool); 5] = [
    (0, true),
    (0, true),
    (1299, true),
    (499, true),
    (2999, true),
];

impl HttpTraffic {
    /// Waits for the bookstore at `addr`, signs the admin in, creates the HTTP books
    /// (`term_bursts` + `kill_bursts` burst books after the steady ones) with their files,
    /// and registers `readers` readers.
    #[allow(clippy::too_many_arguments)]
    pub async fn prepare(
        addr: &str,
        admin_email: &str,
        admin_password: &str,
        seed: u64,
        readers: usize,
        term_bursts: usize,
        kill_bursts: usize,
        genres: &[&str],
    ) -> anyhow::Result<Arc<Self>> {
        let base = format!("http://{addr}");
        if !addr.starts_with("127.0.0.1:") {
            bail!("the chaos suite's HTTP traffic only goes to 127.0.0.1, not {addr}");
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(MAX_IN_FLIGHT)
            .build()?;
        wait_ready(&client, &base, Duration::from_secs(90)).await?;
        let login = client
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"email": admin_email, "password": admin_password}))
            .send()
            .await?;
        if !login.status().is_success() {
            bail!("admin login answered {}", login.status());
        }
        let admin_token = token_of(login.json().await?)?;
        let mut rng = StdRng::seed_from_u64(seed ^ 0x4777);
        let mut books = Vec::new();
        let purposes = STEADY_BOOKS
            .iter()
            .map(|&(p, f)| (p, f, Purpose::Steady))
            .chain(std::iter::repeat_n(
                (0, false, Purpose::TermBurst),
                term_bursts,
            ))
            .chain(std::iter::repeat_n(
                (0, false, Purpose::KillBurst),
                kill_bursts,
            ));
        for (i, (price_cents, has_file, purpose)) in purposes.enumerate() {
            let title = format!("Chaos http {purpose:?} #{i}");
            let genre = genres[rng.gen_range(0..genres.len())].to_string();
            let r = client
                .post(format!("{base}/api/v1/books"))
                .bearer_auth(&admin_token)
                .json(
                    &json!({"title": title, "author": "Chaos HTTP", "genre": genre,
                    "description": "", "price_cents": price_cents, "currency": "USD"}),
                )
                .send()
                .await?;
            if r.status().as_u16() != 201 {
                bail!("creating an HTTP book answered {}", r.status());
            }
            let v: serde_json::Value = r.json().await?;
            let id = v["id"].as_i64().context("a created book has an id")?;
            if has_file {
                let bytes: Vec<u8> = (0..2048).map(|_| rng.gen()).collect();
                let r = client
                    .put(format!(
                        "{base}/api/v1/books/{id}/file?file_name=book-{id}.epub"
                    ))
                    .bearer_auth(&admin_token)
                    .header("content-type", "application/epub+zip")
                    .body(bytes)
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("uploading book {id}'s file answered {}", r.status());
                }
            }
            books.push(HttpBook {
                id,
                title,
                genre,
                price_cents,
                has_file,
                purpose,
            });
        }
        // Registering hashes a password (Argon2): a few at a time.
        let mut out = Vec::with_capacity(readers);
        let run = seed ^ rng.gen::<u64>();
        for chunk in (0..readers).collect::<Vec<_>>().chunks(4) {
            let calls = chunk.iter().map(|i| {
                let client = client.clone();
                let url = format!("{base}/api/v1/auth/register");
                let email = format!("reader{i}.{run:x}@chaos.folio");
                async move {
                    let r = client
                        .post(url)
                        .json(&json!({"email": email, "password": PASSWORD,
                            "display_name": format!("Reader {i}")}))
                        .send()
                        .await?;
                    if r.status().as_u16() != 201 {
                        bail!("registering a reader answered {}", r.status());
                    }
                    let v: serde_json::Value = r.json().await?;
                    Ok::<_, anyhow::Error>(Reader {
                        id: v["user_id"].as_i64().context("a token names its user")?,
                        token: token_of(v)?,
                    })
                }
            });
            for r in futures_util::future::join_all(calls).await {
                out.push(r?);
            }
        }
        Ok(Arc::new(HttpTraffic {
            base,
            client,
            admin_token,
            readers: out,
            books,
            ledger: Mutex::new(Ledger::default()),
            pairs: Mutex::new(HashMap::new()),
            busy: Mutex::new(HashSet::new()),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            skipped: AtomicUsize::new(0),
        }))
    }

    /// The ids of the HTTP books.
    pub fn book_ids(&self) -> HashSet<i64> {
        self.books.iter().map(|b| b.id).collect()
    }

    /// The books reserved for bursts of `purpose`, in order.
    pub fn burst_books(&self, purpose: Purpose) -> Vec<i64> {
        self.books
            .iter()
            .filter(|b| b.purpose == purpose)
            .map(|b| b.id)
            .collect()
    }

    /// Steady traffic: `rate` requests a second until `stop` is set, at most `budget`
    /// of them. Returns how many were sent.
    pub fn spawn_steady(
        self: &Arc<Self>,
        seed: u64,
        rate: u32,
        budget: u64,
        stop: Arc<AtomicBool>,
    ) -> JoinHandle<u64> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ 0x57ea);
            let mut tick =
                tokio::time::interval(Duration::from_micros(1_000_000 / u64::from(rate.max(1))));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut sent = 0;
            let mut tasks = tokio::task::JoinSet::new();
            while sent < budget && !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                while tasks.try_join_next().is_some() {}
                let Ok(permit) = me.in_flight.clone().try_acquire_owned() else {
                    me.skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let req = me.pick(&mut rng);
                sent += 1;
                let me = me.clone();
                tasks.spawn(async move {
                    me.execute(req).await;
                    drop(permit);
                });
            }
            while tasks.join_next().await.is_some() {}
            sent
        })
    }

    /// A burst of `n` views of `book` (a third anonymous), `concurrency` at a time.
    /// `answered` counts the requests done so far, whatever their outcome.
    pub fn spawn_burst(
        self: &Arc<Self>,
        book: i64,
        n: usize,
        concurrency: usize,
        answered: Arc<AtomicUsize>,
    ) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let next = Arc::new(AtomicUsize::new(0));
            let mut workers = tokio::task::JoinSet::new();
            for _ in 0..concurrency.max(1) {
                let (me, next, answered) = (me.clone(), next.clone(), answered.clone());
                workers.spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        let reader = (i % 3 != 0).then_some(i % me.readers.len().max(1));
                        let req = Req {
                            op: if reader.is_some() {
                                Op::View
                            } else {
                                Op::AnonymousView
                            },
                            book,
                            reader: reader.filter(|_| !me.readers.is_empty()),
                            effect: view_effect(reader.is_none()),
                            sets: None,
                            body: None,
                        };
                        me.execute(req).await;
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            while workers.join_next().await.is_some() {}
        })
    }

    /// The next steady request.
    fn pick(&self, rng: &mut StdRng) -> Req {
        let steady: Vec<&HttpBook> = self
            .books
            .iter()
            .filter(|b| b.purpose == Purpose::Steady)
            .collect();
        let book = steady[rng.gen_range(0..steady.len())];
        let anonymous = || Req {
            op: Op::AnonymousView,
            book: book.id,
            reader: None,
            effect: view_effect(true),
            sets: None,
            body: None,
        };
        if self.readers.is_empty() {
            return anonymous();
        }
        let reader = rng.gen_range(0..self.readers.len());
        let simple = |op: Op, effect: Effect| Req {
            op,
            book: book.id,
            reader: Some(reader),
            effect,
            sets: None,
            body: None,
        };
        let roll = rng.gen_range(0..100);
        match roll {
            0..=29 => simple(Op::View, view_effect(false)),
            30..=41 => anonymous(),
            42..=61 => {
                // Free, bought or not bought (402): whatever the answer says counts.
                let b = steady[rng.gen_range(0..steady.len())];
                Req {
                    book: b.id,
                    ..simple(
                        Op::Download,
                        Effect {
                            downloads: 1,
                            ..Effect::default()
                        },
                    )
                }
            }
            62..=71 => {
                let paid: Vec<&&HttpBook> = steady
                    .iter()
                    .filter(|b| b.price_cents > 0)
                    .filter(|b| {
                        !lock(&self.pairs)
                            .get(&(reader, b.id))
                            .is_some_and(|s| s.bought)
                    })
                    .collect();
                if paid.is_empty() {
                    return simple(Op::View, view_effect(false));
                }
                let b = paid[rng.gen_range(0..paid.len())];
                Req {
                    book: b.id,
                    ..simple(
                        Op::Purchase,
                        Effect {
                            purchases: 1,
                            revenue_cents: b.price_cents,
                            ..Effect::default()
                        },
                    )
                }
            }
            _ => {
                let review = roll < 86;
                if !lock(&self.busy).insert((reader, book.id)) {
                    return simple(Op::View, view_effect(false));
                }
                let state = {
                    let pairs = lock(&self.pairs);
                    let s = pairs.get(&(reader, book.id));
                    if review {
                        s.and_then(|s| s.review)
                    } else {
                        s.and_then(|s| s.rating)
                    }
                };
                let old = match state {
                    Some(Known::Unknown) => {
                        lock(&self.busy).remove(&(reader, book.id));
                        return simple(Op::View, view_effect(false));
                    }
                    Some(Known::Yes(v)) => Some(v),
                    None => None,
                };
                if review {
                    let len = rng.gen_range(1..=400);
                    let text: String = (0..len)
                        .map(|_| char::from(b'a' + rng.gen_range(0..26u8)))
                        .collect();
                    let effect = match old {
                        None => Effect {
                            reviews: 1,
                            review_length_total: len,
                            ..Effect::default()
                        },
                        Some(o) => Effect {
                            review_updates: 1,
                            review_length_total: len - o,
                            ..Effect::default()
                        },
                    };
                    Req {
                        op: if old.is_none() {
                            Op::ReviewCreate
                        } else {
                            Op::ReviewUpdate
                        },
                        sets: Some((len, old)),
                        body: Some(json!({ "text": text })),
                        ..simple(Op::ReviewCreate, effect)
                    }
                } else {
                    let r = rng.gen_range(1..=5);
                    let effect = Effect {
                        ratings: i64::from(old.is_none()),
                        rating_events: 1,
                        rating_sum: r - old.unwrap_or(0),
                        ..Effect::default()
                    };
                    Req {
                        op: if old.is_none() {
                            Op::RatingCreate
                        } else {
                            Op::RatingUpdate
                        },
                        sets: Some((r, old)),
                        body: Some(json!({ "rating": r })),
                        ..simple(Op::RatingCreate, effect)
                    }
                }
            }
        }
    }

    /// Sends one request and records its outcome.
    async fn execute(&self, req: Req) {
        let base = &self.base;
        let b = req.book;
        let (method, url) = match req.op {
            Op::View | Op::AnonymousView => {
                (reqwest::Method::GET, format!("{base}/api/v1/books/{b}"))
            }
            Op::Download => (
                reqwest::Method::GET,
                format!("{base}/api/v1/books/{b}/download"),
            ),
            Op::Purchase => (
                reqwest::Method::POST,
                format!("{base}/api/v1/books/{b}/purchase"),
            ),
            Op::ReviewCreate => (
                reqwest::Method::POST,
                format!("{base}/api/v1/books/{b}/reviews"),
            ),
            Op::ReviewUpdate => (
                reqwest::Method::PUT,
                format!("{base}/api/v1/books/{b}/reviews/my"),
            ),
            Op::RatingCreate => (
                reqwest::Method::POST,
                format!("{base}/api/v1/books/{b}/ratings"),
            ),
            Op::RatingUpdate => (
                reqwest::Method::PUT,
                format!("{base}/api/v1/books/{b}/ratings/my"),
            ),
        };
        let mut rb = self.client.request(method, url);
        if let Some(r) = req.reader.and_then(|i| self.readers.get(i)) {
            rb = rb.bearer_auth(&r.token);
        }
        if let Some(body) = &req.body {
            rb = rb.json(body);
        }
        let sent_ms = now_ms();
        let t = Instant::now();
        let (outcome, answer) = match rb.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                // The whole answer (the file of a download): a broken body after a 2xx
                // still means the handler ran, so the status is what counts.
                let body = r.bytes().await.ok();
                (Outcome::Status(status), body)
            }
            Err(e) if e.is_connect() => (Outcome::Refused, None),
            Err(_) => (Outcome::NoAnswer, None),
        };
        let latency_us = t.elapsed().as_micros() as u64;
        self.record(&req, outcome, answer.as_deref(), sent_ms, latency_us);
    }

    fn record(&self, req: &Req, outcome: Outcome, answer: Option<&[u8]>, sent_ms: i64, us: u64) {
        let write = matches!(
            req.op,
            Op::Purchase
                | Op::ReviewCreate
                | Op::ReviewUpdate
                | Op::RatingCreate
                | Op::RatingUpdate
        );
        // A 5xx read did not count (the page or file was not served); a 5xx write may have
        // committed before the error, so its fate is unknown, like a missing answer.
        let ambiguous = match outcome {
            Outcome::NoAnswer => true,
            Outcome::Status(s) => write && s >= 500,
            Outcome::Refused => false,
        };
        let mut ledger = lock(&self.ledger);
        ledger.samples.push(Sample {
            sent_ms,
            latency_us: us,
            op: req.op,
            book: req.book,
            outcome,
        });
        let range = ledger.ranges.entry(req.book).or_default();
        if outcome.ok() {
            range.lo = range.lo.zip(&req.effect, |a, b| a + b);
            range.hi = range.hi.zip(&req.effect, |a, b| a + b);
        } else if ambiguous {
            range.lo = range.lo.zip(&req.effect, |a, b| a + b.min(0));
            range.hi = range.hi.zip(&req.effect, |a, b| a + b.max(0));
            range.ambiguous += 1;
        }
        // What the reader now knows.
        let Some(reader) = req.reader else { return };
        let mut pairs = lock(&self.pairs);
        let pair = pairs.entry((reader, req.book)).or_default();
        match req.op {
            Op::Purchase if outcome.ok() || outcome == Outcome::Status(409) => pair.bought = true,
            Op::ReviewCreate | Op::ReviewUpdate | Op::RatingCreate | Op::RatingUpdate => {
                let (value, old) = req.sets.unwrap_or_default();
                let known = if outcome.ok() {
                    // An update answers the value it replaced: it must be the one we knew.
                    let field = if req.op == Op::ReviewUpdate {
                        "old_length"
                    } else {
                        "old_rating"
                    };
                    if let (Some(old), Some(v)) = (
                        old,
                        answer.and_then(|a| serde_json::from_slice::<serde_json::Value>(a).ok()),
                    ) {
                        if v[field].as_i64() != Some(old) {
                            ledger.mismatches.push(format!(
                                "book {} reader {}: {:?} answered {field} {}, the traffic knew {old}",
                                req.book, self.readers[reader].id, req.op, v[field]
                            ));
                        }
                    }
                    Some(Known::Yes(value))
                } else if outcome == Outcome::Refused {
                    // Never sent: nothing changed.
                    None
                } else {
                    // No answer, a 5xx, or a refusal (409, 404) that says the server knows
                    // something the traffic does not: leave this pair alone from now on.
                    Some(Known::Unknown)
                };
                if let Some(k) = known {
                    if matches!(req.op, Op::ReviewCreate | Op::ReviewUpdate) {
                        pair.review = Some(k);
                    } else {
                        pair.rating = Some(k);
                    }
                }
                drop(pairs);
                lock(&self.busy).remove(&(reader, req.book));
            }
            _ => {}
        }
    }

    /// Polls `/health/ready` until it answers 200 (bounded by `timeout`).
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        wait_ready(&self.client, &self.base, timeout).await
    }

    /// One figure of the bookstore's `/metrics`.
    pub async fn metric(&self, name: &str) -> anyhow::Result<Option<f64>> {
        let text = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        Ok(text.lines().find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.trim().parse().ok()).flatten()
        }))
    }

    /// A copy of every answer so far.
    pub fn samples(&self) -> Vec<Sample> {
        lock(&self.ledger).samples.clone()
    }

    /// Writes every answer as CSV (`sent_ms,latency_us,op,book,outcome`), for a look at
    /// what happened when.
    pub fn write_answers(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        writeln!(f, "sent_ms,latency_us,op,book,outcome")?;
        for s in &lock(&self.ledger).samples {
            let o = s.outcome.label();
            writeln!(
                f,
                "{},{},{:?},{},{o}",
                s.sent_ms, s.latency_us, s.op, s.book
            )?;
        }
        f.flush()
    }

    /// Answers by status, every request so far.
    pub fn by_status(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for s in &lock(&self.ledger).samples {
            *out.entry(s.outcome.label()).or_default() += 1;
        }
        out
    }

    /// Compares every HTTP book's stored totals (through `q`, and the admin API) with the
    /// answers' range, and with the events found on the topics (`kafka`).
    pub async fn check(&self, q: &dyn StatsQuery, kafka: &Expected) -> anyhow::Result<HttpCheck> {
        let (ranges, mismatches) = {
            let l = lock(&self.ledger);
            (l.ranges.clone(), l.mismatches.clone())
        };
        let mut out = HttpCheck {
            diffs: mismatches,
            ..HttpCheck::default()
        };
        for b in &self.books {
            let range = ranges.get(&b.id).copied().unwrap_or_default();
            let stored = Effect::of_figures(&q.book(BookId(b.id), TimeRange::ALL).await?.figures);
            let on_topics = Effect::of_cell(&kafka.book_total(b.id));
            let api = self.admin_totals(b.id).await?;
            let (lo, hi, s, k) = (
                range.lo.values(),
                range.hi.values(),
                stored.values(),
                on_topics.values(),
            );
            for (i, name) in Effect::NAMES.iter().enumerate() {
                out.figures += 3;
                let ctx = format!("http book {} ({:?})", b.id, b.purpose);
                let want = if lo[i] == hi[i] {
                    format!("{}", lo[i])
                } else {
                    format!(
                        "{}..={} ({} ambiguous requests)",
                        lo[i], hi[i], range.ambiguous
                    )
                };
                if !(lo[i]..=hi[i]).contains(&s[i]) {
                    out.diffs.push(format!(
                        "{ctx}: {name} stored {}, the answers say {want}",
                        s[i]
                    ));
                }
                if !(lo[i]..=hi[i]).contains(&k[i]) {
                    out.diffs.push(format!(
                        "{ctx}: {name} on the topics {}, the answers say {want}",
                        k[i]
                    ));
                }
                if let Some(a) = api.get(i).copied().flatten() {
                    if a != s[i] {
                        out.diffs.push(format!(
                            "{ctx}: {name} in the admin API {a}, through StatsQuery {}",
                            s[i]
                        ));
                    }
                }
            }
            out.books.push(BookCheck {
                id: b.id,
                purpose: b.purpose,
                range,
                stored,
                on_topics,
            });
        }
        Ok(out)
    }

    /// A book's all-time figures from `GET /api/v1/admin/analytics/books/{id}`, in
    /// [`Effect::NAMES`] order (`None` where the API gives no such figure).
    async fn admin_totals(&self, book: i64) -> anyhow::Result<[Option<i64>; 11]> {
        let r = self
            .client
            .get(format!("{}/api/v1/admin/analytics/books/{book}", self.base))
            .bearer_auth(&self.admin_token)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("the admin API answered {} for book {book}", r.status());
        }
        let v: serde_json::Value = r.json().await?;
        let f = &v["figures"];
        let n = |k: &str| f[k].as_i64();
        Ok([
            n("views"),
            n("anonymous_views"),
            n("downloads"),
            n("purchases"),
            f["revenue"]["amount_cents"].as_i64(),
            n("reviews"),
            n("review_updates"),
            None,
            n("ratings"),
            n("rating_events"),
            None,
        ])
    }
}

/// The effect of a view.
fn view_effect(anonymous: bool) -> Effect {
    Effect {
        views: 1,
        anonymous: i64::from(anonymous),
        ..Effect::default()
    }
}

fn token_of(v: serde_json::Value) -> anyhow::Result<String> {
    v["token"]
        .as_str()
        .map(str::to_string)
        .context("the answer has no token")
}

async fn wait_ready(client: &reqwest::Client, base: &str, timeout: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + timeout;
    loop {
        if let Ok(r) = client.get(format!("{base}/health/ready")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > until {
            bail!("the bookstore at {base} was not ready within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One HTTP book's figures: the answers' range, what was stored, what was on the topics.
#[derive(Debug, Clone)]
pub struct BookCheck {
    pub id: i64,
    pub purpose: Purpose,
    pub range: Range,
    pub stored: Effect,
    pub on_topics: Effect,
}

/// What the HTTP comparison found.
#[derive(Debug, Default)]
pub struct HttpCheck {
    pub diffs: Vec<String>,
    pub figures: u64,
    pub books: Vec<BookCheck>,
}

/// Every event of `books` on the five event topics, read from the beginning by members
/// of groups of the suite's own, de-duplicated by `event_id`.
pub async fn read_events(
    bus: &dyn MessageBus,
    group: &str,
    books: &HashSet<i64>,
    timeout: Duration,
) -> anyhow::Result<Vec<Event>> {
    let groups: Vec<(String, Topic)> = Topic::EVENTS
        .iter()
        .map(|t| (format!("{group}-{}", t.name()), *t))
        .collect();
    let reads = groups.iter().map(|(g, t)| read_topic(bus, g, *t, timeout));
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for records in futures_util::future::join_all(reads).await {
        for (_, r) in records? {
            let Ok(e) = Event::decode(&r.value) else {
                continue;
            };
            if books.contains(&e.book_id().get()) && seen.insert(e.event_id()) {
                out.push(e);
            }
        }
    }
    Ok(out)
}

/// Latency figures of a set of answers, in ms.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(samples: &[&Sample]) -> Self {
        let mut us: Vec<u64> = samples.iter().map(|s| s.latency_us).collect();
        us.sort_unstable();
        let at = |q: f64| -> f64 {
            if us.is_empty() {
                return 0.0;
            }
            let i = ((us.len() as f64 * q).ceil() as usize).clamp(1, us.len()) - 1;
            us[i] as f64 / 1000.0
        };
        Latency {
            count: us.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: us.last().map_or(0.0, |m| *m as f64 / 1000.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_sample_at_or_above_the_rank() {
        let s: Vec<Sample> = (1..=200)
            .map(|i| Sample {
                sent_ms: 0,
                latency_us: i * 1000,
                op: Op::View,
                book: 1,
                outcome: Outcome::Status(200),
            })
            .collect();
        let refs: Vec<&Sample> = s.iter().collect();
        let l = Latency::of(&refs);
        assert_eq!(
            (l.count, l.p50_ms, l.p99_ms, l.max_ms),
            (200, 100.0, 198.0, 200.0)
        );
        assert_eq!(Latency::of(&[]).count, 0);
    }

    #[test]
    fn ambiguous_effects_widen_the_range_both_ways() {
        let up = Effect {
            review_updates: 1,
            review_length_total: -30,
            ..Effect::default()
        };
        let lo = Effect::default().zip(&up, |a, b| a + b.min(0));
        let hi = Effect::default().zip(&up, |a, b| a + b.max(0));
        assert_eq!((lo.review_updates, lo.review_length_total), (0, -30));
        assert_eq!((hi.review_updates, hi.review_length_total), (1, 0));
    }
}
