//! How to reach the brokers and how hard to push them. One [`KafkaConfig`] feeds both the
//! rskafka client (produce, fetch, topic admin) and folio's own group connections, so TLS and
//! SASL settings can never differ between the two.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use folio_domain::topics::Topic;

/// The most bytes of metadata a broker keeps with a committed offset at its default
/// `offset.metadata.max.bytes`; a commit carrying more is refused.
pub const COMMIT_METADATA_MAX_BYTES: usize = 4096;

/// SASL mechanisms folio can authenticate with (the ones rskafka also speaks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    /// The mechanism's name in the SASL handshake.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// Parses `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "PLAIN" => Some(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Some(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Some(SaslMechanism::ScramSha512),
            _ => None,
        }
    }
}

/// SASL credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslSettings {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for SaslSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslSettings")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl SaslSettings {
    pub(crate) fn to_rskafka(&self) -> rskafka::client::SaslConfig {
        use rskafka::client::{Credentials, SaslConfig};
        let c = Credentials::new(self.username.clone(), self.password.clone());
        match self.mechanism {
            SaslMechanism::Plain => SaslConfig::Plain(c),
            SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(c),
            SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(c),
        }
    }
}

/// Everything the Kafka adapter needs to know. [`KafkaConfig::new`] gives sane defaults for
/// a bootstrap list; adjust fields as needed.
#[derive(Clone)]
pub struct KafkaConfig {
    /// `host:port` of one or more brokers.
    pub bootstrap: Vec<String>,
    pub client_id: String,
    /// TLS for every connection (rskafka's and folio's own); `None` for plaintext.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub sasl: Option<SaslSettings>,
    /// Prepended to every catalog topic name on the broker, so tests (or tenants) sharing a
    /// broker do not collide. Empty in production.
    pub topic_prefix: String,
    /// Prepended to every consumer group id, as `topic_prefix` is to topic names, so tests
    /// sharing a broker keep their groups (members, commits) apart. Empty in production,
    /// where the groups are `analytics-service-group` and `main-app-analytics-group`.
    pub group_prefix: String,
    /// Replicas of each partition of the topics provisioning creates; `None`: min(3, the
    /// brokers in the cluster). See [`Replication::resolve`].
    pub replication_factor: Option<i16>,
    /// `min.insync.replicas` of the topics provisioning creates; `None`: the replication
    /// factor − 1, at least 1.
    pub min_insync_replicas: Option<i16>,
    /// Partition counts for topics provisioning creates, where they differ from the
    /// catalog's ([`Topic::partitions`]). Existing topics keep theirs.
    pub partitions: BTreeMap<Topic, i32>,
    /// How often a publisher asks the brokers again for the partition counts of the topics
    /// it publishes to, so a topic an operator grew gets its new partitions used.
    pub metadata_refresh: Duration,

    // -- publishing --
    /// How long a partition's first buffered record waits for company before its batch is
    /// sent.
    pub linger: Duration,
    /// Upper bound of one produce batch (uncompressed), below the broker's message size.
    pub max_batch_bytes: usize,
    /// Records buffered or awaiting acknowledgement at most; `send` waits beyond this.
    pub max_in_flight_records: usize,
    /// How long `send` waits for buffer space before failing with `Unavailable`.
    pub send_deadline: Duration,
    pub compression: rskafka::client::partition::Compression,

    // -- both --
    /// How long one request (and rskafka's retries of it) may take before it fails.
    pub request_deadline: Duration,

    // -- consuming --
    /// How long the broker may hold a fetch waiting for data.
    pub fetch_max_wait: Duration,
    /// The most bytes one fetch returns for one partition.
    pub fetch_max_bytes: i32,
    /// Fetched batches buffered ahead of `poll`, over all partitions.
    pub fetch_queue: usize,
    /// The client-side view of the group session: after this long without a successful
    /// heartbeat the member assumes it was fenced and revokes everything. Keep it equal to
    /// the broker's `group.consumer.session.timeout.ms`.
    pub session_timeout: Duration,
    /// How long the coordinator waits for this member to release revoked partitions.
    pub rebalance_timeout: Duration,
    /// Server-side assignor (`uniform` or `range`); `None` for the broker's default.
    pub server_assignor: Option<String>,
    /// Which consumer group protocol the members speak (`KAFKA_GROUP_PROTOCOL`).
    pub group_protocol: GroupProtocol,
    /// `group.instance.id` for classic static membership (`KAFKA_GROUP_INSTANCE_ID`): a
    /// member restarting with the same id gets its partitions back without a rebalance.
    /// `None`: a dynamic member. Unique per process within a group.
    pub group_instance_id: Option<String>,
}

