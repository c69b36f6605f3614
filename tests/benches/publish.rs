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
//!
//! CPU time per record comes from each one's own process, in the same rounds: folio's from
//! this process's `/proc/self/stat` around its rounds (its publisher is all that runs
//! here then), the tool's from the JVM it runs as, a child this process waits for
//! (`cutime + cstime`). The tool's includes its JVM's start-up, so one run of
//! `STARTUP_RECORDS` records is also timed and its CPU reported, to read that share off.
//! The last line, `BENCH publish ...`, is what `scripts/bench` collects.

use std::time::Instant;

use folio_domain::ports::{OutgoingRecord, RecordPublisher};
use folio_domain::topics::Topic;
use folio_kafka::KafkaClient;

use folio_tests::bench::{best, cpu_now, load_average, setup, summary};
use folio_tests::kafka_env::KafkaEnv;

const VALUE_BYTES: usize = 150;
/// Records of the tool's run that measures its start-up.
const STARTUP_RECORDS: usize = 1000;

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
    let (mut folio_cpu, mut tool_cpu) = (0.0, 0.0);
    for round in 1..=rounds {
        let before = cpu_now();
        let rate = publish_with_folio(&client, n).await?;
        let cpu = (cpu_now() - before).own;
        folio_cpu += cpu;
        println!(
            "round {round}: folio publisher        {rate:>10.0} records/s, {:.2} µs CPU per record",
            cpu * 1e6 / n as f64
        );
        folio.push(rate);
        let before = cpu_now();
        let rate = producer_perf_test(&run.env, &topic, n).await?;
        let cpu = (cpu_now() - before).children;
        tool_cpu += cpu;
        println!(
            "round {round}: kafka-producer-perf-test {rate:>10.0} records/s, {:.2} µs CPU per record",
            cpu * 1e6 / n as f64
        );
        tool.push(rate);
    }
    let before = cpu_now();
    producer_perf_test(&run.env, &topic, STARTUP_RECORDS).await?;
    let startup = (cpu_now() - before).children;
    let per_record = |cpu: f64| cpu * 1e6 / (n * rounds) as f64;
    let (folio_us, tool_us) = (per_record(folio_cpu), per_record(tool_cpu));
    let tool_net_us = per_record((tool_cpu - startup * rounds as f64).max(0.0));
    println!(
        "best of {rounds}: folio {:.0} records/s ({:.1} MB/s of values), kafka-producer-perf-test {:.0} records/s; folio / tool = {:.2}; load average {}",
        best(&folio),
        best(&folio) * VALUE_BYTES as f64 / 1e6,
        best(&tool),
        best(&folio) / best(&tool),
        load_average()
    );
    println!(
        "CPU per record over all rounds: folio {folio_us:.2} µs, tool {tool_us:.2} µs ({tool_net_us:.2} µs without its JVM's start-up, {startup:.2} s for a {STARTUP_RECORDS}-record run); folio / tool = {:.2}",
        folio_us / tool_us
    );
    summary(
        "publish",
        &[
            ("records", n.to_string()),
            ("rounds", rounds.to_string()),
            ("folio_rps", format!("{:.0}", best(&folio))),
            ("tool_rps", format!("{:.0}", best(&tool))),
            ("ratio", format!("{:.2}", best(&folio) / best(&tool))),
            ("folio_cpu_us", format!("{folio_us:.2}")),
            ("tool_cpu_us", format!("{tool_us:.2}")),
            ("tool_cpu_us_net", format!("{tool_net_us:.2}")),
            ("cpu_ratio", format!("{:.2}", folio_us / tool_us)),
            ("cpu_ratio_net", format!("{:.2}", folio_us / tool_net_us)),
        ],
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
