//! The windows of one source partition: how events are folded in, when windows close, and
//! what is committed so a new owner can carry on exactly.
//!
//! # Exactness (docs/exactness.md)
//! - Each closed window yields one [`Aggregate`] per book, covering the partition's records
//!   `[first_offset, position)`.
//! - The committed offset is the first offset of the oldest open window (or the position
//!   when none is open), so a new owner replays exactly the open windows.
//! - The commit metadata records the partition's stream time, its closing horizon and the
//!   recently closed windows with the position they closed at. On replay a record of a
//!   closed window below that position was already counted and is skipped; one at or past
//!   it is late.
//! - Windows close in order of end time: once stream time (the largest event time seen) is
//!   past a window's end plus grace, or once the clock is and the bus has confirmed, when
//!   asked after that instant, that every record of the partition has been read.
//!   A batch or an idle poll only hints that the partition has caught up: the hint can be
//!   stale (a paused process, a slow fetch, a broker outage), and a window closed on it
//!   would turn on-time records still unread into late ones.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::aggregate::{Aggregate, Figures, SourceRange};
use super::window::{Window, WindowSpec};
use crate::events::Event;
use crate::ids::BookId;
use crate::ports::Committed;
use crate::topics::TopicPartition;

/// What happened to one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// Folded into its window.
    Counted,
    /// Its `event_id` was already counted in this window.
    Duplicate,
    /// A replay of a record that a published aggregate already covers.
    Replayed,
    /// Its window had closed before it arrived; it is dead-lettered, not counted.
    Late,
    /// It cannot be folded in (for example a second currency); it is dead-lettered.
    Rejected(String),
}

struct OpenWindow {
    first_offset: i64,
    books: HashMap<BookId, Figures>,
    seen: HashSet<u128>,
}

/// The checkpoint kept in the commit metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Checkpoint {
    /// Format version.
    v: u8,
    /// Largest event time seen (ms), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream: Option<i64>,
    /// Windows ending at or before this instant (ms) are closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    horizon: Option<i64>,
    /// Recently closed windows: (start ms, position when closed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    closed: Vec<(i64, i64)>,
}

/// The open windows of one partition.
pub struct PartitionWindows {
    tp: TopicPartition,
    spec: WindowSpec,
    open: BTreeMap<i64, OpenWindow>,
    stream_ms: Option<i64>,
    horizon_ms: Option<i64>,
    closed: Vec<(i64, i64)>,
    position: i64,
    /// The last batch or idle poll said the partition had caught up (a hint).
    caught_up: bool,
    /// Every record appended before this instant (ms) has been read: confirmed with the
    /// bus's high watermark, asked at that instant.
    confirmed_ms: Option<i64>,
    dirty: bool,
}

impl PartitionWindows {
    /// Resumes a partition from its committed position and checkpoint (a fresh start when
    /// there is none; unreadable metadata is treated as none and logged by the caller).
    pub fn resume(tp: TopicPartition, spec: WindowSpec, committed: Option<&Committed>) -> Self {
        let cp: Checkpoint = committed
            .and_then(|c| serde_json::from_str(&c.metadata).ok())
            .unwrap_or_default();
        PartitionWindows {
            tp,
            spec,
            open: BTreeMap::new(),
            stream_ms: cp.stream,
            horizon_ms: cp.horizon,
            closed: cp.closed,
            position: committed.map_or(0, |c| c.offset),
            caught_up: false,
            confirmed_ms: None,
            dirty: false,
        }
    }

    pub fn partition(&self) -> TopicPartition {
        self.tp
    }

    /// Folds in the record at `offset` carrying `event`.
    pub fn ingest(&mut self, offset: i64, event: &Event) -> Ingested {
        if offset >= self.position {
            self.position = offset + 1;
        }
        let t = event.occurred_at().timestamp_millis();
        let window = self.spec.window_of(t);
        if self.horizon_ms.is_some_and(|h| window.end_ms <= h) {
            let covered = self
                .closed
                .iter()
                .any(|&(start, next)| start == window.start_ms && offset < next);
            return if covered {
                Ingested::Replayed
            } else {
                Ingested::Late
            };
        }
        let ow = self
            .open
            .entry(window.start_ms)
            .or_insert_with(|| OpenWindow {
                first_offset: offset,
                books: HashMap::new(),
                seen: HashSet::new(),
            });
        if !ow.seen.insert(event.event_id().as_u128()) {
            return Ingested::Duplicate;
        }
        let figures = ow.books.entry(event.book_id()).or_default();
        if let Err(reason) = figures.add(event) {
            ow.seen.remove(&event.event_id().as_u128());
            return Ingested::Rejected(reason);
        }
        self.stream_ms = Some(self.stream_ms.map_or(t, |s| s.max(t)));
        Ingested::Counted
    }

    /// Notes a record that was not folded in (undecodable), so the position moves past it.
    pub fn skip(&mut self, offset: i64) {
        if offset >= self.position {
            self.position = offset + 1;
        }
    }

    /// Records a hint that the partition has (or has not) caught up, as an idle poll says.
    pub fn set_caught_up(&mut self, caught_up: bool) {
        self.caught_up = caught_up;
    }

