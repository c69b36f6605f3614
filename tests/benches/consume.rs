//! Analytics ingest over Kafka, side by side with Kafka's own `kafka-consumer-perf-test` on
//! the same broker and topic in the same run (docs/contract.md §5: consuming, decoding and
//! aggregating a backlog should run at least as fast as the tool reads it without decoding
//! anything).
//!
//! ```sh
//! scripts/kafka-local start
//! KAFKA_BOOTSTRAP=127.0.0.1:19092 cargo bench -p folio-tests --bench consume
//! # FOLIO_BENCH_RECORDS (default 1000000), FOLIO_BENCH_ROUNDS (default 2)
//! ```
//!
//! A fresh three-partition `book.views` topic is filled with N `book_viewed` events as the
//! bookstore writes them (JSON, book id key, 200 books, 50,000 users, one-minute windows
//! over ten minutes). Each round then reads the whole backlog twice, alternating: the tool
//! in a new consumer group (it only counts bytes), and folio as a new member of a new group
//! (KIP-848), fetching, decoding every record and folding it into per-partition windows as
//! the analytics worker does. Both rates are from the first record to the last, without
//! the group join: the tool's `fetch.nMsg.sec`, and folio's clock around its batches.
//!
//! CPU time per event is each one's own process's, in the same rounds: folio's from
//! `/proc/self/stat` around its read (nothing else runs in this process then), the tool's
//! from its JVM, a child this process waits for (`cutime + cstime`, its start-up
//! included). Then the curve: the same backlog in topics of `FOLIO_BENCH_PARTITIONS`
//! partitions (default 1,3,6; three is the main comparison's), one round of each. The last
//! line, `BENCH consume ...`, is what `scripts/bench` collects.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use folio_domain::analytics::{PartitionWindows, WindowSpec};
use folio_domain::events::Event;
use folio_domain::ids::{BookId, EventId, UserId};
use folio_domain::ports::{ConsumerEvent, MessageBus, OutgoingRecord};
use folio_domain::topics::Topic;
use folio_kafka::KafkaBus;

use folio_tests::bench::{best, cpu_now, load_average, setup, summary};
use folio_tests::kafka_env::KafkaEnv;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let run = setup("consume").await;
    let (n, rounds) = (run.n, run.rounds);
    let cfg = &run.cfg;
    let topic = cfg.topic_name(Topic::BookViews);
    let bus = KafkaBus::connect(cfg.clone()).await?;
    bus.client().ensure_topics(&[Topic::BookViews]).await?;
    let partitions = cfg.partitions_of(Topic::BookViews);

    let bytes = fill(&bus, n).await?;
    println!(
        "backlog: {n} book_viewed events, {:.0} bytes of value on average, in {topic} ({partitions} partitions); load average {}",
        bytes as f64 / n as f64,
        load_average()
    );
    let mut folio = Vec::new();
    let mut tool = Vec::new();
    let (mut folio_cpu, mut tool_cpu) = (0.0, 0.0);
    for round in 1..=rounds {
        let (rate, cpu) = folio_round(&bus, &format!("folio-{round}"), n).await?;
        println!(
            "round {round}: folio fetch + decode + aggregate {rate:>10.0} events/s, {:.2} µs CPU per event",
            cpu * 1e6 / n as f64
        );
        folio.push(rate);
        folio_cpu += cpu;
        let (rate, cpu) = tool_round(
            &run.env,
            &topic,
            &format!("{}tool-{round}", cfg.group_prefix),
            n,
        )
        .await?;
        println!(
            "round {round}: kafka-consumer-perf-test (fetch)  {rate:>10.0} records/s, {:.2} µs CPU per record",
            cpu * 1e6 / n as f64
        );
        tool.push(rate);
        tool_cpu += cpu;
    }
    let per_event = |cpu: f64| cpu * 1e6 / (n * rounds) as f64;
    let (folio_us, tool_us) = (per_event(folio_cpu), per_event(tool_cpu));
    println!(
        "best of {rounds}: folio {:.0} events/s, kafka-consumer-perf-test {:.0} records/s; folio / tool = {:.2}; CPU per event folio {folio_us:.2} µs, tool {tool_us:.2} µs; load average {}",
        best(&folio),
        best(&tool),
        best(&folio) / best(&tool),
        load_average()
    );

    // The curve: ingest rate against partitions, one round each beside the tool.
    let mut curve = Vec::new();
    for p in partition_counts() {
        let (f, t) = if p == partitions {
            (best(&folio), best(&tool))
        } else {
            let mut cfg = run.env.config(&format!("bench-consume-p{p}"));
            cfg.partitions.insert(Topic::BookViews, p);
            let bus = KafkaBus::connect(cfg.clone()).await?;
            bus.client().ensure_topics(&[Topic::BookViews]).await?;
            fill(&bus, n).await?;
            let topic = cfg.topic_name(Topic::BookViews);
            let (f, _) = folio_round(&bus, "folio", n).await?;
            let (t, _) =
                tool_round(&run.env, &topic, &format!("{}tool", cfg.group_prefix), n).await?;
            (f, t)
        };
        println!(
            "{p} partition(s): folio {f:>10.0} events/s, kafka-consumer-perf-test {t:>10.0} records/s, folio / tool = {:.2}",
            f / t
        );
        curve.push((format!("p{p}_rate"), format!("{f:.0}")));
        curve.push((format!("p{p}_ratio"), format!("{:.2}", f / t)));
    }
    let mut figures = vec![
        ("records", n.to_string()),
        ("rounds", rounds.to_string()),
        ("partitions", partitions.to_string()),
        ("folio_eps", format!("{:.0}", best(&folio))),
        ("tool_rps", format!("{:.0}", best(&tool))),
        ("ratio", format!("{:.2}", best(&folio) / best(&tool))),
        ("folio_cpu_us", format!("{folio_us:.2}")),
        ("tool_cpu_us", format!("{tool_us:.2}")),
        ("cpu_ratio", format!("{:.2}", folio_us / tool_us)),
    ];
    figures.extend(curve.iter().map(|(k, v)| (k.as_str(), v.clone())));
    println!("load average {}", load_average());
    summary("consume", &figures);
    Ok(())
}

