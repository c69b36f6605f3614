//! What publishing costs a book view: `GET /api/v1/books/{id}` throughput with folio's
//! Kafka publisher next to the same bookstore whose publisher drops every record (docs/contract.md
//! §7: the Kafka variant should keep at least 80% of the null variant's throughput).
//!
//! ```sh
//! scripts/kafka-local start
//! KAFKA_BOOTSTRAP=127.0.0.1:19092 cargo bench -p folio-tests --bench http_view
//! # FOLIO_BENCH_SECONDS (default 10) per round, FOLIO_BENCH_ROUNDS (default 2),
//! # FOLIO_BENCH_CONNECTIONS (default 32)
//! ```
//!
//! Each round starts the bookstore alone (no analytics) on SQLite in a temp dir, creates
//! one book and one reader, then keeps `FOLIO_BENCH_CONNECTIONS` keep-alive connections
//! busy viewing that book as the reader for `FOLIO_BENCH_SECONDS`. Variants alternate
//! (null, Kafka, null, Kafka…). The null variant encodes each event and drops it; the
//! Kafka variant sends it to a fresh `book.views` topic, and after the round the
//! partitions' high watermarks must have grown by exactly the views answered 200, so the
//! figure cannot come from records silently lost. Client and server share the machine.
//! The last line, `BENCH http_view ...`, is what `scripts/bench` collects.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use folio_domain::ports::{GroupConsumer, MessageBus, OutgoingRecord, RecordPublisher};
use folio_domain::topics::{Topic, TopicPartition};
use folio_domain::Result as DomainResult;
use folio_kafka::KafkaBus;
use folio_memory::MemoryBus;
use folio_tests::app::{spawn_app_with, AppOptions};
use folio_tests::bench::{env_or, load_average, setup, summary};

/// The in-process bus, except that records published to it are dropped.
struct NullBus(MemoryBus);

struct NullRecords;

#[async_trait]
impl RecordPublisher for NullRecords {
    async fn send(&self, _record: OutgoingRecord) -> DomainResult<()> {
        Ok(())
    }

    async fn flush(&self) -> DomainResult<()> {
        Ok(())
    }
}

#[async_trait]
impl MessageBus for NullBus {
    fn publisher(&self) -> Arc<dyn RecordPublisher> {
        Arc::new(NullRecords)
    }

    async fn join(&self, group: &str, topics: &[Topic]) -> DomainResult<Box<dyn GroupConsumer>> {
        self.0.join(group, topics).await
    }

    async fn provision(&self) -> DomainResult<()> {
        Ok(())
    }
}

struct Round {
    ok: u64,
    failed: u64,
    secs: f64,
    /// Per-request latencies, microseconds, sorted.
    latencies: Vec<u32>,
}

impl Round {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.secs
    }

    fn percentile(&self, p: f64) -> f64 {
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(i).copied().unwrap_or(0) as f64 / 1000.0
    }
}

/// Starts the bookstore on `bus`, views one book for `seconds`, stops it.
async fn round(
    bus: Arc<dyn MessageBus>,
    seconds: usize,
    connections: usize,
) -> anyhow::Result<Round> {
    let app = spawn_app_with(AppOptions {
        bus: Some(bus),
        analytics: false,
        ..AppOptions::default()
    })
    .await?;
    let book = app.create_book("Dune", "Science Fiction", 1999).await?;
    let token = app.register("reader@folio.test", "Reader").await?;
    let url = app.url(&format!("/books/{book}"));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(10))
        .build()?;
    let until = Instant::now() + Duration::from_secs(seconds as u64);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut latencies) = (0u64, 0u64, Vec::new());
            while Instant::now() < until {
                let t = Instant::now();
                match client.get(&url).bearer_auth(&token).send().await {
                    Ok(r) if r.status().as_u16() == 200 => {
                        let _ = r.bytes().await;
                        ok += 1;
                        latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                    }
                    _ => failed += 1,
                }
            }
            (ok, failed, latencies)
        }));
    }
    let mut r = Round {
        ok: 0,
        failed: 0,
        secs: 0.0,
        latencies: Vec::new(),
    };
    for t in tasks {
        let (ok, failed, lat) = t.await?;
        r.ok += ok;
        r.failed += failed;
        r.latencies.extend(lat);
    }
    r.secs = started.elapsed().as_secs_f64();
    r.latencies.sort_unstable();
    app.stop().await?;
    Ok(r)
}

/// The sum of the high watermarks of `book.views`: every record ever appended to it.
async fn views_on_kafka(bus: &KafkaBus) -> anyhow::Result<i64> {
    let mut consumer = bus.join("bench-watermarks", &[Topic::BookViews]).await?;
    let partitions: Vec<TopicPartition> = (0..Topic::BookViews.partitions())
        .map(|p| TopicPartition::new(Topic::BookViews, p))
        .collect();
    let marks = consumer.high_watermarks(&partitions).await?;
    consumer.leave().await?;
    anyhow::ensure!(marks.len() == partitions.len(), "watermarks of {marks:?}");
    Ok(marks.iter().map(|(_, hw)| hw).sum())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let run = setup("http").await;
    let rounds = run.rounds;
    let seconds = env_or("FOLIO_BENCH_SECONDS", 10);
    let connections = env_or("FOLIO_BENCH_CONNECTIONS", 32);
    let kafka = Arc::new(KafkaBus::connect(run.cfg.clone()).await?);
    kafka.provision().await?;
    println!(
        "GET /api/v1/books/{{id}} as a reader, {connections} connections, {seconds} s per round; load average {}",
        load_average()
    );
    let (mut best_null, mut best_kafka) = (0.0f64, 0.0f64);
    let mut published = views_on_kafka(&kafka).await?;
    for n in 1..=rounds {
        for variant in ["null", "kafka"] {
            let bus: Arc<dyn MessageBus> = if variant == "null" {
                Arc::new(NullBus(MemoryBus::new()))
            } else {
                kafka.clone()
            };
            let r = round(bus, seconds, connections).await?;
            println!(
                "round {n}: {variant:<5} publisher {:>8.0} views/s  p50 {:.2} ms  p99 {:.2} ms  ({} ok, {} failed)",
                r.rate(),
                r.percentile(0.5),
                r.percentile(0.99),
                r.ok,
                r.failed
            );
            if variant == "null" {
                best_null = best_null.max(r.rate());
            } else {
                best_kafka = best_kafka.max(r.rate());
                let now = views_on_kafka(&kafka).await?;
                anyhow::ensure!(
                    now - published == r.ok as i64,
                    "{} views answered 200 but {} records reached book.views",
                    r.ok,
                    now - published
                );
                published = now;
            }
        }
    }
    println!(
        "best of {rounds}: null {best_null:.0} views/s, kafka {best_kafka:.0} views/s; kafka / null = {:.2}; load average {}",
        best_kafka / best_null,
        load_average()
    );
    summary(
        "http_view",
        &[
            ("null_vps", format!("{best_null:.0}")),
            ("kafka_vps", format!("{best_kafka:.0}")),
            ("ratio", format!("{:.2}", best_kafka / best_null)),
        ],
    );
    Ok(())
}
