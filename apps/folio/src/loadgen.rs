//! `folio loadgen`: readers for a running bookstore, through its REST API only.
//!
//! It signs in as the admin, adds its own books (titles tagged with the run's id) and
//! registers its own readers, then sends a realistic mix: signed-in and anonymous views,
//! purchases, downloads, reviews and ratings, at `--rate` or as fast as `--concurrency`
//! allows, for `--count` actions or `--duration`. Because nobody else touches its books,
//! the admin API's figures for them must equal what it sent, exactly; once the windows
//! close it reads them back and compares. Traffic goes only to `--url`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use folio_domain::analytics::parse_duration;
use folio_runtime::bookstore::BookstoreArgs;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

use crate::demo::{popular_index, Action, BOOKS, REVIEWS};

/// `folio loadgen` options.
#[derive(Debug, Clone, Args)]
pub struct LoadgenArgs {
    /// The bookstore's base URL; nothing else is contacted.
    #[arg(long, env = "FOLIO_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// How many reader actions to send.
    #[arg(long, conflicts_with = "duration")]
    pub count: Option<u64>,
    /// Send for this long instead (`30s`, `5m`).
    #[arg(long, value_parser = duration)]
    pub duration: Option<Duration>,
    /// Actions per second; 0 sends as fast as the concurrency allows.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Readers to register for this run.
    #[arg(long, default_value_t = 20)]
    pub readers: usize,
    /// Books to add for this run (at most 30).
    #[arg(long, default_value_t = 10)]
    pub books: usize,
    /// The random seed of the mix.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// How long to wait for the admin API to show every action (windows must close).
    #[arg(long, default_value = "5m", value_parser = duration)]
    pub verify_timeout: Duration,
    /// Skip the comparison with the admin API.
    #[arg(long)]
    pub no_verify: bool,
}

fn duration(raw: &str) -> Result<Duration, String> {
    parse_duration(raw).map_err(|e| e.to_string())
}

/// What the run sent and the store accepted, per figure the admin API reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Expected {
    views: u64,
    anonymous_views: u64,
    downloads: u64,
    purchases: u64,
    revenue_cents: i64,
    reviews: i64,
    review_updates: u64,
    ratings: i64,
    rating_events: u64,
}