/// The consumer group protocol a member speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupProtocol {
    /// KIP-848 when the broker advertises `ConsumerGroupHeartbeat` and accepts the first
    /// heartbeat, the classic protocol otherwise.
    #[default]
    Auto,
    /// KIP-848 only (`ConsumerGroupHeartbeat`, Kafka 4.0+).
    Consumer,
    /// The classic JoinGroup/SyncGroup protocol with a client-side assignor.
    Classic,
}

impl GroupProtocol {
    /// Parses `auto`, `consumer` or `classic` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(GroupProtocol::Auto),
            "consumer" => Some(GroupProtocol::Consumer),
            "classic" => Some(GroupProtocol::Classic),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GroupProtocol::Auto => "auto",
            GroupProtocol::Consumer => "consumer",
            GroupProtocol::Classic => "classic",
        }
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("bootstrap", &self.bootstrap)
            .field("client_id", &self.client_id)
            .field("tls", &self.tls.is_some())
            .field("sasl", &self.sasl)
            .field("topic_prefix", &self.topic_prefix)
            .field("group_prefix", &self.group_prefix)
            .field("replication_factor", &self.replication_factor)
            .field("min_insync_replicas", &self.min_insync_replicas)
            .field("partitions", &self.partitions)
            .field("linger", &self.linger)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("max_in_flight_records", &self.max_in_flight_records)
            .field("request_deadline", &self.request_deadline)
            .field("session_timeout", &self.session_timeout)
            .field("group_protocol", &self.group_protocol)
            .field("group_instance_id", &self.group_instance_id)
            .finish_non_exhaustive()
    }
}

impl KafkaConfig {
    /// Defaults for the given brokers. `bootstrap` may be a comma-separated list.
    pub fn new(bootstrap: &str) -> Self {
        KafkaConfig {
            bootstrap: bootstrap
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            client_id: "folio".into(),
            tls: None,
            sasl: None,
            topic_prefix: String::new(),
            group_prefix: String::new(),
            replication_factor: None,
            min_insync_replicas: None,
            partitions: BTreeMap::new(),
            metadata_refresh: Duration::from_secs(30),
            linger: Duration::from_millis(5),
            max_batch_bytes: 512 * 1024,
            max_in_flight_records: 100_000,
            send_deadline: Duration::from_secs(10),
            compression: rskafka::client::partition::Compression::NoCompression,
            request_deadline: Duration::from_secs(30),
            fetch_max_wait: Duration::from_millis(200),
            fetch_max_bytes: 8 * 1024 * 1024,
            fetch_queue: 16,
            session_timeout: Duration::from_secs(45),
            rebalance_timeout: Duration::from_secs(60),
            server_assignor: None,
            group_protocol: GroupProtocol::Auto,
            group_instance_id: None,
        }
    }

    /// The broker-side name of a catalog topic.
    pub fn topic_name(&self, topic: Topic) -> String {
        format!("{}{}", self.topic_prefix, topic.name())
    }

    /// The broker-side id of a consumer group.
    pub fn group_name(&self, group: &str) -> String {
        format!("{}{group}", self.group_prefix)
    }

    /// The catalog topic behind a broker-side name, if it is one of ours.
    pub fn topic_from_name(&self, name: &str) -> Option<Topic> {
        name.strip_prefix(self.topic_prefix.as_str())
            .and_then(Topic::from_name)
    }

    /// The partition count provisioning gives `topic` when it creates it.
    pub fn partitions_of(&self, topic: Topic) -> i32 {
        self.partitions
            .get(&topic)
            .copied()
            .unwrap_or(topic.partitions())
    }

    /// rskafka retries for ever by default; this bounds every retry loop by the deadline.
    pub(crate) fn rskafka_backoff(&self) -> rskafka::BackoffConfig {
        rskafka::BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
            deadline: Some(self.request_deadline),
        }
    }
}

