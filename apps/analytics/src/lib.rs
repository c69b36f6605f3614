//! The analytics role's composition, and the wiring both roles share.
//!
//! - [`AnalyticsArgs`]: window length and grace (`ANALYTICS_WINDOW`, `ANALYTICS_GRACE`).
//! - [`BusArgs`] and [`connect_bus`]: the in-process bus, or Kafka when `KAFKA_BOOTSTRAP`
//!   is set.
//! - [`run`]: one analytics worker in group `analytics-service-group` until stopped.
//! - [`telemetry`] and [`shutdown`]: logging and SIGTERM handling for every binary.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use folio_domain::analytics::{parse_duration, AnalyticsWorker, StopFlag, WindowSpec, WorkerStats};
use folio_domain::ports::{Clock, MessageBus};
use folio_domain::topics::Topic;
use tracing::info;

/// The analytics service's consumer group.
pub const GROUP: &str = "analytics-service-group";

/// Window settings.
#[derive(Debug, Clone, Args)]
pub struct AnalyticsArgs {
    /// Window length, e.g. 60s or 2s. It must divide a day evenly.
    #[arg(long, env = "ANALYTICS_WINDOW", default_value = "60s", value_parser = duration)]
    pub analytics_window: Duration,
    /// How long a window waits for late events after its end.
    #[arg(long, env = "ANALYTICS_GRACE", default_value = "5s", value_parser = duration)]
    pub analytics_grace: Duration,
}

impl AnalyticsArgs {
    pub fn spec(&self) -> anyhow::Result<WindowSpec> {
        WindowSpec::new(self.analytics_window, self.analytics_grace)
            .context("ANALYTICS_WINDOW / ANALYTICS_GRACE")
    }
}

fn duration(raw: &str) -> Result<Duration, String> {
    parse_duration(raw).map_err(|e| e.to_string())
}

/// Where the bus is.
#[derive(Debug, Clone, Args)]
pub struct BusArgs {
    /// Kafka bootstrap servers (host:port, comma separated). Unset: the in-process bus.
    #[arg(long, env = "KAFKA_BOOTSTRAP")]
    pub kafka_bootstrap: Option<String>,
}

/// The bus the arguments name. Without Kafka this is a fresh in-process bus, which only
/// makes sense when both roles share the process (`folio`).
pub async fn connect_bus(args: &BusArgs) -> anyhow::Result<Arc<dyn MessageBus>> {
    match &args.kafka_bootstrap {
        None => Ok(Arc::new(folio_memory::MemoryBus::new())),
        Some(bootstrap) => {
            let bus = folio_kafka::KafkaBus::connect(folio_kafka::KafkaConfig::new(bootstrap))
                .await
                .with_context(|| format!("connecting to Kafka at {bootstrap}"))?;
            Ok(Arc::new(bus))
        }
    }
}

/// Runs one analytics worker until `stop` is set: joins the group, aggregates, publishes
/// closed windows, and on stop commits finished work and leaves the group.
pub async fn run(
    bus: Arc<dyn MessageBus>,
    clock: Arc<dyn Clock>,
    spec: WindowSpec,
    stop: StopFlag,
    stats: Option<tokio::sync::oneshot::Sender<Arc<WorkerStats>>>,
) -> anyhow::Result<()> {
    let consumer = bus
        .join(GROUP, &Topic::EVENTS)
        .await
        .context("joining the analytics group")?;
    let worker = AnalyticsWorker::new(consumer, bus.publisher(), clock, spec);
    if let Some(tx) = stats {
        let _ = tx.send(worker.stats());
    }
    info!(
        group = GROUP,
        window_ms = spec.length_ms(),
        grace_ms = spec.grace_ms(),
        "analytics worker started"
    );
    worker.run(stop).await.context("analytics worker")
}

pub mod telemetry {
    //! Structured logs on stderr, filtered by `RUST_LOG` (default `info`).

    use tracing_subscriber::EnvFilter;

    pub fn init() {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(false)
            .try_init();
    }
}

pub mod shutdown {
    //! SIGTERM and Ctrl-C both mean: stop cleanly.

    /// Resolves on SIGTERM or Ctrl-C.
    pub async fn signal() {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {},
            _ = term => {},
        }
        tracing::info!("shutdown requested");
    }
}
