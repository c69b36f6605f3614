//! The analytics service: consumes the event topics as group `analytics-service-group` and
//! publishes per-window aggregates to `analytics.aggregated-stats`; `/metrics`,
//! `/health/live` and `/health/ready` on `HTTP_ADDR`. Needs Kafka.

use std::sync::Arc;

use clap::Parser;
use folio_memory::SystemClock;
use folio_runtime::supervisor::Stage;
use folio_runtime::{analytics, bus, ops, telemetry};
use folio_runtime::{
    AnalyticsArgs, BusArgs, HttpArgs, Metrics, Shutdown, Supervisor, TelemetryArgs,
};

#[derive(Debug, Parser)]
#[command(name = "folio-analytics", version, about = "folio's analytics service")]
struct Cli {
    #[command(flatten)]
    bus: BusArgs,
    #[command(flatten)]
    analytics: AnalyticsArgs,
    #[command(flatten)]
    http: HttpArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Installed before anything slow, so a SIGTERM during start-up still stops cleanly.
    let shutdown = Shutdown::install();
    let cli = Cli::parse();
    telemetry::init(&cli.telemetry);
    bus::require_kafka(&cli.bus)?;
    let spec = cli.analytics.spec()?;
    let bus = bus::connect_bus(&cli.bus).await?;
    bus.provision().await?;

    let metrics = Metrics::new();
    metrics.bus(bus.clone());
    let readiness: Vec<Arc<dyn folio_runtime::bus::Readiness>> =
        vec![Arc::new(bus::BusReadiness(bus.clone()))];
    let addr = cli.http.addr_or(HttpArgs::ANALYTICS_ADDR);
    let (_, server) = ops::bind(&addr, readiness, &metrics, cli.http.drain_timeout).await?;

    let mut sup = Supervisor::new();
    sup.spawn(Stage::Operator, "metrics and health", server);
    let (stats_tx, stats_rx) = tokio::sync::oneshot::channel();
    sup.spawn(Stage::Analytics, "analytics worker", move |stop| {
        analytics::run(bus, Arc::new(SystemClock), spec, stop, Some(stats_tx))
    });
    // Sent once the worker has joined its group; a stop may come first.
    tokio::select! {
        stats = stats_rx => {
            if let Ok(stats) = stats {
                metrics.analytics_worker(stats);
            }
        }
        _ = shutdown.requested() => {}
    }
    sup.run_until(&shutdown.token()).await
}
