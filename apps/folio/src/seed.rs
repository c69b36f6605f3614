//! `folio seed`: demo data with history, through the real pipeline.
//!
//! The store is driven through the domain's use cases (`Bookstore`), exactly as the HTTP
//! API drives it, but on a clock that steps through the past: a view "three days ago" is
//! the use case run with the clock set to three days ago, so its event, its event id
//! (UUIDv7) and any row it writes (a purchase, a review) carry that time. The events go
//! onto a bus; purchases, reviews and ratings through the outbox and its relay. On the
//! in-process bus this command also runs an analytics worker and the statistics ingest,
//! so the history is windowed, published and stored by the same code as live traffic,
//! and at the end the stored figures are checked against what was generated. With
//! `KAFKA_BOOTSTRAP` set it only publishes, and the running services aggregate.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::Args;
use folio_domain::accounts::{Principal, Role};
use folio_domain::analytics::{parse_duration, unread_records, StopFlag, WorkerStats};
use folio_domain::catalog::{BookDraft, BookFileUpload, BookFilter, PageRequest};
use folio_domain::ids::BookId;
use folio_domain::money::Currency;
use folio_domain::ports::{MessageBus, Outbox, StatsQuery, UserRepository};
use folio_domain::services::{
    Bookstore, BookstoreDeps, BusEventPublisher, OutboxRelay, StatsIngest, StoreConfig,
};
use folio_domain::stats::TimeRange;
use folio_domain::topics::Topic;
use folio_http::{Argon2Hasher, HmacTokens};
use folio_memory::{ManualClock, MemoryBus, PaymentMode, SimulatedPayments, SystemClock};
use folio_runtime::bookstore::BookstoreArgs;
use folio_runtime::{AnalyticsArgs, BusArgs};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::demo::{popular_index, Action, BOOKS, REVIEWS};

/// The password every demo reader gets.
pub const READER_PASSWORD: &str = "demo-reader";

/// `folio seed` options.
#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    /// Books to add from the demo catalog (at most 30).
    #[arg(long, default_value_t = 24)]
    pub books: usize,
    /// Demo readers to register (reader1@demo.folio.local …, password `demo-reader`).
    #[arg(long, default_value_t = 12)]
    pub readers: usize,
    /// How far back the history starts (`90m`, `36h`, `3d`).
    #[arg(long, default_value = "3d", value_parser = duration)]
    pub history: Duration,
    /// Reader actions per hour of history, on average (busier in the evening).
    #[arg(long, default_value_t = 120)]
    pub per_hour: u32,
    /// The random seed: the same seed on an empty store gives the same data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

fn duration(raw: &str) -> Result<Duration, String> {
    parse_duration(raw).map_err(|e| e.to_string())
}

/// What the seed did; the stored statistics must show exactly this.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Generated {
    pub views: u64,
    pub anonymous_views: u64,
    pub downloads: u64,
    pub purchases: u64,
    pub revenue_cents: i64,
    pub reviews: i64,
    pub ratings: i64,
    pub rating_events: u64,
}

/// A reader's state, so every action is one the store accepts.
#[derive(Default)]
struct Reader {
    owned: HashSet<BookId>,
    reviewed: HashSet<BookId>,
    rated: HashMap<BookId, i64>,
}

/// Activity by hour of day (UTC): quiet at night, busiest in the evening.
fn hourly_weight(hour: u32) -> f64 {
    const W: [f64; 24] = [
        0.3, 0.2, 0.15, 0.1, 0.1, 0.15, 0.3, 0.6, 0.9, 1.0, 1.0, 1.1, 1.3, 1.2, 1.0, 1.0, 1.1, 1.3,
        1.6, 1.9, 2.0, 1.7, 1.1, 0.6,
    ];
    W[(hour % 24) as usize]
}

