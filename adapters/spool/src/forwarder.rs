//! The forwarding task: memory → bus while the bus keeps up, journal → bus otherwise.
//!
//! It tracks every position from the cursor on as pending, in flight or done. Positions
//! become done when the bus acknowledged them, and the cursor moves over the done prefix.
//! A failed record goes back to pending, and the forwarder switches to replay: it waits for
//! what is still in flight, then reads pending positions back from the journal in order and
//! delivers them one batch at a time, backing off while they fail. Once nothing is pending
//! and no record arrived meanwhile, appends are copied to memory again.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use folio_domain::ports::{OutgoingRecord, RecordPublisher};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::journal::Reader;
use crate::Shared;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    InFlight,
    Done,
}

/// How often, at most, the cursor is written down while it moves: after a crash, what was
/// delivered since is delivered again, so this keeps duplicates to a few milliseconds.
const PERSIST_EVERY: Duration = Duration::from_millis(5);

/// How long the forwarder waits, once woken by a record, before it takes what arrived.
const LINGER: Duration = Duration::from_millis(1);

/// How long the forwarder sleeps when nothing wakes it, to write the cursor and see a stop.
const HOUSEKEEPING: Duration = Duration::from_millis(100);

/// Positions from the cursor on, and what happened to each.
struct Ledger {
    cursor: u64,
    status: VecDeque<Status>,
}

impl Ledger {
    fn end(&self) -> u64 {
        self.cursor + self.status.len() as u64
    }

    /// Knows of every position below `next`.
    fn extend_to(&mut self, next: u64) {
        while self.end() < next {
            self.status.push_back(Status::Pending);
        }
    }

    fn set(&mut self, pos: u64, s: Status) {
        if let Some(slot) = pos
            .checked_sub(self.cursor)
            .and_then(|i| self.status.get_mut(i as usize))
        {
            *slot = s;
        }
    }

    /// Moves the cursor over the done prefix; returns whether it moved.
    fn advance(&mut self) -> bool {
        let before = self.cursor;
        while self.status.front() == Some(&Status::Done) {
            self.status.pop_front();
            self.cursor += 1;
        }
        self.cursor != before
    }

    fn first_pending(&self) -> Option<u64> {
        self.status
            .iter()
            .position(|s| *s == Status::Pending)
            .map(|i| self.cursor + i as u64)
    }

    /// Records a delivery of `positions` in which the indexes `failed` (ascending)
    /// failed: those become pending again, the others done. Returns (done, failed) counts.
    fn settle(&mut self, positions: &[u64], failed: &[usize]) -> (u64, u64) {
        let mut failed = failed.iter().copied().peekable();
        let (mut ok, mut bad) = (0, 0);
        for (i, p) in positions.iter().enumerate() {
            if failed.next_if_eq(&i).is_some() {
                self.set(*p, Status::Pending);
                bad += 1;
            } else if self.status(*p).is_some_and(|s| s != Status::Done) {
                // Pending too: a record taken from memory before the ledger knew of it.
                self.set(*p, Status::Done);
                ok += 1;
            }
        }
        (ok, bad)
    }

    fn status(&self, pos: u64) -> Option<Status> {
        pos.checked_sub(self.cursor)
            .and_then(|i| self.status.get(i as usize).copied())
    }
}

/// The outcome of one delivery: its positions, and the indexes among them that failed.
type Outcome = (Vec<u64>, Vec<usize>, bool);

