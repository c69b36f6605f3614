//! folio in one process: the bookstore and the analytics service over the in-process bus
//! (or Kafka when `KAFKA_BOOTSTRAP` is set) with a SQLite file (or PostgreSQL by
//! `DATABASE_URL`). `folio migrate` only runs the database migrations.

use std::sync::Arc;

use clap::{Parser, Subcommand};
use folio_analytics::{connect_bus, shutdown, telemetry, AnalyticsArgs, BusArgs};
use folio_bookstore::{redact, BookstoreArgs, Starter};
use folio_domain::analytics::StopFlag;
use folio_memory::SystemClock;

#[derive(Debug, Parser)]
#[command(
    name = "folio",
    version,
    about = "folio: a bookstore whose user actions flow into per-minute analytics"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    bus: BusArgs,
    #[command(flatten)]
    bookstore: BookstoreArgs,
    #[command(flatten)]
    analytics: AnalyticsArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run both roles (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    // Installed before anything slow, so a SIGTERM during start-up still stops cleanly.
    let stop_requested = shutdown::signal();
    let cli = Cli::parse();
    if let Some(Command::Migrate) = cli.command {
        folio_sql::migrate(&cli.bookstore.database_url).await?;
        println!(
            "migrations applied to {}",
            redact(&cli.bookstore.database_url)
        );
        return Ok(());
    }
    ensure_sqlite_dir(&cli.bookstore.database_url)?;
    let spec = cli.analytics.spec()?;
    let bus = connect_bus(&cli.bus).await?;
    bus.provision().await?;
    let clock = Arc::new(SystemClock);

    let stop = StopFlag::new();
    let (stats_tx, stats_rx) = tokio::sync::oneshot::channel();
    let analytics = tokio::spawn(folio_analytics::run(
        bus.clone(),
        clock.clone(),
        spec,
        stop.clone(),
        Some(stats_tx),
    ));
    let worker_stats = stats_rx.await.ok();
    let running = Starter::start(&cli.bookstore, bus, clock, worker_stats).await?;

    let base = format!("http://{}", running.http_addr);
    println!("folio is running");
    println!("  API        {base}/api/v1");
    println!("  API docs   {base}/docs");
    println!("  dashboard  {base}/admin");
    match &running.generated_admin_password {
        Some(pw) => println!(
            "  admin      {} / {pw}  (generated; set FOLIO_ADMIN_PASSWORD to choose)",
            running.admin_email
        ),
        None => println!(
            "  admin      {} / (FOLIO_ADMIN_PASSWORD)",
            running.admin_email
        ),
    }
    println!(
        "  bus        {}",
        cli.bus
            .kafka_bootstrap
            .as_deref()
            .map_or("in-process".to_string(), |b| format!("Kafka at {b}"))
    );
    println!("  database   {}", redact(&cli.bookstore.database_url));
    println!(
        "  windows    {:?} with {:?} grace",
        cli.analytics.analytics_window, cli.analytics.analytics_grace
    );

    stop_requested.await;
    // Intake first (no new events), then analytics (publishes its open windows), then the
    // ingest (stores them): a clean stop of the embedded mode loses nothing.
    let mut running = running;
    running.stop_intake().await?;
    stop.stop();
    analytics.await??;
    running.stop().await?;
    Ok(())
}

/// Creates the directory of a relative SQLite file, so the default works on a fresh clone.
fn ensure_sqlite_dir(url: &str) -> anyhow::Result<()> {
    if let Some(rest) = url.strip_prefix("sqlite://") {
        let path = rest.split('?').next().unwrap_or(rest);
        if let Some(dir) = std::path::Path::new(path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
    }
    Ok(())
}
