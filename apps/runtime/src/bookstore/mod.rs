//! The bookstore role's composition: the SQL store, the HTTP API, the outbox relay and the
//! statistics ingest (group `main-app-analytics-group`), over whichever bus is chosen.
//!
//! [`BookstoreArgs`] holds its configuration; [`Bookstore::start`] builds and starts it;
//! [`RunningBookstore::stop`] drains HTTP, relays the last outbox rows, commits and leaves
//! the group.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use folio_domain::analytics::{StopFlag, WorkerStats};
use folio_domain::money::Currency;
use folio_domain::pipeline::{EventMarks, MarkingPublisher};
use folio_domain::ports::{Clock, MessageBus, Readiness};
use folio_domain::services::{
    Bookstore, BookstoreDeps, BusEventPublisher, OutboxRelay, StatsIngest, StoreConfig,
};
use folio_domain::topics::Topic;
use folio_http::{Argon2Hasher, HmacTokens, HttpState};
use folio_memory::{PaymentMode, SimulatedPayments};
use folio_spool::{SpoolConfig, SpoolStats, SpoolingPublisher};
use rand::RngCore;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::bus::BusReadiness;
use crate::config::duration;
use crate::metrics::Metrics;
use crate::supervisor::{Stage, Supervisor};

pub mod fault;
mod pipeline;
pub use fault::FaultArgs;
pub use pipeline::EmbeddedAnalytics;

/// How often the outbox's backlog and oldest age are sampled for `/metrics`.
const OUTBOX_SAMPLE: Duration = Duration::from_secs(5);

/// The bookstore's consumer group for aggregates.
pub const GROUP: &str = "main-app-analytics-group";

/// How the simulated payment provider answers.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Payments {
    /// Confirm at once.
    Immediate,
    /// Leave purchases pending until the signed webhook confirms them.
    Webhook,
}

/// The bookstore's configuration.
#[derive(Debug, Clone, Args)]
pub struct BookstoreArgs {
    /// sqlite://path or postgres://user:pass@host/db.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://data/folio.db?mode=rwc"
    )]
    pub database_url: String,
    /// Where the HTTP API listens (with `/metrics`, `/health/live` and `/health/ready`).
    #[arg(long, env = "HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: String,
    /// How long a stop waits for in-flight HTTP requests, and then for the bus to take the
    /// spooled events (what it does not take stays on disk for the next start).
    #[arg(long, env = "FOLIO_DRAIN_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub drain_timeout: Duration,
    /// The admin account ensured at startup.
    #[arg(long, env = "FOLIO_ADMIN_EMAIL", default_value = "admin@folio.local")]
    pub admin_email: String,
    /// Its password; when unset a random one is generated and printed once.
    #[arg(long, env = "FOLIO_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Secret that signs bearer tokens. Set it when several instances serve one store or
    /// tokens must survive a restart; otherwise a random one is used.
    #[arg(long, env = "FOLIO_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,
    /// Secret the payment provider signs webhooks with.
    #[arg(long, env = "FOLIO_PAYMENT_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// How the built-in simulated payment provider behaves.
    #[arg(long, env = "FOLIO_PAYMENTS", value_enum, default_value = "immediate")]
    pub payments: Payments,
    /// The store's currency: every price is in it.
    #[arg(long, env = "FOLIO_CURRENCY", default_value = "USD")]
    pub currency: String,
    /// How long one-minute statistics rows are kept (`90m`, `36h`, `7d`, `2w`) before they
    /// are pruned; hourly and daily rollups keep every figure. `off` keeps them all.
    #[arg(long, env = "FOLIO_STATS_RETENTION", default_value = "7d", value_parser = Retention::parse)]
    pub stats_retention: Retention,
    /// The bookstore's local state: the event spool lives in its `spool/` folder. Give
    /// each bookstore process a folder of its own.
    #[arg(long, env = "FOLIO_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// The most undelivered view and download events the spool keeps on disk while Kafka
    /// is away (`512MiB`, `1GiB`, `2GB`). Past it a view still answers but its event is
    /// refused and counted; a download answers 503.
    #[arg(long, env = "FOLIO_SPOOL_LIMIT", default_value = "1GiB", value_parser = parse_size)]
    pub spool_limit: u64,
    /// How stale a book page may be after a catalog change made through another bookstore
    /// instance: each instance keeps book pages in memory and re-reads the catalog's
    /// revision at most this often. Changes through this instance show at once. `0s` reads
    /// every book page from the database.
    #[arg(long, env = "FOLIO_BOOK_CACHE_REFRESH", default_value = "250ms", value_parser = crate::config::duration)]
    pub book_cache_refresh: Duration,
}

