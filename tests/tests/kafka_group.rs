//! Several analytics instances in one consumer group on a real broker: they split the
//! event partitions, and when one leaves (clean stop) or is killed (dropped without
//! leaving, as `kill -9` would), the other takes its partitions over; the stored
//! statistics stay exact — nothing lost, nothing counted twice.
//!
//! Both run once per group protocol (`auto`, which is KIP-848 on Kafka 4.x, and
//! `classic`). The kill case waits for the broker's session timeout (10 s on `scripts/kafka-local`).
//! Without a broker or a database these tests fail, saying how to provide them.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use folio_domain::analytics::WorkerStats;
use folio_domain::ports::RecordPublisher;
use folio_domain::topics::Topic;
use folio_kafka::GroupProtocol;
use folio_runtime::analytics::GROUP as ANALYTICS_GROUP;
use folio_tests::bus_contract::partitions_of;
use folio_tests::kafka_env::{kafka, postgres, KafkaEnv, SESSION_TIMEOUT};
use folio_tests::stack::{Analytics, Stack};
use folio_tests::traffic::{publish, Traffic};

const WINDOW: Duration = Duration::from_secs(2);
const GRACE: Duration = Duration::from_secs(1);

/// Waits until Kafka's tool shows the analytics group with these partition counts per
/// member (in any order).
async fn await_members(
    kafka: &KafkaEnv,
    stack: &Stack,
    want: &[usize],
    within: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut want = want.to_vec();
    want.sort_unstable();
    loop {
        let members = kafka.group_members(&stack.cfg, ANALYTICS_GROUP).await;
        if let Ok(m) = &members {
            let mut counts: Vec<usize> = m.iter().map(|(_, n)| *n).collect();
            counts.sort_unstable();
            if counts == want {
                return Ok(start.elapsed());
            }
        }
        if start.elapsed() > within {
            bail!("the group's members never owned {want:?} partitions; last: {members:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Two instances that have split the twelve event partitions six and six.
async fn two_instances(kafka: &KafkaEnv, stack: &Stack) -> anyhow::Result<(Analytics, Analytics)> {
    let a = stack.analytics().await?;
    let b = stack.analytics().await?;
    let took = await_members(kafka, stack, &[6, 6], Duration::from_secs(30)).await?;
    println!(
        "two instances split the 12 event partitions 6/6 (seen by Kafka's tool after {took:?})"
    );
    Ok((a, b))
}

/// Publishes `chunks` batches of `size` events, `every` apart.
async fn trickle(
    producer: &dyn RecordPublisher,
    traffic: &mut Traffic,
    chunks: usize,
    size: usize,
    every: Duration,
) -> anyhow::Result<()> {
    for _ in 0..chunks {
        publish(producer, &traffic.batch(size)).await?;
        tokio::time::sleep(every).await;
    }
    Ok(())
}

/// Each scenario runs once per group protocol: `auto` (KIP-848 on Kafka 4.x) and `classic`.
macro_rules! per_protocol {
    ($($scenario:ident),* $(,)?) => {
        mod auto {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() -> anyhow::Result<()> {
                    super::$scenario(folio_kafka::GroupProtocol::Auto).await
                }
            )*
        }
        mod classic {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() -> anyhow::Result<()> {
                    super::$scenario(folio_kafka::GroupProtocol::Classic).await
                }
            )*
        }
    };
}

per_protocol!(
    two_instances_split_the_partitions_and_one_leaving_under_traffic_loses_nothing,
    a_killed_instance_is_replaced_after_the_session_timeout_and_figures_stay_exact,
);

async fn two_instances_split_the_partitions_and_one_leaving_under_traffic_loses_nothing(
    protocol: GroupProtocol,
) -> anyhow::Result<()> {
    let kafka = kafka().await.with_protocol(protocol);
    let pg = postgres().await;
    let test = format!("leave-{}", protocol.name());
    let stack = Stack::start(&kafka, &pg, &test, WINDOW, GRACE).await?;
    let (a, b) = two_instances(&kafka, &stack).await?;
    let producer = stack.publisher().await?;
    let mut traffic = Traffic::new(21, 12, 40);

    publish(producer.as_ref(), &traffic.batch(600)).await?;
    ensure!(traffic.partitions() == partitions_of(&Topic::EVENTS));
    stack.await_exact(&traffic, Duration::from_secs(40)).await?;
    let (ca, cb) = (a.counted(), b.counted());
    ensure!(
        ca > 0 && cb > 0 && ca + cb == 600,
        "both instances worked, each event counted once: {ca} + {cb}"
    );
    for x in [&a, &b] {
        ensure!(WorkerStats::get(&x.stats.duplicates) == 0);
    }

    // b stops cleanly in the middle of more traffic; a takes its partitions.
    let leaving = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let at = Instant::now();
        b.stop().await.map(|()| at)
    });
    trickle(
        producer.as_ref(),
        &mut traffic,
        10,
        40,
        Duration::from_millis(200),
    )
    .await?;
    let left_at = leaving.await??;
    stack.await_exact(&traffic, Duration::from_secs(40)).await?;
    println!(
        "1000 events exact {:?} after b left (traffic went on for ~1.3 s after)",
        left_at.elapsed()
    );
    await_members(&kafka, &stack, &[12], Duration::from_secs(20)).await?;
    stack.await_settled(&kafka, Duration::from_secs(30)).await?;
    stack.await_exact(&traffic, Duration::ZERO).await?;
    a.stop().await?;
    stack.stop().await
}

async fn a_killed_instance_is_replaced_after_the_session_timeout_and_figures_stay_exact(
    protocol: GroupProtocol,
) -> anyhow::Result<()> {
    let kafka = kafka().await.with_protocol(protocol);
    let pg = postgres().await;
    let test = format!("kill-{}", protocol.name());
    let stack = Stack::start(&kafka, &pg, &test, WINDOW, GRACE).await?;
    let (a, b) = two_instances(&kafka, &stack).await?;
    let producer = stack.publisher().await?;
    let mut traffic = Traffic::new(33, 12, 40);

    publish(producer.as_ref(), &traffic.batch(400)).await?;
    ensure!(traffic.partitions() == partitions_of(&Topic::EVENTS));
    stack.await_exact(&traffic, Duration::from_secs(40)).await?;

    // More traffic; b dies in the middle of it with open windows and nothing committed for
    // them, and traffic goes on after its death.
    trickle(
        producer.as_ref(),
        &mut traffic,
        3,
        40,
        Duration::from_millis(200),
    )
    .await?;
    b.kill().await;
    let killed = Instant::now();
    trickle(
        producer.as_ref(),
        &mut traffic,
        5,
        40,
        Duration::from_millis(200),
    )
    .await?;
    stack
        .await_exact(&traffic, SESSION_TIMEOUT + Duration::from_secs(40))
        .await?;
    let takeover = killed.elapsed();
    println!(
        "after the kill, {} events exact in {takeover:?}",
        traffic.events.len()
    );
    ensure!(
        takeover >= SESSION_TIMEOUT / 2,
        "the killed member's partitions moved before its session could expire ({takeover:?})"
    );
    await_members(&kafka, &stack, &[12], Duration::from_secs(20)).await?;
    stack.await_settled(&kafka, Duration::from_secs(30)).await?;
    stack.await_exact(&traffic, Duration::ZERO).await?;
    a.stop().await?;
    stack.stop().await
}
