//! What the benchmarks (`tests/benches`) share: settings from the environment, the
//! machine's load, and Kafka's own tools from scripts/kafka-local's jars.

use std::path::PathBuf;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use folio_kafka::KafkaConfig;

/// What every benchmark starts from.
pub struct Setup {
    pub bootstrap: String,
    /// Records per round (`FOLIO_BENCH_RECORDS`, default a million).
    pub n: usize,
    /// Rounds (`FOLIO_BENCH_ROUNDS`, default 2).
    pub rounds: usize,
    /// Topics and groups under a prefix of this run's own.
    pub cfg: KafkaConfig,
}

/// The broker, sizes and a configuration of its own for the benchmark `name`.
pub fn setup(name: &str) -> anyhow::Result<Setup> {
    let bootstrap = bootstrap()?;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let mut cfg = KafkaConfig::new(&bootstrap);
    cfg.client_id = format!("folio-bench-{name}");
    cfg.topic_prefix = format!("bench-{name}-{nanos}.");
    cfg.group_prefix = cfg.topic_prefix.clone();
    Ok(Setup {
        bootstrap,
        n: env_or("FOLIO_BENCH_RECORDS", 1_000_000),
        rounds: env_or("FOLIO_BENCH_ROUNDS", 2),
        cfg,
    })
}

/// `KAFKA_BOOTSTRAP`, or an error saying how to get a broker.
pub fn bootstrap() -> anyhow::Result<String> {
    std::env::var("KAFKA_BOOTSTRAP").map_err(|_| {
        anyhow::anyhow!(
            "set KAFKA_BOOTSTRAP=host:port (scripts/kafka-local start prints 127.0.0.1:19092)"
        )
    })
}

/// A number from the environment, or `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The 1, 5 and 15 minute load averages, to print beside every figure.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Runs `scripts/kafka-local tool <args>`; returns its standard output.
pub fn kafka_tool(args: &[String]) -> anyhow::Result<String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka-local");
    let out = Command::new(script).arg("tool").args(args).output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "kafka-local tool {} failed: {text}{}",
        args.first().map_or("", String::as_str),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(text)
}

/// The best of some rates.
pub fn best(rates: &[f64]) -> f64 {
    rates.iter().copied().fold(0.0, f64::max)
}
