//! The bookstore service: HTTP API (with `/metrics`, `/health/live`, `/health/ready`),
//! outbox relay and statistics ingest. Needs Kafka; for everything in one process on
//! embedded defaults, run `folio`.

use std::sync::Arc;

use clap::Parser;
use folio_memory::SystemClock;
use folio_runtime::bookstore::{BookstoreArgs, FaultArgs, Starter};
use folio_runtime::{bus, telemetry, BusArgs, Shutdown, Supervisor, TelemetryArgs};

#[derive(Debug, Parser)]
#[command(name = "folio-bookstore", version, about = "folio's bookstore service")]
struct Cli {
    #[command(flatten)]
    bus: BusArgs,
    #[command(flatten)]
    bookstore: BookstoreArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
    #[command(flatten)]
    faults: FaultArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Installed before anything slow, so a SIGTERM during start-up still stops cleanly.
    let shutdown = Shutdown::install();
    let cli = Cli::parse();
    telemetry::init(&cli.telemetry);
    bus::require_kafka(&cli.bus)?;
    let bus = bus::connect_bus(&cli.bus).await?;
    bus.provision().await?;
    let clock = Arc::new(SystemClock);
    let running = Starter::start_with_faults(&cli.bookstore, bus, clock, None, &cli.faults).await?;
    if let Some(pw) = &running.generated_admin_password {
        println!(
            "admin login: {} / {pw} (generated; set FOLIO_ADMIN_PASSWORD to choose one)",
            running.admin_email
        );
    }
    let mut sup = Supervisor::new();
    running.supervise(&mut sup);
    sup.run_until(&shutdown.token()).await
}
