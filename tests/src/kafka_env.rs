//! The real services the Kafka suite runs against, and Kafka's own command-line tools.
//!
//! - [`kafka`]: where `FOLIO_TESTCONTAINERS=1` (set by `scripts/test` on its Docker path),
//!   a Kafka container started for the test; otherwise the broker named by
//!   `KAFKA_BOOTSTRAP`. Neither: the test fails and says how to provide one.
//! - [`postgres`]: the same for PostgreSQL and `DATABASE_URL`.
//! - Containers run `FOLIO_TEST_KAFKA_IMAGE` and `FOLIO_TEST_POSTGRES_IMAGE` (the official
//!   images unless set; `scripts/images` builds local ones), on the network
//!   `FOLIO_TEST_DOCKER_NETWORK` names: `host` for engines without a bridge network, where
//!   their servers listen on 127.0.0.1 at ports chosen here.
//! - [`KafkaEnv::config`]: a configuration no other test shares: its own topic prefix (so
//!   its own topics) and group prefix (so its own consumer groups and commits).
//! - [`KafkaEnv::describe_group`] and [`KafkaEnv::console_produce`]: Kafka's
//!   `kafka-consumer-groups` and `kafka-console-producer`, from `scripts/kafka-local`'s jars
//!   or inside the container, so tests check folio against Kafka's own view.
//!
//! Containers belong to the test that started them and are removed when it ends.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use folio_domain::topics::Topic;
use folio_kafka::{GroupProtocol, KafkaClient, KafkaConfig};
use testcontainers::core::wait::LogWaitStrategy;
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

/// How to give the suite a broker.
pub const HOW_TO_KAFKA: &str = "set KAFKA_BOOTSTRAP=host:port (scripts/kafka-local start prints \
     127.0.0.1:19092), or run scripts/test, which provides one";
/// How to give the cluster tests a cluster of three brokers they may kill and restart.
pub const HOW_TO_CLUSTER: &str = "set FOLIO_TEST_KAFKA_CLUSTER to the bootstrap list of a \
     three-node cluster run by scripts/kafka-local (KAFKA_BROKERS=3 KAFKA_PORT=25092 \
     scripts/kafka-local start prints 127.0.0.1:25092,127.0.0.1:25192,127.0.0.1:25292; the \
     tests kill and restart its nodes with the same script, so the list must be the one it \
     printed), or run scripts/test, which starts one";
/// How to give the security tests the broker's secured listeners.
pub const HOW_TO_SECURED: &str = "set FOLIO_TEST_SASL_BOOTSTRAP (a SASL_PLAINTEXT listener), \
     FOLIO_TEST_SASL_SSL_BOOTSTRAP (SASL_SSL) and FOLIO_TEST_MTLS_BOOTSTRAP (SSL requiring a \
     client certificate) of the broker under test, FOLIO_TEST_TLS_CA_FILE (PEM of the CA that \
     signed its certificate), FOLIO_TEST_TLS_CERT_FILE and FOLIO_TEST_TLS_KEY_FILE (a client \
     certificate it accepts, and its key), FOLIO_TEST_SASL_USERNAME and \
     FOLIO_TEST_SASL_PASSWORD (a user that PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 accept); \
     for scripts/kafka-local: export $(scripts/kafka-local secured). scripts/test sets them \
     when it starts the broker itself";
/// How to give the suite a database.
pub const HOW_TO_POSTGRES: &str = "set DATABASE_URL=postgres://user:password@host:port/database \
     (scripts/pg-local start prints postgres://folio:folio@127.0.0.1:15432/folio), or run \
     scripts/test, which provides one";

/// What testcontainers needs when it fails.
pub const HOW_TO_DOCKER: &str = "testcontainers needs a Docker engine that DOCKER_HOST (or \
     Docker's default socket) names and the images FOLIO_TEST_KAFKA_IMAGE and \
     FOLIO_TEST_POSTGRES_IMAGE (apache/kafka:4.1.2 and postgres:17-alpine unless set) present \
     or pullable; on an engine without a registry or a bridge network: \
     eval \"$(scripts/docker-engine start)\"; scripts/images build kafka postgres; then \
     export $(scripts/images env) $(scripts/docker-engine env); or unset FOLIO_TESTCONTAINERS \
     to use KAFKA_BOOTSTRAP and DATABASE_URL";

/// The consumer-group session the suite's brokers run with (`scripts/kafka-local` and the
/// container both set `group.consumer.session.timeout.ms=10000`), so a killed member's
/// partitions move within seconds.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// The official images, unless `FOLIO_TEST_KAFKA_IMAGE` / `FOLIO_TEST_POSTGRES_IMAGE` name
/// others (`scripts/images env` prints the local ones).
const KAFKA_IMAGE: &str = "apache/kafka:4.1.2";
const POSTGRES_IMAGE: &str = "postgres:17-alpine";

