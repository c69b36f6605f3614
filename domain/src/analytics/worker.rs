//! The analytics worker: polls the event topics as a group member, folds records into
//! per-partition windows, publishes closed windows, and commits what is finished.
//!
//! Order of effects, which is what makes a `kill -9` at any moment harmless: aggregates and
//! dead letters are sent and flushed (acknowledged by the bus) first; only then are the
//! partitions' checkpoints committed. A crash before the commit replays the open windows,
//! and the sink's upsert ignores what it already has.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tracing::{debug, info, warn};

use super::partition::{Ingested, PartitionWindows};
use super::window::WindowSpec;
use crate::events::Event;
use crate::ports::{
    Clock, ConsumerEvent, GroupConsumer, OffsetCommit, OutgoingRecord, RecordPublisher,
};
use crate::topics::{Topic, TopicPartition};
use crate::Result;

/// A shared stop signal: set it and running loops finish their step and stop cleanly.
/// [`StopFlag::stopped`] resolves when it is set, so a loop's sleeps and backoffs end at
/// once instead of running out ([`StopFlag::sleep`]).
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<StopState>);

#[derive(Debug, Default)]
struct StopState {
    stopped: AtomicBool,
    next_waiter: AtomicU64,
    /// Wakers of the [`Stopped`] futures being polled, by their id.
    waiters: Mutex<Vec<(u64, Waker)>>,
}

impl StopFlag {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stop(&self) {
        self.0.stopped.store(true, Ordering::SeqCst);
        let waiters = std::mem::take(&mut *self.waiters());
        for (_, w) in waiters {
            w.wake();
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.0.stopped.load(Ordering::SeqCst)
    }

    /// Resolves once [`StopFlag::stop`] has been called (at once if it already was).
    pub fn stopped(&self) -> Stopped<'_> {
        Stopped {
            flag: self,
            id: self.0.next_waiter.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Sleeps `d` on `clock`, or less if the flag is set meanwhile.
    pub async fn sleep(&self, clock: &dyn Clock, d: Duration) {
        let mut sleep = clock.sleep(d);
        let mut stopped = self.stopped();
        std::future::poll_fn(|cx| {
            if Pin::new(&mut stopped).poll(cx).is_ready() {
                return Poll::Ready(());
            }
            sleep.as_mut().poll(cx)
        })
        .await
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Waker)>> {
        self.0.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The future of [`StopFlag::stopped`].
#[derive(Debug)]
pub struct Stopped<'a> {
    flag: &'a StopFlag,
    id: u64,
}

impl Future for Stopped<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.flag.is_stopped() {
            return Poll::Ready(());
        }
        let mut waiters = self.flag.waiters();
        // Checked again under the lock: a stop between the two checks has woken nobody.
        if self.flag.is_stopped() {
            return Poll::Ready(());
        }
        match waiters.iter_mut().find(|(id, _)| *id == self.id) {
            Some((_, w)) => w.clone_from(cx.waker()),
            None => waiters.push((self.id, cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.flag.waiters().retain(|(id, _)| *id != self.id);
    }
}

/// Why a record went to `analytics.dlq`, as the `reason` label of the dead-letter metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// Not an event folio can decode.
    Undecodable,
    /// An event of another topic's type.
    WrongTopic,
    /// Older than the lateness horizon.
    TooLate,
    /// Decoded, but refused by the window logic (such as a time outside any window).
    Rejected,
}

impl DeadReason {
    pub const ALL: [DeadReason; 4] = [
        DeadReason::Undecodable,
        DeadReason::WrongTopic,
        DeadReason::TooLate,
        DeadReason::Rejected,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            DeadReason::Undecodable => "undecodable",
            DeadReason::WrongTopic => "wrong_topic",
            DeadReason::TooLate => "too_late",
            DeadReason::Rejected => "rejected",
        }
    }
}

/// A record that cannot be processed, on its way to `analytics.dlq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub origin: TopicPartition,
    pub offset: i64,
    pub value: Vec<u8>,
    pub reason: String,
}

impl DeadLetter {
    /// Header names on dead letters.
    pub const ORIGIN_TOPIC: &'static str = "folio.origin.topic";
    pub const ORIGIN_PARTITION: &'static str = "folio.origin.partition";
    pub const ORIGIN_OFFSET: &'static str = "folio.origin.offset";
    pub const ERROR: &'static str = "folio.error";

