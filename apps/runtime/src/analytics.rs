//! The analytics role: one worker in group `analytics-service-group` that consumes the
//! event topics and publishes per-window aggregates.

use std::sync::Arc;

use anyhow::Context;
use folio_domain::analytics::{AnalyticsWorker, StopFlag, WindowSpec, WorkerStats};
use folio_domain::ports::{Clock, MessageBus};
use folio_domain::topics::Topic;
use tracing::info;

/// The analytics service's consumer group.
pub const GROUP: &str = "analytics-service-group";

/// Runs one analytics worker until `stop` is set: joins the group, aggregates, publishes
/// closed windows, and on stop commits finished work and leaves the group. Its counters go
/// to `stats` once it has joined (for `/metrics`, [`crate::Metrics::analytics_worker`]).
pub async fn run(
    bus: Arc<dyn MessageBus>,
    clock: Arc<dyn Clock>,
    spec: WindowSpec,
    stop: StopFlag,
    stats: Option<tokio::sync::oneshot::Sender<Arc<WorkerStats>>>,
) -> anyhow::Result<()> {
    let consumer = tokio::select! {
        joined = bus.join(GROUP, &Topic::EVENTS) => joined.context("joining the analytics group")?,
        _ = stop.stopped() => return Ok(()),
    };
    let worker = AnalyticsWorker::new(consumer, bus.publisher(), clock, spec);
    if let Some(tx) = stats {
        let _ = tx.send(worker.stats());
    }
    info!(
        group = GROUP,
        window_ms = spec.length_ms(),
        grace_ms = spec.grace_ms(),
        "analytics worker started"
    );
    worker.run(stop).await.context("analytics worker")
}
