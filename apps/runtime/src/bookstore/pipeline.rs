//! The live figures behind `/api/v1/admin/pipeline`: this bookstore's spool, ingest and
//! outbox, the analytics worker when it shares the process, the analytics group's lag on
//! the bus, and when events were accepted.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use folio_domain::analytics::{unread_records, WorkerStats};
use folio_domain::pipeline::EventMarks;
use folio_domain::ports::{MessageBus, Outbox};
use folio_domain::services::IngestStats;
use folio_domain::topics::Topic;
use folio_http::api::{AnalyticsStatus, IngestStatus, PipelineFigures, PipelineProbe, SpoolStatus};
use folio_spool::SpoolingPublisher;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::debug;

use crate::analytics;

/// The analytics worker sharing this process (the embedded `folio`).
#[derive(Clone)]
pub struct EmbeddedAnalytics {
    /// None when the worker was left out on purpose (`folio --without-analytics`).
    pub stats: Option<Arc<WorkerStats>>,
    pub window: Duration,
    pub grace: Duration,
}

pub(crate) struct BookstoreProbe {
    pub spool: SpoolingPublisher,
    pub ingest: Arc<IngestStats>,
    pub outbox: Arc<dyn Outbox>,
    pub marks: Arc<EventMarks>,
    pub analytics: Option<Arc<WorkerStats>>,
    pub embedded: Option<EmbeddedAnalytics>,
    pub lag: AnalyticsLag,
}

/// How long an answer about the analytics group's lag is reused: the dashboard asks every
/// few seconds, and every admin's page would otherwise ask the brokers each time.
const LAG_FRESH: Duration = Duration::from_secs(5);
/// How long `/pipeline` waits for a refresh of the lag before it answers without it.
const LAG_WAIT: Duration = Duration::from_millis(500);
/// The oldest answer still shown while a refresh is under way; older, the lag is null.
const LAG_SHOWN_AT_MOST: Duration = Duration::from_secs(15);
/// A refresh that takes longer than this counts as no answer (the Kafka adapter gives up
/// sooner, this bounds any bus).
const LAG_GIVE_UP: Duration = Duration::from_secs(10);

/// The analytics group's lag on the event topics ([`unread_records`] over
/// [`MessageBus::group_offsets`]), asked in the background and reused for [`LAG_FRESH`],
/// so however many pages ask and however slow the bus is, a request waits at most
/// [`LAG_WAIT`], and several requests share one question to the bus.
#[derive(Clone)]
pub(crate) struct AnalyticsLag {
    bus: Arc<dyn MessageBus>,
    state: Arc<Mutex<LagState>>,
    answered: Arc<Notify>,
}

#[derive(Default)]
struct LagState {
    /// The last answer and when it came: `None` when the bus could not say or failed.
    last: Option<(Instant, Option<u64>)>,
    refreshing: bool,
}

impl AnalyticsLag {
    pub(crate) fn new(bus: Arc<dyn MessageBus>) -> Self {
        AnalyticsLag {
            bus,
            state: Arc::default(),
            answered: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LagState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lag, when the bus has said recently.
    pub(crate) async fn get(&self) -> Option<u64> {
        let answered = self.answered.notified();
        {
            let mut st = self.lock();
            if let Some((at, lag)) = st.last {
                if at.elapsed() < LAG_FRESH {
                    return lag;
                }
            }
            if !st.refreshing {
                st.refreshing = true;
                let me = self.clone();
                tokio::spawn(async move { me.refresh().await });
            }
        }
        let _ = tokio::time::timeout(LAG_WAIT, answered).await;
        match self.lock().last {
            Some((at, lag)) if at.elapsed() < LAG_SHOWN_AT_MOST => lag,
            _ => None,
        }
    }

    async fn refresh(&self) {
        let asked = tokio::time::timeout(
            LAG_GIVE_UP,
            self.bus.group_offsets(analytics::GROUP, &Topic::EVENTS),
        )
        .await;
        let lag = match asked {
            Ok(Ok(offsets)) => offsets.map(|o| unread_records(&o)),
            Ok(Err(e)) => {
                debug!(error = %e, "the bus did not say where the analytics group stands");
                None
            }
            Err(_) => {
                debug!(after = ?LAG_GIVE_UP, "the bus did not say where the analytics group stands");
                None
            }
        };
        {
            let mut st = self.lock();
            st.last = Some((Instant::now(), lag));
            st.refreshing = false;
        }
        self.answered.notify_waiters();
    }
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
            analytics_lag: self.lag.get().await,
        }
    }

