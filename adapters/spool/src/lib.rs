//! folio-spool: the bookstore's durable event spool, a [`RecordPublisher`] that outlives
//! the broker.
//!
//! Views and downloads have no row of their own, so nothing but the publisher stands
//! between them and loss. [`SpoolingPublisher`] puts every record on local disk before
//! `send` returns, then forwards it to the bus in the background:
//!
//! ```text
//!  request ──send──▶ journal (segment files, one write each) ──▶ 2xx
//!                       │ copy in memory while the bus keeps up
//!                       ▼
//!                   forwarder ──deliver──▶ bus (Kafka, acks=all)
//!                       ▲ on failure or a stall: replays from the journal, in order
//! ```
//!
//! - `send` never waits for the broker: it writes to the journal and returns. It fails
//!   (`Unavailable`) only when the spool is full ([`SpoolConfig::limit_bytes`]) or the disk
//!   refuses the write.
//! - The forwarder delivers batches through [`RecordPublisher::deliver`], which says which
//!   records failed. While the bus answers it takes records from memory. When a delivery
//!   fails, or deliveries stop answering for [`SpoolConfig::stall_after`], or the memory
//!   copy overflows, it switches to *replay*: it reads the undelivered records back from
//!   the journal in position order, retries with backoff, and switches back once it has
//!   caught up. Requests meanwhile only write to disk.
//! - What was delivered is recorded by a cursor file; segments below it are deleted. The
//!   next start replays what the cursor does not cover, so a restart (even `kill -9`)
//!   loses nothing that `send` accepted. Records delivered after the cursor was last
//!   written are delivered again after a crash: consumers de-duplicate by `event_id`.
//! - [`SpoolingPublisher::close`] (SIGTERM) delivers what it can within a deadline, then
//!   writes the cursor and syncs the journal; the rest waits on disk for the next start.
//!
//! Layout: `codec` frames one record; `journal` owns the files; `forwarder` is the task.

mod codec;
mod forwarder;
mod journal;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use folio_domain::ports::{OutgoingRecord, RecordPublisher};
use folio_domain::{Error, Result};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::warn;

use journal::Journal;

/// How often, at most, refusals are logged.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// One GiB: the default bound of the spool on disk.
pub const DEFAULT_LIMIT_BYTES: u64 = 1 << 30;

/// How the spool behaves.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// The spool's directory (created when missing). One process per directory.
    pub dir: PathBuf,
    /// Undelivered bytes on disk at most; `send` fails beyond.
    pub limit_bytes: u64,
    /// Size at which a segment file is closed and a new one begun.
    pub segment_bytes: u64,
    /// Records kept in memory for the fast path; beyond, the forwarder reads from disk.
    pub memory_records: usize,
    /// Records in one delivery.
    pub batch: usize,
    /// Deliveries in flight at once while the bus keeps up.
    pub max_in_flight: usize,
    /// With every delivery slot taken for this long, the bus counts as stalled and the
    /// forwarder replays from disk once they settle.
    pub stall_after: Duration,
    /// The first wait after a failed replay; it doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl SpoolConfig {
    /// Defaults for a spool in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SpoolConfig {
            dir: dir.into(),
            limit_bytes: DEFAULT_LIMIT_BYTES,
            segment_bytes: 16 << 20,
            memory_records: 100_000,
            batch: 4_096,
            max_in_flight: 4,
            stall_after: Duration::from_secs(2),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Counters and gauges of a spool, for `/metrics` and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Records `send` accepted (written to the journal).
    pub accepted: u64,
    /// Records `send` refused because the spool was full or the disk failed.
    pub refused: u64,
    /// Records the bus acknowledged.
    pub delivered: u64,
    /// Of those, records read back from disk (replayed after a failure or a restart).
    pub replayed: u64,
    /// Record deliveries that failed (each retried from the journal).
    pub failed_attempts: u64,
    /// Records accepted and not yet acknowledged.
    pub pending: u64,
    /// Records waiting in memory for the fast path.
    pub buffered: u64,
    /// Bytes of the journal on disk.
    pub bytes: u64,
    /// Whether the forwarder is replaying from disk (the bus failed or stalled).
    pub replaying: bool,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    delivered: AtomicU64,
    replayed: AtomicU64,
    failed_attempts: AtomicU64,
    /// Every position below this was delivered.
    cursor: AtomicU64,
    replaying: AtomicBool,
    /// When a refusal was last logged (ms since start; 0: never), and the total then.
    refusal_logged_ms: AtomicU64,
    refusals_at_last_log: AtomicU64,
}

/// What `send` and the forwarder share under one lock.
struct State {
    journal: Journal,
    /// Copies of records for the fast path, by position; empty while replaying.
    memory: std::collections::VecDeque<(u64, OutgoingRecord)>,
    /// Whether appends are also kept in `memory` (false while replaying).
    memory_on: bool,
    stopping: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Serializes writes of the cursor file (the forwarder's, and `close`'s).
    cursor_file: Mutex<()>,
    cfg: SpoolConfig,
    counters: Counters,
    /// Wakes the forwarder: a record arrived, or a stop.
    wake: Notify,
    /// Wakes `flush` callers: the cursor moved.
    progress: Notify,
    started: std::time::Instant,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the journal as consistent as a crash does.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The durable publisher. See the crate docs. Cheap to clone; clones share the spool.
#[derive(Clone)]
pub struct SpoolingPublisher {
    shared: Arc<Shared>,
    forwarder: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for SpoolingPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolingPublisher")
            .field("dir", &self.shared.cfg.dir)
            .field("stats", &self.stats())
            .finish()
    }
}

