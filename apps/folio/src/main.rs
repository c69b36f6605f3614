//! folio in one process: the bookstore and the analytics service over the in-process bus
//! (or Kafka when `KAFKA_BOOTSTRAP` is set) with a SQLite file (or PostgreSQL by
//! `DATABASE_URL`), plus tools for people: `seed`, `loadgen`, `admin` and `migrate`.

use std::sync::Arc;

use clap::{Parser, Subcommand};
use folio_domain::ports::MessageBus;
use folio_memory::{MemoryBus, SystemClock};
use folio_runtime::bookstore::{redact, BookstoreArgs, EmbeddedAnalytics, Starter};
use folio_runtime::supervisor::Stage;
use folio_runtime::{analytics, connect_bus, telemetry, AnalyticsArgs, BusArgs, Shutdown};
use folio_runtime::{Supervisor, TelemetryArgs};

mod accounts;
mod demo;
mod loadgen;
mod seed;

#[derive(Debug, Parser)]
#[command(
    name = "folio",
    version,
    about = "folio: a bookstore whose user actions flow into per-minute analytics",
    long_about = "folio: a bookstore whose user actions flow into per-minute analytics.\n\n\
        Without a subcommand it runs both roles in one process: the bookstore (HTTP API, \
        dashboard at /admin) and the analytics worker, over the in-process bus unless \
        KAFKA_BOOTSTRAP is set, with a SQLite file unless DATABASE_URL names another \
        database."
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
    #[command(flatten)]
    telemetry: TelemetryArgs,
    /// Run the bookstore without the analytics worker (in-process bus only): events pile
    /// up unaggregated, and the dashboard's pipeline panel says the pipeline stalled.
    #[arg(long, env = "FOLIO_WITHOUT_ANALYTICS")]
    without_analytics: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run both roles (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Fill an empty store with demo books, readers and days of history, through the use
    /// cases and the real pipeline (see `folio seed --help`). Run it while folio is
    /// stopped; it uses the same DATABASE_URL and FOLIO_ADMIN_* settings.
    #[command(long_about = seed_about())]
    Seed(seed::SeedArgs),
    /// Drive a running bookstore's REST API with a realistic mix of readers, then check
    /// the admin API shows exactly what was sent.
    Loadgen(loadgen::LoadgenArgs),
    /// Administrator accounts, directly on the database.
    #[command(subcommand)]
    Admin(accounts::AdminCommand),
}

fn seed_about() -> &'static str {
    "Fill an empty store with demo data: books (with files), readers, and days of history.\n\n\
     The history goes through the domain's use cases on a clock that steps through the \
     past, so each view, download, purchase, review and rating is an ordinary event with \
     its own past occurred_at (and past rows for purchases and reviews). On the in-process \
     bus the seed runs the analytics worker and the statistics ingest itself, waits until \
     every aggregate is stored, and checks the stored figures equal what it generated. \
     With KAFKA_BOOTSTRAP set it only publishes; the running services aggregate.\n\n\
     Run it while folio is stopped, against the same DATABASE_URL. It refuses a store \
     whose catalog is not empty."
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Installed before anything slow, so a SIGTERM during start-up still stops cleanly.
    let shutdown = Shutdown::install();
    let cli = Cli::parse();
    telemetry::init(&cli.telemetry);
    match &cli.command {
        Some(Command::Migrate) => {
            folio_sql::migrate(&cli.bookstore.database_url).await?;
            println!(
                "migrations applied to {}",
                redact(&cli.bookstore.database_url)
            );
            return Ok(());
        }
        Some(Command::Seed(args)) => {
            return seed::run(args, &cli.bus, &cli.bookstore, &cli.analytics).await
        }
        Some(Command::Loadgen(args)) => return loadgen::run(args, &cli.bookstore).await,
        Some(Command::Admin(cmd)) => return accounts::run(cmd, &cli.bookstore).await,
        Some(Command::Serve) | None => {}
    }
    ensure_sqlite_dir(&cli.bookstore.database_url)?;
    let spec = cli.analytics.spec()?;
    let bus: Arc<dyn MessageBus> = match &cli.bus.kafka_bootstrap {
        None => Arc::new(MemoryBus::new()),
        Some(_) => connect_bus(&cli.bus).await?,
    };
    if cli.without_analytics && cli.bus.kafka_bootstrap.is_some() {
        anyhow::bail!("--without-analytics is for the in-process bus; with Kafka, stop folio-analytics instead");
    }
    bus.provision().await?;
    let clock = Arc::new(SystemClock);

    // Started before the bookstore, stopped after its intake and before its ingest
    // (supervisor::Stage): a clean stop of the embedded mode loses nothing.
    let mut sup = Supervisor::new();
    let mut worker_stats = None;
    if !cli.without_analytics {
        let (stats_tx, stats_rx) = tokio::sync::oneshot::channel();
        let (bus, clock) = (bus.clone(), clock.clone());
        sup.spawn(Stage::Analytics, "analytics worker", move |stop| {
            analytics::run(bus, clock, spec, stop, Some(stats_tx))
        });
        worker_stats = stats_rx.await.ok();
    }
    let embedded = EmbeddedAnalytics {
        stats: worker_stats,
        window: cli.analytics.analytics_window,
        grace: cli.analytics.analytics_grace,
    };
    let running = Starter::start_embedded(&cli.bookstore, bus, clock, embedded).await?;

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
    if cli.without_analytics {
        println!("  windows    none: started --without-analytics, nothing is aggregated");
    } else {
        println!(
            "  windows    {:?} with {:?} grace",
            cli.analytics.analytics_window, cli.analytics.analytics_grace
        );
    }

    running.supervise(&mut sup);
    sup.run_until(&shutdown.token()).await
}

/// Creates the directory of a relative SQLite file, so the default works on a fresh clone.
pub(crate) fn ensure_sqlite_dir(url: &str) -> anyhow::Result<()> {
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