pub(crate) async fn run(
    shared: Arc<Shared>,
    bus: Arc<dyn RecordPublisher>,
    cursor: u64,
    replaying: bool,
) {
    let cfg = shared.cfg.clone();
    let mut ledger = Ledger {
        cursor,
        status: VecDeque::new(),
    };
    let mut replay = replaying;
    let mut in_flight: JoinSet<Outcome> = JoinSet::new();
    let mut reader = Reader::new();
    let mut backoff = cfg.min_backoff;
    let mut persisted = cursor;
    let mut persisted_at = Instant::now();
    let mut stop_seen = false;

    loop {
        while let Some(done) = in_flight.try_join_next() {
            replay |= settle(&shared, &mut ledger, done);
        }
        if ledger.advance() {
            shared
                .counters
                .cursor
                .store(ledger.cursor, Ordering::Release);
            shared.progress.notify_waiters();
        }
        let (next, stopping, memory_on) = {
            let st = shared.lock();
            (st.journal.next_pos(), st.stopping, st.memory_on)
        };
        ledger.extend_to(next);
        if ledger.cursor != persisted && persisted_at.elapsed() >= PERSIST_EVERY {
            persist(&shared, ledger.cursor, false);
            persisted = ledger.cursor;
            persisted_at = Instant::now();
        }
        if stopping {
            if !stop_seen {
                stop_seen = true;
                info!(
                    pending = next - ledger.cursor,
                    "spool stopping: delivering what it holds"
                );
            }
            if ledger.cursor == next {
                break;
            }
        }
        if !replay && !memory_on {
            replay = true;
        }
        shared.counters.replaying.store(replay, Ordering::Relaxed);

        if !replay {
            if in_flight.len() < cfg.max_in_flight {
                let batch = take_from_memory(&shared, cfg.batch);
                if !batch.is_empty() {
                    let positions: Vec<u64> = batch.iter().map(|(p, _)| *p).collect();
                    // Appended after this iteration looked at the journal: know them first.
                    if let Some(last) = positions.last() {
                        ledger.extend_to(last + 1);
                    }
                    for p in &positions {
                        ledger.set(*p, Status::InFlight);
                    }
                    let records: Vec<OutgoingRecord> = batch.into_iter().map(|(_, r)| r).collect();
                    let bus = bus.clone();
                    in_flight.spawn(async move {
                        let failed = bus.deliver(records).await;
                        (positions, failed, false)
                    });
                    continue;
                }
            }
            let full = in_flight.len() >= cfg.max_in_flight;
            let wait = if full { cfg.stall_after } else { HOUSEKEEPING };
            tokio::select! {
                _ = shared.wake.notified(), if !full => {
                    // Lets the records of a burst gather into one batch: under load the
                    // forwarder then wakes about once per linger, not once per record
                    // (the sends meanwhile find no one waiting, which costs no wake-up).
                    tokio::time::sleep(LINGER).await;
                }
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    replay |= settle(&shared, &mut ledger, done);
                }
                _ = tokio::time::sleep(wait) => {
                    if full {
                        warn!(after = ?cfg.stall_after, "the bus stopped acknowledging; events go to the spool and are replayed from it");
                        replay = true;
                    }
                }
            }
            continue;
        }

        // Replay: the memory copy is off, and what is in flight settles first.
        {
            let mut st = shared.lock();
            if st.memory_on {
                st.memory_on = false;
            }
            st.memory.clear();
        }
        if !in_flight.is_empty() {
            tokio::select! {
                Some(done) = in_flight.join_next() => {
                    replay |= settle(&shared, &mut ledger, done);
                }
                _ = tokio::time::sleep(HOUSEKEEPING) => {}
            }
            continue;
        }
        let Some(from) = ledger.first_pending() else {
            // Nothing pending: back to the fast path, unless a record arrived meanwhile.
            let mut st = shared.lock();
            if st.journal.next_pos() == ledger.end() {
                st.memory_on = true;
                replay = false;
                backoff = cfg.min_backoff;
                info!(
                    cursor = ledger.cursor,
                    "spool replayed; events go straight to the bus again"
                );
            }
            continue;
        };
        let read = read_pending(&shared, &ledger, &mut reader, from, cfg.batch);
        for p in read.missing {
            // The journal lost it (a damaged file): there is nothing left to send.
            ledger.set(p, Status::Done);
        }
        if read.records.is_empty() {
            if read.stalled {
                tokio::time::sleep(backoff).await;
            }
            continue;
        }
        for p in &read.positions {
            ledger.set(*p, Status::InFlight);
        }
        let (positions, records) = (read.positions, read.records);
        let n = records.len();
        // While stopping, `close`'s deadline bounds this wait; the records stay on disk.
        let failed = bus.deliver(records).await;
        let any_failed = !failed.is_empty();
        settle(&shared, &mut ledger, Ok((positions, failed, true)));
        if any_failed {
            warn!(records = n, retry_in = ?backoff, "replaying the spool failed; retrying");
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shared.wake.notified(), if stopping => {}
            }
            backoff = (backoff * 2).min(cfg.max_backoff);
        } else {
            backoff = cfg.min_backoff;
        }
    }
    persist(&shared, ledger.cursor, true);
}

