//! How soon a window's figures reach the admin API once the window closes (docs/contract.md §5: less
//! than 500 ms), with both roles on Kafka.
//!
//! ```sh
//! scripts/kafka-local start
//! KAFKA_BOOTSTRAP=127.0.0.1:19092 cargo bench -p folio-tests --bench latency
//! # FOLIO_BENCH_SECONDS (default 30) of traffic; DATABASE_URL=postgres://… to store on
//! # PostgreSQL (default: SQLite in a temp dir)
//! ```
//!
//! folio runs whole (bookstore and analytics, 2 s windows with 1 s of grace) on a fresh set
//! of topics. A reader views one book about 100 times a second over HTTP while a poller asks
//! the admin API for the book's history every 10 ms. A window closes once stream time
//! passes its end plus the grace, which with steady traffic is when that moment comes on
//! the wall clock; its latency is from then to the first answer that lists the window. The
//! first window (begun before the traffic) and the last (closed on idleness after it) are
//! left out. At the end the stored views of all windows must equal the views answered 200.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use folio_kafka::KafkaBus;
use folio_tests::app::{spawn_app_with, AppOptions};
use folio_tests::bench::{env_or, load_average, setup};
use serde_json::Value;

const WINDOW: Duration = Duration::from_secs(2);
const GRACE: Duration = Duration::from_secs(1);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let run = setup("latency").await;
    let seconds = env_or("FOLIO_BENCH_SECONDS", 30);
    let database_url = match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres") => Some(folio_sql::fresh_schema_url(&url).await?),
        _ => None,
    };
    let store = if database_url.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let bus = Arc::new(KafkaBus::connect(run.cfg.clone()).await?);
    let app = Arc::new(
        spawn_app_with(AppOptions {
            bus: Some(bus.clone()),
            database_url: database_url.clone(),
            window: WINDOW,
            grace: GRACE,
            ..AppOptions::default()
        })
        .await?,
    );
    let book = app.create_book("Dune", "Science Fiction", 1999).await?;
    let token = app.register("reader@folio.test", "Reader").await?;
    println!(
        "Kafka + {store}, windows {WINDOW:?} with {GRACE:?} grace, ~100 views/s for {seconds} s; load average {}",
        load_average()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let traffic = {
        let (app, stop, answered, token) = (app.clone(), stop.clone(), answered.clone(), token);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let r = app
                    .call("GET", &format!("/books/{book}"), Some(&token), None)
                    .await;
                if r.is_ok_and(|r| r.status == 200) {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    // Window start -> when the admin API first listed it, and when it closed.
    let mut seen: BTreeMap<DateTime<Utc>, Instant> = BTreeMap::new();
    let began = Utc::now();
    let wall_at = |t: DateTime<Utc>| -> Instant {
        // The Instant of a wall-clock time, from one reading of both clocks.
        let now_wall = Utc::now();
        let now = Instant::now();
        let ahead = (t - now_wall).to_std().ok();
        match ahead {
            Some(d) => now + d,
            None => now - (now_wall - t).to_std().unwrap_or_default(),
        }
    };
    let mut closes: BTreeMap<DateTime<Utc>, Instant> = BTreeMap::new();
    let traffic_ends = Instant::now() + Duration::from_secs(seconds as u64);
    let path = format!("/admin/analytics/books/{book}/history");
    while Instant::now() < traffic_ends {
        let windows = history(&app, &path).await?;
        let now = Instant::now();
        for (start, _) in windows {
            seen.entry(start).or_insert(now);
            closes.entry(start).or_insert_with(|| {
                let end = start + chrono::Duration::from_std(WINDOW + GRACE).unwrap_or_default();
                wall_at(end)
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    traffic.await?;

    let mut latencies: Vec<f64> = seen
        .iter()
        .filter(|(start, _)| **start > began)
        .filter_map(|(start, first)| {
            let close = closes.get(start)?;
            // Signed: a window listed before its closing time would show as negative.
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            Some(if *first >= *close {
                ms(first.duration_since(*close))
            } else {
                -ms(close.duration_since(*first))
            })
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    anyhow::ensure!(
        latencies.len() >= 3,
        "only {} windows measured",
        latencies.len()
    );
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!(
        "{} windows closed by stream time: latency after closing p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms; load average {}",
        latencies.len(),
        pct(0.5),
        pct(0.95),
        pct(1.0),
        load_average()
    );

    // Every view answered is in a window once the last one closes on idleness.
    let answered = answered.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    let stored = loop {
        let stored: u64 = history(&app, &path).await?.values().sum();
        if stored >= answered || Instant::now() > deadline {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("views answered 200: {answered}; views stored over all windows: {stored}");
    anyhow::ensure!(
        stored == answered,
        "stored {stored} views, answered {answered}"
    );
    Arc::into_inner(app)
        .ok_or_else(|| anyhow::anyhow!("the app is still shared"))?
        .stop()
        .await?;
    if let Some(url) = database_url {
        folio_sql::drop_fresh_schema(&url).await?;
    }
    Ok(())
}

/// The book's windows in the admin API: start -> views.
async fn history(
    app: &folio_tests::app::TestApp,
    path: &str,
) -> anyhow::Result<BTreeMap<DateTime<Utc>, u64>> {
    let r = app.call("GET", path, Some(&app.admin_token), None).await?;
    anyhow::ensure!(r.status == 200, "history: {r:?}");
    let windows = r.body["windows"].as_array().cloned().unwrap_or_default();
    windows
        .iter()
        .map(|w: &Value| {
            let start = w["window_start"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("no window_start in {w}"))?
                .parse()?;
            Ok((start, w["views"].as_u64().unwrap_or(0)))
        })
        .collect()
}
