//! The analytics role's composition, and the wiring both roles share.
//!
//! - [`AnalyticsArgs`]: window length and grace (`ANALYTICS_WINDOW`, `ANALYTICS_GRACE`).
//! - [`BusArgs`] and [`connect_bus`]: the in-process bus, or Kafka when `KAFKA_BOOTSTRAP`
//!   is set.
//! - [`run`]: one analytics worker in group `analytics-service-group` until stopped.
//! - [`telemetry`] and [`shutdown`]: logging and SIGTERM handling for every binary.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use folio_domain::analytics::{parse_duration, AnalyticsWorker, StopFlag, WindowSpec, WorkerStats};
use folio_domain::ports::{Clock, MessageBus};
use folio_domain::topics::Topic;
use folio_kafka::{ClientCertificate, GroupProtocol, KafkaConfig, SaslMechanism, SaslSettings};
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
    /// Late events older than this (behind the partition's stream time) are dead-lettered
    /// as too_late instead of correcting their window. Keep it at most FOLIO_STATS_RETENTION.
    #[arg(long, env = "ANALYTICS_LATENESS_HORIZON", default_value = "7d", value_parser = duration)]
    pub lateness_horizon: Duration,
}

impl AnalyticsArgs {
    pub fn spec(&self) -> anyhow::Result<WindowSpec> {
        WindowSpec::new(self.analytics_window, self.analytics_grace)
            .context("ANALYTICS_WINDOW / ANALYTICS_GRACE")?
            .with_lateness_horizon(self.lateness_horizon)
            .context("ANALYTICS_LATENESS_HORIZON")
    }
}

fn duration(raw: &str) -> Result<Duration, String> {
    parse_duration(raw).map_err(|e| e.to_string())
}

/// Where the bus is.
#[derive(Debug, Clone, Args)]
pub struct BusArgs {
    /// Kafka bootstrap servers (host:port, comma separated). folio-bookstore and
    /// folio-analytics need it; only the all-in-one `folio` runs without it, on its
    /// in-process bus.
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
    /// Replicas of each partition of the topics folio creates. Default: min(3, the brokers
    /// in the cluster). Existing topics are checked against it, never changed.
    #[arg(long, env = "KAFKA_REPLICATION_FACTOR")]
    pub kafka_replication_factor: Option<i16>,
    /// `min.insync.replicas` of the topics folio creates. Default: the replication factor
    /// − 1, at least 1. Existing topics are checked against it, never changed.
    #[arg(long, env = "KAFKA_MIN_INSYNC_REPLICAS")]
    pub kafka_min_insync_replicas: Option<i16>,
    /// Partition counts of topics folio creates, where they differ from the design's, e.g.
    /// `book.views=6,book.downloads=6`. Existing topics keep theirs.
    #[arg(long, env = "KAFKA_PARTITIONS", default_value = "", value_parser = partitions)]
    pub kafka_partitions: std::collections::BTreeMap<Topic, i32>,
    /// Consumer group protocol: `auto` (KIP-848 when the broker offers and accepts it,
    /// else classic), `consumer` (KIP-848 only, Kafka 4.0+) or `classic` (JoinGroup and
    /// SyncGroup with a client-side cooperative-sticky or range assignor).
    #[arg(long, env = "KAFKA_GROUP_PROTOCOL", default_value = "auto", value_parser = group_protocol)]
    pub kafka_group_protocol: GroupProtocol,
    /// `group.instance.id` for static membership in classic groups: an instance restarting
    /// with the same id within the session timeout gets its partitions back without a
    /// rebalance (and does not leave the group when it stops). Unique per instance.
    #[arg(long, env = "KAFKA_GROUP_INSTANCE_ID")]
    pub kafka_group_instance_id: Option<String>,
    #[command(flatten)]
    pub security: KafkaSecurityArgs,
}

fn partitions(raw: &str) -> Result<std::collections::BTreeMap<Topic, i32>, String> {
    folio_kafka::parse_partitions(raw)
}

fn group_protocol(raw: &str) -> Result<GroupProtocol, String> {
    GroupProtocol::parse(raw).ok_or_else(|| format!("{raw:?}: expected auto, consumer or classic"))
}