impl Expected {
    fn rows(&self) -> [(&'static str, i64); 9] {
        [
            ("views", self.views as i64),
            ("anonymous views", self.anonymous_views as i64),
            ("downloads", self.downloads as i64),
            ("purchases", self.purchases as i64),
            ("revenue (cents)", self.revenue_cents),
            ("reviews", self.reviews),
            ("review updates", self.review_updates as i64),
            ("ratings", self.ratings),
            ("rating submissions", self.rating_events as i64),
        ]
    }
}

#[derive(Default)]
struct ReaderState {
    owned: HashSet<i64>,
    reviewed: HashSet<i64>,
    rated: HashMap<i64, i64>,
}

struct Reader {
    token: String,
    state: Mutex<ReaderState>,
}

#[derive(Clone, Copy)]
struct LoadBook {
    id: i64,
    price_cents: i64,
}

struct Shared {
    client: Client,
    base: String,
    books: Vec<LoadBook>,
    readers: Vec<Reader>,
    expected: Mutex<Expected>,
    failures: Mutex<HashMap<String, u64>>,
    sent: AtomicU64,
}

impl Shared {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut req = self
            .client
            .request(method, format!("{}/api/v1{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await?;
        let status = res.status();
        let bytes = res.bytes().await?;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    fn failed(&self, what: &str, status: StatusCode) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        *f.entry(format!("{what}: {status}")).or_default() += 1;
    }

    /// One reader action; the expected figures move only when the store accepted it.
    async fn act(&self, rng: &mut StdRng) -> anyhow::Result<()> {
        let book = self.books[popular_index(rng, self.books.len())];
        let reader = &self.readers[rng.gen_range(0..self.readers.len())];
        let action = Action::pick(rng);
        let path = format!("/books/{}", book.id);
        // Decide under the lock, act outside it: a reader's own actions may interleave, and
        // the state is updated as soon as a choice is made so two tasks never race for one.
        enum Plan {
            View(bool),
            Purchase,
            Download,
            Review(bool, &'static str),
            Rate(bool, i64),
        }
        let plan = {
            let mut st = reader.state.lock().unwrap_or_else(|p| p.into_inner());
            match action {
                Action::ViewAnonymous => Plan::View(false),
                Action::Purchase if book.price_cents > 0 && st.owned.insert(book.id) => {
                    Plan::Purchase
                }
                Action::Download if book.price_cents == 0 || st.owned.contains(&book.id) => {
                    Plan::Download
                }
                Action::Review => {
                    let text = REVIEWS[rng.gen_range(0..REVIEWS.len())];
                    Plan::Review(st.reviewed.insert(book.id), text)
                }
                Action::Rate => {
                    let stars = if rng.gen_bool(0.7) {
                        rng.gen_range(4..=5)
                    } else {
                        rng.gen_range(1..=3)
                    };
                    Plan::Rate(st.rated.insert(book.id, stars).is_none(), stars)
                }
                _ => Plan::View(true),
            }
        };
        let token = Some(reader.token.as_str());
        match plan {
            Plan::View(signed_in) => {
                let (s, _) = self
                    .call(
                        Method::GET,
                        &path,
                        signed_in.then_some(reader.token.as_str()),
                        None,
                    )
                    .await?;
                if s == StatusCode::OK {
                    let mut e = self.lock_expected();
                    e.views += 1;
                    e.anonymous_views += u64::from(!signed_in);
                } else {
                    self.failed("view", s);
                }
            }
            Plan::Purchase => {
                let (s, body) = self
                    .call(Method::POST, &format!("{path}/purchase"), token, None)
                    .await?;
                if s.is_success() && body["status"] == "COMPLETED" {
                    let mut e = self.lock_expected();
                    e.purchases += 1;
                    e.revenue_cents += body["price"]["amount_cents"].as_i64().unwrap_or(0);
                } else {
                    self.failed("purchase", s);
                }
            }
            Plan::Download => {
                let (s, _) = self
                    .call(Method::GET, &format!("{path}/download"), token, None)
                    .await?;
                if s == StatusCode::OK {
                    self.lock_expected().downloads += 1;
                } else {
                    self.failed("download", s);
                }
            }
            Plan::Review(new, text) => {
                let (method, p) = if new {
                    (Method::POST, format!("{path}/reviews"))
                } else {
                    (Method::PUT, format!("{path}/reviews/my"))
                };
                let (s, _) = self
                    .call(method, &p, token, Some(json!({ "text": text })))
                    .await?;
                if s.is_success() {
                    let mut e = self.lock_expected();
                    if new {
                        e.reviews += 1;
                    } else {
                        e.review_updates += 1;
                    }
                } else {
                    self.failed("review", s);
                }
            }
            Plan::Rate(new, stars) => {
                let (method, p) = if new {
                    (Method::POST, format!("{path}/ratings"))
                } else {
                    (Method::PUT, format!("{path}/ratings/my"))
                };
                let (s, _) = self
                    .call(method, &p, token, Some(json!({ "rating": stars })))
                    .await?;
                if s.is_success() {
                    let mut e = self.lock_expected();
                    e.ratings += i64::from(new);
                    e.rating_events += 1;
                } else {
                    self.failed("rating", s);
                }
            }
        }
        Ok(())
    }

    fn lock_expected(&self) -> std::sync::MutexGuard<'_, Expected> {
        self.expected.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn expect_ok(
    shared: &Shared,
    what: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    // Sign-ins and registrations are rate limited per client address: wait as told.
    let mut waited = 0;
    let (s, v) = loop {
        let (s, v) = shared
            .call(method.clone(), path, token, body.clone())
            .await?;
        if s != StatusCode::TOO_MANY_REQUESTS || waited == 120 {
            break (s, v);
        }
        waited += 1;
        if waited == 1 {
            eprintln!("{what}: rate limited by the bookstore (429); waiting and retrying");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    if !s.is_success() {
        bail!("{what}: {s} {}", v["detail"].as_str().unwrap_or(""));
    }
    Ok(v)
}

pub async fn run(args: &LoadgenArgs, store_args: &BookstoreArgs) -> anyhow::Result<()> {
    let base = args.url.trim_end_matches('/').to_string();
    if !base.starts_with("http://") {
        bail!("--url must be an http:// address (loadgen speaks plain HTTP), got {base}");
    }
    if args.books == 0 || args.books > BOOKS.len() || args.readers == 0 || args.concurrency == 0 {
        bail!(
            "--books (1 to {}), --readers and --concurrency must be at least 1",
            BOOKS.len()
        );
    }
    let count = match (args.count, args.duration) {
        (Some(n), _) => Some(n),
        (None, Some(_)) => None,
        (None, None) => Some(1_000),
    };
    let Some(admin_password) = store_args.admin_password.clone() else {
        bail!("set FOLIO_ADMIN_PASSWORD (and FOLIO_ADMIN_EMAIL if not the default): loadgen adds its books as the admin and reads the figures back");
    };
    let client = Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let mut shared = Shared {
        client,
        base: base.clone(),
        books: Vec::new(),
        readers: Vec::new(),
        expected: Mutex::new(Expected::default()),
        failures: Mutex::new(HashMap::new()),
        sent: AtomicU64::new(0),
    };
    let login = expect_ok(
        &shared,
        "signing in as the admin",
        Method::POST,
        "/auth/login",
        None,
        Some(json!({"email": store_args.admin_email, "password": admin_password})),
    )
    .await
    .with_context(|| format!("is folio running at {base}?"))?;
    let admin = login["token"].as_str().unwrap_or_default().to_string();

    let run_id = format!("{:06x}", rand::thread_rng().gen_range(0..0xff_ffffu32));
    println!(
        "loadgen run {run_id} against {base}: {} books, {} readers",
        args.books, args.readers
    );
    for b in &BOOKS[..args.books] {
        let book = expect_ok(
            &shared,
            "adding a book",
            Method::POST,
            "/books",
            Some(&admin),
            Some(json!({
                "title": format!("{} [loadgen {run_id}]", b.title),
                "author": b.author, "genre": b.genre,
                "description": "Added by folio loadgen.",
                "price_cents": b.price_cents,
            })),
        )
        .await?;
        let id = book["id"].as_i64().context("a book without an id")?;
        let res = shared
            .client
            .put(format!(
                "{base}/api/v1/books/{id}/file?file_name=book-{id}.txt"
            ))
            .bearer_auth(&admin)
            .header("content-type", "text/plain")
            .body(format!("{}\n(loadgen text)\n", b.title))
            .send()
            .await?;
        if !res.status().is_success() {
            bail!("uploading a book's file: {}", res.status());
        }
        shared.books.push(LoadBook {
            id,
            price_cents: b.price_cents,
        });
    }
    for i in 1..=args.readers {
        let r = expect_ok(
            &shared,
            "registering a reader",
            Method::POST,
            "/auth/register",
            None,
            Some(json!({
                "email": format!("lg{run_id}-{i}@loadgen.folio.local"),
                "password": "loadgen-reader",
                "display_name": format!("Loadgen reader {i}"),
            })),
        )
        .await?;
        shared.readers.push(Reader {
            token: r["token"].as_str().unwrap_or_default().to_string(),
            state: Mutex::new(ReaderState::default()),
        });
    }

    let shared = Arc::new(shared);
    let bar = match count {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new(args.duration.map_or(0, |d| d.as_secs())),
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + d);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.store(true, Ordering::Relaxed);
        });
    }
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for worker in 0..args.concurrency {
        let shared = shared.clone();
        let next = next.clone();
        let stop = stop.clone();
        let bar = bar.clone();
        let rate = args.rate;
        let seed = args.seed.wrapping_mul(1_000).wrapping_add(worker as u64);
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            loop {
                if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if count.is_some_and(|n| i >= n) {
                    break;
                }
                if rate > 0.0 {
                    let due = started + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                if let Err(e) = shared.act(&mut rng).await {
                    shared.failed(&format!("transport ({e})"), StatusCode::BAD_GATEWAY);
                }
                shared.sent.fetch_add(1, Ordering::Relaxed);
                match count {
                    Some(_) => bar.inc(1),
                    None => bar.set_position(started.elapsed().as_secs()),
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    bar.finish_and_clear();
    let took = started.elapsed();
    let sent = shared.sent.load(Ordering::Relaxed);
    let expected = *shared.lock_expected();
    let failures = shared
        .failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    println!(
        "sent {sent} actions in {:.1} s ({:.0}/s), {} refused or failed",
        took.as_secs_f64(),
        sent as f64 / took.as_secs_f64().max(0.001),
        failures.values().sum::<u64>()
    );
    let mut failures: Vec<_> = failures.into_iter().collect();
    failures.sort();
    for (what, n) in &failures {
        println!("  {n:>7}  {what}");
    }
    println!(
        "expected in the admin API for this run's {} books:",
        shared.books.len()
    );
    for (name, v) in expected.rows() {
        println!("  {name:<20} {v:>8}");
    }
    if args.no_verify {
        return Ok(());
    }
    verify(&shared, &admin, expected, args.verify_timeout).await
}

/// Sums the admin API's figures over the run's books until they equal `expected`.
async fn verify(
    shared: &Shared,
    admin: &str,
    expected: Expected,
    limit: Duration,
) -> anyhow::Result<()> {
    let spinner = ProgressBar::new_spinner();
    spinner.set_message("waiting for the windows to close and the admin API to show them");
    spinner.enable_steady_tick(Duration::from_millis(200));
    let deadline = Instant::now() + limit;
    loop {
        let mut got = Expected::default();
        for b in &shared.books {
            let s = expect_ok(
                shared,
                "reading a book's statistics",
                Method::GET,
                &format!("/admin/analytics/books/{}", b.id),
                Some(admin),
                None,
            )
            .await?;
            let n = |k: &str| s[k].as_i64().unwrap_or(0);
            got.views += n("views") as u64;
            got.anonymous_views += n("anonymous_views") as u64;
            got.downloads += n("downloads") as u64;
            got.purchases += n("purchases") as u64;
            got.revenue_cents += s["revenue"]["amount_cents"].as_i64().unwrap_or(0);
            got.reviews += n("reviews");
            got.review_updates += n("review_updates") as u64;
            got.ratings += n("ratings");
            got.rating_events += n("rating_events") as u64;
        }
        if got == expected {
            spinner.finish_and_clear();
            println!(
                "admin API (GET /api/v1/admin/analytics/books/{{id}}, summed): matches exactly"
            );
            for ((name, want), (_, have)) in expected.rows().iter().zip(got.rows()) {
                println!("  {name:<20} {have:>8}  (expected {want})");
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            spinner.finish_and_clear();
            println!("admin API after {} s:", limit.as_secs());
            for ((name, want), (_, have)) in expected.rows().iter().zip(got.rows()) {
                let mark = if *want == have { "" } else { "  <- differs" };
                println!("  {name:<20} {have:>8}  (expected {want}){mark}");
            }
            bail!("the admin API does not match what loadgen sent");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