impl SpoolingPublisher {
    /// Opens the spool and starts forwarding to `bus`, replaying first whatever an earlier
    /// run left undelivered. Needs a Tokio runtime.
    pub fn start(cfg: SpoolConfig, bus: Arc<dyn RecordPublisher>) -> Result<Self> {
        let opened = Journal::open(&cfg.dir, cfg.segment_bytes).map_err(|e| {
            Error::Unavailable("event spool", format!("opening {}: {e}", cfg.dir.display()))
        })?;
        let cursor = opened.cursor;
        let leftover = opened.journal.next_pos() > cursor;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                journal: opened.journal,
                memory: Default::default(),
                memory_on: !leftover,
                stopping: false,
            }),
            cursor_file: Mutex::new(()),
            cfg,
            counters: Counters::default(),
            wake: Notify::new(),
            progress: Notify::new(),
            started: std::time::Instant::now(),
        });
        shared.counters.cursor.store(cursor, Ordering::Relaxed);
        shared.counters.replaying.store(leftover, Ordering::Relaxed);
        let task = tokio::spawn(forwarder::run(shared.clone(), bus, cursor, leftover));
        Ok(SpoolingPublisher {
            shared,
            forwarder: Arc::new(Mutex::new(Some(task))),
        })
    }

    pub fn stats(&self) -> SpoolStats {
        let c = &self.shared.counters;
        let (next, buffered, bytes) = {
            let st = self.shared.lock();
            (
                st.journal.next_pos(),
                st.memory.len() as u64,
                st.journal.bytes(),
            )
        };
        SpoolStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            replayed: c.replayed.load(Ordering::Relaxed),
            failed_attempts: c.failed_attempts.load(Ordering::Relaxed),
            pending: next.saturating_sub(c.cursor.load(Ordering::Relaxed)),
            buffered,
            bytes,
            replaying: c.replaying.load(Ordering::Relaxed),
        }
    }

    /// Stops: delivers what it can within `deadline`, writes the cursor and syncs the
    /// journal. What is left is replayed by the next start. Returns how many records were
    /// left on disk.
    pub async fn close(&self, deadline: Duration) -> u64 {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_one();
        let task = self
            .forwarder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            match tokio::time::timeout(deadline, task).await {
                Ok(_) => {}
                Err(_) => warn!(?deadline, "spool forwarder did not stop in time"),
            }
        }
        let cursor = self.shared.counters.cursor.load(Ordering::Acquire);
        forwarder::persist(&self.shared, cursor, true);
        let st = self.shared.lock();
        if let Err(e) = st.journal.sync() {
            warn!(error = %e, "could not sync the spool to disk");
        }
        st.journal
            .next_pos()
            .saturating_sub(self.shared.counters.cursor.load(Ordering::Relaxed))
    }
}

#[async_trait]
impl RecordPublisher for SpoolingPublisher {
    /// Writes the record to the journal; never waits for the bus.
    async fn send(&self, record: OutgoingRecord) -> Result<()> {
        let c = &self.shared.counters;
        {
            let mut st = self.shared.lock();
            if st.journal.bytes() >= self.shared.cfg.limit_bytes {
                let reason = format!(
                    "full: {} bytes undelivered (limit {})",
                    st.journal.bytes(),
                    self.shared.cfg.limit_bytes
                );
                drop(st);
                return Err(self.refuse(reason));
            }
            let pos = match st.journal.append(&record) {
                Ok((pos, _)) => pos,
                Err(e) => {
                    drop(st);
                    return Err(self.refuse(format!("writing: {e}")));
                }
            };
            if st.memory_on {
                if st.memory.len() < self.shared.cfg.memory_records {
                    st.memory.push_back((pos, record));
                } else {
                    // The bus is not keeping up: from here the forwarder reads the disk.
                    st.memory_on = false;
                    st.memory.clear();
                }
            }
        }
        c.accepted.fetch_add(1, Ordering::Relaxed);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Waits until everything sent before it was delivered. It does not fail while the bus
    /// is away: the records are safe on disk, so callers wanting a bound use a timeout.
    async fn flush(&self) -> Result<()> {
        let target = self.shared.lock().journal.next_pos();
        loop {
            let notified = self.shared.progress.notified();
            if self.shared.counters.cursor.load(Ordering::Acquire) >= target {
                return Ok(());
            }
            if self.forwarder_gone() {
                return Err(Error::Unavailable(
                    "event spool",
                    "closed with records undelivered".into(),
                ));
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }
}

impl SpoolingPublisher {
    /// Counts a refusal and says so in the log, at most once every [`REFUSAL_LOG_EVERY`]
    /// with the number refused since, so a full spool under load does not flood the log.
    fn refuse(&self, reason: String) -> Error {
        let c = &self.shared.counters;
        let total = c.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let now_ms = self.shared.started.elapsed().as_millis() as u64;
        let last = c.refusal_logged_ms.load(Ordering::Relaxed);
        let due = last == 0 || now_ms.saturating_sub(last) >= REFUSAL_LOG_EVERY.as_millis() as u64;
        if due
            && c.refusal_logged_ms
                .compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let since = total - c.refusals_at_last_log.swap(total, Ordering::Relaxed);
            warn!(refused = since, refused_total = total, %reason, "the event spool refuses events");
        }
        Error::Unavailable("event spool", reason)
    }

    fn forwarder_gone(&self) -> bool {
        self.forwarder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_none_or(|t| t.is_finished())
    }
}
