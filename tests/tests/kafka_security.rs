//! folio over the broker's secured listeners: SASL PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512,
//! with and without TLS. Each run goes through publishing, topic admin, and the consumer
//! group (join, fetch, commit, a second member resuming at the commit), so both rskafka's
//! connections and folio's own group connections authenticate. Needs the listeners named in
//! `FOLIO_TEST_*` (scripts/test provides them); without them the tests fail and say how.

use folio_domain::ports::MessageBus;
use folio_kafka::{tls_trusting_pem, tls_trusting_public_roots, KafkaBus, KafkaConfig};
use folio_kafka::{SaslMechanism, SaslSettings};
use folio_tests::bus_contract::a_new_member_resumes_at_the_committed_offset_with_its_metadata;
use folio_tests::kafka_env::{kafka, KafkaEnv, Secured};

/// How a test reaches the broker.
struct Listener {
    tls: bool,
    mechanism: SaslMechanism,
    password: Option<&'static str>,
}

fn config(env: &KafkaEnv, test: &str, l: &Listener) -> anyhow::Result<KafkaConfig> {
    let secured = Secured::from_env();
    let mut cfg = env.config(test);
    cfg.bootstrap = vec![if l.tls {
        secured.sasl_ssl.clone()
    } else {
        secured.sasl_plaintext.clone()
    }];
    if l.tls {
        cfg.tls = Some(tls_trusting_pem(&secured.ca_pem)?);
    }
    cfg.sasl = Some(SaslSettings {
        mechanism: l.mechanism,
        username: secured.username,
        password: l.password.map_or(secured.password, String::from),
    });
    Ok(cfg)
}

async fn round_trip(test: &str, tls: bool, mechanism: SaslMechanism) -> anyhow::Result<()> {
    let env = kafka().await;
    let listener = Listener {
        tls,
        mechanism,
        password: None,
    };
    let bus = KafkaBus::connect(config(&env, test, &listener)?).await?;
    bus.provision().await?;
    a_new_member_resumes_at_the_committed_offset_with_its_metadata(&bus).await?;
    Ok(())
}

#[tokio::test]
async fn sasl_plain_without_tls() -> anyhow::Result<()> {
    round_trip("sec-plain", false, SaslMechanism::Plain).await
}

#[tokio::test]
async fn scram_sha_256_without_tls() -> anyhow::Result<()> {
    round_trip("sec-scram256", false, SaslMechanism::ScramSha256).await
}

#[tokio::test]
async fn scram_sha_512_over_tls() -> anyhow::Result<()> {
    round_trip("sec-scram512-tls", true, SaslMechanism::ScramSha512).await
}

#[tokio::test]
async fn sasl_plain_over_tls() -> anyhow::Result<()> {
    round_trip("sec-plain-tls", true, SaslMechanism::Plain).await
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_the_error_says_so() -> anyhow::Result<()> {
    let env = kafka().await;
    for mechanism in [SaslMechanism::Plain, SaslMechanism::ScramSha512] {
        let listener = Listener {
            tls: true,
            mechanism,
            password: Some("not-the-password"),
        };
        let cfg = config(&env, "sec-wrong-password", &listener)?;
        let Err(err) = KafkaBus::connect(cfg).await else {
            panic!("{}: a wrong password must not connect", mechanism.name());
        };
        let text = err.to_string();
        // At once, not after the connect deadline as "no broker answered".
        assert!(
            text.contains("SASL authentication failed: Authentication failed"),
            "{}: {text}",
            mechanism.name()
        );
    }
    Ok(())
}

#[tokio::test]
async fn tls_to_a_broker_whose_ca_is_not_trusted_is_refused() -> anyhow::Result<()> {
    let env = kafka().await;
    let listener = Listener {
        tls: true,
        mechanism: SaslMechanism::ScramSha512,
        password: None,
    };
    let mut cfg = config(&env, "sec-untrusted", &listener)?;
    // The public roots do not include the local broker's own CA.
    cfg.tls = Some(tls_trusting_public_roots()?);
    let cfg_addr = cfg.bootstrap[0].clone();
    let Err(err) = KafkaBus::connect(cfg).await else {
        panic!("an untrusted certificate must not connect");
    };
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "TLS with {} refused: invalid peer certificate",
            cfg_addr
        )),
        "expected a certificate error: {text}"
    );
    Ok(())
}
