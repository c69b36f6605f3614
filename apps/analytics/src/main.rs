//! The analytics service: consumes the event topics as group `analytics-service-group` and
//! publishes per-window aggregates to `analytics.aggregated-stats`. Needs Kafka.

use std::sync::Arc;

use clap::Parser;
use folio_analytics::{connect_bus, run, shutdown, telemetry, AnalyticsArgs, BusArgs};
use folio_domain::analytics::StopFlag;
use folio_memory::SystemClock;

#[derive(Debug, Parser)]
#[command(name = "folio-analytics", version, about = "folio's analytics service")]
struct Cli {
    #[command(flatten)]
    bus: BusArgs,
    #[command(flatten)]
    analytics: AnalyticsArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    // Installed before anything slow, so a SIGTERM during start-up still stops cleanly.
    let stop_requested = shutdown::signal();
    let cli = Cli::parse();
    if cli.bus.kafka_bootstrap.is_none() {
        anyhow::bail!(
            "set KAFKA_BOOTSTRAP (e.g. 127.0.0.1:19092 from scripts/kafka-local start); \
             to try folio without Kafka run the all-in-one `folio` binary instead"
        );
    }
    let spec = cli.analytics.spec()?;
    let bus = connect_bus(&cli.bus).await?;
    bus.provision().await?;
    let stop = StopFlag::new();
    let worker = tokio::spawn(run(bus, Arc::new(SystemClock), spec, stop.clone(), None));
    stop_requested.await;
    stop.stop();
    worker.await??;
    Ok(())
}
