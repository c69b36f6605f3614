//! Latency of the admin statistics queries on a PostgreSQL holding a month of history.
//!
//! It seeds `FOLIO_BENCH_DAYS` (30) days of one-minute windows for `FOLIO_BENCH_BOOKS`
//! (200) books — one aggregate per (window, book), ≈ 8.6 million `window_stats` rows —
//! through the statistics sink itself, a day per upsert, so the rollups are built by the
//! code that maintains them in production. Then it times each admin query
//! `FOLIO_BENCH_RUNS` (21) times and prints the median and 95th percentile: first with
//! every per-window row kept, then after pruning to the default 7-day retention (and a
//! `VACUUM`, as autovacuum would run after the first, large prune). It
//! prints figures and asserts nothing: the numbers are recorded in `docs/performance.md`.
//!
//! ```sh
//! scripts/pg-local start
//! DATABASE_URL=postgres://folio:folio@127.0.0.1:15432/folio \
//!   cargo bench -p folio-sql --bench stats
//! ```
//!
//! Between the two it also times the upgrade of such a database: the rollup migration
//! rolled back and applied again, which rebuilds every rollup from `window_stats`
//! (`FOLIO_BENCH_UPGRADE=0` skips it). Each run seeds a fresh schema and drops it at the
//! end (`FOLIO_BENCH_KEEP=1` keeps it).

use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use folio_domain::analytics::{Aggregate, Figures, Sketch, SourceRange};
use folio_domain::catalog::BookDraft;
use folio_domain::ids::BookId;
use folio_domain::money::Currency;
use folio_domain::ports::{BookRepository, StatsQuery, StatsSink};
use folio_domain::stats::{PopularSort, TimeRange};
use folio_domain::topics::Topic;
use folio_sql::migration::Migrator;
use folio_sql::{SqlOptions, SqlStore, DEFAULT_STATS_RETENTION};
use sea_orm::ConnectionTrait;
use sea_orm_migration::MigratorTrait;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

fn env_or(name: &str, default: u64) -> BenchResult<u64> {
    match std::env::var(name) {
        Ok(v) => Ok(v.parse().map_err(|e| format!("{name}={v:?}: {e}"))?),
        Err(_) => Ok(default),
    }
}

/// A small deterministic generator (xorshift64*): the same seed gives the same history.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// Users of the store: enough that a popular book's daily and all-time unique counts are
/// HyperLogLog sketches, as in a real store.
const USERS: u64 = 100_000;

/// The aggregate of one book in one minute: one source topic, weighted as a store sees
/// them (views most, then downloads, purchases, reviews and ratings).
fn aggregate(
    rng: &mut Rng,
    start: DateTime<Utc>,
    book: i64,
    offset: i64,
    usd: Currency,
) -> Aggregate {
    let topic = match rng.below(20) {
        0..=9 => Topic::BookViews,
        10..=13 => Topic::BookDownloads,
        14..=15 => Topic::BookPurchases,
        16..=17 => Topic::BookReviews,
        _ => Topic::BookRatings,
    };
    let events = 1 + match topic {
        Topic::BookViews => rng.below(10),
        _ => rng.below(3),
    };
    let mut users = Sketch::new();
    let mut anonymous = 0;
    for _ in 0..events {
        if topic == Topic::BookViews && rng.below(4) == 0 {
            anonymous += 1;
        } else {
            users.insert_id(1 + rng.below(USERS) as i64);
        }
    }
    let first = start + TimeDelta::seconds(rng.below(30) as i64);
    let mut f = Figures {
        events,
        anonymous,
        users,
        first_at: Some(first),
        last_at: Some(first + TimeDelta::seconds(rng.below(29) as i64)),
        ..Figures::default()
    };
    match topic {
        Topic::BookPurchases => {
            f.revenue_cents = events as i64 * (299 + 100 * (book % 20));
            f.currency = Some(usd);
        }
        Topic::BookReviews => {
            f.reviews_created = events;
            f.review_length_delta = 120 * events as i64;
        }
        Topic::BookRatings => {
            f.ratings_created = events;
            let stars = 1 + (book + offset) % 5;
            f.rating_sum_delta = stars * events as i64;
            f.rating_distribution_delta[(stars - 1) as usize] = events as i64;
            f.submitted_rating_sum = f.rating_sum_delta;
        }
        _ => {}
    }
    Aggregate {
        window_start: start,
        window_end: start + TimeDelta::minutes(1),
        book_id: BookId(book),
        source: SourceRange {
            topic,
            partition: rng.below(topic.partitions() as u64) as i32,
            first_offset: offset,
            next_offset: offset + events as i64,
        },
        figures: f,
    }
}

