//! folio on a replicated three-broker cluster (`FOLIO_TEST_KAFKA_CLUSTER`, run by
//! `scripts/kafka-local` with `KAFKA_BROKERS=3`; `scripts/test` starts one): topics created
//! with three replicas and `min.insync.replicas=2`, `kill -9` of a partition leader and of
//! the group coordinator under traffic, and a topic grown from 3 to 6 partitions under
//! traffic, with a fourth analytics instance then taking partitions, and two brokers of
//! three down (acknowledgements refused, then every event delivered). Figures are compared
//! exactly with the events produced.
//!
//! The tests kill and restart the cluster's nodes, so they take turns (one lock).
//! Without a cluster they fail, saying how to provide one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use folio_domain::events::Event;
use folio_domain::ports::RecordPublisher;
use folio_domain::services::event_record;
use folio_domain::topics::Topic;
use folio_kafka::{KafkaClient, Replication};
use folio_runtime::analytics::GROUP as ANALYTICS_GROUP;
use folio_tests::kafka_env::{kafka_cluster, postgres, ClusterEnv};
use folio_tests::stack::Stack;
use folio_tests::traffic::Traffic;
use tokio::sync::Mutex;

const WINDOW: Duration = Duration::from_secs(2);
const GRACE: Duration = Duration::from_secs(1);

/// The nodes are shared: one test at a time kills them.
static NODES: Mutex<()> = Mutex::const_new(());

