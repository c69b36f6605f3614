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

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux's ABI).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time (user + system, seconds) from a `/proc/<pid>/stat`: the process's own, and that
/// of its children it has waited for. `None` when the file cannot be read (not Linux, or
/// the process is gone).
pub fn cpu_of(pid: &str) -> Option<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is field 3, so utime
    // (14), stime (15), cutime (16) and cstime (17) are at 11 to 14 from here.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    (f.len() == 4).then(|| CpuTime {
        own: (f[0] + f[1]) / TICKS_PER_SECOND,
        children: (f[2] + f[3]) / TICKS_PER_SECOND,
    })
}

/// This process's CPU time so far ([`cpu_of`] of itself; zero where it cannot be read).
pub fn cpu_now() -> CpuTime {
    cpu_of("self").unwrap_or_default()
}

/// CPU seconds, user plus system.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTime {
    /// The process's own threads.
    pub own: f64,
    /// Its children that have ended and been waited for (Kafka's tools, for example).
    pub children: f64,
}

impl std::ops::Sub for CpuTime {
    type Output = CpuTime;
    fn sub(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            own: self.own - earlier.own,
            children: self.children - earlier.children,
        }
    }
}

/// Prints the machine-readable last line `scripts/bench` collects into its table:
/// `BENCH <name> key=value ...`.
pub fn summary(name: &str, figures: &[(&str, String)]) {
    let pairs: Vec<String> = figures.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("BENCH {name} {}", pairs.join(" "));
}