fn testcontainers_enabled() -> bool {
    std::env::var("FOLIO_TESTCONTAINERS").is_ok_and(|v| v == "1")
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// A name no other test or run uses: the test's name, the process and the clock.
pub fn unique(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{test}-{}-{nanos}", std::process::id())
}

/// A broker for one test.
pub struct KafkaEnv {
    bootstrap: String,
    cli: Cli,
    /// The configurations [`KafkaEnv::config`] handed out; their topics are deleted when
    /// the test passes.
    handed_out: Made<KafkaConfig>,
    container: Option<ContainerAsync<GenericImage>>,
    /// The group protocol the configurations ask for ([`KafkaEnv::with_protocol`]).
    protocol: GroupProtocol,
}

impl Drop for KafkaEnv {
    /// Deletes a passing test's topics, so a long-lived local broker does not collect
    /// them; a failing test's stay, to be looked at. A container goes with its test.
    fn drop(&mut self) {
        let configs = self.handed_out.take_for_removal(self.container.is_some());
        tear_down("the test's topics", configs, |configs| async move {
            for cfg in configs {
                KafkaClient::connect(cfg)
                    .await?
                    .delete_topics(&Topic::ALL)
                    .await?;
            }
            Ok(())
        });
    }
}

/// What a test made on a shared server (topics, schemas): removed when the test passes.
struct Made<T>(Mutex<Vec<T>>);

impl<T> Default for Made<T> {
    fn default() -> Self {
        Made(Mutex::new(Vec::new()))
    }
}

impl<T> Made<T> {
    fn add(&self, item: T) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(item);
    }

    /// What to remove now: everything, unless the test is failing (its things stay, to
    /// be looked at) or runs in a container (which goes with it anyway).
    fn take_for_removal(&mut self, in_container: bool) -> Vec<T> {
        let items = std::mem::take(self.0.get_mut().unwrap_or_else(PoisonError::into_inner));
        if std::thread::panicking() || in_container {
            Vec::new()
        } else {
            items
        }
    }
}

/// Runs a test's tear-down of `items` from `Drop`, which cannot await and may run on the
/// test's own runtime thread: on a thread and runtime of its own, within 30 s. A failure
/// is printed, never raised.
fn tear_down<T, F, Fut>(what: &str, items: Vec<T>, work: F)
where
    T: Send + 'static,
    F: FnOnce(Vec<T>) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
    if items.is_empty() {
        return;
    }
    let work = move || work(items);
    let done = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(30), work())
                    .await
                    .context("it took longer than 30 s")?
            })
    });
    match done.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("note: {what} were not removed: {e:#}"),
        Err(_) => eprintln!("note: removing {what} panicked"),
    }
}

/// Where Kafka's command-line tools run.
enum Cli {
    /// `scripts/kafka-local tool …` (Apache Kafka's jars, fetched once by Maven).
    Local { script: PathBuf },
    /// `/opt/kafka/bin/*.sh` inside the broker's container, on its internal listener
    /// (`bootstrap`, as the container sees it).
    Container { id: String, bootstrap: String },
}

/// The broker this test uses. Panics, saying how to provide one, when there is none.
pub async fn kafka() -> KafkaEnv {
    if testcontainers_enabled() {
        return start_kafka_container().await.unwrap_or_else(|e| {
            panic!("FOLIO_TESTCONTAINERS=1 but the Kafka container did not start ({e:#}); {HOW_TO_DOCKER}")
        });
    }
    if let Some(bootstrap) = non_empty_env("KAFKA_BOOTSTRAP") {
        return KafkaEnv {
            bootstrap,
            cli: Cli::Local {
                script: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka-local"),
            },
            handed_out: Made::default(),
            container: None,
            protocol: GroupProtocol::Auto,
        };
    }
    panic!("this test needs a real Kafka broker and KAFKA_BOOTSTRAP is unset: {HOW_TO_KAFKA}");
}

/// A three-node cluster for one test, run by `scripts/kafka-local` (`KAFKA_BROKERS=3`), so
/// the test can `kill -9` and restart its nodes. [`ClusterEnv::env`] serves it like a
/// single broker (configurations, Kafka's tools). Every node it killed is started again
/// when it is dropped.
pub struct ClusterEnv {
    pub env: KafkaEnv,
    /// Client port of node 1 (`KAFKA_PORT` of the script).
    base_port: u16,
    nodes: usize,
    script: PathBuf,
}