/// Applies a delivery's outcome; returns whether anything failed.
fn settle(
    shared: &Shared,
    ledger: &mut Ledger,
    done: Result<Outcome, tokio::task::JoinError>,
) -> bool {
    let Ok((positions, failed, replayed)) = done else {
        // The delivery task panicked: what it held is still pending on disk.
        return true;
    };
    let (ok, bad) = ledger.settle(&positions, &failed);
    let c = &shared.counters;
    c.delivered.fetch_add(ok, Ordering::Relaxed);
    if replayed {
        c.replayed.fetch_add(ok, Ordering::Relaxed);
    }
    c.failed_attempts.fetch_add(bad, Ordering::Relaxed);
    bad > 0
}

fn take_from_memory(shared: &Shared, max: usize) -> Vec<(u64, OutgoingRecord)> {
    let mut st = shared.lock();
    let n = st.memory.len().min(max);
    st.memory.drain(..n).collect()
}

/// Pending records read back from the journal.
struct Read {
    positions: Vec<u64>,
    records: Vec<OutgoingRecord>,
    /// Positions no segment holds any more.
    missing: Vec<u64>,
    /// Reading failed; try again later.
    stalled: bool,
}

/// Reads up to `max` pending records from `from` on, in position order.
fn read_pending(
    shared: &Shared,
    ledger: &Ledger,
    reader: &mut Reader,
    from: u64,
    max: usize,
) -> Read {
    let segments = shared.lock().journal.segments_from(from);
    let mut read = Read {
        positions: Vec::new(),
        records: Vec::new(),
        missing: Vec::new(),
        stalled: false,
    };
    let mut pos = from;
    while read.records.len() < max && pos < ledger.end() {
        if ledger.status(pos) == Some(Status::Pending) {
            match reader.read(pos, &segments) {
                Ok(Some(r)) => {
                    read.positions.push(pos);
                    read.records.push(r);
                }
                Ok(None) => {
                    warn!(pos, "spool position missing from the journal; skipped");
                    read.missing.push(pos);
                }
                Err(e) => {
                    warn!(pos, error = %e, "reading the spool failed; retrying later");
                    read.stalled = true;
                    break;
                }
            }
        }
        pos += 1;
    }
    read
}

/// Writes the cursor down and deletes the segments below it.
/// Writes the cursor down, then deletes what lies wholly below it. The file is written
/// outside the lock `send` takes, so requests never wait on it.
pub(crate) fn persist(shared: &Shared, cursor: u64, stopping: bool) {
    let written = {
        let _one_writer = shared.cursor_file.lock().unwrap_or_else(|p| p.into_inner());
        crate::journal::write_cursor(&shared.cfg.dir, cursor)
    };
    let released = written.and_then(|()| shared.lock().journal.release_below(cursor, stopping));
    if let Err(e) = released {
        warn!(error = %e, "could not record the spool's cursor");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(status: &[Status]) -> Ledger {
        Ledger {
            cursor: 10,
            status: status.iter().copied().collect(),
        }
    }

    #[test]
    fn the_cursor_moves_over_the_done_prefix_only() {
        let mut l = ledger(&[Status::Done, Status::Done, Status::InFlight, Status::Done]);
        assert!(l.advance());
        assert_eq!((l.cursor, l.end()), (12, 14));
        assert!(!l.advance());
        assert_eq!(l.first_pending(), None);
        l.extend_to(16);
        assert_eq!(l.first_pending(), Some(14));
    }

    #[test]
    fn an_acknowledged_record_is_done_even_if_the_ledger_learnt_it_late() {
        // Taken from memory before the ledger knew of it, the record was then learnt as
        // pending; its acknowledgement must still make it done, or the cursor stops there.
        let mut l = ledger(&[Status::InFlight, Status::Pending, Status::InFlight]);
        assert_eq!(l.settle(&[10, 11, 12], &[2]), (2, 1));
        assert_eq!(l.status(12), Some(Status::Pending));
        assert!(l.advance());
        assert_eq!(l.cursor, 12);
        assert_eq!(l.first_pending(), Some(12));
        // A second acknowledgement of a done record counts nothing.
        assert_eq!(l.settle(&[12, 12], &[]), (1, 0));
    }
}
