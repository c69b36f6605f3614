//! The bookstore service: HTTP API, outbox relay and statistics ingest. Needs Kafka; for
//! everything in one process on embedded defaults, run `folio`.

use std::sync::Arc;

use clap::Parser;
use folio_analytics::{connect_bus, shutdown, telemetry, BusArgs};
use folio_bookstore::{BookstoreArgs, FaultArgs, Starter};
use folio_memory::SystemClock;

#[derive(Debug, Parser)]
#[command(name = "folio-bookstore", version, about = "folio's bookstore service")]
struct Cli {
    #[command(flatten)]
    bus: BusArgs,
    #[command(flatten)]
    bookstore: BookstoreArgs,
    #[command(flatten)]
    faults: FaultArgs,
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
    let bus = connect_bus(&cli.bus).await?;
    bus.provision().await?;
    let running = Starter::start_with_faults(
        &cli.bookstore,
        bus,
        Arc::new(SystemClock),
        None,
        &cli.faults,
    )
    .await?;
    if let Some(pw) = &running.generated_admin_password {
        println!(
            "admin login: {} / {pw} (generated; set FOLIO_ADMIN_PASSWORD to choose one)",
            running.admin_email
        );
    }
    stop_requested.await;
    running.stop().await
}
