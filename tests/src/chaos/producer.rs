//! Publishes a [`Plan`] in real time with folio's own Kafka publisher, so the run controls
//! every `event_id` and time: item `i` goes out when the clock reaches
//! `base + items[i].send_at`, and events carry `base + at` as their time. Each batch is
//! flushed (acks=all) before the next; a failed flush re-sends the whole batch (a
//! re-delivery, de-duplicated like any other) until it is acknowledged.
//!
//! A pause (asked for around a broker restart) sends the duplicates still due for events
//! already sent (early: a copy held over the pause would arrive after its window closed),
//! flushes, waits, and then moves `base` on by
//! the pause rounded up to whole windows, so the rest of the schedule keeps its shape and
//! its window edges, and no event is stamped long before it can be sent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use folio_domain::events::Event;
use folio_domain::ids::EventId;
use folio_domain::ports::{OutgoingRecord, RecordPublisher};
use folio_domain::services::event_record;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::workload::{Plan, What};

/// The wall clock, ms since the epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Where the producer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerState {
    Running,
    Paused,
    Done,
}

/// What was produced.
#[derive(Debug, Default)]
pub struct ProducerLog {
    /// The on-time events as produced, by plan index (`None`: never sent).
    pub events: Vec<Option<Event>>,
    /// The late events as produced, by plan index.
    pub late: Vec<Option<Event>>,
    /// Which poison records went out, by plan index.
    pub poison_sent: Vec<bool>,
    /// How many times each event id was handed to the publisher: originals, duplicate
    /// deliveries and re-sends after a failed flush.
    pub copies: HashMap<EventId, u32>,
    pub duplicates: u64,
    /// Records sent again because a flush failed.
    pub resends: u64,
    pub flush_failures: u64,
    /// The longest time from an on-time event's time to its acknowledgement.
    pub max_lag_ms: i64,
    pub pauses: u32,
    /// How far the schedule moved for pauses.
    pub shift_ms: i64,
    /// The latest on-time event time.
    pub last_event_ms: i64,
}

/// Live counters, for progress lines.
#[derive(Debug, Default)]
pub struct Progress {
    pub records: AtomicU64,
    /// How far into the plan the producer is (ms, relative to the base).
    pub plan_ms: AtomicI64,
}

/// The driver's side of a running producer.
pub struct ProducerHandle {
    pause: watch::Sender<bool>,
    state: watch::Receiver<ProducerState>,
    /// `T0 + shift`: add a plan time to get a wall time.
    pub base: Arc<AtomicI64>,
    pub progress: Arc<Progress>,
    pub task: JoinHandle<anyhow::Result<ProducerLog>>,
}

impl ProducerHandle {
    /// Asks the producer to flush and pause, and waits until it has.
    pub async fn pause(&mut self) -> anyhow::Result<()> {
        self.pause.send_replace(true);
        loop {
            if matches!(
                *self.state.borrow(),
                ProducerState::Paused | ProducerState::Done
            ) {
                return Ok(());
            }
            if self.state.changed().await.is_err() {
                bail!("the producer stopped while pausing");
            }
        }
    }

    /// Lets a paused producer go on (its schedule moves by the pause, in whole windows).
    pub fn resume(&self) {
        self.pause.send_replace(false);
    }

    pub fn is_done(&self) -> bool {
        *self.state.borrow() == ProducerState::Done
    }

    /// The wall time of plan time `plan_ms`.
    pub fn wall_ms(&self, plan_ms: i64) -> i64 {
        self.base.load(Ordering::SeqCst) + plan_ms
    }
}

/// Starts publishing `plan` with its base at `t0_ms` (a window boundary).
pub fn spawn(
    publisher: Arc<dyn RecordPublisher>,
    plan: Arc<Plan>,
    t0_ms: i64,
    window_ms: i64,
) -> ProducerHandle {
    let (pause_tx, pause_rx) = watch::channel(false);
    let (state_tx, state_rx) = watch::channel(ProducerState::Running);
    let base = Arc::new(AtomicI64::new(t0_ms));
    let progress = Arc::new(Progress::default());
    let p = Producer {
        publisher,
        plan,
        window_ms,
        base: base.clone(),
        pause: pause_rx,
        state: state_tx,
        progress: progress.clone(),
    };
    ProducerHandle {
        pause: pause_tx,
        state: state_rx,
        base,
        progress,
        task: tokio::spawn(p.run()),
    }
}

struct Producer {
    publisher: Arc<dyn RecordPublisher>,
    plan: Arc<Plan>,
    window_ms: i64,
    base: Arc<AtomicI64>,
    pause: watch::Receiver<bool>,
    state: watch::Sender<ProducerState>,
    progress: Arc<Progress>,
}

/// A record on its way, with the on-time event time it carries (for the lag).
struct Pending {
    record: OutgoingRecord,
    id: Option<EventId>,
    on_time_ms: Option<i64>,
}

