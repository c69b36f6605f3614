//! folio over the broker's secured listeners: SASL PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512,
//! with and without TLS, and mutual TLS (a client certificate, no SASL). Each run goes
//! through publishing, topic admin, and the consumer group (join, fetch, commit, a second
//! member resuming at the commit), so both rskafka's connections and folio's own group
//! connections authenticate. Needs the listeners named in `FOLIO_TEST_*` (scripts/test
//! provides them); without them the tests fail and say how.

use folio_domain::ports::MessageBus;
use folio_kafka::{tls_config, ClientCertificate, KafkaBus, KafkaConfig};
use folio_kafka::{SaslMechanism, SaslSettings};
use folio_tests::bus_contract::a_new_member_resumes_at_the_committed_offset_with_its_metadata;
use folio_tests::kafka_env::{kafka, KafkaEnv, Secured};

/// How a test reaches the broker: SASL (with or without TLS), or mutual TLS without SASL.
#[derive(Clone, Copy)]
enum Listener {
    Sasl {
        tls: bool,
        mechanism: SaslMechanism,
        wrong_password: bool,
    },
    MutualTls {
        client_certificate: bool,
    },
}

const fn sasl(tls: bool, mechanism: SaslMechanism) -> Listener {
    Listener::Sasl {
        tls,
        mechanism,
        wrong_password: false,
    }
}

fn config(env: &KafkaEnv, test: &str, l: Listener) -> anyhow::Result<KafkaConfig> {
    let s = Secured::from_env();
    let mut cfg = env.config(test);
    let ca = Some(s.ca_pem.as_slice());
    match l {
        Listener::Sasl {
            tls,
            mechanism,
            wrong_password,
        } => {
            cfg.bootstrap = vec![if tls { &s.sasl_ssl } else { &s.sasl_plaintext }.clone()];
            cfg.tls = tls.then(|| tls_config(ca, None)).transpose()?;
            cfg.sasl = Some(SaslSettings {
                mechanism,
                username: s.username,
                password: if wrong_password {
                    "not-the-password".into()
                } else {
                    s.password
                },
            });
        }
        Listener::MutualTls { client_certificate } => {
            cfg.bootstrap = vec![s.mtls.clone()];
            let client = client_certificate.then_some(ClientCertificate {
                chain_pem: &s.client_cert_pem,
                key_pem: &s.client_key_pem,
            });
            cfg.tls = Some(tls_config(ca, client)?);
        }
    }
    Ok(cfg)
}

async fn round_trip(test: &str, listener: Listener) -> anyhow::Result<()> {
    let env = kafka().await;
    let bus = KafkaBus::connect(config(&env, test, listener)?).await?;
    bus.provision().await?;
    a_new_member_resumes_at_the_committed_offset_with_its_metadata(&bus).await
}

/// Connecting must fail at once with an error that contains `expected`.
async fn refused(cfg: KafkaConfig, expected: &str) {
    let Err(err) = KafkaBus::connect(cfg).await else {
        panic!("connected, but expected a refusal containing {expected:?}");
    };
    let text = err.to_string();
    assert!(text.contains(expected), "expected {expected:?} in: {text}");
}

#[tokio::test]
async fn sasl_plain_without_tls() -> anyhow::Result<()> {
    round_trip("sec-plain", sasl(false, SaslMechanism::Plain)).await
}

#[tokio::test]
async fn scram_sha_256_without_tls() -> anyhow::Result<()> {
    round_trip("sec-scram256", sasl(false, SaslMechanism::ScramSha256)).await
}

#[tokio::test]
async fn scram_sha_512_over_tls() -> anyhow::Result<()> {
    round_trip("sec-scram512-tls", sasl(true, SaslMechanism::ScramSha512)).await
}

#[tokio::test]
async fn sasl_plain_over_tls() -> anyhow::Result<()> {
    round_trip("sec-plain-tls", sasl(true, SaslMechanism::Plain)).await
}

#[tokio::test]
async fn mutual_tls_with_a_client_certificate() -> anyhow::Result<()> {
    let listener = Listener::MutualTls {
        client_certificate: true,
    };
    round_trip("sec-mtls", listener).await
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_the_error_says_so() -> anyhow::Result<()> {
    let env = kafka().await;
    for mechanism in [SaslMechanism::Plain, SaslMechanism::ScramSha512] {
        let listener = Listener::Sasl {
            tls: true,
            mechanism,
            wrong_password: true,
        };
        // At once, not after the connect deadline as "no broker answered".
        let cfg = config(&env, "sec-wrong-password", listener)?;
        refused(cfg, "SASL authentication failed: Authentication failed").await;
    }
    Ok(())
}

#[tokio::test]
async fn tls_to_a_broker_whose_ca_is_not_trusted_is_refused() -> anyhow::Result<()> {
    let env = kafka().await;
    let mut cfg = config(
        &env,
        "sec-untrusted",
        sasl(true, SaslMechanism::ScramSha512),
    )?;
    // The public roots do not include the local broker's own CA.
    cfg.tls = Some(tls_config(None, None)?);
    let expected = format!(
        "TLS with {} refused: invalid peer certificate",
        cfg.bootstrap[0]
    );
    refused(cfg, &expected).await;
    Ok(())
}

#[tokio::test]
async fn mutual_tls_without_a_client_certificate_is_refused() -> anyhow::Result<()> {
    let env = kafka().await;
    let listener = Listener::MutualTls {
        client_certificate: false,
    };
    let cfg = config(&env, "sec-mtls-no-cert", listener)?;
    let expected = format!(
        "TLS with {} refused: received fatal alert",
        cfg.bootstrap[0]
    );
    refused(cfg, &expected).await;
    Ok(())
}