/// Delivers `events` as the bookstore's spool does: whatever the broker did not
/// acknowledge is sent again, until everything is (or `within` runs out). Returns how
/// many records had to be sent again.
async fn deliver_all(
    publisher: &dyn RecordPublisher,
    events: &[Event],
    within: Duration,
) -> anyhow::Result<usize> {
    let give_up = Instant::now() + within;
    let mut pending: Vec<&Event> = events.iter().collect();
    let mut resent = 0;
    loop {
        let failed = publisher
            .deliver(pending.iter().map(|e| event_record(e)).collect())
            .await;
        if failed.is_empty() {
            return Ok(resent);
        }
        ensure!(
            Instant::now() < give_up,
            "{} of {} records still unacknowledged after {within:?}",
            failed.len(),
            events.len()
        );
        resent += failed.len();
        pending = failed.iter().map(|&i| pending[i]).collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Publishes `rounds` batches of `per_round` events, one every 100 ms, in the
/// background; returns the events and the records sent again.
fn traffic_in_background(
    publisher: Arc<dyn RecordPublisher>,
    traffic: Arc<std::sync::Mutex<Traffic>>,
    rounds: usize,
    per_round: usize,
) -> tokio::task::JoinHandle<anyhow::Result<usize>> {
    tokio::spawn(async move {
        let mut resent = 0;
        for _ in 0..rounds {
            let batch = traffic
                .lock()
                .map_err(|_| anyhow::anyhow!("traffic lock"))?
                .batch(per_round);
            resent += deliver_all(publisher.as_ref(), &batch, Duration::from_secs(60)).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(resent)
    })
}

/// The node leading `topic`/0 once it is not `dead`: asked every second until `within`
/// runs out (the tool also fails while the partition has no leader).
async fn leader_other_than(
    cluster: &ClusterEnv,
    topic: &str,
    dead: usize,
    within: Duration,
) -> anyhow::Result<usize> {
    let give_up = Instant::now() + within;
    loop {
        let now = cluster.leader_of(topic, 0).await;
        match now {
            Ok(n) if n != dead => return Ok(n),
            _ if Instant::now() < give_up => tokio::time::sleep(Duration::from_secs(1)).await,
            other => bail!("leadership of {topic}/0 did not move off dead node {dead} within {within:?}: {other:?}"),
        }
    }
}

async fn replication_as_kafka_shows_it(cluster: &ClusterEnv, stack: &Stack) -> anyhow::Result<()> {
    for t in Topic::ALL {
        let name = stack.cfg.topic_name(t);
        let out = cluster.describe_topic(&name).await?;
        let summary = out.lines().next().unwrap_or_default();
        ensure!(
            summary.contains("ReplicationFactor: 3") && summary.contains("min.insync.replicas=2"),
            "{name}: {summary}"
        );
        if t == Topic::BookViews {
            println!("{}", summary.trim());
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_leader_and_of_the_coordinator_under_traffic_loses_nothing(
) -> anyhow::Result<()> {
    let _turn = NODES.lock().await;
    let cluster = kafka_cluster().await;
    let pg = postgres().await;
    let mut stack = Stack::start(&cluster.env, &pg, "failover", WINDOW, GRACE).await?;
    stack.cfg.request_deadline = Duration::from_secs(30);

    // Provisioning chose the cluster's defaults: three replicas, two in sync.
    let report = KafkaClient::connect(stack.cfg.clone())
        .await?
        .ensure_topics(&Topic::ALL)
        .await?;
    ensure!(report.brokers == 3, "{report:?}");
    ensure!(
        report.replication
            == Replication {
                factor: 3,
                min_insync: 2
            },
        "{report:?}"
    );
    ensure!(report.shortfalls.is_empty(), "{:?}", report.shortfalls);
    replication_as_kafka_shows_it(&cluster, &stack).await?;

    let a1 = stack.analytics().await?;
    let a2 = stack.analytics().await?;
    let traffic = Arc::new(std::sync::Mutex::new(Traffic::new(77, 12, 40)));
    let sender = traffic_in_background(stack.publisher().await?, traffic.clone(), 200, 40);

    // The leader of book.views/0 dies; once another node leads it (the controller fences a
    // silent broker after its 9 s session, so within 30 s), it comes back.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let views = stack.cfg.topic_name(Topic::BookViews);
    let leader = cluster.leader_of(&views, 0).await?;
    let t = Instant::now();
    cluster.kill(leader).await?;
    println!("kill -9 of node {leader}, leader of {views}/0");
    tokio::time::sleep(Duration::from_secs(8)).await;
    let moved = leader_other_than(&cluster, &views, leader, Duration::from_secs(30)).await?;
    cluster.start(leader).await?;
    println!(
        "node {leader} back after {:?}; {views}/0 led by {moved} meanwhile",
        t.elapsed()
    );

    // Then the coordinator of the analytics group dies, comes back 8 s later.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let coordinator = cluster.coordinator_of(&stack.cfg, ANALYTICS_GROUP).await?;
    let t = Instant::now();
    cluster.kill(coordinator).await?;
    println!("kill -9 of node {coordinator}, coordinator of {ANALYTICS_GROUP}");
    tokio::time::sleep(Duration::from_secs(8)).await;
    cluster.start(coordinator).await?;
    println!("node {coordinator} back after {:?}", t.elapsed());

    let resent = sender.await.context("the traffic task")??;
    let traffic = Arc::into_inner(traffic)
        .context("traffic still shared")?
        .into_inner()
        .map_err(|_| anyhow::anyhow!("traffic lock"))?;
    let took = stack.await_exact(&traffic, Duration::from_secs(90)).await?;
    println!(
        "{} events ({resent} records sent again after a refusal) counted exactly {took:?} after the last was acknowledged; analytics counted {} + {}",
        traffic.events.len(),
        a1.counted(),
        a2.counted()
    );
    a1.stop().await?;
    a2.stop().await?;
    stack.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn growing_book_views_from_3_to_6_partitions_under_traffic_keeps_figures_exact(
) -> anyhow::Result<()> {
    let _turn = NODES.lock().await;
    let cluster = kafka_cluster().await;
    let pg = postgres().await;
    let mut stack = Stack::start(&cluster.env, &pg, "grow", WINDOW, GRACE).await?;
    // The publisher asks for partition counts every second (30 s by default).
    stack.cfg.metadata_refresh = Duration::from_secs(1);
    let views = stack.cfg.topic_name(Topic::BookViews);

    let instances = vec![
        stack.analytics().await?,
        stack.analytics().await?,
        stack.analytics().await?,
    ];
    let traffic = Arc::new(std::sync::Mutex::new(Traffic::new(91, 12, 40)));
    let sender = traffic_in_background(stack.publisher().await?, traffic.clone(), 120, 40);

    tokio::time::sleep(Duration::from_secs(4)).await;
    // The operator's way, with Kafka's own tool, while folio runs.
    cluster
        .env
        .tool(
            "topics",
            &[
                "--alter".into(),
                "--topic".into(),
                views.clone(),
                "--partitions".into(),
                "6".into(),
            ],
            None,
        )
        .await?;
    println!("{views} grown from 3 to 6 partitions under traffic");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut instances = instances;
    instances.push(stack.analytics().await?);

    let resent = sender.await.context("the traffic task")??;
    let traffic = Arc::into_inner(traffic)
        .context("traffic still shared")?
        .into_inner()
        .map_err(|_| anyhow::anyhow!("traffic lock"))?;
    let took = stack.await_exact(&traffic, Duration::from_secs(90)).await?;

    // Records went to the new partitions, and the analytics group read them all.
    let rows = cluster
        .env
        .await_zero_lag(&stack.cfg, ANALYTICS_GROUP, 15, Duration::from_secs(60))
        .await?;
    let new_ones: Vec<i64> = rows
        .iter()
        .filter(|r| r.topic == views && r.partition >= 3)
        .map(|r| r.log_end_offset.unwrap_or(0))
        .collect();
    ensure!(
        new_ones.len() == 3 && new_ones.iter().all(|n| *n > 0),
        "records on {views} partitions 3..5: {new_ones:?}"
    );
    // Four members share the 15 partitions, the fourth included.
    let members = cluster
        .env
        .group_members(&stack.cfg, ANALYTICS_GROUP)
        .await?;
    ensure!(
        members.len() == 4 && members.iter().all(|(_, n)| *n > 0),
        "members and their partition counts: {members:?}"
    );
    println!(
        "{} events ({resent} sent again) exact {took:?} after the last; records on the new partitions {new_ones:?}; members' partition counts {:?}",
        traffic.events.len(),
        members.iter().map(|(_, n)| *n).collect::<Vec<_>>()
    );
    for a in instances {
        a.stop().await?;
    }
    stack.stop().await
}

/// Two of three brokers down: below `min.insync.replicas` nothing may be acknowledged, so
/// the publisher is refused (not answered falsely), the senders keep their records as the
/// spool does, and once the nodes are back every event is counted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_of_three_brokers_down_refuses_acks_and_loses_nothing() -> anyhow::Result<()> {
    let _turn = NODES.lock().await;
    let cluster = kafka_cluster().await;
    let pg = postgres().await;
    let mut stack = Stack::start(&cluster.env, &pg, "minisr", WINDOW, GRACE).await?;
    // A refusal must come back within the outage, so the probe below can see it.
    stack.cfg.request_deadline = Duration::from_secs(8);

    let a1 = stack.analytics().await?;
    let traffic = Arc::new(std::sync::Mutex::new(Traffic::new(103, 12, 40)));
    let publisher = stack.publisher().await?;
    let sender = traffic_in_background(publisher.clone(), traffic.clone(), 150, 40);

    tokio::time::sleep(Duration::from_secs(4)).await;
    let views = stack.cfg.topic_name(Topic::BookViews);
    let survivor = cluster.leader_of(&views, 0).await?;
    let down: Vec<usize> = (1..=3).filter(|n| *n != survivor).collect();
    let t = Instant::now();
    for &n in &down {
        cluster.kill(n).await?;
    }
    println!("kill -9 of nodes {down:?}; node {survivor} alone, leading {views}/0");

    // With one broker of three up, no produce can gather the two acknowledgements
    // acks=all needs: a partition the survivor leads waits for replicas that are gone, one a
    // dead node leads has no leader (and no quorum of controllers to elect one).
    let probe = traffic
        .lock()
        .map_err(|_| anyhow::anyhow!("traffic lock"))?
        .batch(1);
    let refused = publisher
        .deliver(probe.iter().map(event_record).collect())
        .await;
    ensure!(
        refused == vec![0],
        "a record was acknowledged with one broker of three up (min.insync.replicas=2): {refused:?}"
    );
    let probe_took = t.elapsed();

    tokio::time::sleep(Duration::from_secs(12).saturating_sub(probe_took)).await;
    for &n in &down {
        cluster.start(n).await?;
    }
    println!(
        "probe refused after {probe_took:?}; nodes {down:?} back after {:?}",
        t.elapsed()
    );
    // The refused probe is delivered now, as the spool would replay it (Traffic counts it
    // among its events already).
    deliver_all(publisher.as_ref(), &probe, Duration::from_secs(60)).await?;

    let resent = sender.await.context("the traffic task")??;
    ensure!(
        resent > 0,
        "the senders saw no refusal while two brokers of three were down"
    );
    let traffic = Arc::into_inner(traffic)
        .context("traffic still shared")?
        .into_inner()
        .map_err(|_| anyhow::anyhow!("traffic lock"))?;
    let took = stack.await_exact(&traffic, Duration::from_secs(90)).await?;
    println!(
        "{} events ({resent} records sent again after refusals) counted exactly {took:?} after the last was acknowledged; analytics counted {}",
        traffic.events.len(),
        a1.counted()
    );
    a1.stop().await?;
    stack.stop().await
}
