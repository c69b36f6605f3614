//! Every role's own metrics, through the `metrics` crate: one Prometheus recorder per role
//! (not a global one, so several roles in one process, tests and the embedded `folio`,
//! never mix their figures), fed by sources read at each scrape and by what the role
//! records as it goes (sink latency, the outbox sampler).
//!
//! Names follow Prometheus' conventions: the unit in the name (`_seconds`, `_bytes`,
//! `_records`), `_total` on counters, histograms for latencies. The HTTP layer's
//! `http_requests_total` and `http_request_duration_seconds` come from `folio-http`,
//! through the same crate.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use folio_domain::analytics::{Aggregate, WorkerStats};
use folio_domain::ports::{Clock, MessageBus, Outbox, StatsSink, UpsertReport};
use folio_domain::services::IngestStats;
use folio_http::MetricsFn;
use folio_spool::SpoolingPublisher;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics::{with_local_recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// Latency buckets in seconds: a local SQLite upsert to a slow remote PostgreSQL.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

type Source = Box<dyn Fn() + Send + Sync>;

/// One role's metrics registry.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Read at each scrape, inside the recorder.
    sources: Mutex<Vec<Source>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            // Only an empty bucket list fails, and BUCKETS is not empty.
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        Arc::new(Metrics {
            recorder,
            handle,
            sources: Mutex::new(Vec::new()),
        })
    }

    /// Runs `f` with this registry as the `metrics` macros' recorder.
    pub fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        with_local_recorder(&self.recorder, f)
    }

    /// Adds a source read at every scrape; `describe` runs once, now.
    fn source(&self, describe: impl FnOnce(), read: impl Fn() + Send + Sync + 'static) {
        self.record(describe);
        self.lock().push(Box::new(read));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Source>> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        {
            let sources = self.lock();
            self.record(|| sources.iter().for_each(|s| s()));
        }
        self.handle.run_upkeep();
        self.handle.render()
    }

    /// [`Metrics::render`] for `/metrics`.
    pub fn text(self: &Arc<Self>) -> MetricsFn {
        let me = self.clone();
        Arc::new(move || me.render())
    }

    /// The analytics worker's figures.
    pub fn analytics_worker(&self, stats: Arc<WorkerStats>) {
        self.source(
            || {
                describe_counter!(
                    "folio_analytics_events_consumed_total",
                    Unit::Count,
                    "Records the analytics worker read, by event topic."
                );
                describe_counter!(
                    "folio_analytics_events_counted_total",
                    Unit::Count,
                    "Events folded into windows."
                );
                describe_counter!(
                    "folio_analytics_duplicates_dropped_total",
                    Unit::Count,
                    "Events dropped because their event_id was already counted."
                );
                describe_counter!(
                    "folio_analytics_late_events_total",
                    Unit::Count,
                    "Events that arrived after their window closed, folded into its correction."
                );
                describe_counter!(
                    "folio_analytics_corrections_total",
                    Unit::Count,
                    "Correction aggregates published (per window and book a correction moved)."
                );
                describe_counter!(
                    "folio_analytics_windows_closed_total",
                    Unit::Count,
                    "Windows closed, their aggregates then published."
                );
                describe_counter!(
                    "folio_analytics_aggregates_published_total",
                    Unit::Count,
                    "Aggregates published to analytics.aggregated-stats."
                );
                describe_counter!(
                    "folio_analytics_dead_letters_total",
                    Unit::Count,
                    "Records sent to analytics.dlq, by reason."
                );
                describe_counter!(
                    "folio_analytics_retries_total",
                    Unit::Count,
                    "Worker steps that failed (the bus away) and were retried after a backoff."
                );
                describe_counter!(
                    "folio_analytics_commits_total",
                    Unit::Count,
                    "Offset commits of the analytics group."
                );
                describe_gauge!(
                    "folio_analytics_windows_open",
                    Unit::Count,
                    "Windows open now, over every owned partition."
                );
            },
            move || {
                let s = &stats;
                for (topic, n) in s.consumed() {
                    counter!("folio_analytics_events_consumed_total", "topic" => topic.name())
                        .absolute(n);
                }
                for (reason, n) in s.dead_letters() {
                    counter!("folio_analytics_dead_letters_total", "reason" => reason.as_str())
                        .absolute(n);
                }
                let get = WorkerStats::get;
                counter!("folio_analytics_events_counted_total").absolute(get(&s.counted));
                counter!("folio_analytics_duplicates_dropped_total").absolute(get(&s.duplicates));
                counter!("folio_analytics_late_events_total").absolute(get(&s.late));
                counter!("folio_analytics_corrections_total").absolute(get(&s.corrections));
                counter!("folio_analytics_windows_closed_total").absolute(get(&s.windows_closed));
                counter!("folio_analytics_aggregates_published_total")
                    .absolute(get(&s.aggregates_published));
                counter!("folio_analytics_retries_total").absolute(get(&s.retries));
                counter!("folio_analytics_commits_total").absolute(get(&s.commits));
                gauge!("folio_analytics_windows_open").set(get(&s.windows_open) as f64);
            },
        );
    }

    /// The statistics ingest's figures.
    pub fn ingest(&self, stats: Arc<IngestStats>) {
        self.source(
            || {
                describe_counter!(
                    "folio_ingest_aggregates_stored_total",
                    Unit::Count,
                    "Aggregates stored or replaced by the statistics ingest."
                );
                describe_counter!(
                    "folio_ingest_aggregates_ignored_total",
                    Unit::Count,
                    "Aggregates ignored because a stored one covers as many offsets (replays)."
                );
                describe_counter!(
                    "folio_ingest_dead_letters_total",
                    Unit::Count,
                    "Aggregates sent to analytics.dlq, by reason."
                );
                describe_counter!(
                    "folio_ingest_retries_total",
                    Unit::Count,
                    "Ingest steps that failed (the bus or the store away) and were retried."
                );
            },
            move || {
                let get =
                    |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
                counter!("folio_ingest_aggregates_stored_total").absolute(get(&stats.stored));
                counter!("folio_ingest_aggregates_ignored_total").absolute(get(&stats.ignored));
                counter!("folio_ingest_dead_letters_total", "reason" => "undecodable")
                    .absolute(get(&stats.dead_lettered));
                counter!("folio_ingest_retries_total").absolute(get(&stats.retries));
            },
        );
    }

    /// The event spool's figures.
    pub fn spool(&self, spool: SpoolingPublisher) {
        self.source(
            || {
                for (name, help) in [
                    (
                        "folio_spool_events_accepted_total",
                        "View and download events written to the spool.",
                    ),
                    (
                        "folio_spool_events_refused_total",
                        "Events refused because the spool was full or its disk failed.",
                    ),
                    (
                        "folio_spool_events_delivered_total",
                        "Spooled events the bus acknowledged.",
                    ),
                    (
                        "folio_spool_events_replayed_total",
                        "Of those, events replayed from disk after a failure or a restart.",
                    ),
                    (
                        "folio_spool_delivery_failures_total",
                        "Event deliveries that failed and were retried from the spool.",
                    ),
                ] {
                    describe_counter!(name, Unit::Count, help);
                }
                describe_gauge!(
                    "folio_spool_events_pending",
                    Unit::Count,
                    "Events accepted and not yet acknowledged by the bus."
                );
                describe_gauge!(
                    "folio_spool_events_buffered",
                    Unit::Count,
                    "Events waiting in memory for the bus."
                );
                describe_gauge!(
                    "folio_spool_bytes",
                    Unit::Bytes,
                    "Bytes of the spool on disk."
                );
                describe_gauge!(
                    "folio_spool_replaying",
                    Unit::Count,
                    "1 while the spool replays from disk because the bus failed or stalled."
                );
            },
            move || {
                let s = spool.stats();
                counter!("folio_spool_events_accepted_total").absolute(s.accepted);
                counter!("folio_spool_events_refused_total").absolute(s.refused);
                counter!("folio_spool_events_delivered_total").absolute(s.delivered);
                counter!("folio_spool_events_replayed_total").absolute(s.replayed);
                counter!("folio_spool_delivery_failures_total").absolute(s.failed_attempts);
                gauge!("folio_spool_events_pending").set(s.pending as f64);
                gauge!("folio_spool_events_buffered").set(s.buffered as f64);
                gauge!("folio_spool_bytes").set(s.bytes as f64);
                gauge!("folio_spool_replaying").set(f64::from(u8::from(s.replaying)));
            },
        );
    }

    /// The bus's figures: each consumer's lag per partition, and the producers' records.
    pub fn bus(&self, bus: Arc<dyn MessageBus>) {
        self.source(
            || {
                describe_gauge!(
                    "folio_consumer_lag_records",
                    Unit::Count,
                    "Records between a consumer's fetch position and the partition's high \
                     watermark, by group, topic and partition."
                );
                describe_counter!(
                    "folio_producer_records_sent_total",
                    Unit::Count,
                    "Records handed to the bus's producers."
                );
                describe_counter!(
                    "folio_producer_records_acked_total",
                    Unit::Count,
                    "Records the bus acknowledged."
                );
                describe_counter!(
                    "folio_producer_send_errors_total",
                    Unit::Count,
                    "Records whose delivery failed (their sender retries or reports them)."
                );
                describe_gauge!(
                    "folio_producer_buffered_records",
                    Unit::Count,
                    "Records buffered or awaiting acknowledgement now."
                );
            },
            move || {
                for l in bus.consumer_lag() {
                    gauge!(
                        "folio_consumer_lag_records",
                        "group" => l.group,
                        "topic" => l.partition.topic.name(),
                        "partition" => l.partition.partition.to_string(),
                    )
                    .set(l.lag as f64);
                }
                let p = bus.producer_stats();
                counter!("folio_producer_records_sent_total").absolute(p.sent);
                counter!("folio_producer_records_acked_total").absolute(p.acked);
                counter!("folio_producer_send_errors_total").absolute(p.failed);
                gauge!("folio_producer_buffered_records").set(p.in_flight as f64);
            },
        );
    }

    /// Samples the outbox's backlog and its oldest entry's age every `every` until `stop`
    /// is set (the store is asked off the scrape's path).
    pub async fn sample_outbox(
        self: Arc<Self>,
        outbox: Arc<dyn Outbox>,
        clock: Arc<dyn Clock>,
        every: Duration,
        stop: folio_domain::analytics::StopFlag,
    ) {
        self.record(|| {
            describe_gauge!(
                "folio_outbox_backlog_entries",
                Unit::Count,
                "Outbox entries waiting to be published."
            );
            describe_gauge!(
                "folio_outbox_oldest_age_seconds",
                Unit::Seconds,
                "Age of the oldest outbox entry waiting to be published; 0 when none waits."
            );
        });
        while !stop.is_stopped() {
            let backlog = outbox.backlog().await;
            let oldest = outbox.oldest_pending().await;
            self.record(|| {
                if let Ok(n) = backlog {
                    gauge!("folio_outbox_backlog_entries").set(n as f64);
                }
                if let Ok(oldest) = oldest {
                    let age = oldest.map_or(0.0, |t| {
                        (clock.now() - t).num_milliseconds().max(0) as f64 / 1000.0
                    });
                    gauge!("folio_outbox_oldest_age_seconds").set(age);
                }
            });
            stop.sleep(clock.as_ref(), every).await;
        }
    }

    /// `sink`, counting its upserts by outcome and timing them.
    pub fn sink(self: &Arc<Self>, sink: Arc<dyn StatsSink>) -> Arc<dyn StatsSink> {
        self.record(|| {
            describe_counter!(
                "folio_sink_upserts_total",
                Unit::Count,
                "Statistics upserts (batches of aggregates), by outcome (ok, error)."
            );
            describe_counter!(
                "folio_sink_aggregates_total",
                Unit::Count,
                "Aggregates upserted, by result (inserted, replaced, ignored)."
            );
            describe_histogram!(
                "folio_sink_upsert_duration_seconds",
                Unit::Seconds,
                "Time one statistics upsert took."
            );
        });
        Arc::new(MeteredSink {
            inner: sink,
            metrics: self.clone(),
        })
    }
}

struct MeteredSink {
    inner: Arc<dyn StatsSink>,
    metrics: Arc<Metrics>,
}

#[async_trait]
impl StatsSink for MeteredSink {
    async fn upsert(&self, aggregates: &[Aggregate]) -> folio_domain::Result<UpsertReport> {
        let start = Instant::now();
        let result = self.inner.upsert(aggregates).await;
        let elapsed = start.elapsed().as_secs_f64();
        self.metrics.record(|| {
            histogram!("folio_sink_upsert_duration_seconds").record(elapsed);
            let outcome = if result.is_ok() { "ok" } else { "error" };
            counter!("folio_sink_upserts_total", "outcome" => outcome).increment(1);
            if let Ok(r) = &result {
                for (kind, n) in [
                    ("inserted", r.inserted),
                    ("replaced", r.replaced),
                    ("ignored", r.ignored),
                ] {
                    counter!("folio_sink_aggregates_total", "result" => kind).increment(n);
                }
            }
        });
        result
    }
}
