//! The live figures behind `/api/v1/admin/pipeline`: this bookstore's spool, ingest and
//! outbox, the analytics worker when it shares the process, and when views and downloads
//! were accepted.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use folio_domain::analytics::WorkerStats;
use folio_domain::pipeline::EventMarks;
use folio_domain::ports::Outbox;
use folio_domain::services::IngestStats;
use folio_http::api::{AnalyticsStatus, IngestStatus, PipelineFigures, PipelineProbe, SpoolStatus};
use folio_spool::SpoolingPublisher;

/// Events on the bus the analytics group has not committed, where the bus can say.
pub type LagFn = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The analytics worker sharing this process (the embedded `folio`).
#[derive(Clone)]
pub struct EmbeddedAnalytics {
    /// None when the worker was left out on purpose (`folio --without-analytics`).
    pub stats: Option<Arc<WorkerStats>>,
    pub window: Duration,
    pub grace: Duration,
    /// The analytics group's lag on the in-process bus.
    pub lag: Option<LagFn>,
}

pub(crate) struct BookstoreProbe {
    pub spool: SpoolingPublisher,
    pub ingest: Arc<IngestStats>,
    pub outbox: Arc<dyn Outbox>,
    pub marks: Arc<EventMarks>,
    pub analytics: Option<Arc<WorkerStats>>,
    pub embedded: Option<EmbeddedAnalytics>,
}

#[async_trait]
impl PipelineProbe for BookstoreProbe {
    async fn figures(&self) -> PipelineFigures {
        let s = self.spool.stats();
        let worker = self
            .embedded
            .as_ref()
            .and_then(|e| e.stats.as_ref())
            .or(self.analytics.as_ref());
        PipelineFigures {
            window: self.embedded.as_ref().map(|e| e.window),
            grace: self.embedded.as_ref().map(|e| e.grace),
            spool: Some(SpoolStatus {
                pending: s.pending,
                bytes: s.bytes,
                replaying: s.replaying,
                accepted: s.accepted,
                delivered: s.delivered,
                replayed: s.replayed,
                refused: s.refused,
            }),
            ingest: Some(IngestStatus {
                stored: self.ingest.stored.load(Ordering::Relaxed),
                ignored: self.ingest.ignored.load(Ordering::Relaxed),
                dead_letters: self.ingest.dead_lettered.load(Ordering::Relaxed),
            }),
            analytics: worker.map(|a| AnalyticsStatus {
                events_counted: WorkerStats::get(&a.counted),
                duplicates: WorkerStats::get(&a.duplicates),
                late: WorkerStats::get(&a.late),
                aggregates_published: WorkerStats::get(&a.aggregates_published),
                windows_open: WorkerStats::get(&a.windows_open),
                dead_letters: WorkerStats::get(&a.dead_lettered),
                too_late: WorkerStats::get(&a.too_late),
            }),
            outbox_backlog: self.outbox.backlog().await.ok(),
            analytics_lag: self
                .embedded
                .as_ref()
                .and_then(|e| e.lag.as_ref())
                .map(|lag| lag()),
        }
    }

    fn pending_since(&self, covered_until: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        self.marks.pending_since(covered_until)
    }

    fn last_event(&self) -> Option<DateTime<Utc>> {
        self.marks.last()
    }
}