/// A size in bytes: a number with an optional unit (`B`, `KB`, `MB`, `GB`, `KiB`, `MiB`,
/// `GiB`).
pub fn parse_size(raw: &str) -> Result<u64, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{raw:?}: expected a size such as 512MiB or 1GiB"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "{raw:?}: unknown unit {other:?} (B, KB, MB, GB, KiB, MiB, GiB)"
            ))
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{raw:?} is too large"))
}

/// How long one-minute statistics rows are kept; `None` keeps them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Option<Duration>);

impl Retention {
    fn parse(value: &str) -> Result<Self, String> {
        folio_sql::parse_retention(value)
            .map(Retention)
            .map_err(|e| e.to_string())
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention(Some(folio_sql::DEFAULT_STATS_RETENTION))
    }
}

fn random_secret() -> String {
    let mut b = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A started bookstore.
pub struct RunningBookstore {
    pub http_addr: String,
    pub admin_email: String,
    /// Set when the password was generated at startup.
    pub generated_admin_password: Option<String>,
    intake_stop: StopFlag,
    ingest_stop: StopFlag,
    drain_timeout: Duration,
    spool_dir: PathBuf,
    http_stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Views and downloads on their way to the bus.
    spool: SpoolingPublisher,
    /// The HTTP server and the outbox relay: what produces events.
    intake: Vec<JoinHandle<anyhow::Result<()>>>,
    /// The statistics ingest: what consumes aggregates.
    ingest: Option<JoinHandle<anyhow::Result<()>>>,
}

impl RunningBookstore {
    /// Stops taking requests: drains HTTP, relays the last outbox rows and delivers the
    /// spooled events (what the bus does not take in time stays in the spool for the next
    /// start). The ingest keeps running, so an analytics worker stopping after this still
    /// has its last aggregates stored (the order `folio` shuts down in).
    pub async fn stop_intake(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.http_stop.take() {
            let _ = tx.send(());
        }
        self.intake_stop.stop();
        for t in self.intake.drain(..) {
            t.await??;
        }
        let left = self.spool.close(self.drain_timeout).await;
        if left > 0 {
            warn!(events = left, dir = %self.spool_dir.display(), "events left in the spool; the next start delivers them");
        }
        Ok(())
    }

    /// The event spool's figures.
    pub fn spool_stats(&self) -> SpoolStats {
        self.spool.stats()
    }

    /// Stops everything: intake first, then the ingest, which stores what is already on
    /// the bus, commits and leaves its group.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop_intake().await?;
        self.stop_ingest().await
    }

    async fn stop_ingest(&mut self) -> anyhow::Result<()> {
        self.ingest_stop.stop();
        if let Some(t) = self.ingest.take() {
            t.await??;
        }
        Ok(())
    }

    /// Hands the bookstore's two stops to `sup`: its intake at [`Stage::Intake`], its
    /// ingest at [`Stage::Ingest`]. A task of either ending by itself is not watched; the
    /// HTTP server and the ingest retry until stopped.
    pub fn supervise(self, sup: &mut Supervisor) {
        let me = Arc::new(tokio::sync::Mutex::new(self));
        let intake = me.clone();
        sup.on_stop(Stage::Intake, "bookstore intake", move || async move {
            intake.lock().await.stop_intake().await
        });
        sup.on_stop(Stage::Ingest, "statistics ingest", move || async move {
            me.lock().await.stop_ingest().await
        });
    }
}

/// Webhook mode needs the provider's secret: a random one would refuse every real
/// notification, silently.
fn webhook_secret_is_set(args: &BookstoreArgs) -> anyhow::Result<()> {
    if matches!(args.payments, Payments::Webhook) && args.webhook_secret.is_none() {
        anyhow::bail!(
            "FOLIO_PAYMENTS=webhook needs FOLIO_PAYMENT_WEBHOOK_SECRET, the secret the payment provider signs webhooks with"
        );
    }
    Ok(())
}

/// Builds and starts the bookstore role.
pub struct Starter;

