use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::analytics::{Aggregate, DeadLetter, StopFlag};
use crate::ports::{
    Clock, ConsumerEvent, GroupConsumer, OffsetCommit, RecordBatch, RecordPublisher, StatsSink,
};
use crate::topics::TopicPartition;
use crate::Result;

/// Counters of the ingest loop.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub stored: AtomicU64,
    pub ignored: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Failed steps (the bus or the store unavailable), retried after a pause.
    pub retries: AtomicU64,
}

/// The bookstore's consumer of `analytics.aggregated-stats`: upserts aggregates, then
/// commits. A crash between the two replays the batch, which the upsert ignores.
///
/// A batch whose upsert (or dead letters) failed is kept and tried again before anything
/// new is polled: the consumer hands each batch out once, and committing a later batch
/// would move the group past the failed one for good.
pub struct StatsIngest {
    consumer: Box<dyn GroupConsumer>,
    sink: Arc<dyn StatsSink>,
    dlq: Arc<dyn RecordPublisher>,
    clock: Arc<dyn Clock>,
    stats: Arc<IngestStats>,
    /// A polled batch not yet stored.
    unstored: Option<RecordBatch>,
}

impl StatsIngest {
    pub fn new(
        consumer: Box<dyn GroupConsumer>,
        sink: Arc<dyn StatsSink>,
        dlq: Arc<dyn RecordPublisher>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        StatsIngest {
            consumer,
            sink,
            dlq,
            clock,
            stats: Arc::new(IngestStats::default()),
            unstored: None,
        }
    }

    pub fn stats(&self) -> Arc<IngestStats> {
        self.stats.clone()
    }

    /// One poll: store what arrived, dead-letter what cannot be read, commit.
    pub async fn step(&mut self) -> Result<()> {
        self.step_within(Duration::from_millis(100))
            .await
            .map(|_| ())
    }

    /// One poll waiting up to `wait` (or the retry of a batch not yet stored); false when
    /// nothing arrived.
    async fn step_within(&mut self, wait: Duration) -> Result<bool> {
        let batch = match self.unstored.take() {
            Some(batch) => batch,
            None => match self.consumer.poll(wait).await? {
                ConsumerEvent::Batch(batch) => batch,
                _ => return Ok(false),
            },
        };
        match self.store(&batch).await {
            Ok(()) => Ok(true),
            Err(e) => {
                self.unstored = Some(batch);
                Err(e)
            }
        }
    }

    /// Dead-letters what cannot be read, upserts the rest, then commits the batch.
    async fn store(&mut self, batch: &RecordBatch) -> Result<()> {
        let Some(last) = batch.records.last().map(|r| r.offset) else {
            return Ok(());
        };
        let mut aggregates = Vec::with_capacity(batch.records.len());
        let mut dead = 0;
        for r in &batch.records {
            match Aggregate::decode(&r.value) {
                Ok(a) => aggregates.push(a),
                Err(e) => {
                    dead += 1;
                    let letter = DeadLetter {
                        origin: batch.partition,
                        offset: r.offset,
                        value: r.value.clone(),
                        reason: format!("undecodable aggregate: {e}"),
                    };
                    self.dlq.send(letter.to_record()).await?;
                }
            }
        }
        if dead > 0 {
            self.dlq.flush().await?;
            self.stats.dead_lettered.fetch_add(dead, Ordering::Relaxed);
        }
        let report = self.sink.upsert(&aggregates).await?;
        self.stats
            .stored
            .fetch_add(report.inserted + report.replaced, Ordering::Relaxed);
        self.stats
            .ignored
            .fetch_add(report.ignored, Ordering::Relaxed);
        self.commit(batch.partition, last + 1).await;
        Ok(())
    }

    async fn commit(&mut self, tp: TopicPartition, offset: i64) {
        let c = [OffsetCommit {
            partition: tp,
            offset,
            metadata: String::new(),
        }];
        if let Err(e) = self.consumer.commit(&c).await {
            warn!(error = %e, partition = %tp, "commit failed; the batch will be replayed and ignored");
        }
    }

    /// Runs until `stop` is set, then stores what is already on the bus (a short grace for
    /// the analytics worker's last aggregates) and leaves the group; everything stored is
    /// committed.
    pub async fn run(mut self, stop: StopFlag) -> Result<()> {
        while !stop.is_stopped() {
            if let Err(e) = self.step().await {
                warn!(error = %e, "statistics ingest failed; retrying");
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                stop.sleep(self.clock.as_ref(), Duration::from_secs(1))
                    .await;
            }
        }
        while let Ok(true) = self.step_within(Duration::from_millis(300)).await {}
        self.consumer.leave().await?;
        info!("statistics ingest left its group");
        Ok(())
    }
}
