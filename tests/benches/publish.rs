//! Publishing throughput, side by side with Kafka's own `kafka-producer-perf-test` on the
//! same broker and topic in the same run (docs/contract.md §5: folio's publisher should reach at least
//! the tool's throughput for 150-byte events with acks=all).
//!
//! ```sh
//! scripts/kafka-local start
//! KAFKA_BOOTSTRAP=127.0.0.1:19092 cargo bench -p folio-tests --bench publish
//! # FOLIO_BENCH_RECORDS=200000 for a shorter run; FOLIO_BENCH_ROUNDS (default 2)
//! ```
//!
//! Both write `FOLIO_BENCH_RECORDS` records of a 150-byte value to a fresh three-partition
//! topic (folio's `book.views` under a prefix of its own), acks=all, and the rounds
//! alternate so background load hits both alike. folio's records are what the bookstore
//! sends: a book id as key (200 books) and its two headers (`event_id`, `type`); the tool's
//! have no key and no headers. folio's time runs from the first send to the end of the
//! flush that waits for every acknowledgement; the tool reports its own.

use std::time::Instant;

use folio_domain::ports::{OutgoingRecord, RecordPublisher};
use folio_domain::topics::Topic;
use folio_kafka::KafkaClient;

use folio_tests::bench::{best, load_average, setup};
use folio_tests::kafka_env::KafkaEnv;

const VALUE_BYTES: usize = 150;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let run = setup("publish").await;
    let (n, rounds) = (run.n, run.rounds);
    let cfg = &run.cfg;
    let topic = cfg.topic_name(Topic::BookViews);
    let client = KafkaClient::connect(cfg.clone()).await?;
    client.ensure_topics(&[Topic::BookViews]).await?;

    println!(
        "publishing {n} records of {VALUE_BYTES} bytes to {topic} ({} partitions), acks=all; load average {}",
        Topic::BookViews.partitions(),
        load_average()
    );
    let mut folio = Vec::new();
    let mut tool = Vec::new();
    for round in 1..=rounds {
        let rate = publish_with_folio(&client, n).await?;
        println!("round {round}: folio publisher        {rate:>10.0} records/s");
        folio.push(rate);
        let rate = producer_perf_test(&run.env, &topic, n).await?;
        println!("round {round}: kafka-producer-perf-test {rate:>10.0} records/s");
        tool.push(rate);
    }
    println!(
        "best of {rounds}: folio {:.0} records/s ({:.1} MB/s of values), kafka-producer-perf-test {:.0} records/s; folio / tool = {:.2}; load average {}",
        best(&folio),
        best(&folio) * VALUE_BYTES as f64 / 1e6,
        best(&tool),
        best(&folio) / best(&tool),
        load_average()
    );
    Ok(())
}

/// Sends `n` records and waits for every acknowledgement; returns records per second.
async fn publish_with_folio(client: &KafkaClient, n: usize) -> anyhow::Result<f64> {
    let publisher = client.publisher();
    let value = vec![b'x'; VALUE_BYTES];
    let before = publisher.stats();
    let t = Instant::now();
    for i in 0..n {
        publisher
            .send(OutgoingRecord {
                topic: Topic::BookViews,
                key: (1 + i % 200).to_string().into_bytes(),
                value: value.clone(),
                headers: vec![
                    (
                        "event_id".into(),
                        uuid::Uuid::now_v7().to_string().into_bytes(),
                    ),
                    ("type".into(), b"book_viewed".to_vec()),
                ],
            })
            .await?;
    }
    publisher.flush().await?;
    let secs = t.elapsed().as_secs_f64();
    let after = publisher.stats();
    anyhow::ensure!(
        after.acked - before.acked == n as u64 && after.failed == before.failed,
        "not every record was acknowledged: {after:?}"
    );
    Ok(n as f64 / secs)
}

/// Runs Kafka's producer performance tool; returns the records per second it reports.
async fn producer_perf_test(env: &KafkaEnv, topic: &str, n: usize) -> anyhow::Result<f64> {
    let args = [
        "--topic",
        topic,
        "--num-records",
        &n.to_string(),
        "--record-size",
        &VALUE_BYTES.to_string(),
        "--throughput",
        "-1",
        "--producer-props",
        &format!("bootstrap.servers={}", env.tool_bootstrap()),
        "acks=all",
    ]
    .map(String::from);
    let text = env.tool_as_given("producer-perf-test", &args, None).await?;
    // The last line: "N records sent, R records/sec (M MB/sec), ...".
    let summary = text
        .lines()
        .rev()
        .find(|l| l.contains(" records sent, "))
        .ok_or_else(|| anyhow::anyhow!("no summary in the tool's output: {text}"))?;
    summary
        .split(" records sent, ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("cannot read the rate in {summary:?}"))
}
