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
    /// Prepended to every Kafka topic name, so runs sharing a broker (tests, the chaos
    /// suite) keep apart. Empty in production.
    #[arg(long, env = "FOLIO_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,
    /// Prepended to every Kafka consumer group id, as the topic prefix is to topic names.
    /// Empty in production.
    #[arg(long, env = "FOLIO_GROUP_PREFIX", default_value = "")]
    pub group_prefix: String,
}

/// The bus the arguments name. Without Kafka this is a fresh in-process bus, which only
/// makes sense when both roles share the process (`folio`).
pub async fn connect_bus(args: &BusArgs) -> anyhow::Result<Arc<dyn MessageBus>> {
    match &args.kafka_bootstrap {
        None => Ok(Arc::new(folio_memory::MemoryBus::new())),
        Some(bootstrap) => {
            let mut cfg = folio_kafka::KafkaConfig::new(bootstrap);
            cfg.topic_prefix = args.topic_prefix.clone();
            cfg.group_prefix = args.group_prefix.clone();
            let bus = folio_kafka::KafkaBus::connect(cfg)
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
    //! Structured logs on stderr, filtered by `RUST_LOG` (default `info,rskafka=warn`).

    use tracing_subscriber::EnvFilter;

    pub fn init() {
        // rskafka logs every connection at info; its warnings are what an operator needs.
        let filter = EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info,rskafka=warn"));
        // Logs go to stderr so stdout carries only what a binary prints for people
        // (folio's banner).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(false)
            .with_writer(std::io::stderr)
            .try_init();
    }
}

pub mod shutdown {
    //! SIGTERM and Ctrl-C both mean: stop cleanly.

    use std::future::Future;

    /// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is called, not
    /// when the future is first awaited: call it first thing in `main`, so a SIGTERM that
    /// arrives while the process is still starting is kept, and the process stops cleanly
    /// once started instead of dying of the signal.
    pub fn signal() -> impl Future<Output = ()> + Send {
        #[cfg(unix)]
        let streams = {
            use tokio::signal::unix::{signal, SignalKind};
            (
                signal(SignalKind::terminate()).ok(),
                signal(SignalKind::interrupt()).ok(),
            )
        };
        async move {
            #[cfg(unix)]
            {
                let (mut term, mut int) = streams;
                let term = async {
                    match term.as_mut() {
                        Some(s) => {
                            s.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                let int = async {
                    match int.as_mut() {
                        Some(s) => {
                            s.recv().await;
                        }
                        None => {
                            let _ = tokio::signal::ctrl_c().await;
                        }
                    }
                };
                tokio::select! {
                    _ = term => {},
                    _ = int => {},
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
            tracing::info!("shutdown requested");
        }
    }
}
