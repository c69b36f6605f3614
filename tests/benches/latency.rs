//! How soon a window's figures reach the admin API once the window closes (docs/contract.md
//! §5: less than 100 ms at p99, also after a restart once the backlog is read), with both
//! roles on Kafka.
//!
//! ```sh
//! scripts/kafka-local start
//! KAFKA_BOOTSTRAP=127.0.0.1:19092 cargo bench -p folio-tests --bench latency
//! # FOLIO_BENCH_SECONDS (default 30) of steady traffic, FOLIO_BENCH_DOWN_SECONDS (default
//! # 30) with the analytics role stopped, FOLIO_BENCH_AFTER_SECONDS (default 20) after its
//! # restart; DATABASE_URL=postgres://… to store on PostgreSQL (default: SQLite in a temp dir)
//! ```
//!
//! folio runs whole on a fresh set of topics: the bookstore, and the analytics role as a
//! worker of its own beside it (2 s windows with 1 s of grace), so it can be stopped and
//! started again. A reader views one book about 100 times a second over HTTP while a poller
//! asks the admin API for the book's history every 10 ms. A window closes once stream time
//! passes its end plus the grace, which with steady traffic is when that moment comes on
//! the wall clock; its latency is from then to the first answer that lists the window.
//!
//! Three phases, the traffic never pausing: steady (the analytics role running), down (it
//! stopped cleanly, views piling up in `book.views`), and after its restart. The restart
//! reads the backlog first; it is *read* once the admin API lists every window that closed
//! before the restart (the catch-up, reported). The figure of the goal is the latency of
//! the windows that close after that. The first window (begun before the traffic) and the
//! last (closed on idleness after it) are left out. At the end the stored views of all
//! windows must equal the views answered 200. The last line, `BENCH latency ...`, is what
//! `scripts/bench` collects.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use folio_domain::analytics::{StopFlag, WindowSpec};
use folio_domain::ports::MessageBus;
use folio_kafka::KafkaBus;
use folio_memory::SystemClock;
use folio_tests::app::{spawn_app_with, AppOptions};
use folio_tests::bench::{env_or, load_average, setup, summary};
use serde_json::Value;
use tokio::task::JoinHandle;

const WINDOW: Duration = Duration::from_secs(2);
const GRACE: Duration = Duration::from_secs(1);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let run = setup("latency").await;
    let seconds = env_or("FOLIO_BENCH_SECONDS", 30) as u64;
    let down_seconds = env_or("FOLIO_BENCH_DOWN_SECONDS", 30) as u64;
    let after_seconds = env_or("FOLIO_BENCH_AFTER_SECONDS", 20) as u64;
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
            analytics: false,
            ..AppOptions::default()
        })
        .await?,
    );
    let spec = WindowSpec::new(WINDOW, GRACE)?;
    let mut analytics = Some(start_analytics(bus.clone(), spec));
    let book = app.create_book("Dune", "Science Fiction", 1999).await?;
    let token = app.register("reader@folio.test", "Reader").await?;
    println!(
        "Kafka + {store}, windows {WINDOW:?} with {GRACE:?} grace, ~100 views/s: {seconds} s steady, {down_seconds} s with the analytics role stopped, {after_seconds} s after its restart; load average {}",
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
    let path = format!("/admin/analytics/books/{book}/history");
    let t0 = Instant::now();
    let stop_at = t0 + Duration::from_secs(seconds);
    let restart_at = stop_at + Duration::from_secs(down_seconds);
    let traffic_ends = restart_at + Duration::from_secs(after_seconds);
    while Instant::now() < traffic_ends {
        let now = Instant::now();
        if now >= stop_at && now < restart_at {
            if let Some((flag, worker)) = analytics.take() {
                flag.stop();
                worker.await??;
                println!(
                    "analytics role stopped after {:.1} s",
                    t0.elapsed().as_secs_f64()
                );
            }
        } else if now >= restart_at && analytics.is_none() {
            analytics = Some(start_analytics(bus.clone(), spec));
            println!(
                "analytics role started again after {:.1} s",
                t0.elapsed().as_secs_f64()
            );
        }
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

    // Windows of the traffic (not the first), with their close and first listing.
    let measured: Vec<(Instant, Instant)> = seen
        .iter()
        .filter(|(start, _)| **start > began)
        .filter_map(|(start, first)| Some((*closes.get(start)?, *first)))
        .collect();
    // The backlog is read once every window that closed before the restart is listed.
    let caught_up = measured
        .iter()
        .filter(|(close, _)| *close < restart_at)
        .map(|(_, first)| *first)
        .max()
        .unwrap_or(restart_at)
        .max(restart_at);
    let catch_up_ms = caught_up.duration_since(restart_at).as_secs_f64() * 1000.0;
    let latencies = |keep: &dyn Fn(Instant) -> bool| -> Vec<f64> {
        let mut l: Vec<f64> = measured
            .iter()
            .filter(|(close, _)| keep(*close))
            .map(|(close, first)| {
                // Signed: a window listed before its closing time would show as negative.
                let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                if first >= close {
                    ms(first.duration_since(*close))
                } else {
                    -ms(close.duration_since(*first))
                }
            })
            .collect();
        l.sort_by(f64::total_cmp);
        l
    };
    let steady = latencies(&|close| close < stop_at);
    let after = latencies(&|close| close > caught_up);
    for (what, l) in [
        ("steady", &steady),
        ("after the restart, backlog read", &after),
    ] {
        anyhow::ensure!(l.len() >= 3, "only {} windows measured {what}", l.len());
        println!(
            "{what}: {} windows closed by stream time: latency after closing p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            l.len(),
            pct(l, 0.5),
            pct(l, 0.95),
            pct(l, 0.99),
            pct(l, 1.0),
        );
    }
    println!(
        "the restarted analytics role listed the last window that closed while it was down {catch_up_ms:.0} ms after its start; load average {}",
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
    summary(
        "latency",
        &[
            ("store", store.to_string()),
            ("steady_windows", steady.len().to_string()),
            ("steady_p50_ms", format!("{:.0}", pct(&steady, 0.5))),
            ("steady_p99_ms", format!("{:.0}", pct(&steady, 0.99))),
            ("down_s", down_seconds.to_string()),
            ("catch_up_ms", format!("{catch_up_ms:.0}")),
            ("restart_windows", after.len().to_string()),
            ("restart_p50_ms", format!("{:.0}", pct(&after, 0.5))),
            ("restart_p99_ms", format!("{:.0}", pct(&after, 0.99))),
            ("restart_max_ms", format!("{:.0}", pct(&after, 1.0))),
            ("views", answered.to_string()),
            ("stored", stored.to_string()),
        ],
    );
    if let Some((flag, worker)) = analytics.take() {
        flag.stop();
        worker.await??;
    }
    Arc::into_inner(app)
        .ok_or_else(|| anyhow::anyhow!("the app is still shared"))?
        .stop()
        .await?;
    if let Some(url) = database_url {
        folio_sql::drop_fresh_schema(&url).await?;
    }
    Ok(())
}

/// The analytics role as a worker of its own on `bus`, with the flag that stops it.
fn start_analytics(
    bus: Arc<KafkaBus>,
    spec: WindowSpec,
) -> (StopFlag, JoinHandle<anyhow::Result<()>>) {
    let stop = StopFlag::new();
    let bus: Arc<dyn MessageBus> = bus;
    let worker = tokio::spawn(folio_runtime::analytics::run(
        bus,
        Arc::new(SystemClock),
        spec,
        stop.clone(),
        None,
    ));
    (stop, worker)
}

/// The `p` quantile of sorted latencies (nearest rank).
fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
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