/// The cluster this test uses (`FOLIO_TEST_KAFKA_CLUSTER`). Panics, saying how to provide
/// one, when there is none.
pub async fn kafka_cluster() -> ClusterEnv {
    let Some(list) = non_empty_env("FOLIO_TEST_KAFKA_CLUSTER") else {
        panic!("this test needs a three-broker Kafka cluster and FOLIO_TEST_KAFKA_CLUSTER is unset: {HOW_TO_CLUSTER}");
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka-local");
    let cluster = ClusterEnv::local(&list, script)
        .unwrap_or_else(|e| panic!("FOLIO_TEST_KAFKA_CLUSTER={list:?}: {e}; {HOW_TO_CLUSTER}"));
    assert!(
        cluster.nodes >= 3,
        "FOLIO_TEST_KAFKA_CLUSTER={list:?} names {} broker(s), the cluster tests need 3: {HOW_TO_CLUSTER}",
        cluster.nodes
    );
    cluster
}

/// One partition as `kafka-topics --describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub topic: String,
    pub partition: i32,
    /// `None` while the partition has no leader.
    pub leader: Option<usize>,
    pub replicas: Vec<usize>,
    pub isr: Vec<usize>,
}

impl PartitionState {
    /// The partition lines of a `kafka-topics --describe` output (tab-separated
    /// `Name: value` fields; the summary lines have no `Partition:` field).
    pub fn parse_describe(out: &str) -> Vec<PartitionState> {
        let nodes = |v: &str| -> Vec<usize> {
            v.split(',').filter_map(|n| n.trim().parse().ok()).collect()
        };
        out.lines()
            .filter_map(|line| {
                let field = |name: &str| {
                    line.split('\t')
                        .map(str::trim)
                        .find_map(|f| f.strip_prefix(name).map(str::trim))
                };
                Some(PartitionState {
                    topic: field("Topic:")?.to_string(),
                    partition: field("Partition:")?.parse().ok()?,
                    leader: field("Leader:").and_then(|l| l.parse().ok()),
                    replicas: nodes(field("Replicas:").unwrap_or("")),
                    isr: nodes(field("Isr:").unwrap_or("")),
                })
            })
            .collect()
    }
}