/// How folio authenticates to the brokers and encrypts its connections. The same settings
/// serve every connection: producing, fetching, topic admin and the consumer group.
#[derive(Debug, Clone, Default, Args)]
pub struct KafkaSecurityArgs {
    /// Encrypt every Kafka connection with TLS. Without KAFKA_TLS_CA_FILE the brokers'
    /// certificates must chain to a public root CA.
    #[arg(long, env = "KAFKA_TLS")]
    pub kafka_tls: bool,
    /// PEM file with the CA certificates that sign the brokers' certificates; implies
    /// KAFKA_TLS and replaces the public roots.
    #[arg(long, env = "KAFKA_TLS_CA_FILE")]
    pub kafka_tls_ca_file: Option<PathBuf>,
    /// PEM file with the client certificate (chain) for brokers that require mutual TLS;
    /// needs KAFKA_TLS_KEY_FILE, implies KAFKA_TLS.
    #[arg(long, env = "KAFKA_TLS_CERT_FILE")]
    pub kafka_tls_cert_file: Option<PathBuf>,
    /// PEM file with the client certificate's private key.
    #[arg(long, env = "KAFKA_TLS_KEY_FILE")]
    pub kafka_tls_key_file: Option<PathBuf>,
    /// SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512. Unset: no SASL.
    #[arg(long, env = "KAFKA_SASL_MECHANISM", value_parser = sasl_mechanism)]
    pub kafka_sasl_mechanism: Option<SaslMechanism>,
    /// The SASL user name.
    #[arg(long, env = "KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,
    /// The SASL password.
    #[arg(long, env = "KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub kafka_sasl_password: Option<String>,
}

fn sasl_mechanism(raw: &str) -> Result<SaslMechanism, String> {
    SaslMechanism::parse(raw)
        .ok_or_else(|| format!("{raw:?}: expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"))
}

impl KafkaSecurityArgs {
    /// Applies the settings to `cfg`, refusing half-given ones (a mechanism without
    /// credentials, credentials without a mechanism, a client certificate without its key)
    /// and PEM files that cannot be read or hold nothing usable.
    pub fn apply(&self, cfg: &mut KafkaConfig) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.kafka_tls_cert_file.is_some() == self.kafka_tls_key_file.is_some(),
            "KAFKA_TLS_CERT_FILE and KAFKA_TLS_KEY_FILE go together"
        );
        let read = |name: &str, path: &Option<PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
            path.as_ref()
                .map(|p| {
                    std::fs::read(p).with_context(|| format!("{name}: reading {}", p.display()))
                })
                .transpose()
        };
        let ca = read("KAFKA_TLS_CA_FILE", &self.kafka_tls_ca_file)?;
        let cert = read("KAFKA_TLS_CERT_FILE", &self.kafka_tls_cert_file)?;
        let key = read("KAFKA_TLS_KEY_FILE", &self.kafka_tls_key_file)?;
        let client = match (&cert, &key) {
            (Some(chain_pem), Some(key_pem)) => Some(ClientCertificate { chain_pem, key_pem }),
            _ => None,
        };
        cfg.tls = if self.kafka_tls || ca.is_some() || client.is_some() {
            Some(folio_kafka::tls_config(ca.as_deref(), client).context("Kafka TLS settings")?)
        } else {
            None
        };
        cfg.sasl = match (
            self.kafka_sasl_mechanism,
            &self.kafka_sasl_username,
            &self.kafka_sasl_password,
        ) {
            (None, None, None) => None,
            (Some(mechanism), Some(username), Some(password)) => Some(SaslSettings {
                mechanism,
                username: username.clone(),
                password: password.clone(),
            }),
            (None, _, _) => anyhow::bail!(
                "KAFKA_SASL_USERNAME or KAFKA_SASL_PASSWORD is set without KAFKA_SASL_MECHANISM \
                 (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
            ),
            (Some(m), _, _) => anyhow::bail!(
                "KAFKA_SASL_MECHANISM={} needs both KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
                m.name()
            ),
        };
        Ok(())
    }
}