/// The replication provisioning gives the topics it creates, and expects of those that
/// exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replication {
    /// Replicas of every partition.
    pub factor: i16,
    /// The topic's `min.insync.replicas`: with acks=all, a write is refused unless this many
    /// replicas have it.
    pub min_insync: i16,
}

impl Replication {
    /// The settings, with their defaults filled in for a cluster of `brokers` brokers:
    /// factor min(3, brokers), `min.insync.replicas` factor − 1 and at least 1. Refuses a
    /// factor below 1, a minimum below 1 or above the factor.
    pub fn resolve(
        factor: Option<i16>,
        min_insync: Option<i16>,
        brokers: usize,
    ) -> folio_domain::Result<Replication> {
        let invalid = |m: String| folio_domain::Error::Invalid(m);
        let factor = match factor {
            Some(f) if f < 1 => {
                return Err(invalid(format!(
                    "KAFKA_REPLICATION_FACTOR={f}: it must be at least 1"
                )))
            }
            Some(f) => f,
            None => i16::try_from(brokers.clamp(1, 3)).unwrap_or(3),
        };
        let min_insync = match min_insync {
            Some(m) if m < 1 || m > factor => {
                return Err(invalid(format!(
                    "KAFKA_MIN_INSYNC_REPLICAS={m}: it must be between 1 and the replication factor ({factor})"
                )))
            }
            Some(m) => m,
            None => (factor - 1).max(1),
        };
        Ok(Replication { factor, min_insync })
    }
}

/// Parses `KAFKA_PARTITIONS`: `topic=count` pairs separated by commas, e.g.
/// `book.views=6,book.downloads=6`. Topics are the catalog's names (without a prefix).
pub fn parse_partitions(raw: &str) -> Result<BTreeMap<Topic, i32>, String> {
    let mut out = BTreeMap::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, count) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?}: expected topic=count"))?;
        let topic = Topic::from_name(name.trim()).ok_or_else(|| {
            let names: Vec<&str> = Topic::ALL.iter().map(|t| t.name()).collect();
            format!(
                "{:?} is not one of folio's topics ({})",
                name.trim(),
                names.join(", ")
            )
        })?;
        let count: i32 = count
            .trim()
            .parse()
            .ok()
            .filter(|c| *c >= 1)
            .ok_or_else(|| format!("{pair:?}: the count must be a whole number of at least 1"))?;
        out.insert(topic, count);
    }
    Ok(out)
}

fn tls_error(e: &dyn fmt::Display) -> folio_domain::Error {
    folio_domain::Error::Invalid(format!("kafka TLS: {e}"))
}

/// A client certificate chain and its private key, both PEM, for brokers that require
/// mutual TLS.
#[derive(Clone, Copy)]
pub struct ClientCertificate<'a> {
    pub chain_pem: &'a [u8],
    pub key_pem: &'a [u8],
}