impl Starter {
    /// `analytics` is the in-process analytics worker's counters, when it shares the
    /// process, so `/metrics` can show them.
    pub async fn start(
        args: &BookstoreArgs,
        bus: Arc<dyn MessageBus>,
        clock: Arc<dyn Clock>,
        analytics: Option<Arc<WorkerStats>>,
    ) -> anyhow::Result<RunningBookstore> {
        Self::start_with_faults(args, bus, clock, analytics, &FaultArgs::default()).await
    }

    /// [`Starter::start`] beside an analytics worker in the same process, whose window
    /// and grace the pipeline view then shows.
    pub async fn start_embedded(
        args: &BookstoreArgs,
        bus: Arc<dyn MessageBus>,
        clock: Arc<dyn Clock>,
        embedded: EmbeddedAnalytics,
    ) -> anyhow::Result<RunningBookstore> {
        let stats = embedded.stats.clone();
        Self::start_inner(
            args,
            bus,
            clock,
            stats,
            Some(embedded),
            &FaultArgs::default(),
        )
        .await
    }

    /// [`Starter::start`] with test-only fault hooks ([`fault`]).
    pub async fn start_with_faults(
        args: &BookstoreArgs,
        bus: Arc<dyn MessageBus>,
        clock: Arc<dyn Clock>,
        analytics: Option<Arc<WorkerStats>>,
        faults: &FaultArgs,
    ) -> anyhow::Result<RunningBookstore> {
        Self::start_inner(args, bus, clock, analytics, None, faults).await
    }