    fn pending_since(&self, covered_until: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        self.marks.pending_since(covered_until)
    }

    fn last_event(&self) -> Option<DateTime<Utc>> {
        self.marks.last()
    }
}

#[cfg(test)]
mod tests {
    use folio_domain::ports::{GroupConsumer, PartitionOffsets, RecordPublisher};
    use folio_domain::topics::TopicPartition;
    use folio_domain::Result;
    use folio_memory::MemoryBus;

    use super::*;

    /// The in-process bus, except that `group_offsets` answers only after `delay`.
    struct SlowBus {
        inner: MemoryBus,
        delay: Duration,
    }

    #[async_trait]
    impl MessageBus for SlowBus {
        fn publisher(&self) -> Arc<dyn RecordPublisher> {
            self.inner.publisher()
        }

        async fn join(&self, group: &str, topics: &[Topic]) -> Result<Box<dyn GroupConsumer>> {
            self.inner.join(group, topics).await
        }

        async fn provision(&self) -> Result<()> {
            Ok(())
        }

        async fn group_offsets(
            &self,
            group: &str,
            topics: &[Topic],
        ) -> Result<Option<Vec<PartitionOffsets>>> {
            tokio::time::sleep(self.delay).await;
            self.inner.group_offsets(group, topics).await
        }
    }

    fn with_events(n: usize) -> MemoryBus {
        let bus = MemoryBus::new();
        for i in 0..n {
            let tp = TopicPartition::new(Topic::EVENTS[i % Topic::EVENTS.len()], 0);
            bus.append(tp, None, b"{}".to_vec()).expect("appended");
        }
        bus
    }

    #[tokio::test(start_paused = true)]
    async fn the_lag_is_asked_once_per_few_seconds_and_reused() {
        let bus = with_events(7);
        let lag = AnalyticsLag::new(Arc::new(bus.clone()));
        assert_eq!(lag.get().await, Some(7));
        bus.append(
            TopicPartition::new(Topic::BookViews, 1),
            None,
            b"{}".to_vec(),
        )
        .expect("appended");
        // Fresh for LAG_FRESH: the same answer, without asking again.
        assert_eq!(lag.get().await, Some(7));
        tokio::time::advance(LAG_FRESH).await;
        assert_eq!(lag.get().await, Some(8));
    }

    #[tokio::test(start_paused = true)]
    async fn a_bus_that_does_not_answer_leaves_the_lag_null_after_a_short_wait() {
        let slow = SlowBus {
            inner: with_events(3),
            delay: Duration::from_secs(3600),
        };
        let lag = AnalyticsLag::new(Arc::new(slow));
        let asked = Instant::now();
        assert_eq!(lag.get().await, None);
        assert_eq!(asked.elapsed(), LAG_WAIT);
        // The refresh gives up at LAG_GIVE_UP; its failure is reused like an answer.
        tokio::time::advance(LAG_GIVE_UP).await;
        let asked = Instant::now();
        assert_eq!(lag.get().await, None);
        assert_eq!(asked.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_refresh_shows_the_last_answer_while_it_is_recent() {
        let slow = SlowBus {
            inner: with_events(4),
            delay: Duration::from_secs(2),
        };
        let lag = AnalyticsLag::new(Arc::new(slow));
        // The first refresh outlasts the wait: null, then the answer once it came.
        assert_eq!(lag.get().await, None);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(lag.get().await, Some(4));
        // Stale: the next refresh is slower than the wait, so the last answer stands.
        tokio::time::advance(LAG_FRESH).await;
        assert_eq!(lag.get().await, Some(4));
    }
}