/// Times `f` `runs` times after two warm-up calls; returns (median, p95).
async fn time<F, Fut, T>(runs: usize, mut f: F) -> BenchResult<(Duration, Duration)>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = folio_domain::Result<T>>,
{
    for i in 0..2 {
        f(runs + i).await?;
    }
    let mut took = Vec::with_capacity(runs);
    for i in 0..runs {
        let t = Instant::now();
        f(i).await?;
        took.push(t.elapsed());
    }
    took.sort();
    let p95 = ((runs * 95).div_ceil(100)).clamp(1, runs) - 1;
    Ok((took[runs / 2], took[p95]))
}

/// The machine is shared: the load average says how much else ran during a measurement.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

async fn measure(
    store: &SqlStore,
    books: &[BookId],
    end: DateTime<Utc>,
    runs: usize,
) -> BenchResult<()> {
    let book = |i: usize| books[(i * 37) % books.len()];
    let last_day = TimeRange::new(Some(end - TimeDelta::hours(24)), None)?;
    let last_week = TimeRange::new(
        Some(end - TimeDelta::days(7) + TimeDelta::minutes(13)),
        None,
    )?;
    println!("load average before: {}\n", load());
    println!("| query | median ms | p95 ms | result |");
    println!("|---|---:|---:|---|");

    let r = store.book(book(0), TimeRange::ALL).await?;
    let (m, p) = time(runs, |i| store.book(book(i), TimeRange::ALL)).await?;
    println!(
        "| book, all time | {} | {} | {} views |",
        ms(m),
        ms(p),
        r.figures.views
    );

    let r = store.book_history(book(0), last_day).await?;
    let (m, p) = time(runs, |i| store.book_history(book(i), last_day)).await?;
    println!(
        "| book history, last 24 h | {} | {} | {} points |",
        ms(m),
        ms(p),
        r.len()
    );

    let r = store.overview(TimeRange::ALL).await?;
    let (m, p) = time(runs, |_| store.overview(TimeRange::ALL)).await?;
    println!(
        "| overview, all time | {} | {} | {} views, {} unique users |",
        ms(m),
        ms(p),
        r.totals.views,
        r.unique_users
    );

    let r = store.overview_history(last_day).await?;
    let (m, p) = time(runs, |_| store.overview_history(last_day)).await?;
    println!(
        "| overview history, last 24 h | {} | {} | {} points |",
        ms(m),
        ms(p),
        r.len()
    );

    for (sort, name) in [
        (PopularSort::Views, "views"),
        (PopularSort::Downloads, "downloads"),
        (PopularSort::Purchases, "purchases"),
        (PopularSort::Revenue, "revenue"),
    ] {
        let r = store.popular(sort, 10, TimeRange::ALL).await?;
        let (m, p) = time(runs, |_| store.popular(sort, 10, TimeRange::ALL)).await?;
        println!(
            "| popular by {name}, all time, top 10 | {} | {} | first: book {} |",
            ms(m),
            ms(p),
            r.first().map_or(0, |b| b.book_id.get())
        );
    }

    // Ranges with ragged edges: whole days and hours from rollups, minutes from windows.
    let (m, p) = time(runs, |i| store.book(book(i), last_week)).await?;
    println!("| book, last 7 days (ragged) | {} | {} | |", ms(m), ms(p));
    let (m, p) = time(runs, |_| store.overview(last_week)).await?;
    println!(
        "| overview, last 7 days (ragged) | {} | {} | |",
        ms(m),
        ms(p)
    );
    let (m, p) = time(runs, |_| store.popular(PopularSort::Views, 10, last_week)).await?;
    println!(
        "| popular by views, last 7 days (ragged) | {} | {} | |",
        ms(m),
        ms(p)
    );
    println!("\nload average after: {}", load());
    Ok(())
}

