//! How to reach the brokers and how hard to push them. One [`KafkaConfig`] feeds both the
//! rskafka client (produce, fetch, topic admin) and folio's own group connections, so TLS and
//! SASL settings can never differ between the two.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use folio_domain::topics::Topic;

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
    /// Replication factor of topics created by provisioning.
    pub replication_factor: i16,

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
            .field("linger", &self.linger)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("max_in_flight_records", &self.max_in_flight_records)
            .field("request_deadline", &self.request_deadline)
            .field("session_timeout", &self.session_timeout)
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
            replication_factor: 1,
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

    /// rskafka retries for ever by default; this bounds every retry loop by the deadline.
    pub(crate) fn backoff(&self) -> rskafka::BackoffConfig {
        rskafka::BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
            deadline: Some(self.request_deadline),
        }
    }
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