/// The TLS client configuration for [`KafkaConfig::tls`], used by rskafka and folio's group
/// connections alike. It trusts exactly the CA certificates in `ca_pem` (the brokers' CA),
/// or without them the public root CAs (Mozilla's list, built in); with `client` it
/// presents that certificate to brokers that ask for one.
pub fn tls_config(
    ca_pem: Option<&[u8]>,
    client: Option<ClientCertificate<'_>>,
) -> folio_domain::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let roots = match ca_pem {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                roots
                    .add(cert.map_err(|e| tls_error(&e))?)
                    .map_err(|e| tls_error(&e))?;
            }
            if roots.is_empty() {
                return Err(tls_error(&"no CA certificate in the PEM data"));
            }
            roots
        }
        None => rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(&e))?
        .with_root_certificates(roots);
    let cfg = match client {
        None => builder.with_no_client_auth(),
        Some(c) => {
            let chain = CertificateDer::pem_slice_iter(c.chain_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls_error(&format!("client certificate: {e}")))?;
            if chain.is_empty() {
                return Err(tls_error(&"no client certificate in the PEM data"));
            }
            let key = PrivateKeyDer::from_pem_slice(c.key_pem)
                .map_err(|e| tls_error(&format!("client key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_error(&format!("client certificate and key: {e}")))?
        }
    };
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_list_and_prefixed_names() {
        let mut c = KafkaConfig::new(" a:1, b:2 ,");
        assert_eq!(c.bootstrap, vec!["a:1".to_string(), "b:2".to_string()]);
        c.topic_prefix = "t1-".into();
        assert_eq!(c.topic_name(Topic::BookViews), "t1-book.views");
        assert_eq!(c.topic_from_name("t1-book.views"), Some(Topic::BookViews));
        assert_eq!(c.topic_from_name("book.views"), None);
        assert_eq!(c.group_name("g"), "g", "no group prefix by default");
        c.group_prefix = "t1-".into();
        assert_eq!(c.group_name("g"), "t1-g");
        assert_eq!(
            SaslMechanism::parse("scram-sha-512"),
            Some(SaslMechanism::ScramSha512)
        );
    }

    #[test]
    fn replication_defaults_follow_the_cluster_size() {
        let r = |f, m, brokers| Replication::resolve(f, m, brokers).expect("valid");
        let rep = |factor, min_insync| Replication { factor, min_insync };
        // min(3, brokers) replicas, min ISR one less but at least 1.
        assert_eq!(r(None, None, 1), rep(1, 1));
        assert_eq!(r(None, None, 2), rep(2, 1));
        assert_eq!(r(None, None, 3), rep(3, 2));
        assert_eq!(r(None, None, 7), rep(3, 2));
        // No broker seen (yet): one replica rather than none.
        assert_eq!(r(None, None, 0), rep(1, 1));
        // Given values win; a given factor moves the default minimum with it.
        assert_eq!(r(Some(5), None, 3), rep(5, 4));
        assert_eq!(r(Some(3), Some(1), 3), rep(3, 1));
        assert_eq!(r(None, Some(3), 5), rep(3, 3));
        let err = |f, m| match Replication::resolve(f, m, 3) {
            Err(folio_domain::Error::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        };
        assert_eq!(
            err(Some(0), None),
            "KAFKA_REPLICATION_FACTOR=0: it must be at least 1"
        );
        assert_eq!(
            err(Some(2), Some(3)),
            "KAFKA_MIN_INSYNC_REPLICAS=3: it must be between 1 and the replication factor (2)"
        );
        assert!(Replication::resolve(None, Some(0), 3).is_err());
    }

    #[test]
    fn partition_counts_come_from_the_setting_or_the_catalog() {
        let mut c = KafkaConfig::new("a:1");
        assert_eq!(c.partitions_of(Topic::BookViews), 3);
        c.partitions = parse_partitions(" book.views=6, analytics.dlq=2 ,").expect("valid");
        assert_eq!(c.partitions_of(Topic::BookViews), 6);
        assert_eq!(c.partitions_of(Topic::DeadLetters), 2);
        assert_eq!(
            c.partitions_of(Topic::BookPurchases),
            2,
            "the catalog's count"
        );
        assert_eq!(parse_partitions("").expect("empty"), BTreeMap::new());
        assert!(parse_partitions("book.views").is_err());
        assert!(parse_partitions("book.views=0").is_err());
        assert!(parse_partitions("book.views=x").is_err());
        assert!(parse_partitions("books=3")
            .expect_err("unknown")
            .starts_with("\"books\" is not one of folio's topics (book.views,"));
    }

    #[test]
    fn tls_needs_at_least_one_certificate_and_a_key_for_a_client_certificate() {
        let message = |r: folio_domain::Result<Arc<rustls::ClientConfig>>| match r {
            Err(folio_domain::Error::Invalid(m)) => m,
            other => panic!(
                "expected Invalid, got {:?}",
                other.map(|_| "a configuration")
            ),
        };
        assert_eq!(
            message(tls_config(Some(b"not a pem"), None)),
            "kafka TLS: no CA certificate in the PEM data"
        );
        let client = ClientCertificate {
            chain_pem: b"",
            key_pem: b"",
        };
        assert_eq!(
            message(tls_config(None, Some(client))),
            "kafka TLS: no client certificate in the PEM data"
        );
        assert!(tls_config(None, None).is_ok(), "the public roots");
    }
}
