//! Typed configuration blocks, one per concern, each a clap `Args` struct with an
//! environment fallback for every flag; each binary flattens the ones it needs into its
//! `Cli`, and each component gets only its block.
//!
//! - [`BusArgs`] (with [`KafkaSecurityArgs`]): the in-process bus, or Kafka when
//!   `KAFKA_BOOTSTRAP` is set.
//! - [`AnalyticsArgs`]: window length, grace and lateness horizon.
//! - [`HttpArgs`]: where a role listens and how long its shutdown drains.
//! - [`TelemetryArgs`]: the log format.
//!
//! Every duration takes one syntax, [`duration`]: a number and a unit (`500ms`, `60s`,
//! `5m`, `36h`, `7d`, `2w`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use folio_domain::analytics::{checkpoint_bytes_bound, parse_duration, WindowSpec};
use folio_domain::topics::Topic;
use folio_kafka::{ClientCertificate, GroupProtocol, KafkaConfig, SaslMechanism, SaslSettings};

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
    /// The window settings, refused when invalid or when a partition's checkpoint could
    /// outgrow Kafka's commit metadata (a grace long against the window).
    pub fn spec(&self) -> anyhow::Result<WindowSpec> {
        let spec = WindowSpec::new(self.analytics_window, self.analytics_grace)
            .context("ANALYTICS_WINDOW / ANALYTICS_GRACE")?
            .with_lateness_horizon(self.lateness_horizon)
            .context("ANALYTICS_LATENESS_HORIZON")?;
        checkpoint_fits(&spec)?;
        Ok(spec)
    }
}

/// The checkpoint lists the windows that close during one window's life; past Kafka's
/// commit-metadata limit every commit would fail, so such settings never start.
fn checkpoint_fits(spec: &WindowSpec) -> anyhow::Result<()> {
    let bound = checkpoint_bytes_bound(spec);
    let limit = folio_kafka::COMMIT_METADATA_MAX_BYTES;
    anyhow::ensure!(
        bound <= limit,
        "ANALYTICS_GRACE {} s against ANALYTICS_WINDOW {} s: a partition's checkpoint may \
         take {bound} bytes, more than the {limit} bytes of Kafka's commit metadata; \
         lengthen the window or shorten the grace",
        spec.grace_ms() as f64 / 1000.0,
        spec.length_ms() as f64 / 1000.0,
    );
    Ok(())
}

/// folio's one duration syntax: a whole number and a unit, `ms`, `s`, `m`, `h`, `d` or
/// `w` (a bare number is seconds).
pub fn duration(raw: &str) -> Result<Duration, String> {
    parse_duration(raw).map_err(|e| e.to_string())
}

/// Where a role's HTTP server listens, and how it stops.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Where the HTTP server listens (the analytics service: `/metrics` and the health
    /// probes only).
    #[arg(long, env = "HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// How long a stop waits for in-flight HTTP requests, and for the spool to hand its
    /// events to the bus, before closing them.
    #[arg(long, env = "FOLIO_DRAIN_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub drain_timeout: Duration,
}

impl HttpArgs {
    /// The bookstore's (and the embedded `folio`'s) default address.
    pub const BOOKSTORE_ADDR: &'static str = "127.0.0.1:8080";
    /// The analytics service's default: beside the bookstore's, so both run on one host.
    pub const ANALYTICS_ADDR: &'static str = "127.0.0.1:8081";

    /// `HTTP_ADDR`, or the role's default.
    pub fn addr_or(&self, default: &str) -> String {
        self.http_addr
            .clone()
            .unwrap_or_else(|| default.to_string())
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line per event for people; coloured only on a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Log settings (the filter is `RUST_LOG`).
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// `text` (default) or `json`.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn window(window: u64, grace: u64) -> AnalyticsArgs {
        AnalyticsArgs {
            analytics_window: Duration::from_secs(window),
            analytics_grace: Duration::from_secs(grace),
            lateness_horizon: Duration::from_secs(7 * 86_400),
        }
    }

    #[test]
    fn a_grace_that_would_overflow_the_commit_metadata_is_refused() {
        let spec = window(60, 5).spec().expect("the defaults fit");
        assert_eq!((spec.length_ms(), spec.grace_ms()), (60_000, 5_000));
        // An hour of grace on one-minute windows still fits: 62 windows at most.
        assert!(window(60, 3600).spec().is_ok());
        // One-second windows with an hour of grace list up to 3,602 closed windows.
        let err = window(1, 3600).spec().expect_err("refused");
        assert_eq!(
            err.to_string(),
            format!(
                "ANALYTICS_GRACE 3600 s against ANALYTICS_WINDOW 1 s: a partition's checkpoint \
                 may take {} bytes, more than the 4096 bytes of Kafka's commit metadata; \
                 lengthen the window or shorten the grace",
                checkpoint_bytes_bound(
                    &WindowSpec::new(Duration::from_secs(1), Duration::from_secs(3600))
                        .expect("valid")
                )
            )
        );
        // The largest grace that fits two-second windows, and one more second (the read
        // position, in checkpoints since version 4, took 2 s of it).
        let fits = (1..=600)
            .take_while(|g| window(2, *g).spec().is_ok())
            .count() as u64;
        assert_eq!(fits, 214);
        assert!(window(2, fits + 1).spec().is_err());
    }

    #[test]
    fn every_duration_takes_one_syntax() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert!(duration("5 minutes").is_err());
    }

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