/// `FOLIO_BENCH_PARTITIONS`: the partition counts of the curve (default 1,3,6).
fn partition_counts() -> Vec<i32> {
    std::env::var("FOLIO_BENCH_PARTITIONS")
        .unwrap_or_else(|_| "1,3,6".into())
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .filter(|&p| p > 0)
        .collect()
}

/// One folio read of the backlog: events per second, and this process's CPU seconds.
async fn folio_round(bus: &KafkaBus, group: &str, n: usize) -> anyhow::Result<(f64, f64)> {
    let before = cpu_now();
    let rate = consume_with_folio(bus, group, n).await?;
    Ok((rate, (cpu_now() - before).own))
}

/// One run of the tool: its rate, and its process's CPU seconds.
async fn tool_round(
    env: &KafkaEnv,
    topic: &str,
    group: &str,
    n: usize,
) -> anyhow::Result<(f64, f64)> {
    let before = cpu_now();
    let rate = consumer_perf_test(env, topic, group, n).await?;
    Ok((rate, (cpu_now() - before).children))
}

/// Publishes the backlog; returns the bytes of value written.
async fn fill(bus: &KafkaBus, n: usize) -> anyhow::Result<usize> {
    let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse()?;
    let publisher = bus.publisher();
    let mut bytes = 0;
    for i in 0..n {
        let at = start + chrono::Duration::milliseconds((i as i64 * 600_000) / n as i64);
        let book = 1 + (i % 200) as i64;
        let event = Event::BookViewed {
            event_id: EventId::new_at(at),
            occurred_at: at,
            book_id: BookId(book),
            user_id: Some(UserId(1 + (i * 7919 % 50_000) as i64)),
        };
        let value = event.encode();
        bytes += value.len();
        publisher
            .send(OutgoingRecord {
                topic: Topic::BookViews,
                key: book.to_string().into_bytes(),
                value,
                headers: Vec::new(),
            })
            .await?;
    }
    publisher.flush().await?;
    Ok(bytes)
}

/// Reads the whole backlog as a new group member, decoding and aggregating every record;
/// returns events per second from the first batch to the last record.
async fn consume_with_folio(bus: &KafkaBus, group: &str, n: usize) -> anyhow::Result<f64> {
    let spec = WindowSpec::new(Duration::from_secs(60), Duration::from_secs(5))?;
    let mut consumer = bus.join(group, &[Topic::BookViews]).await?;
    let mut windows: HashMap<_, PartitionWindows> = HashMap::new();
    let mut seen = 0usize;
    let mut aggregates = 0usize;
    let mut first: Option<Instant> = None;
    let give_up = Instant::now() + Duration::from_secs(300);
    while seen < n {
        anyhow::ensure!(Instant::now() < give_up, "read {seen} of {n} in 300 s");
        match consumer.poll(Duration::from_millis(500)).await? {
            ConsumerEvent::Assigned(parts) => {
                for a in parts {
                    windows.insert(
                        a.partition,
                        PartitionWindows::resume(a.partition, spec, None),
                    );
                }
            }
            ConsumerEvent::Batch(batch) => {
                first.get_or_insert_with(Instant::now);
                let w = windows
                    .get_mut(&batch.partition)
                    .ok_or_else(|| anyhow::anyhow!("a batch of an unassigned partition"))?;
                for r in &batch.records {
                    let event = Event::decode(&r.value).map_err(anyhow::Error::msg)?;
                    w.ingest(r.offset, &event);
                }
                seen += batch.records.len();
                aggregates += w.close_due(0).len();
            }
            ConsumerEvent::Revoked(_) | ConsumerEvent::Idle => {}
        }
    }
    let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    consumer.leave().await?;
    anyhow::ensure!(seen == n, "read {seen} records, expected {n}");
    anyhow::ensure!(aggregates > 0 || n < 200_000, "no window closed");
    Ok(n as f64 / secs)
}

/// Runs Kafka's consumer performance tool; returns its `fetch.nMsg.sec`.
async fn consumer_perf_test(
    env: &KafkaEnv,
    topic: &str,
    group: &str,
    n: usize,
) -> anyhow::Result<f64> {
    let args = [
        "--topic",
        topic,
        "--group",
        group,
        "--messages",
        &n.to_string(),
        "--timeout",
        "60000",
    ]
    .map(String::from);
    let text = env.tool("consumer-perf-test", &args, None).await?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .find(|l| l.contains("fetch.nMsg.sec"))
        .ok_or_else(|| anyhow::anyhow!("no header in the tool's output: {text}"))?
        .split(',')
        .map(str::trim)
        .collect();
    let values: Vec<&str> = lines
        .next()
        .ok_or_else(|| anyhow::anyhow!("no figures in the tool's output: {text}"))?
        .split(',')
        .map(str::trim)
        .collect();
    let at = |name: &str| -> anyhow::Result<f64> {
        let i = header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| anyhow::anyhow!("no {name} column"))?;
        Ok(values
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("no {name} value"))?
            .parse()?)
    };
    let read = at("data.consumed.in.nMsg")?;
    anyhow::ensure!(read as usize >= n, "the tool read {read} of {n} records");
    at("fetch.nMsg.sec")
}
