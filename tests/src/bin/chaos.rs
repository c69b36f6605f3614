//! `chaos`: folio's fault-injection suite on real Kafka and PostgreSQL. It publishes a
//! seeded workload straight to the event topics, kills and restarts the analytics and
//! bookstore processes, moves partitions between instances, restarts the broker (once
//! holding it down while HTTP traffic goes through the bookstore), stops PostgreSQL, and
//! then checks that every stored figure equals the exact one and every request answered
//! 2xx is counted. Exit status 0 means no
//! difference. See `docs/exactness.md` ("The chaos suite"); `scripts/chaos` builds and
//! runs it.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use folio_tests::chaos::run::{run, Options, Profile};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Duration {
    /// About 4 minutes, quiet period included (CI).
    Short,
    /// About 20 minutes.
    Long,
}

#[derive(Debug, Parser)]
#[command(
    name = "chaos",
    about = "Exact statistics under crashes, replays, rebalances and duplicates"
)]
struct Cli {
    #[arg(long, value_enum, default_value = "short")]
    duration: Duration,
    /// Workload seed: the same seed gives the same workload. Random when unset.
    #[arg(long)]
    seed: Option<u64>,
    /// Kafka bootstrap servers (scripts/kafka-local start prints one).
    #[arg(long, env = "KAFKA_BOOTSTRAP")]
    kafka_bootstrap: Option<String>,
    /// A postgres:// URL; the run creates a fresh schema in it (scripts/pg-local start).
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Where the folio-analytics and folio-bookstore binaries are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// The script that runs the local broker; the run restarts the broker with it.
    #[arg(long, default_value = "scripts/kafka-local")]
    kafka_local: PathBuf,
    /// Do not restart the broker (for a broker the run does not manage).
    #[arg(long)]
    no_broker_restart: bool,
    /// The script that runs the local PostgreSQL; the run stops and starts it when
    /// DATABASE_URL points at its server (PG_PORT chooses the instance).
    #[arg(long, default_value = "scripts/pg-local")]
    pg_local: PathBuf,
    /// Do not stop PostgreSQL (for a server others share).
    #[arg(long)]
    no_db_outage: bool,
    /// Where each run's process logs go.
    #[arg(long, default_value = "target/chaos")]
    work_dir: PathBuf,
    /// How many differences to print.
    #[arg(long, default_value_t = 40)]
    max_diffs: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Some(kafka_bootstrap) = cli.kafka_bootstrap else {
        anyhow::bail!(
            "chaos needs Kafka: set KAFKA_BOOTSTRAP (scripts/kafka-local start prints one) or run scripts/chaos"
        );
    };
    let database_url = match cli.database_url {
        Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => u,
        _ => anyhow::bail!(
            "chaos needs PostgreSQL: set DATABASE_URL=postgres://... (scripts/pg-local start prints one) or run scripts/chaos"
        ),
    };
    let seed = cli
        .seed
        .unwrap_or_else(|| chrono::Utc::now().timestamp_micros().unsigned_abs() % 1_000_000);
    let opts = Options {
        profile: match cli.duration {
            Duration::Short => Profile::short(),
            Duration::Long => Profile::long(),
        },
        seed,
        kafka_bootstrap,
        database_url,
        bin_dir: cli.bin_dir,
        kafka_local: (!cli.no_broker_restart).then_some(cli.kafka_local),
        pg_local: (!cli.no_db_outage).then_some(cli.pg_local),
        work_dir: cli.work_dir,
        max_diffs: cli.max_diffs,
    };
    let outcome = run(opts).await?;
    if !outcome.passed {
        std::process::exit(1);
    }
    Ok(())
}