    /// The record to publish: the original value, keyed by the source topic, with the
    /// origin and reason in headers.
    pub fn to_record(&self) -> OutgoingRecord {
        OutgoingRecord {
            topic: Topic::DeadLetters,
            key: self.origin.topic.name().as_bytes().to_vec(),
            value: self.value.clone(),
            headers: vec![
                (
                    Self::ORIGIN_TOPIC.into(),
                    self.origin.topic.name().as_bytes().to_vec(),
                ),
                (
                    Self::ORIGIN_PARTITION.into(),
                    self.origin.partition.to_string().into_bytes(),
                ),
                (
                    Self::ORIGIN_OFFSET.into(),
                    self.offset.to_string().into_bytes(),
                ),
                (Self::ERROR.into(), self.reason.clone().into_bytes()),
            ],
        }
    }
}

/// Counters a worker keeps, for metrics and tests.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub counted: AtomicU64,
    pub duplicates: AtomicU64,
    pub replayed: AtomicU64,
    /// Late events: their window had closed, and they went into its correction.
    pub late: AtomicU64,
    /// Correction aggregates published (one per window and book a correction moved).
    pub corrections: AtomicU64,
    /// Events older than the lateness horizon, dead-lettered with reason `too_late`.
    pub too_late: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub aggregates_published: AtomicU64,
    pub windows_open: AtomicU64,
    /// Windows closed (their aggregates then published).
    pub windows_closed: AtomicU64,
    pub commits: AtomicU64,
    /// Steps that failed (the bus unavailable) and were retried after a backoff.
    pub retries: AtomicU64,
    /// Records read, by event topic (in [`Topic::EVENTS`] order).
    consumed: [AtomicU64; Topic::EVENTS.len()],
    /// Dead letters, by reason (in [`DeadReason::ALL`] order).
    dead_by_reason: [AtomicU64; DeadReason::ALL.len()],
}

impl WorkerStats {
    fn bump(c: &AtomicU64, by: u64) {
        c.fetch_add(by, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Records read from each event topic.
    pub fn consumed(&self) -> impl Iterator<Item = (Topic, u64)> + '_ {
        Topic::EVENTS
            .iter()
            .zip(&self.consumed)
            .map(|(t, c)| (*t, Self::get(c)))
    }

    /// Dead letters sent, by reason.
    pub fn dead_letters(&self) -> impl Iterator<Item = (DeadReason, u64)> + '_ {
        DeadReason::ALL
            .iter()
            .zip(&self.dead_by_reason)
            .map(|(r, c)| (*r, Self::get(c)))
    }

    fn read(&self, topic: Topic, records: usize) {
        if let Some(c) = Topic::EVENTS
            .iter()
            .position(|t| *t == topic)
            .and_then(|i| self.consumed.get(i))
        {
            Self::bump(c, records as u64);
        }
    }

    fn dead_lettered(&self, reason: DeadReason) {
        Self::bump(&self.dead_lettered, 1);
        if let Some(c) = DeadReason::ALL
            .iter()
            .position(|r| *r == reason)
            .and_then(|i| self.dead_by_reason.get(i))
        {
            Self::bump(c, 1);
        }
    }
}