impl Producer {
    async fn run(mut self) -> anyhow::Result<ProducerLog> {
        let plan = self.plan.clone();
        let mut log = ProducerLog {
            events: vec![None; plan.events.len()],
            late: vec![None; plan.late.len()],
            poison_sent: vec![false; plan.poison.len()],
            ..Default::default()
        };
        let mut dup_cache: HashMap<usize, OutgoingRecord> = HashMap::new();
        let mut pending: Vec<Pending> = Vec::new();
        let mut i = 0;
        loop {
            if *self.pause.borrow() {
                // A duplicate due after the pause would trail its original by the whole
                // pause, past its window's close: not the delivery the plan means (a copy
                // well within the grace). The copies still to come go out now, early.
                for item in &plan.items[i..] {
                    if let What::Duplicate(k) = item.what {
                        if let Some(record) = dup_cache.remove(&k) {
                            log.duplicates += 1;
                            pending.push(Pending {
                                record,
                                id: log.events[k].as_ref().map(|e| e.event_id()),
                                on_time_ms: None,
                            });
                        }
                    }
                }
                self.deliver(&mut pending, &mut log).await?;
                let paused_at = now_ms();
                self.state.send_replace(ProducerState::Paused);
                while *self.pause.borrow() {
                    if self.pause.changed().await.is_err() {
                        break;
                    }
                }
                let paused = now_ms() - paused_at;
                let shift =
                    (paused + self.window_ms - 1).div_euclid(self.window_ms) * self.window_ms;
                self.base.fetch_add(shift, Ordering::SeqCst);
                log.shift_ms += shift;
                log.pauses += 1;
                self.state.send_replace(ProducerState::Running);
            }
            if i >= plan.items.len() {
                self.deliver(&mut pending, &mut log).await?;
                break;
            }
            let base = self.base.load(Ordering::SeqCst);
            let now = now_ms();
            while i < plan.items.len() && base + plan.items[i].send_at <= now {
                let item = plan.items[i];
                i += 1;
                let p = match item.what {
                    What::Event(k) => {
                        let ev = plan.events[k].event(base);
                        let record = event_record(&ev);
                        if plan.duplicated[k] {
                            dup_cache.insert(k, record.clone());
                        }
                        let t = ev.occurred_at().timestamp_millis();
                        log.last_event_ms = log.last_event_ms.max(t);
                        let id = ev.event_id();
                        log.events[k] = Some(ev);
                        Pending {
                            record,
                            id: Some(id),
                            on_time_ms: Some(t),
                        }
                    }
                    What::Duplicate(k) => {
                        let Some(record) = dup_cache.remove(&k) else {
                            continue;
                        };
                        log.duplicates += 1;
                        Pending {
                            record,
                            id: log.events[k].as_ref().map(|e| e.event_id()),
                            on_time_ms: None,
                        }
                    }
                    What::Late(k) => {
                        let ev = plan.late[k].event(base);
                        let p = Pending {
                            record: event_record(&ev),
                            id: Some(ev.event_id()),
                            on_time_ms: None,
                        };
                        log.late[k] = Some(ev);
                        p
                    }
                    What::Poison(k) => {
                        let spec = &plan.poison[k];
                        log.poison_sent[k] = true;
                        Pending {
                            record: OutgoingRecord {
                                topic: spec.topic,
                                key: spec.key.clone(),
                                value: spec.value(now),
                                headers: vec![],
                            },
                            id: None,
                            on_time_ms: None,
                        }
                    }
                };
                pending.push(p);
            }
            self.deliver(&mut pending, &mut log).await?;
            self.progress.plan_ms.store(now - base, Ordering::Relaxed);
            let next = plan
                .items
                .get(i)
                .map_or(now, |it| self.base.load(Ordering::SeqCst) + it.send_at);
            let wait = (next - now_ms()).clamp(1, 20) as u64;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                _ = self.pause.changed() => {}
            }
        }
        self.state.send_replace(ProducerState::Done);
        Ok(log)
    }

    /// Sends and flushes `pending` until the broker has acknowledged all of it.
    async fn deliver(
        &self,
        pending: &mut Vec<Pending>,
        log: &mut ProducerLog,
    ) -> anyhow::Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let give_up = now_ms() + 180_000;
        let mut backoff = Duration::from_millis(200);
        let mut first = true;
        loop {
            if !first {
                log.resends += pending.len() as u64;
            }
            first = false;
            let mut outcome = Ok(());
            for p in pending.iter() {
                if let Some(id) = p.id {
                    *log.copies.entry(id).or_default() += 1;
                }
                if let Err(e) = self.publisher.send(p.record.clone()).await {
                    outcome = Err(e);
                    break;
                }
            }
            if outcome.is_ok() {
                outcome = self.publisher.flush().await;
            }
            match outcome {
                Ok(()) => break,
                Err(e) => {
                    log.flush_failures += 1;
                    if now_ms() > give_up {
                        bail!("the producer could not deliver for 3 minutes: {e}");
                    }
                    eprintln!("chaos: producer: delivery failed ({e}); sending the batch again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        let acked = now_ms();
        for p in pending.iter() {
            if let Some(t) = p.on_time_ms {
                log.max_lag_ms = log.max_lag_ms.max(acked - t);
            }
        }
        self.progress
            .records
            .fetch_add(pending.len() as u64, Ordering::Relaxed);
        pending.clear();
        Ok(())
    }
}