/// The bus the arguments name. Without Kafka this is a fresh in-process bus, which only
/// makes sense when both roles share the process (`folio`).
pub async fn connect_bus(args: &BusArgs) -> anyhow::Result<Arc<dyn MessageBus>> {
    match &args.kafka_bootstrap {
        None => Ok(Arc::new(folio_memory::MemoryBus::new())),
        Some(bootstrap) => {
            let mut cfg = KafkaConfig::new(bootstrap);
            cfg.topic_prefix = args.topic_prefix.clone();
            cfg.group_prefix = args.group_prefix.clone();
            cfg.replication_factor = args.kafka_replication_factor;
            cfg.min_insync_replicas = args.kafka_min_insync_replicas;
            cfg.partitions = args.kafka_partitions.clone();
            cfg.group_protocol = args.kafka_group_protocol;
            cfg.group_instance_id = args
                .kafka_group_instance_id
                .clone()
                .filter(|i| !i.trim().is_empty());
            args.security.apply(&mut cfg)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_protocol_is_auto_consumer_or_classic() {
        assert_eq!(group_protocol("auto"), Ok(GroupProtocol::Auto));
        assert_eq!(group_protocol("Classic"), Ok(GroupProtocol::Classic));
        assert_eq!(group_protocol("consumer"), Ok(GroupProtocol::Consumer));
        assert!(group_protocol("kip848").is_err());
        assert_eq!(GroupProtocol::default(), GroupProtocol::Auto);
    }

    // Built as values, not parsed: clap would also read KAFKA_* from the environment the
    // tests run in.
    fn applied(args: KafkaSecurityArgs) -> anyhow::Result<KafkaConfig> {
        let mut cfg = KafkaConfig::new("127.0.0.1:9092");
        args.apply(&mut cfg)?;
        Ok(cfg)
    }

    fn sasl(m: Option<&str>, user: Option<&str>, password: Option<&str>) -> KafkaSecurityArgs {
        KafkaSecurityArgs {
            kafka_sasl_mechanism: m.map(|m| sasl_mechanism(m).expect("known mechanism")),
            kafka_sasl_username: user.map(String::from),
            kafka_sasl_password: password.map(String::from),
            ..KafkaSecurityArgs::default()
        }
    }

    #[test]
    fn no_security_settings_mean_plaintext_without_sasl() {
        let cfg = applied(KafkaSecurityArgs::default()).expect("valid");
        assert!(cfg.tls.is_none());
        assert!(cfg.sasl.is_none());
    }

    #[test]
    fn sasl_needs_a_mechanism_and_both_credentials() {
        let cfg =
            applied(sasl(Some("scram-sha-512"), Some("folio"), Some("secret"))).expect("valid");
        assert_eq!(
            cfg.sasl,
            Some(SaslSettings {
                mechanism: SaslMechanism::ScramSha512,
                username: "folio".into(),
                password: "secret".into(),
            })
        );
        let err = applied(sasl(Some("PLAIN"), Some("u"), None)).expect_err("no password");
        assert_eq!(
            err.to_string(),
            "KAFKA_SASL_MECHANISM=PLAIN needs both KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
        );
        let err = applied(sasl(None, Some("u"), Some("p"))).expect_err("no mechanism");
        assert!(
            err.to_string().starts_with(
                "KAFKA_SASL_USERNAME or KAFKA_SASL_PASSWORD is set without KAFKA_SASL_MECHANISM"
            ),
            "{err}"
        );
        assert_eq!(
            sasl_mechanism("GSSAPI"),
            Err("\"GSSAPI\": expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512".to_string())
        );
    }

    #[test]
    fn tls_uses_the_public_roots_or_exactly_the_given_ca_file() {
        let tls = |on: bool, ca: Option<PathBuf>| KafkaSecurityArgs {
            kafka_tls: on,
            kafka_tls_ca_file: ca,
            ..KafkaSecurityArgs::default()
        };
        assert!(applied(tls(true, None)).expect("valid").tls.is_some());
        let missing = applied(tls(false, Some("/nonexistent/ca.pem".into()))).expect_err("missing");
        assert!(
            format!("{missing:#}").starts_with("KAFKA_TLS_CA_FILE: reading /nonexistent/ca.pem"),
            "{missing:#}"
        );
        let garbage = std::env::temp_dir().join(format!("folio-ca-{}.pem", std::process::id()));
        std::fs::write(&garbage, b"not a certificate").expect("write");
        let err = applied(tls(false, Some(garbage.clone()))).expect_err("no certificate in it");
        std::fs::remove_file(&garbage).ok();
        assert_eq!(
            format!("{err:#}"),
            "Kafka TLS settings: kafka TLS: no CA certificate in the PEM data"
        );
        let half = KafkaSecurityArgs {
            kafka_tls_cert_file: Some(garbage.clone()),
            ..KafkaSecurityArgs::default()
        };
        assert_eq!(
            applied(half).expect_err("no key").to_string(),
            "KAFKA_TLS_CERT_FILE and KAFKA_TLS_KEY_FILE go together"
        );
    }
}