/// The analytics role's loop.
pub struct AnalyticsWorker {
    consumer: Box<dyn GroupConsumer>,
    publisher: Arc<dyn RecordPublisher>,
    clock: Arc<dyn Clock>,
    spec: WindowSpec,
    poll_wait: Duration,
    partitions: HashMap<TopicPartition, PartitionWindows>,
    /// Records sent but not yet flushed; re-sent after a failed flush.
    unflushed: Vec<OutgoingRecord>,
    stats: Arc<WorkerStats>,
}

impl AnalyticsWorker {
    pub fn new(
        consumer: Box<dyn GroupConsumer>,
        publisher: Arc<dyn RecordPublisher>,
        clock: Arc<dyn Clock>,
        spec: WindowSpec,
    ) -> Self {
        // Poll often enough that an idle window closes promptly after its grace period.
        let poll_wait = Duration::from_millis((spec.length_ms() / 10).clamp(20, 250) as u64);
        AnalyticsWorker {
            consumer,
            publisher,
            clock,
            spec,
            poll_wait,
            partitions: HashMap::new(),
            unflushed: Vec::new(),
            stats: Arc::new(WorkerStats::default()),
        }
    }

    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Runs until `stop` is set, then commits finished work and leaves the group. A failed
    /// step (broker unavailable) is retried after a pause; nothing is committed for it.
    pub async fn run(mut self, stop: StopFlag) -> Result<()> {
        let mut backoff = Duration::from_millis(100);
        while !stop.is_stopped() {
            match self.step().await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    warn!(error = %e, ?backoff, "analytics step failed; retrying");
                    WorkerStats::bump(&self.stats.retries, 1);
                    stop.sleep(self.clock.as_ref(), backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.shutdown().await
    }

    /// Reads what is already on the bus, publishes the open windows' figures so far,
    /// commits every partition's checkpoint and leaves the group.
    pub async fn shutdown(&mut self) -> Result<()> {
        for _ in 0..1000 {
            match self.consumer.poll(Duration::ZERO).await {
                Ok(ConsumerEvent::Idle) | Err(_) => break,
                Ok(ev) => {
                    if self.handle(ev).await.is_err() {
                        break;
                    }
                }
            }
        }
        for p in self.partitions.values() {
            for a in p.snapshot() {
                self.unflushed.push(aggregate_record(&a));
            }
        }
        if self.flush_pending().await.is_ok() {
            if self.commit(true).await {
                // Corrections the final commit released: published for the in-process bus,
                // whose next start does not replay; a Kafka owner would rebuild them.
                let now = self.clock.now().timestamp_millis();
                for p in self.partitions.values_mut() {
                    if p.has_ready() {
                        for a in p.close_due(now) {
                            self.unflushed.push(aggregate_record(&a));
                        }
                    }
                }
                if let Err(e) = self.flush_pending().await {
                    warn!(error = %e, "corrections released at shutdown were not delivered; the next owner rebuilds them");
                }
            } else {
                warn!("final commit failed; the next owner replays open windows");
            }
        }
        self.consumer.leave().await?;
        info!("analytics worker left its group");
        Ok(())
    }

    /// One poll and everything it leads to.
    pub async fn step(&mut self) -> Result<()> {
        // Finish what a failed step left before taking more.
        self.flush_pending().await?;
        let ev = self.consumer.poll(self.poll_wait).await?;
        self.handle(ev).await
    }

    async fn handle(&mut self, ev: ConsumerEvent) -> Result<()> {
        match ev {
            ConsumerEvent::Assigned(list) => {
                for a in list {
                    info!(partition = %a.partition, committed = ?a.committed.as_ref().map(|c| c.offset), "partition assigned");
                    self.partitions.insert(
                        a.partition,
                        PartitionWindows::resume(a.partition, self.spec, a.committed.as_ref()),
                    );
                }
            }
            ConsumerEvent::Revoked(list) => {
                for tp in list {
                    info!(partition = %tp, "partition revoked");
                    self.partitions.remove(&tp);
                }
            }
            ConsumerEvent::Batch(batch) => {
                let Some(p) = self.partitions.get_mut(&batch.partition) else {
                    debug!(partition = %batch.partition, "batch for a partition not owned; ignored");
                    return Ok(());
                };
                let mut dead = false;
                self.stats.read(batch.partition.topic, batch.records.len());
                for r in &batch.records {
                    // Re-read only for the duplicate check: dead-lettered the first time.
                    let reread = p.rereads(r.offset);
                    let reason = match Event::decode(&r.value) {
                        Err(e) => {
                            p.skip(r.offset);
                            Some((DeadReason::Undecodable, format!("undecodable: {e}")))
                        }
                        Ok(ev) if ev.topic() != batch.partition.topic => {
                            p.skip(r.offset);
                            Some((
                                DeadReason::WrongTopic,
                                format!(
                                    "a {} event does not belong on {}",
                                    ev.type_name(),
                                    batch.partition.topic
                                ),
                            ))
                        }
                        Ok(ev) => match p.ingest(r.offset, &ev) {
                            Ingested::Counted => {
                                WorkerStats::bump(&self.stats.counted, 1);
                                None
                            }
                            Ingested::Duplicate => {
                                WorkerStats::bump(&self.stats.duplicates, 1);
                                None
                            }
                            Ingested::Replayed => {
                                WorkerStats::bump(&self.stats.replayed, 1);
                                None
                            }
                            Ingested::Corrected => {
                                WorkerStats::bump(&self.stats.late, 1);
                                None
                            }
                            Ingested::TooLate => {
                                WorkerStats::bump(&self.stats.too_late, 1);
                                Some((DeadReason::TooLate, format!(
                                    "too_late: the window of {} closed more than the lateness horizon ({} s) before the event arrived",
                                    ev.occurred_at().to_rfc3339(),
                                    self.spec.lateness_ms() / 1000
                                )))
                            }
                            Ingested::Rejected(reason) => Some((DeadReason::Rejected, reason)),
                        },
                    };
                    if let Some((kind, reason)) = reason.filter(|_| !reread) {
                        dead = true;
                        self.stats.dead_lettered(kind);
                        let letter = DeadLetter {
                            origin: batch.partition,
                            offset: r.offset,
                            value: r.value.clone(),
                            reason,
                        };
                        self.unflushed.push(letter.to_record());
                    }
                }
                if dead {
                    p.touch();
                }
                p.caught_up_with(batch.high_watermark);
            }
            ConsumerEvent::Idle => {
                for p in self.partitions.values_mut() {
                    p.set_caught_up(true);
                }
            }
        }
        self.close_and_commit().await
    }

    async fn close_and_commit(&mut self) -> Result<()> {
        let now = self.clock.now().timestamp_millis();
        self.confirm_idle(now).await;
        // A second round publishes the corrections a successful commit released: the
        // close of the windows they correct is now on record for every later owner.
        for _ in 0..2 {
            let mut open = 0;
            for p in self.partitions.values_mut() {
                let closed = p.close_due(now);
                WorkerStats::bump(&self.stats.aggregates_published, closed.len() as u64);
                WorkerStats::bump(&self.stats.corrections, p.take_corrections_released());
                WorkerStats::bump(&self.stats.windows_closed, p.take_windows_closed());
                for a in closed {
                    self.unflushed.push(aggregate_record(&a));
                }
                open += p.open_windows() as u64;
            }
            self.stats.windows_open.store(open, Ordering::Relaxed);
            self.flush_pending().await?;
            if !self.commit(false).await {
                break;
            }
            if !self.partitions.values().any(PartitionWindows::has_ready) {
                break;
            }
        }
        Ok(())
    }

    /// Commits the checkpoints that changed (all of them when `force`); true when something
    /// was committed.
    async fn commit(&mut self, force: bool) -> bool {
        let commits: Vec<OffsetCommit> = self
            .partitions
            .values_mut()
            .filter_map(|p| {
                let tp = p.partition();
                p.take_checkpoint(force).map(|c| OffsetCommit {
                    partition: tp,
                    offset: c.offset,
                    metadata: c.metadata,
                })
            })
            .collect();
        if commits.is_empty() {
            return false;
        }
        match self.consumer.commit(&commits).await {
            Ok(()) => {
                WorkerStats::bump(&self.stats.commits, 1);
                for c in &commits {
                    if let Some(p) = self.partitions.get_mut(&c.partition) {
                        p.committed();
                    }
                }
                true
            }
            // A lost partition's next owner replays from the last commit; the sink's
            // upsert makes that harmless.
            Err(e) => {
                warn!(error = %e, "commit failed");
                for c in &commits {
                    if let Some(p) = self.partitions.get_mut(&c.partition) {
                        p.commit_failed();
                    }
                }
                false
            }
        }
    }

    /// Asks the bus, at `now`, for the high watermarks of the partitions whose windows are
    /// due on idleness, so they close only if nothing appended before `now` is left unread.
    /// The hint from earlier batches or idle polls may be stale: after a pause of this
    /// process, a slow fetch or a broker outage, records appended on time may still be on
    /// their way, and closing on the hint would dead-letter them as late.
    async fn confirm_idle(&mut self, now: i64) {
        let due: Vec<TopicPartition> = self
            .partitions
            .values()
            .filter(|p| p.needs_confirmation(now))
            .map(|p| p.partition())
            .collect();
        if due.is_empty() {
            return;
        }
        match self.consumer.high_watermarks(&due).await {
            Ok(marks) => {
                for (tp, hw) in marks {
                    if let Some(p) = self.partitions.get_mut(&tp) {
                        p.confirm_caught_up(now, hw);
                    }
                }
            }
            // Nothing closes on idleness this time; the next step asks again.
            Err(e) => debug!(error = %e, "high watermarks unavailable; idle windows wait"),
        }
    }

    async fn flush_pending(&mut self) -> Result<()> {
        if self.unflushed.is_empty() {
            return Ok(());
        }
        for r in &self.unflushed {
            self.publisher.send(r.clone()).await?;
        }
        self.publisher.flush().await?;
        self.unflushed.clear();
        Ok(())
    }
}

fn aggregate_record(a: &super::Aggregate) -> OutgoingRecord {
    OutgoingRecord {
        topic: Topic::AggregatedStats,
        key: a.key().into_bytes(),
        value: a.encode(),
        headers: vec![],
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use chrono::{DateTime, Utc};

    use super::*;

    /// A clock whose sleeps never end by themselves.
    struct Frozen;

    #[async_trait::async_trait]
    impl Clock for Frozen {
        fn now(&self) -> DateTime<Utc> {
            DateTime::UNIX_EPOCH
        }
        async fn sleep(&self, _: Duration) {
            std::future::pending::<()>().await
        }
    }

    #[test]
    fn a_stop_ends_a_sleep_at_once_and_leaves_no_waker_behind() {
        let stop = StopFlag::new();
        let mut cx = Context::from_waker(Waker::noop());
        let mut sleep = Box::pin(stop.sleep(&Frozen, Duration::from_secs(3600)));
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        assert_eq!(stop.waiters().len(), 1, "one waker per waiting future");
        stop.stop();
        assert!(sleep.as_mut().poll(&mut cx).is_ready());
        drop(sleep);
        assert!(stop.waiters().is_empty());
        // Already stopped: the next sleep does not wait at all.
        let mut again = Box::pin(stop.sleep(&Frozen, Duration::from_secs(3600)));
        assert!(again.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn a_dropped_waiter_takes_its_waker_with_it() {
        let stop = StopFlag::new();
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..3 {
            let mut s = Box::pin(stop.sleep(&Frozen, Duration::from_secs(1)));
            assert!(s.as_mut().poll(&mut cx).is_pending());
        }
        assert!(stop.waiters().is_empty());
    }
}