    async fn start_inner(
        args: &BookstoreArgs,
        bus: Arc<dyn MessageBus>,
        clock: Arc<dyn Clock>,
        analytics: Option<Arc<WorkerStats>>,
        embedded: Option<EmbeddedAnalytics>,
        faults: &FaultArgs,
    ) -> anyhow::Result<RunningBookstore> {
        let currency = Currency::parse(&args.currency).context("FOLIO_CURRENCY")?;
        webhook_secret_is_set(args)?;
        let options = folio_sql::SqlOptions {
            stats_retention: args.stats_retention.0,
        };
        let store = folio_sql::connect_with(&args.database_url, options)
            .await
            .with_context(|| format!("opening the database {}", redact(&args.database_url)))?;
        let store = Arc::new(store);
        let token_secret = args.token_secret.clone().unwrap_or_else(|| {
            warn!("FOLIO_TOKEN_SECRET is unset: tokens are signed with a random secret and end with this process");
            random_secret()
        });
        let webhook_secret = args.webhook_secret.clone().unwrap_or_else(random_secret);
        let spool_dir = args.data_dir.join("spool");
        let spool = SpoolingPublisher::start(
            SpoolConfig {
                limit_bytes: args.spool_limit,
                ..SpoolConfig::new(&spool_dir)
            },
            bus.publisher(),
        )
        .with_context(|| format!("opening the event spool in {}", spool_dir.display()))?;
        let marks = Arc::new(EventMarks::new());
        let mode = match args.payments {
            Payments::Immediate => PaymentMode::Immediate,
            Payments::Webhook => PaymentMode::Deferred,
        };
        let bookstore = Bookstore::new(BookstoreDeps {
            config: StoreConfig {
                currency,
                book_page_refresh: args.book_cache_refresh,
            },
            clock: clock.clone(),
            users: store.clone(),
            books: store.clone(),
            files: store.clone(),
            purchases: store.clone(),
            reviews: store.clone(),
            ratings: store.clone(),
            stats: store.clone(),
            events: Arc::new(MarkingPublisher::new(
                Arc::new(BusEventPublisher::new(Arc::new(spool.clone()))),
                marks.clone(),
            )),
            payments: Arc::new(SimulatedPayments::new(webhook_secret.as_bytes(), mode)),
            hasher: Arc::new(Argon2Hasher::new()),
            tokens: Arc::new(HmacTokens::new(token_secret.into_bytes())?),
        });
        let generated = args.admin_password.is_none().then(random_secret);
        let password = args
            .admin_password
            .clone()
            .or(generated.clone())
            .unwrap_or_default();
        bookstore.ensure_admin(&args.admin_email, &password).await?;

        let intake_stop = StopFlag::new();
        let ingest_stop = StopFlag::new();
        let mut tasks: Vec<JoinHandle<anyhow::Result<()>>> = Vec::new();
        let relay = OutboxRelay::new(store.clone(), bus.publisher(), clock.clone());
        let relay_stop = intake_stop.clone();
        tasks.push(tokio::spawn(async move {
            relay.run(relay_stop).await;
            Ok(())
        }));
        let metrics = Metrics::new();
        let sampler = metrics.clone().sample_outbox(
            store.clone(),
            clock.clone(),
            OUTBOX_SAMPLE,
            intake_stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            sampler.await;
            Ok(())
        }));
        let consumer = bus.join(GROUP, &[Topic::AggregatedStats]).await?;
        let sink = metrics.sink(faults.wrap_sink(store.clone()));
        let ingest = StatsIngest::new(consumer, sink, bus.publisher(), clock.clone());
        let ingest_stats = ingest.stats();
        let ingest_task = {
            let ingest_stop = ingest_stop.clone();
            tokio::spawn(async move { ingest.run(ingest_stop).await.map_err(Into::into) })
        };

        let readiness: Vec<Arc<dyn Readiness>> =
            vec![store.clone(), Arc::new(BusReadiness(bus.clone()))];
        let probe = pipeline::BookstoreProbe {
            spool: spool.clone(),
            ingest: ingest_stats.clone(),
            outbox: store.clone(),
            marks,
            analytics: analytics.clone(),
            embedded,
            lag: pipeline::AnalyticsLag::new(bus.clone()),
        };
        metrics.ingest(ingest_stats);
        metrics.spool(spool.clone());
        metrics.bus(bus.clone());
        if let Some(worker) = analytics {
            metrics.analytics_worker(worker);
        }
        let state = HttpState {
            bookstore,
            readiness,
            extra_metrics: Some(metrics.text()),
            pipeline: Some(Arc::new(probe)),
            auth_limits: folio_http::AuthLimits::default(),
        };
        let listener_addr = args.http_addr.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let drain = args.drain_timeout;
        let app = folio_http::app(state);
        let listener = tokio::net::TcpListener::bind(&listener_addr)
            .await
            .with_context(|| format!("listening on {listener_addr}"))?;
        let http_addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or(listener_addr);
        tasks.push(tokio::spawn(async move {
            folio_http::serve_on(
                listener,
                app,
                async {
                    let _ = rx.await;
                },
                drain,
            )
            .await
            .context("HTTP server")
        }));
        info!(%http_addr, "bookstore started");
        Ok(RunningBookstore {
            http_addr,
            admin_email: args.admin_email.clone(),
            generated_admin_password: generated,
            intake_stop,
            ingest_stop,
            drain_timeout: args.drain_timeout,
            spool_dir,
            http_stop: Some(tx),
            spool,
            intake: tasks,
            ingest: Some(ingest_task),
        })
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        bookstore: BookstoreArgs,
    }

    fn retention_of(args: &[&str]) -> Result<Retention, clap::Error> {
        Cli::try_parse_from(std::iter::once("folio-bookstore").chain(args.iter().copied()))
            .map(|c| c.bookstore.stats_retention)
    }

    #[test]
    fn webhook_mode_needs_its_secret() {
        let args = |extra: &[&str]| {
            Cli::try_parse_from(std::iter::once("folio-bookstore").chain(extra.iter().copied()))
                .expect("parses")
                .bookstore
        };
        let err = webhook_secret_is_set(&args(&["--payments", "webhook"])).expect_err("refused");
        assert!(
            err.to_string().contains("FOLIO_PAYMENT_WEBHOOK_SECRET"),
            "{err}"
        );
        let with_secret = args(&["--payments", "webhook", "--webhook-secret", "s3cret"]);
        assert!(webhook_secret_is_set(&with_secret).is_ok());
        assert!(webhook_secret_is_set(&args(&[])).is_ok());
    }

    #[test]
    fn stats_retention_defaults_to_a_week_and_takes_units_or_off() {
        assert_eq!(
            retention_of(&[]).expect("default"),
            Retention(Some(Duration::from_secs(7 * 86_400)))
        );
        assert_eq!(
            retention_of(&["--stats-retention", "36h"]).expect("hours"),
            Retention(Some(Duration::from_secs(36 * 3600)))
        );
        assert_eq!(
            retention_of(&["--stats-retention", "off"]).expect("off"),
            Retention(None)
        );
        let err = retention_of(&["--stats-retention", "7 days"]).expect_err("refused");
        assert!(err.to_string().contains("FOLIO_STATS_RETENTION"), "{err}");
    }
}