impl ClusterEnv {
    /// `scripts/kafka-local <cmd> <node>` on this cluster.
    pub async fn node_cmd(&self, cmd: &str, node: usize) -> anyhow::Result<()> {
        let mut c = Command::new(&self.script);
        c.arg(cmd)
            .arg(node.to_string())
            .env("KAFKA_BROKERS", self.nodes.to_string())
            .env("KAFKA_PORT", self.base_port.to_string())
            .stdin(Stdio::null());
        let what = format!("scripts/kafka-local {cmd} {node}");
        let out = tokio::task::spawn_blocking(move || c.output())
            .await?
            .with_context(|| format!("running {what}"))?;
        if !out.status.success() {
            bail!(
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// `kill -9` of node `node`.
    pub async fn kill(&self, node: usize) -> anyhow::Result<()> {
        self.node_cmd("kill", node).await
    }

    /// Starts node `node` (recovering its logs) and waits until it serves clients.
    pub async fn start(&self, node: usize) -> anyhow::Result<()> {
        self.node_cmd("start", node).await
    }

    /// The cluster `scripts/kafka-local` (at `script`) runs with `KAFKA_BROKERS` nodes,
    /// reached at `bootstrap` (node 1's address first).
    pub fn local(bootstrap: &str, script: PathBuf) -> anyhow::Result<ClusterEnv> {
        let addrs: Vec<&str> = bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect();
        let base_port = addrs
            .first()
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .with_context(|| format!("expected host:port,... in {bootstrap:?}"))?;
        Ok(ClusterEnv {
            env: KafkaEnv {
                bootstrap: bootstrap.to_string(),
                cli: Cli::Local {
                    script: script.clone(),
                },
                handed_out: Made::default(),
                container: None,
                protocol: GroupProtocol::Auto,
            },
            base_port,
            nodes: addrs.len(),
            script,
        })
    }

    /// How many nodes the cluster has.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// The node leading `partition` of broker-side `topic`, from `kafka-topics --describe`.
    pub async fn leader_of(&self, topic: &str, partition: i32) -> anyhow::Result<usize> {
        let out = self.describe_topic(topic).await?;
        PartitionState::parse_describe(&out)
            .into_iter()
            .find(|p| p.partition == partition)
            .with_context(|| format!("no partition {partition} in:\n{out}"))?
            .leader
            .with_context(|| format!("{topic}/{partition} has no leader"))
    }

    /// Every partition of the topics whose broker-side names start with `prefix`, from one
    /// `kafka-topics --describe`.
    pub async fn partitions(&self, prefix: &str) -> anyhow::Result<Vec<PartitionState>> {
        let out = self
            .env
            .tool("topics", &["--describe".into()], None)
            .await?;
        Ok(PartitionState::parse_describe(&out)
            .into_iter()
            .filter(|p| p.topic.starts_with(prefix))
            .collect())
    }

    /// `kafka-topics --describe --topic <topic>`: one summary line (with
    /// `ReplicationFactor` and `Configs`) and one line per partition.
    pub async fn describe_topic(&self, topic: &str) -> anyhow::Result<String> {
        self.env
            .tool(
                "topics",
                &["--describe".into(), "--topic".into(), topic.to_string()],
                None,
            )
            .await
    }

    /// The node coordinating `group` (the apps' name; the prefix is added), from
    /// `kafka-consumer-groups --describe --state`.
    pub async fn coordinator_of(&self, cfg: &KafkaConfig, group: &str) -> anyhow::Result<usize> {
        let full = cfg.group_name(group);
        let out = self
            .env
            .tool(
                "consumer-groups",
                &[
                    "--describe".into(),
                    "--state".into(),
                    "--group".into(),
                    full.clone(),
                ],
                None,
            )
            .await?;
        // "GROUP  COORDINATOR (ID)  ASSIGNMENT-STRATEGY  STATE  #MEMBERS": the id is in
        // parentheses after the coordinator's address.
        out.lines()
            .filter(|l| l.starts_with(&full))
            .find_map(|l| {
                let open = l.find('(')?;
                let close = l[open..].find(')')? + open;
                l[open + 1..close].trim().parse().ok()
            })
            .with_context(|| format!("no coordinator of {full} in:\n{out}"))
    }
}

impl Drop for ClusterEnv {
    /// Starts every node again, so a failing test does not leave the cluster short.
    fn drop(&mut self) {
        let mut c = Command::new(&self.script);
        c.arg("start")
            .env("KAFKA_BROKERS", self.nodes.to_string())
            .env("KAFKA_PORT", self.base_port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Err(e) = c.status() {
            eprintln!("note: restarting the cluster's nodes failed: {e}");
        }
    }
}

/// Free TCP ports on 127.0.0.1, distinct: each is held until all are chosen. Kafka must
/// advertise the address clients use, so its ports are chosen before the container starts.
fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// The image a container runs: `FOLIO_TEST_<what>_IMAGE` (`name:tag`, e.g. one built by
/// `scripts/images`) or the official one.
fn image_setting(variable: &str, official: &str) -> (String, String) {
    let image = non_empty_env(variable).unwrap_or_else(|| official.to_string());
    // The tag follows the last colon after the last slash (a registry may have a port).
    let after_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[after_slash..].rfind(':') {
        Some(i) => (
            image[..after_slash + i].to_string(),
            image[after_slash + i + 1..].to_string(),
        ),
        None => (image, "latest".to_string()),
    }
}

/// `FOLIO_TEST_DOCKER_NETWORK=host`: containers share the host's network, for engines
/// without a bridge network (docs/contract.md §3). Their servers then listen on 127.0.0.1 at
/// ports chosen here instead of published ones.
fn host_network() -> bool {
    non_empty_env("FOLIO_TEST_DOCKER_NETWORK").as_deref() == Some("host")
}

/// Any other `FOLIO_TEST_DOCKER_NETWORK`: the network containers join, ports published.
fn other_network() -> Option<String> {
    non_empty_env("FOLIO_TEST_DOCKER_NETWORK").filter(|n| n != "host")
}

async fn start_kafka_container() -> anyhow::Result<KafkaEnv> {
    let (name, tag) = image_setting("FOLIO_TEST_KAFKA_IMAGE", KAFKA_IMAGE);
    let host = host_network();
    // HOST is what the tests reach; INTERNAL serves the tools run inside the container.
    // With host networking every listener is a port of its own on 127.0.0.1; otherwise
    // HOST is published on a free host port and the rest stay inside.
    let [host_port, internal_port, controller_port] = free_ports::<3>()?;
    let (bind, inside, internal, controller, container_port) = if host {
        (
            "127.0.0.1",
            "127.0.0.1",
            internal_port,
            controller_port,
            host_port,
        )
    } else {
        ("0.0.0.0", "localhost", 19094, 9093, 9092)
    };
    let image = GenericImage::new(name.clone(), tag.clone())
        .with_wait_for(WaitFor::message_on_stdout("Kafka Server started"));
    // KRaft, broker and controller in one node.
    let mut request = image
        .with_env_var("KAFKA_NODE_ID", "1")
        .with_env_var("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env_var(
            "KAFKA_LISTENERS",
            format!(
                "HOST://{bind}:{container_port},INTERNAL://{bind}:{internal},CONTROLLER://{bind}:{controller}"
            ),
        )
        .with_env_var(
            "KAFKA_ADVERTISED_LISTENERS",
            format!("HOST://127.0.0.1:{host_port},INTERNAL://{inside}:{internal}"),
        )
        .with_env_var(
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
            "HOST:PLAINTEXT,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
        )
        .with_env_var("KAFKA_INTER_BROKER_LISTENER_NAME", "INTERNAL")
        .with_env_var("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env_var(
            "KAFKA_CONTROLLER_QUORUM_VOTERS",
            format!("1@{inside}:{controller}"),
        )
        .with_env_var("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
        .with_env_var("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env_var("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env_var("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env_var(
            "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
            "1",
        )
        .with_env_var("KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR", "1")
        .with_env_var("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        // The same short group session as scripts/kafka-local.
        .with_env_var("KAFKA_GROUP_CONSUMER_MIN_SESSION_TIMEOUT_MS", "3000")
        .with_env_var(
            "KAFKA_GROUP_CONSUMER_SESSION_TIMEOUT_MS",
            SESSION_TIMEOUT.as_millis().to_string(),
        )
        .with_env_var("KAFKA_GROUP_CONSUMER_MIN_HEARTBEAT_INTERVAL_MS", "500")
        .with_env_var("KAFKA_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS", "1000")
        .with_startup_timeout(Duration::from_secs(180));
    if host {
        request = request.with_network("host");
    } else {
        request = request.with_mapped_port(host_port, container_port.tcp());
        if let Some(network) = other_network() {
            request = request.with_network(network);
        }
    }
    let container = request
        .start()
        .await
        .with_context(|| format!("starting {name}:{tag}"))?;
    Ok(KafkaEnv {
        bootstrap: format!("127.0.0.1:{host_port}"),
        cli: Cli::Container {
            id: container.id().to_string(),
            bootstrap: format!("{inside}:{internal}"),
        },
        handed_out: Made::default(),
        container: Some(container),
        protocol: GroupProtocol::Auto,
    })
}

/// One row of `kafka-consumer-groups --describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffset {
    /// The broker-side topic name (with the test's prefix).
    pub topic: String,
    pub partition: i32,
    /// `None` where the group has no commit (`-`).
    pub current_offset: Option<i64>,
    pub log_end_offset: Option<i64>,
    pub lag: Option<i64>,
    /// `-` when no member owns the partition.
    pub consumer_id: String,
}

/// The secured listeners of the broker under test (`FOLIO_TEST_*`, see [`HOW_TO_SECURED`]).
pub struct Secured {
    pub sasl_plaintext: String,
    pub sasl_ssl: String,
    pub mtls: String,
    pub ca_pem: Vec<u8>,
    pub client_cert_pem: Vec<u8>,
    pub client_key_pem: Vec<u8>,
    pub username: String,
    pub password: String,
}

impl Secured {
    /// Read from the environment; a test that needs them fails, saying how to provide them.
    pub fn from_env() -> Secured {
        let var = |name: &str| {
            non_empty_env(name).unwrap_or_else(|| {
                panic!("this test needs the broker's secured listeners and {name} is unset: {HOW_TO_SECURED}")
            })
        };
        let file = |name: &str| {
            let path = var(name);
            std::fs::read(&path).unwrap_or_else(|e| panic!("{name}={path}: {e}; {HOW_TO_SECURED}"))
        };
        Secured {
            sasl_plaintext: var("FOLIO_TEST_SASL_BOOTSTRAP"),
            sasl_ssl: var("FOLIO_TEST_SASL_SSL_BOOTSTRAP"),
            mtls: var("FOLIO_TEST_MTLS_BOOTSTRAP"),
            ca_pem: file("FOLIO_TEST_TLS_CA_FILE"),
            client_cert_pem: file("FOLIO_TEST_TLS_CERT_FILE"),
            client_key_pem: file("FOLIO_TEST_TLS_KEY_FILE"),
            username: var("FOLIO_TEST_SASL_USERNAME"),
            password: var("FOLIO_TEST_SASL_PASSWORD"),
        }
    }
}

impl KafkaEnv {
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The same broker, with configurations whose members speak `protocol`
    /// (`KAFKA_GROUP_PROTOCOL`), so a suite runs once per protocol.
    pub fn with_protocol(mut self, protocol: GroupProtocol) -> Self {
        self.protocol = protocol;
        self
    }

    pub fn protocol(&self) -> GroupProtocol {
        self.protocol
    }

    /// A configuration for `test` alone: its own topics and consumer groups on the broker.
    pub fn config(&self, test: &str) -> KafkaConfig {
        let id = unique(test);
        let mut cfg = KafkaConfig::new(&self.bootstrap);
        cfg.client_id = format!("folio-test-{test}");
        cfg.topic_prefix = format!("{id}.");
        cfg.group_prefix = format!("{id}.");
        cfg.session_timeout = SESSION_TIMEOUT;
        cfg.request_deadline = Duration::from_secs(15);
        cfg.group_protocol = self.protocol;
        self.handed_out.add(cfg.clone());
        cfg
    }

    /// Runs one of Kafka's tools (`consumer-groups`, `console-producer`, `topics`, …) against
    /// this broker, feeding it `stdin`; returns its standard output.
    pub async fn tool(
        &self,
        tool: &str,
        args: &[String],
        stdin: Option<Vec<u8>>,
    ) -> anyhow::Result<String> {
        let mut full = vec![
            "--bootstrap-server".to_string(),
            self.tool_bootstrap().to_string(),
        ];
        full.extend_from_slice(args);
        self.tool_as_given(tool, &full, stdin).await
    }

    /// Where Kafka's tools reach the broker: the host address, or the container's internal
    /// listener.
    pub fn tool_bootstrap(&self) -> &str {
        match &self.cli {
            Cli::Local { .. } => &self.bootstrap,
            Cli::Container { bootstrap, .. } => bootstrap,
        }
    }

    /// [`KafkaEnv::tool`] with `args` exactly as given, for the tools that name the broker
    /// another way (`producer-perf-test` takes it in `--producer-props`).
    pub async fn tool_as_given(
        &self,
        tool: &str,
        args: &[String],
        stdin: Option<Vec<u8>>,
    ) -> anyhow::Result<String> {
        let mut cmd = match &self.cli {
            Cli::Local { script } => {
                let mut c = Command::new(script);
                c.arg("tool").arg(tool);
                c
            }
            Cli::Container { id, .. } => {
                let mut c = Command::new("docker");
                c.args(["exec", "-i", id])
                    .arg(format!("/opt/kafka/bin/kafka-{tool}.sh"));
                c
            }
        };
        cmd.args(args);
        let what = format!("kafka {tool} {}", args.join(" "));
        tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
            cmd.stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            let mut child = cmd.spawn().with_context(|| format!("starting {what}"))?;
            if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
                pipe.write_all(&bytes)
                    .with_context(|| format!("writing to {what}"))?;
            }
            let out = child
                .wait_with_output()
                .with_context(|| format!("running {what}"))?;
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            if !out.status.success() || stderr.contains("Error:") || stderr.contains("ERROR ") {
                bail!("{what} failed ({}):\n{stdout}\n{stderr}", out.status);
            }
            Ok(stdout)
        })
        .await?
    }

    /// `kafka-consumer-groups --describe --group <group>`, parsed. `group` is the name the
    /// apps use; the test's group prefix is added here.
    pub async fn describe_group(
        &self,
        cfg: &KafkaConfig,
        group: &str,
    ) -> anyhow::Result<Vec<GroupOffset>> {
        let full = cfg.group_name(group);
        let out = self
            .tool(
                "consumer-groups",
                &["--describe".into(), "--group".into(), full.clone()],
                None,
            )
            .await?;
        let rows = parse_table(&out, "CURRENT-OFFSET")
            .with_context(|| format!("describing group {full}"))?;
        let num = |r: &HashMap<String, String>, col: &str| -> anyhow::Result<Option<i64>> {
            match r.get(col).map(String::as_str) {
                None => bail!("no {col} column in:\n{out}"),
                Some("-") => Ok(None),
                Some(v) => Ok(Some(
                    v.parse()
                        .with_context(|| format!("{col} {v:?} in:\n{out}"))?,
                )),
            }
        };
        rows.iter()
            .map(|r| {
                Ok(GroupOffset {
                    topic: r.get("TOPIC").cloned().unwrap_or_default(),
                    partition: num(r, "PARTITION")?.unwrap_or(-1) as i32,
                    current_offset: num(r, "CURRENT-OFFSET")?,
                    log_end_offset: num(r, "LOG-END-OFFSET")?,
                    lag: num(r, "LAG")?,
                    consumer_id: r.get("CONSUMER-ID").cloned().unwrap_or_default(),
                })
            })
            .collect()
    }

    /// `kafka-consumer-groups --describe --members`: each member's id and partition count.
    pub async fn group_members(
        &self,
        cfg: &KafkaConfig,
        group: &str,
    ) -> anyhow::Result<Vec<(String, usize)>> {
        let full = cfg.group_name(group);
        let out = self
            .tool(
                "consumer-groups",
                &[
                    "--describe".into(),
                    "--members".into(),
                    "--group".into(),
                    full.clone(),
                ],
                None,
            )
            .await?;
        if out.contains("has no active members") {
            return Ok(Vec::new());
        }
        let rows = parse_table(&out, "#PARTITIONS")
            .with_context(|| format!("describing the members of {full}"))?;
        rows.iter()
            .map(|r| {
                let id = r.get("CONSUMER-ID").cloned().unwrap_or_default();
                let n = r
                    .get("#PARTITIONS")
                    .context("no #PARTITIONS column")?
                    .parse()
                    .with_context(|| format!("#PARTITIONS in:\n{out}"))?;
                Ok((id, n))
            })
            .collect()
    }

    /// Waits until Kafka's tool shows `group` settled on every partition, and returns what
    /// it showed: for most groups, a commit with no lag; for the analytics group, a commit
    /// at [`settled_commit`] of the log end, since it keeps its duplicate horizon behind its
    /// position (docs/decisions.md, 14).
    pub async fn await_zero_lag(
        &self,
        cfg: &KafkaConfig,
        group: &str,
        partitions: usize,
        within: Duration,
    ) -> anyhow::Result<Vec<GroupOffset>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let rows = self.describe_group(cfg, group).await;
            if let Ok(rows) = &rows {
                let analytics = group == folio_runtime::analytics::GROUP;
                let settled = rows.len() == partitions
                    && rows.iter().all(|r| match r.log_end_offset {
                        Some(end) if analytics => r.current_offset == Some(settled_commit(end)),
                        _ => r.lag == Some(0) && r.current_offset == r.log_end_offset,
                    });
                if settled {
                    return Ok(rows.clone());
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "group {} did not reach zero lag on {partitions} partitions within {within:?}; last: {rows:#?}",
                    cfg.group_name(group)
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Produces `key|value` lines to a broker-side topic with Kafka's console producer,
    /// which partitions keys with the Java client's default partitioner.
    pub async fn console_produce(
        &self,
        topic: &str,
        lines: &[(String, String)],
    ) -> anyhow::Result<()> {
        let mut input = Vec::new();
        for (key, value) in lines {
            anyhow::ensure!(
                !key.contains('|') && !key.contains('\n') && !value.contains('\n'),
                "a console-producer line cannot carry {key:?}|{value:?}"
            );
            writeln!(input, "{key}|{value}")?;
        }
        self.tool(
            "console-producer",
            &[
                "--topic".into(),
                topic.into(),
                "--property".into(),
                "parse.key=true".into(),
                "--property".into(),
                "key.separator=|".into(),
            ],
            Some(input),
        )
        .await
        .map(|_| ())
    }
}

/// The rows of the first table in `out` whose header has `marker`, by column name.
fn parse_table(out: &str, marker: &str) -> anyhow::Result<Vec<HashMap<String, String>>> {
    let mut lines = out.lines().skip_while(|l| !l.contains(marker));
    let header: Vec<&str> = lines
        .next()
        .with_context(|| format!("no table with {marker} in:\n{out}"))?
        .split_whitespace()
        .collect();
    let mut rows = Vec::new();
    for line in lines {
        let cells: Vec<&str> = line.split_whitespace().collect();
        if cells.is_empty() {
            break;
        }
        if cells.len() < header.len() {
            bail!("a short row {line:?} under {header:?}");
        }
        rows.push(
            header
                .iter()
                .zip(cells)
                .map(|(h, c)| (h.to_string(), c.to_string()))
                .collect(),
        );
    }
    Ok(rows)
}

/// A PostgreSQL server for one test.
pub struct PgEnv {
    url: String,
    /// The schemas [`PgEnv::fresh_schema`] created; dropped when the test passes.
    schemas: Made<String>,
    container: Option<ContainerAsync<GenericImage>>,
}

impl Drop for PgEnv {
    /// Drops a passing test's schemas; a failing test's stay, to be looked at. A container
    /// goes with its test.
    fn drop(&mut self) {
        let schemas = self.schemas.take_for_removal(self.container.is_some());
        tear_down("the test's schemas", schemas, |schemas| async move {
            for url in schemas {
                folio_sql::drop_fresh_schema(&url).await?;
            }
            Ok(())
        });
    }
}

/// The PostgreSQL server this test uses. Panics, saying how to provide one, when there is
/// none.
pub async fn postgres() -> PgEnv {
    if testcontainers_enabled() {
        return start_postgres_container().await.unwrap_or_else(|e| {
            panic!("FOLIO_TESTCONTAINERS=1 but the PostgreSQL container did not start ({e:#}); {HOW_TO_DOCKER}")
        });
    }
    match non_empty_env("DATABASE_URL") {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            return PgEnv {
                url,
                schemas: Made::default(),
                container: None,
            }
        }
        Some(other) => panic!(
            "this test needs PostgreSQL and DATABASE_URL is {:?}: {HOW_TO_POSTGRES}",
            other.split(':').next().unwrap_or_default()
        ),
        None => {}
    }
    panic!("this test needs PostgreSQL and DATABASE_URL is unset: {HOW_TO_POSTGRES}");
}

async fn start_postgres_container() -> anyhow::Result<PgEnv> {
    let (name, tag) = image_setting("FOLIO_TEST_POSTGRES_IMAGE", POSTGRES_IMAGE);
    let host = host_network();
    let [host_port] = free_ports::<1>()?;
    // The entrypoint runs a temporary server to initialise the cluster first, so the
    // message appears twice; the second one is the real server.
    let mut request = GenericImage::new(name.clone(), tag.clone())
        .with_wait_for(WaitFor::log(
            LogWaitStrategy::stderr("database system is ready to accept connections").with_times(2),
        ))
        .with_env_var("POSTGRES_USER", "folio")
        .with_env_var("POSTGRES_PASSWORD", "folio")
        .with_env_var("POSTGRES_DB", "folio")
        .with_startup_timeout(Duration::from_secs(120));
    if host {
        // The server's own port on the host's loopback; PGPORT is the images' setting.
        request = request
            .with_network("host")
            .with_env_var("PGPORT", host_port.to_string())
            .with_cmd(["postgres", "-c", "listen_addresses=127.0.0.1"]);
    } else {
        request = request.with_mapped_port(host_port, 5432.tcp());
        if let Some(network) = other_network() {
            request = request.with_network(network);
        }
    }
    let container = request
        .start()
        .await
        .with_context(|| format!("starting {name}:{tag}"))?;
    Ok(PgEnv {
        url: format!("postgres://folio:folio@127.0.0.1:{host_port}/folio"),
        schemas: Made::default(),
        container: Some(container),
    })
}

impl PgEnv {
    /// A URL whose connections see a schema of their own, created now.
    pub async fn fresh_schema(&self) -> anyhow::Result<String> {
        let url = folio_sql::fresh_schema_url(&self.url).await?;
        self.schemas.add(url.clone());
        Ok(url)
    }
}

/// Where the analytics group commits a partition it has read to `log_end` with every window
/// closed: the start of the duplicate scope of the next record (never before offset 0), so
/// a new owner re-reads the ids of that scope first. The default horizon is assumed.
pub fn settled_commit(log_end: i64) -> i64 {
    folio_domain::analytics::WindowSpec::new(Duration::from_secs(1), Duration::ZERO)
        .map(|spec| spec.dedup_scope_start(log_end).max(0))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_consumer_groups_table_parses_by_column() -> anyhow::Result<()> {
        let out = "\nConsumer group 'g' has no active members.\n\n\
            GROUP TOPIC PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG CONSUMER-ID HOST CLIENT-ID\n\
            g     t.a   2          2               2               0   -           -    -\n\
            g     t.a   1          -               0               -   -           -    -\n";
        let rows = parse_table(out, "CURRENT-OFFSET")?;
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["PARTITION"], "2");
        assert_eq!(rows[1]["CURRENT-OFFSET"], "-");
        assert!(parse_table("Error: no such group", "CURRENT-OFFSET").is_err());
        Ok(())
    }
}

#[cfg(test)]
mod describe_tests {
    use super::PartitionState;

    #[test]
    fn partition_lines_are_read_and_summary_lines_skipped() {
        let out = "Topic: r.book.views\tTopicId: x\tPartitionCount: 2\tReplicationFactor: 3\tConfigs: min.insync.replicas=2\n\
                   \tTopic: r.book.views\tPartition: 0\tLeader: 2\tReplicas: 2,3,1\tIsr: 2,1\tElr: \tLastKnownElr: \n\
                   \tTopic: r.book.views\tPartition: 1\tLeader: none\tReplicas: 3,1,2\tIsr: 3\n";
        let parts = PartitionState::parse_describe(out);
        assert_eq!(
            parts,
            vec![
                PartitionState {
                    topic: "r.book.views".into(),
                    partition: 0,
                    leader: Some(2),
                    replicas: vec![2, 3, 1],
                    isr: vec![2, 1],
                },
                PartitionState {
                    topic: "r.book.views".into(),
                    partition: 1,
                    leader: None,
                    replicas: vec![3, 1, 2],
                    isr: vec![3],
                },
            ]
        );
    }
}
