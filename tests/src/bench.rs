//! What the benchmarks (`tests/benches`) share: the broker and a prefix of their own (from
//! the test harness, so Kafka's tools and the clean-up come with it), settings from the
//! environment, and the machine's load.

use folio_kafka::KafkaConfig;

use crate::kafka_env::{kafka, KafkaEnv};

/// What every benchmark starts from.
pub struct Setup {
    /// The broker (`KAFKA_BOOTSTRAP`) and its tools; the run's topics go when it drops.
    pub env: KafkaEnv,
    /// Records per round (`FOLIO_BENCH_RECORDS`, default a million).
    pub n: usize,
    /// Rounds (`FOLIO_BENCH_ROUNDS`, default 2).
    pub rounds: usize,
    /// Topics and groups under a prefix of this run's own.
    pub cfg: KafkaConfig,
}

/// The broker, sizes and a configuration of its own for the benchmark `name`.
pub async fn setup(name: &str) -> Setup {
    let env = kafka().await;
    let cfg = env.config(&format!("bench-{name}"));
    Setup {
        env,
        n: env_or("FOLIO_BENCH_RECORDS", 1_000_000),
        rounds: env_or("FOLIO_BENCH_ROUNDS", 2),
        cfg,
    }
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

/// The best of some rates.
pub fn best(rates: &[f64]) -> f64 {
    rates.iter().copied().fold(0.0, f64::max)
}