/// ANALYZE of the statistics tables only: other schemas of the database are not ours.
async fn analyze(admin: &sea_orm::DatabaseConnection) -> BenchResult<()> {
    admin
        .execute_unprepared(
            "ANALYZE window_stats, stats_hourly, stats_daily, stats_total, overview_windows, \
             overview_hourly, overview_daily, overview_total, books",
        )
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let url = std::env::var("DATABASE_URL")
        .map_err(|_| "set DATABASE_URL=postgres://... (scripts/pg-local start prints one)")?;
    let days = env_or("FOLIO_BENCH_DAYS", 30)?;
    let book_count = env_or("FOLIO_BENCH_BOOKS", 200)?;
    let runs = env_or("FOLIO_BENCH_RUNS", 21)? as usize;
    let keep = std::env::var("FOLIO_BENCH_KEEP").is_ok_and(|v| v == "1");

    let scoped = folio_sql::fresh_schema_url(&url).await?;
    // A plain connection for what the store does not offer: ANALYZE, dropping the schema.
    let admin = sea_orm::Database::connect(scoped.as_str()).await?;
    // No automatic pruning while seeding: the second half prunes explicitly.
    let store = folio_sql::connect_with(
        &scoped,
        SqlOptions {
            stats_retention: None,
        },
    )
    .await?;
    let usd = Currency::parse("USD")?;
    let genres = [
        "SF", "Classics", "Poetry", "Drama", "Crime", "History", "Travel", "Kids",
    ];
    let mut books = Vec::new();
    let created = Utc::now();
    for i in 0..book_count {
        let genre = genres[i as usize % genres.len()];
        let draft = BookDraft::new(
            &format!("Book {i}"),
            "An Author",
            genre,
            "",
            999,
            "USD",
            usd,
        )?;
        books.push(store.create(draft, created).await?.id);
    }

    // History ends at the current minute, so "the last 24 hours" is the newest day.
    let end = Utc::now().duration_trunc(TimeDelta::minutes(1))?;
    let start = end - TimeDelta::days(days as i64);
    println!(
        "seeding {days} days x 1440 windows x {book_count} books = {} aggregates",
        days * 1440 * book_count
    );
    let mut rng = Rng(0x5eed_f011_0000_0001);
    let seeding = Instant::now();
    let mut offset = 0i64;
    for day in 0..days as i64 {
        let t = Instant::now();
        let mut batch = Vec::with_capacity(1440 * books.len());
        for minute in 0..1440 {
            let window = start + TimeDelta::days(day) + TimeDelta::minutes(minute);
            for book in &books {
                batch.push(aggregate(&mut rng, window, book.get(), offset, usd));
                offset += 20;
            }
        }
        let report = store.upsert(&batch).await?;
        println!(
            "  day {:>2}: {} aggregates stored in {:.1} s",
            day + 1,
            report.inserted,
            t.elapsed().as_secs_f64()
        );
    }
    let seeded = seeding.elapsed();
    println!("seeded in {:.0} s", seeded.as_secs_f64());
    // Fresh statistics for the planner, as autovacuum would gather them in a while.
    analyze(&admin).await?;

    println!(
        "\n## every per-window row kept ({} window rows)\n",
        days * 1440 * book_count
    );
    measure(&store, &books, end, runs).await?;

    if env_or("FOLIO_BENCH_UPGRADE", 1)? == 1 {
        // Upgrading a database that holds this history: the rollup migration rebuilds every
        // rollup from `window_stats`. The figures must come out identical.
        let before = (
            store.overview(TimeRange::ALL).await?,
            store
                .popular(PopularSort::Revenue, 10, TimeRange::ALL)
                .await?,
            store.book_history(books[0], TimeRange::ALL).await?,
        );
        Migrator::down(&admin, Some(1)).await?;
        let t = Instant::now();
        folio_sql::migrate(&scoped).await?;
        let took = t.elapsed();
        analyze(&admin).await?;
        let after = (
            store.overview(TimeRange::ALL).await?,
            store
                .popular(PopularSort::Revenue, 10, TimeRange::ALL)
                .await?,
            store.book_history(books[0], TimeRange::ALL).await?,
        );
        println!(
            "\nupgrade: the rollup migration rebuilt the rollups of {} window rows in {:.0} s; figures {}",
            days * 1440 * book_count,
            took.as_secs_f64(),
            if before == after { "identical" } else { "DIFFERENT" }
        );
    }

    let t = Instant::now();
    let pruned = store
        .prune_stats_before(end - TimeDelta::from_std(DEFAULT_STATS_RETENTION)?)
        .await?;
    println!(
        "\npruned {} per-window rows to the default retention in {:.1} s",
        pruned.deleted_rows,
        t.elapsed().as_secs_f64()
    );
    // What autovacuum does after a large delete anyway; done here so it does not run
    // during the measurements.
    let t = Instant::now();
    admin
        .execute_unprepared("VACUUM ANALYZE window_stats, overview_windows")
        .await?;
    analyze(&admin).await?;
    println!("vacuumed in {:.1} s", t.elapsed().as_secs_f64());
    println!("\n## after pruning to 7 days\n");
    measure(&store, &books, end, runs).await?;

    // The write path on the full history: one more minute of every book.
    let mut took = Vec::new();
    for minute in 0..runs as i64 {
        let window = end + TimeDelta::minutes(minute);
        let batch: Vec<Aggregate> = books
            .iter()
            .map(|b| {
                offset += 20;
                aggregate(&mut rng, window, b.get(), offset, usd)
            })
            .collect();
        let t = Instant::now();
        store.upsert(&batch).await?;
        took.push(t.elapsed());
    }
    took.sort();
    println!(
        "\nupsert of one minute ({} aggregates) with rollups: median {} ms, p95 {} ms",
        books.len(),
        ms(took[took.len() / 2]),
        ms(took[(took.len() * 95).div_ceil(100).clamp(1, took.len()) - 1])
    );

    if !keep {
        let schema = scoped
            .rsplit("search_path%3D")
            .next()
            .ok_or("no schema in the URL")?
            .to_owned();
        store.close().await?;
        admin
            .execute_unprepared(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .await?;
    }
    Ok(())
}