    /// Records the high watermark a batch came with: a hint, as the batch may be old.
    pub fn caught_up_with(&mut self, high_watermark: i64) {
        self.caught_up = self.position >= high_watermark;
    }

    /// Whether a window is due on idleness at `now_ms` but waits for the bus to confirm
    /// that the partition has caught up (see [`PartitionWindows::confirm_caught_up`]).
    pub fn needs_confirmation(&self, now_ms: i64) -> bool {
        let Some((&start, _)) = self.open.first_key_value() else {
            return false;
        };
        let closes_at = self.spec.closes_at(Window {
            start_ms: start,
            end_ms: start + self.spec.length_ms(),
        });
        let by_stream = self.stream_ms.is_some_and(|s| s >= closes_at);
        self.caught_up
            && !by_stream
            && now_ms >= closes_at
            && self.confirmed_ms.is_none_or(|c| c < closes_at)
    }

    /// The bus's high watermark, asked at `as_of_ms`: when every record below it has been
    /// read, every record appended before `as_of_ms` has, and windows closing by then may
    /// close on idleness.
    pub fn confirm_caught_up(&mut self, as_of_ms: i64, high_watermark: i64) {
        if self.position >= high_watermark {
            self.caught_up = true;
            self.confirmed_ms = Some(self.confirmed_ms.map_or(as_of_ms, |c| c.max(as_of_ms)));
        } else {
            self.caught_up = false;
        }
    }

    /// Closes every window that is due at `now_ms` and returns its aggregates, one per book:
    /// by stream time, or on idleness once [`PartitionWindows::confirm_caught_up`] has
    /// confirmed, as of its closing time or later, that nothing of it is left to read.
    pub fn close_due(&mut self, now_ms: i64) -> Vec<Aggregate> {
        let mut out = Vec::new();
        while let Some((&start, _)) = self.open.first_key_value() {
            let window = Window {
                start_ms: start,
                end_ms: start + self.spec.length_ms(),
            };
            let closes_at = self.spec.closes_at(window);
            let by_stream = self.stream_ms.is_some_and(|s| s >= closes_at);
            let by_idle = now_ms >= closes_at && self.confirmed_ms.is_some_and(|c| c >= closes_at);
            if !(by_stream || by_idle) {
                break;
            }
            let Some((_, ow)) = self.open.pop_first() else {
                break;
            };
            let mut books: Vec<_> = ow.books.into_iter().collect();
            books.sort_by_key(|(b, _)| *b);
            for (book_id, figures) in books {
                out.push(self.aggregate(window, ow.first_offset, book_id, figures));
            }
            self.horizon_ms = Some(
                self.horizon_ms
                    .map_or(window.end_ms, |h| h.max(window.end_ms)),
            );
            self.closed.push((window.start_ms, self.position));
            self.dirty = true;
        }
        // Windows that can no longer be reached by a replay need no record.
        let commit = self.commit_offset();
        self.closed.retain(|&(_, next)| next > commit);
        out
    }

    /// The figures of every open window so far, without closing them. Published on shutdown
    /// so nothing read is lost even when no one replays the partition (the in-process bus);
    /// the complete aggregate a later owner publishes for the same window replaces it.
    pub fn snapshot(&self) -> Vec<Aggregate> {
        let mut out = Vec::new();
        for (&start, ow) in &self.open {
            let window = Window {
                start_ms: start,
                end_ms: start + self.spec.length_ms(),
            };
            let mut books: Vec<_> = ow.books.iter().collect();
            books.sort_by_key(|(b, _)| **b);
            for (book_id, figures) in books {
                out.push(self.aggregate(window, ow.first_offset, *book_id, figures.clone()));
            }
        }
        out
    }

    fn aggregate(
        &self,
        window: Window,
        first_offset: i64,
        book_id: BookId,
        figures: Figures,
    ) -> Aggregate {
        Aggregate {
            window_start: window.start(),
            window_end: window.end(),
            book_id,
            source: SourceRange {
                topic: self.tp.topic,
                partition: self.tp.partition,
                first_offset,
                next_offset: self.position,
            },
            figures,
        }
    }

    /// The offset to commit: the first record of the oldest open window, or the position.
    pub fn commit_offset(&self) -> i64 {
        self.open
            .values()
            .map(|w| w.first_offset)
            .min()
            .unwrap_or(self.position)
    }

    /// The position and checkpoint to commit, if they changed since the last call.
    pub fn take_checkpoint(&mut self, force: bool) -> Option<Committed> {
        if !self.dirty && !force {
            return None;
        }
        self.dirty = false;
        let cp = Checkpoint {
            v: 1,
            stream: self.stream_ms,
            horizon: self.horizon_ms,
            closed: self.closed.clone(),
        };
        Some(Committed {
            offset: self.commit_offset(),
            metadata: serde_json::to_string(&cp).unwrap_or_default(),
        })
    }

    /// Marks the checkpoint as changed (for example after dead-lettering records while no
    /// window is open, so the position moves on).
    pub fn touch(&mut self) {
        self.dirty = true;
    }

    /// How many windows are open.
    pub fn open_windows(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests;