pub async fn run(
    args: &SeedArgs,
    bus_args: &BusArgs,
    store_args: &BookstoreArgs,
    analytics: &AnalyticsArgs,
) -> anyhow::Result<()> {
    if args.books == 0 || args.books > BOOKS.len() {
        bail!("--books must be 1 to {}", BOOKS.len());
    }
    if args.readers == 0 {
        bail!("--readers must be at least 1");
    }
    crate::ensure_sqlite_dir(&store_args.database_url)?;
    let currency = Currency::parse(&store_args.currency).context("FOLIO_CURRENCY")?;
    let store = folio_sql::connect_with(
        &store_args.database_url,
        folio_sql::SqlOptions {
            stats_retention: store_args.stats_retention.0,
        },
    )
    .await
    .with_context(|| {
        format!(
            "opening {}",
            folio_runtime::bookstore::redact(&store_args.database_url)
        )
    })?;
    let store = Arc::new(store);

    let in_process = bus_args.kafka_bootstrap.is_none();
    let memory = MemoryBus::new();
    let bus: Arc<dyn folio_domain::ports::MessageBus> = if in_process {
        Arc::new(memory.clone())
    } else {
        let bus = folio_runtime::connect_bus(bus_args).await?;
        bus.provision().await?;
        bus
    };

    let now = Utc::now();
    let start = now - chrono::Duration::from_std(args.history).context("--history")?;
    let clock = Arc::new(ManualClock::new(start));
    let bookstore = Bookstore::new(BookstoreDeps {
        config: StoreConfig {
            currency,
            // Seeding never shows a book page.
            book_page_refresh: std::time::Duration::ZERO,
        },
        clock: clock.clone(),
        users: store.clone(),
        books: store.clone(),
        files: store.clone(),
        purchases: store.clone(),
        reviews: store.clone(),
        ratings: store.clone(),
        stats: store.clone(),
        events: Arc::new(BusEventPublisher::new(bus.publisher())),
        payments: Arc::new(SimulatedPayments::new(
            b"folio seed",
            PaymentMode::Immediate,
        )),
        hasher: Arc::new(Argon2Hasher::new()),
        tokens: Arc::new(HmacTokens::new(b"folio seed: tokens end with it".to_vec())?),
    });

    let existing = bookstore
        .list_books(PageRequest::new(Some(1), Some(1))?, &BookFilter::default())
        .await?
        .total;
    if existing > 0 {
        bail!(
            "the catalog already has {existing} books: `folio seed` fills an empty store. \
             To start over, stop folio and remove its data (rm -rf data/ by default)."
        );
    }
    let admin = match store
        .find_by_email(&folio_domain::accounts::Email::parse(
            &store_args.admin_email,
        )?)
        .await?
    {
        Some(u) => u,
        None => {
            let Some(pw) = &store_args.admin_password else {
                bail!(
                    "there is no admin account {} yet: set FOLIO_ADMIN_PASSWORD (the one folio \
                     will run with) so the seed can create it",
                    store_args.admin_email
                );
            };
            bookstore.ensure_admin(&store_args.admin_email, pw).await?
        }
    };
    let admin = Principal {
        user_id: admin.id,
        role: Role::Admin,
    };

    // The pipeline, on the in-process bus: the same worker, relay and ingest as `folio`.
    let relay_stop = StopFlag::new();
    let relay = OutboxRelay::new(store.clone(), bus.publisher(), Arc::new(SystemClock));
    let relay_task = {
        let stop = relay_stop.clone();
        tokio::spawn(async move { relay.run(stop).await })
    };
    let worker_stop = StopFlag::new();
    let ingest_stop = StopFlag::new();
    let mut worker_task = None;
    let mut worker_stats: Option<Arc<WorkerStats>> = None;
    let mut ingest_task = None;
    if in_process {
        let (tx, rx) = tokio::sync::oneshot::channel();
        worker_task = Some(tokio::spawn(folio_runtime::analytics::run(
            bus.clone(),
            Arc::new(SystemClock),
            analytics.spec()?,
            worker_stop.clone(),
            Some(tx),
        )));
        worker_stats = rx.await.ok();
        let consumer = bus
            .join(folio_runtime::bookstore::GROUP, &[Topic::AggregatedStats])
            .await?;
        let ingest = StatsIngest::new(
            consumer,
            store.clone(),
            bus.publisher(),
            Arc::new(SystemClock),
        );
        let stop = ingest_stop.clone();
        ingest_task = Some(tokio::spawn(async move { ingest.run(stop).await }));
    }

    let began = Instant::now();
    println!(
        "seeding {} books, {} readers and {} of history ({} actions an hour on average)",
        args.books,
        args.readers,
        folio_domain::pipeline::human(args.history),
        args.per_hour
    );
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut books = Vec::new();
    for b in &BOOKS[..args.books] {
        let draft = BookDraft::new(
            b.title,
            b.author,
            b.genre,
            &format!("{} by {}, from the demo catalog.", b.title, b.author),
            b.price_cents,
            currency.as_str(),
            currency,
        )?;
        let book = bookstore.create_book(admin, draft).await?;
        let file = format!("{}\n\nby {}\n\n(demo text)\n", b.title, b.author);
        let name = format!("{}.txt", b.title.to_lowercase().replace(' ', "-"));
        bookstore
            .upload_file(
                admin,
                book.id,
                BookFileUpload::new(&name, "text/plain", file.into_bytes())?,
            )
            .await?;
        books.push((book.id, b.price_cents));
    }
    let mut readers = Vec::new();
    for i in 1..=args.readers {
        let email = format!("reader{i}@demo.folio.local");
        let token = match bookstore
            .register(&email, READER_PASSWORD, &format!("Reader {i}"))
            .await
        {
            Ok(t) => t,
            Err(folio_domain::Error::Duplicate(_)) => {
                bookstore.login(&email, READER_PASSWORD).await?
            }
            Err(e) => return Err(e.into()),
        };
        readers.push((token.principal, Reader::default()));
    }

    // The history: each hour gets its share of actions at random instants, in order.
    let mut times: Vec<DateTime<Utc>> = Vec::new();
    let mut hour_start = start;
    while hour_start < now {
        let hour_end = (hour_start + chrono::Duration::hours(1)).min(now);
        let span_ms = (hour_end - hour_start).num_milliseconds().max(1);
        let share = span_ms as f64 / 3_600_000.0;
        let hour = hour_start
            .format("%H")
            .to_string()
            .parse::<u32>()
            .unwrap_or(0);
        let mean = f64::from(args.per_hour) * hourly_weight(hour) * share;
        let n = (mean * rng.gen_range(0.7..1.3)).round() as usize;
        let mut these: Vec<DateTime<Utc>> = (0..n)
            .map(|_| hour_start + chrono::Duration::milliseconds(rng.gen_range(0..span_ms)))
            .collect();
        these.sort();
        times.extend(these);
        hour_start = hour_end;
    }

    let mut made = Generated::default();
    let events = times.len() as u64;
    for t in &times {
        clock.set(*t);
        let (book, price) = books[popular_index(&mut rng, books.len())];
        let r = rng.gen_range(0..readers.len());
        let (who, reader) = &mut readers[r];
        let who = *who;
        match Action::pick(&mut rng) {
            Action::ViewAnonymous => {
                bookstore.view_book(book, None).await?;
                made.views += 1;
                made.anonymous_views += 1;
            }
            Action::Purchase if price > 0 && !reader.owned.contains(&book) => {
                bookstore.purchase(who, book).await?;
                reader.owned.insert(book);
                made.purchases += 1;
                made.revenue_cents += price;
            }
            Action::Download if price == 0 || reader.owned.contains(&book) => {
                bookstore.download(who, book).await?;
                made.downloads += 1;
            }
            Action::Review => {
                let text = REVIEWS[rng.gen_range(0..REVIEWS.len())];
                if reader.reviewed.insert(book) {
                    bookstore.create_review(who, book, text).await?;
                    made.reviews += 1;
                } else {
                    bookstore.update_my_review(who, book, text).await?;
                }
            }
            Action::Rate => {
                let stars = if rng.gen_bool(0.7) {
                    rng.gen_range(4..=5)
                } else {
                    rng.gen_range(1..=3)
                };
                if reader.rated.insert(book, stars).is_some() {
                    bookstore.update_my_rating(who, book, stars).await?;
                } else {
                    bookstore.rate(who, book, stars).await?;
                    made.ratings += 1;
                }
                made.rating_events += 1;
            }
            // A view otherwise: a signed-in visit, or an action this reader cannot take.
            _ => {
                bookstore.view_book(book, Some(who)).await?;
                made.views += 1;
            }
        }
    }
    clock.set(Utc::now());

    // Everything written: let the relay empty the outbox, then the pipeline finish.
    wait_until("the outbox to drain", Duration::from_secs(120), || async {
        Ok(store.backlog().await? == 0)
    })
    .await?;
    relay_stop.stop();
    relay_task.await?;
    if let (Some(worker), Some(ingest)) = (worker_task, ingest_task) {
        let seen = |a: &WorkerStats| {
            [
                &a.counted,
                &a.late,
                &a.duplicates,
                &a.replayed,
                &a.dead_lettered,
            ]
            .into_iter()
            .map(WorkerStats::get)
            .sum::<u64>()
        };
        wait_until(
            "the analytics worker to read every event",
            Duration::from_secs(300),
            || async { Ok(worker_stats.as_deref().is_none_or(|a| seen(a) >= events)) },
        )
        .await?;
        // A clean stop publishes the windows still open and commits.
        worker_stop.stop();
        worker.await??;
        wait_until(
            "the ingest to store every aggregate",
            Duration::from_secs(300),
            || async {
                let offsets = memory
                    .group_offsets(folio_runtime::bookstore::GROUP, &[Topic::AggregatedStats])
                    .await?
                    .unwrap_or_default();
                Ok(unread_records(&offsets) == 0)
            },
        )
        .await?;
        ingest_stop.stop();
        ingest.await??;
        // The store was empty, so all time is exactly what this seed generated.
        let stored = store.overview(TimeRange::ALL).await?;
        let t = &stored.totals;
        let got = Generated {
            views: t.views,
            anonymous_views: t.anonymous_views,
            downloads: t.downloads,
            purchases: t.purchases,
            revenue_cents: t.revenue_cents,
            reviews: t.reviews,
            ratings: t.ratings,
            rating_events: t.rating_events,
        };
        print_summary(&made, currency, began.elapsed());
        if got != made {
            bail!("the stored statistics differ from what was generated: stored {got:?}, generated {made:?}");
        }
        println!("stored statistics match exactly. Start folio and open /admin to see them.");
    } else {
        print_summary(&made, currency, began.elapsed());
        println!(
            "published to Kafka: the running folio-analytics and folio-bookstore aggregate and \
             store them (late events correct their windows)."
        );
    }
    Ok(())
}

fn print_summary(g: &Generated, currency: Currency, took: Duration) {
    println!("generated in {:.1} s:", took.as_secs_f64());
    println!(
        "  views      {:>7} ({} anonymous)",
        g.views, g.anonymous_views
    );
    println!("  downloads  {:>7}", g.downloads);
    println!(
        "  purchases  {:>7} ({}.{:02} {currency})",
        g.purchases,
        g.revenue_cents / 100,
        g.revenue_cents % 100
    );
    println!("  reviews    {:>7}", g.reviews);
    println!(
        "  ratings    {:>7} ({} submissions)",
        g.ratings, g.rating_events
    );
    println!("  readers sign in as reader1@demo.folio.local … with password {READER_PASSWORD}");
}

/// Polls `done` every 50 ms until it says yes, or fails after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut done: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if done().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("gave up waiting for {what} after {} s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
