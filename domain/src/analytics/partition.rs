//! The windows of one source partition: how events are folded in, when windows close, how
//! late events correct their window, and what is committed so a new owner carries on
//! exactly.
//!
//! # Exactness (docs/exactness.md)
//! - Each closed window yields one [`Aggregate`] per book, covering the partition's records
//!   `[first_offset, position)`.
//! - A record whose window has already closed is *late*. Unless it is older than the
//!   lateness horizon (then it is dead-lettered as `too_late`) it goes into the partition's
//!   open *correction*: per window, a tally of the late records from the first one on.
//!   A correction closes when the position crosses the end of its block of offsets
//!   ([`WindowSpec::block_end`]) or on idleness, and yields, per window and book, an
//!   aggregate covering `[first late record of that window, close)`. Regular windows and
//!   corrections close through the same code ([`Tally::close`]).
//! - Windows close in order of end time: at the record that carries stream time (the
//!   largest event time seen) past a window's end plus grace, or on idleness once the clock
//!   is past it and the bus has confirmed, when asked after that instant, that every record
//!   of the partition has been read. A batch or an idle poll only hints that the partition
//!   has caught up: the hint can be stale (a paused process, a slow fetch, a broker
//!   outage), and a window closed on it would turn on-time records still unread into late
//!   ones. Closing at a record, not at the end of a batch, makes the close position the
//!   same for every owner that reads the same records.
//! - Duplicates are decided by offsets alone: the record at `o` is a duplicate iff an
//!   earlier record of the same `event_id` lies in `[dedup_scope_start(o), o)`
//!   ([`WindowSpec::dedup_scope_start`]: at least the duplicate horizon back, on a block
//!   boundary), whatever window either copy fell in. Only those ids are kept, so the
//!   check's memory is bounded by the horizon, not by the traffic.
//! - The *fold point* is the first offset of the oldest open window or correction (or the
//!   position when none is open): a new owner folds in exactly what is open from there.
//!   The committed offset is the start of the fold point's duplicate scope (never before
//!   the first offset this partition's owners read): a new owner re-reads the records
//!   between the two only to learn their ids, so it decides every later record's
//!   duplicate exactly as the first run did.
//! - The commit metadata records the fold point, the partition's stream time there, its
//!   closing horizon, the recently closed windows with the position they closed at, and the
//!   offset below which every late record is in a published correction. On replay a record
//!   of a closed window below its window's close or below that offset was already counted
//!   and is skipped; one at or past both is late.
//! - A correction is published only once the close of every window it corrects has been
//!   committed, so no later owner can count its records in the window itself.
//! - The checkpoint also records the position the owner had read to ([`read_position`]):
//!   the committed offset trails it by up to the duplicate horizon, so the group's lag is
//!   measured from the read position, never from the committed offset
//!   ([`super::lag::unread_records`]).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

use super::aggregate::{Aggregate, Figures, SourceRange};
use super::window::{Window, WindowSpec, DEDUP_BLOCKS};
use crate::events::Event;
use crate::ids::BookId;
use crate::ports::Committed;
use crate::topics::TopicPartition;

/// What happened to one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// Folded into its window.
    Counted,
    /// An earlier record of the same `event_id` lies in its duplicate scope.
    Duplicate,
    /// A replay of a record that a published aggregate already covers, or one re-read
    /// only to learn its `event_id` for the duplicate check.
    Replayed,
    /// Its window had closed; folded into the window's correction.
    Corrected,
    /// Its window closed longer ago than the lateness horizon; it is dead-lettered.
    TooLate,
    /// It cannot be folded in (for example a second currency); it is dead-lettered.
    Rejected(String),
}

/// The figures of one window (or of one window's correction) so far, per book, from the
/// first record folded in.
struct Tally {
    first_offset: i64,
    /// Stream time just before its first record was read: what a replay from
    /// `first_offset` starts with.
    stream_before: Option<i64>,
    books: HashMap<BookId, Figures>,
}

impl Tally {
    fn new(first_offset: i64, stream_before: Option<i64>) -> Self {
        Tally {
            first_offset,
            stream_before,
            books: HashMap::new(),
        }
    }

    /// Folds in a record the duplicate check let through; the reason when it cannot be.
    fn add(&mut self, event: &Event) -> Result<(), String> {
        self.books.entry(event.book_id()).or_default().add(event)
    }

    /// The one rule for closing, windows and corrections alike: one aggregate per book, in
    /// book order, covering `[first_offset, next_offset)` of the partition.
    fn close(self, tp: TopicPartition, window: Window, next_offset: i64) -> Vec<Aggregate> {
        let mut books: Vec<_> = self.books.into_iter().collect();
        books.sort_by_key(|(b, _)| *b);
        books
            .into_iter()
            .map(|(book_id, figures)| {
                aggregate(tp, window, self.first_offset, next_offset, book_id, figures)
            })
            .collect()
    }

    /// The same figures, without closing (a snapshot).
    fn peek(&self, tp: TopicPartition, window: Window, next_offset: i64) -> Vec<Aggregate> {
        let mut books: Vec<_> = self.books.iter().collect();
        books.sort_by_key(|(b, _)| **b);
        books
            .into_iter()
            .map(|(book_id, figures)| {
                aggregate(
                    tp,
                    window,
                    self.first_offset,
                    next_offset,
                    *book_id,
                    figures.clone(),
                )
            })
            .collect()
    }
}

fn aggregate(
    tp: TopicPartition,
    window: Window,
    first_offset: i64,
    next_offset: i64,
    book_id: BookId,
    figures: Figures,
) -> Aggregate {
    Aggregate {
        window_start: window.start(),
        window_end: window.end(),
        book_id,
        source: SourceRange {
            topic: tp.topic,
            partition: tp.partition,
            first_offset,
            next_offset,
        },
        figures,
    }
}

/// The open correction of a partition: the late records read since the last correction
/// closed, per window. All its windows close together.
struct Correction {
    /// The end of the block of offsets it lies in: it closes there at the latest.
    block_end: i64,
    /// When the worker first saw it open (its clock, ms): it closes on idleness a grace
    /// period later.
    opened_ms: Option<i64>,
    windows: BTreeMap<i64, Tally>,
}

impl Correction {
    /// Its first record and the stream time just before it.
    fn first(&self) -> Option<(i64, Option<i64>)> {
        self.windows
            .values()
            .map(|t| (t.first_offset, t.stream_before))
            .min_by_key(|(o, _)| *o)
    }
}

/// A closed correction waiting for the close of its windows to be committed. Until it is
/// published it keeps the fold point at its first record, so a new owner rebuilds it.
struct HeldCorrection {
    first_offset: i64,
    stream_before: Option<i64>,
    next_offset: i64,
    last_window_end: i64,
    aggregates: Vec<Aggregate>,
}

/// A hash for event ids (UUIDv7: 48 bits of time, 74 random) that mixes all 128 bits in
/// two multiplications; the default SipHash costs more than the rest of the check.
#[derive(Default, Clone, Copy)]
struct IdHash(u64);

fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

impl Hasher for IdHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = fold_mul(self.0 ^ u64::from(b), 0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u128(&mut self, v: u128) {
        let lo = (v as u64) ^ 0x243F_6A88_85A3_08D3;
        let hi = ((v >> 64) as u64) ^ 0x1319_8A2E_0370_7344;
        self.0 = fold_mul(fold_mul(lo, hi) ^ self.0, 0xA409_3822_299F_31D0);
    }
}

type IdSet = HashSet<u128, BuildHasherDefault<IdHash>>;

/// The duplicate check of one partition: the `event_id` of every record read in the
/// current block of offsets and the [`DEDUP_BLOCKS`] blocks before it, exactly (no
/// fingerprints, so no false positive). Records are read in offset order, so the blocks
/// kept when the record at `o` is decided hold exactly the records of
/// `[dedup_scope_start(o), o)` that this owner read.
struct SeenIds {
    block_len: i64,
    /// Oldest first: (block, ids of the records read in it).
    blocks: VecDeque<(i64, IdSet)>,
    /// The set of an evicted block, cleared, reused with its capacity for the next block.
    spare: Option<IdSet>,
}

impl SeenIds {
    fn new(block_len: i64) -> Self {
        SeenIds {
            block_len,
            blocks: VecDeque::new(),
            spare: None,
        }
    }

    /// Forgets the blocks outside the scope of a record in `block`.
    fn evict(&mut self, block: i64) {
        while self
            .blocks
            .front()
            .is_some_and(|(b, _)| *b < block - DEDUP_BLOCKS)
        {
            if let Some((_, mut ids)) = self.blocks.pop_front() {
                ids.clear();
                self.spare = Some(ids);
            }
        }
    }

    /// Notes the record at `offset` carrying `id`; true when an earlier record in its
    /// scope carried the same id. A duplicate is noted too: the scope is one of records,
    /// not of first copies, so what a record's block holds never depends on blocks older
    /// than its own scope (which a new owner may not have read).
    fn observe(&mut self, offset: i64, id: u128) -> bool {
        let block = offset.div_euclid(self.block_len);
        self.evict(block);
        let at = match self.blocks.iter().rposition(|(b, _)| *b <= block) {
            Some(i) if self.blocks[i].0 == block => i,
            before => {
                let i = before.map_or(0, |i| i + 1);
                let ids = self.spare.take().unwrap_or_default();
                self.blocks.insert(i, (block, ids));
                i
            }
        };
        let fresh = self.blocks[at].1.insert(id);
        !fresh
            || self
                .blocks
                .iter()
                .enumerate()
                .any(|(i, (_, ids))| i != at && ids.contains(&id))
    }

    fn len(&self) -> usize {
        self.blocks.iter().map(|(_, ids)| ids.len()).sum()
    }

    /// Heap bytes of the sets (hashbrown: 16 bytes of id and one control byte per bucket,
    /// buckets a power of two at most 7/8 full).
    fn heap_bytes(&self) -> usize {
        let buckets = |cap: usize| match cap {
            0 => 0,
            1..=6 => cap + 1,
            _ => cap / 7 * 8,
        };
        self.blocks
            .iter()
            .map(|(_, ids)| ids)
            .chain(self.spare.iter())
            .map(|ids| match buckets(ids.capacity()) {
                0 => 0,
                b => b * 17 + 16,
            })
            .sum()
    }
}

/// The most bytes a checkpoint of `spec` takes, for window starts before the year 2286
/// (13 digits of milliseconds) and any offset. Its `closed` list holds the windows that
/// closed after the fold point, the first record of the oldest open window: at most the
/// windows that close during one window's life (length plus grace), plus one. Settings
/// whose bound exceeds the bus's commit-metadata limit are refused at startup.
pub fn checkpoint_bytes_bound(spec: &WindowSpec) -> usize {
    let length = spec.length_ms().max(1);
    let windows = (length + spec.grace_ms() + length - 1) / length + 1;
    let widest = Checkpoint {
        v: CHECKPOINT_VERSION,
        fold: Some(i64::MIN),
        read: Some(i64::MIN),
        stream: Some(9_999_999_999_999),
        horizon: Some(9_999_999_999_999),
        closed: vec![(9_999_999_999_999, i64::MAX); windows as usize],
        corrected: Some(i64::MIN),
    };
    serde_json::to_string(&widest).map_or(usize::MAX, |s| s.len())
}

/// The version [`PartitionWindows::take_checkpoint`] writes. Every change so far only
/// added optional fields, so any version decodes: a field a checkpoint lacks takes its
/// default. 4 added `read`.
const CHECKPOINT_VERSION: u8 = 4;

/// The checkpoint kept in the commit metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Checkpoint {
    /// Format version ([`CHECKPOINT_VERSION`] when written by this build).
    v: u8,
    /// The fold point, when past the committed offset: the records before it are re-read
    /// only to learn their event ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fold: Option<i64>,
    /// The owner's read position when the checkpoint was taken (the next offset it would
    /// have read), never before the fold point. Only [`read_position`] uses it; resuming
    /// does not. Absent from checkpoints before version 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    read: Option<i64>,
    /// Largest event time of the records counted before the fold point (ms), if any: a
    /// replay from there retraces stream time exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream: Option<i64>,
    /// Windows ending at or before this instant (ms) are closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    horizon: Option<i64>,
    /// Recently closed windows: (start ms, position when closed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    closed: Vec<(i64, i64)>,
    /// Every late record below this offset is in a published correction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    corrected: Option<i64>,
}

/// How far the group had read a partition when it committed `committed`: the read position
/// its checkpoint records, or for a checkpoint written before version 4 (or metadata that
/// is no checkpoint) its fold point, else the committed offset. Never below the committed
/// offset.
pub fn read_position(committed: &Committed) -> i64 {
    serde_json::from_str::<Checkpoint>(&committed.metadata)
        .ok()
        .and_then(|cp| cp.read.or(cp.fold))
        .map_or(committed.offset, |read| read.max(committed.offset))
}

/// The open windows and the open correction of one partition.
pub struct PartitionWindows {
    tp: TopicPartition,
    spec: WindowSpec,
    open: BTreeMap<i64, Tally>,
    correction: Option<Correction>,
    held: Vec<HeldCorrection>,
    /// Closed and ready to publish.
    ready: Vec<Aggregate>,
    stream_ms: Option<i64>,
    horizon_ms: Option<i64>,
    closed: Vec<(i64, i64)>,
    corrected_to: Option<i64>,
    /// The horizon of the last checkpoint the bus accepted, and of the last one taken.
    durable_horizon_ms: Option<i64>,
    taken_horizon_ms: Option<i64>,
    position: i64,
    /// The last batch or idle poll said the partition had caught up (a hint).
    caught_up: bool,
    /// Every record appended before this instant (ms) has been read: confirmed with the
    /// bus's high watermark, asked at that instant.
    confirmed_ms: Option<i64>,
    /// The duplicate check.
    seen: SeenIds,
    /// Records before this offset are re-read only to learn their ids (the fold point of
    /// the checkpoint resumed from).
    learn_until: i64,
    /// The first offset read by this partition's owners: no run knows of a record before
    /// it, so no commit needs to reach further back.
    floor: Option<i64>,
    corrections_released: u64,
    windows_closed: u64,
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
            correction: None,
            held: Vec::new(),
            ready: Vec::new(),
            stream_ms: cp.stream,
            horizon_ms: cp.horizon,
            closed: cp.closed,
            corrected_to: cp.corrected,
            durable_horizon_ms: cp.horizon,
            taken_horizon_ms: cp.horizon,
            position: committed.map_or(0, |c| c.offset),
            caught_up: false,
            confirmed_ms: None,
            seen: SeenIds::new(spec.dedup_block()),
            learn_until: committed.map_or(0, |c| cp.fold.unwrap_or(c.offset)),
            floor: committed.map(|c| c.offset),
            corrections_released: 0,
            windows_closed: 0,
            dirty: false,
        }
    }

    pub fn partition(&self) -> TopicPartition {
        self.tp
    }

    fn window(&self, start_ms: i64) -> Window {
        Window {
            start_ms,
            end_ms: start_ms + self.spec.length_ms(),
        }
    }

    /// Moves the position past the record at `offset`; a correction whose block ends at
    /// or before it closes at its block end, before the record is folded in.
    fn advance(&mut self, offset: i64) {
        if let Some(end) = self.correction.as_ref().map(|c| c.block_end) {
            if offset >= end {
                self.close_correction(end);
            }
        }
        if offset >= self.position {
            self.position = offset + 1;
        }
        if self.floor.is_none() {
            self.floor = Some(offset);
        }
        self.seen.evict(offset.div_euclid(self.spec.dedup_block()));
    }

    /// Folds in the record at `offset` carrying `event`.
    ///
    /// Its duplicate decision comes first and depends on offsets alone (see the module
    /// documentation), so every run that reads the record decides it alike; a duplicate
    /// changes nothing else, not even stream time.
    pub fn ingest(&mut self, offset: i64, event: &Event) -> Ingested {
        self.advance(offset);
        let duplicate = self.seen.observe(offset, event.event_id().as_u128());
        if self.rereads(offset) {
            // Before the fold point: counted (or decided) by an earlier owner; stream time
            // there is restored from the checkpoint.
            return Ingested::Replayed;
        }
        if duplicate {
            return Ingested::Duplicate;
        }
        let t = event.occurred_at().timestamp_millis();
        let window = self.spec.window_of(t);
        if self.horizon_ms.is_some_and(|h| window.end_ms <= h) {
            return self.late(offset, window, t, event);
        }
        let stream_before = self.stream_ms;
        let tally = self
            .open
            .entry(window.start_ms)
            .or_insert_with(|| Tally::new(offset, stream_before));
        if let Err(reason) = tally.add(event) {
            return Ingested::Rejected(reason);
        }
        if self.stream_ms.is_none_or(|s| t > s) {
            self.stream_ms = Some(t);
        }
        // Also a window this record opened in a gap of the partition's traffic, which
        // stream time has passed already: it closes at once.
        self.close_by_stream();
        Ingested::Counted
    }

    /// A record of a closed window: already covered, too late, or a correction.
    fn late(&mut self, offset: i64, window: Window, t: i64, event: &Event) -> Ingested {
        if self
            .closed
            .iter()
            .any(|&(start, next)| start == window.start_ms && offset < next)
        {
            // Counted the first time: stream time moves as it did then.
            if self.stream_ms.is_none_or(|s| t > s) {
                self.stream_ms = Some(t);
                self.close_by_stream();
            }
            return Ingested::Replayed;
        }
        if self
            .stream_ms
            .is_some_and(|s| s.saturating_sub(t) > self.spec.lateness_ms())
        {
            return Ingested::TooLate;
        }
        if self.corrected_to.is_some_and(|c| offset < c) {
            // In a published correction.
            return Ingested::Replayed;
        }
        let block_end = self.spec.block_end(offset);
        let stream_before = self.stream_ms;
        let correction = self.correction.get_or_insert_with(|| Correction {
            block_end,
            opened_ms: None,
            windows: BTreeMap::new(),
        });
        let tally = correction
            .windows
            .entry(window.start_ms)
            .or_insert_with(|| Tally::new(offset, stream_before));
        match tally.add(event) {
            Ok(()) => Ingested::Corrected,
            Err(reason) => Ingested::Rejected(reason),
        }
    }

    /// Closes, at the current position, every open window that stream time has passed.
    fn close_by_stream(&mut self) {
        let Some(stream) = self.stream_ms else {
            return;
        };
        while let Some(&start) = self.open.keys().next() {
            if stream < self.spec.closes_at(self.window(start)) {
                break;
            }
            self.close_oldest_window();
        }
    }

    /// Closes the oldest open window at the current position.
    fn close_oldest_window(&mut self) {
        let Some((start, tally)) = self.open.pop_first() else {
            return;
        };
        let window = self.window(start);
        self.ready
            .extend(tally.close(self.tp, window, self.position));
        self.horizon_ms = Some(
            self.horizon_ms
                .map_or(window.end_ms, |h| h.max(window.end_ms)),
        );
        self.closed.push((window.start_ms, self.position));
        self.windows_closed += 1;
        self.dirty = true;
    }

    /// Closes the open correction at `next_offset`; it is published once the close of
    /// every window it corrects has been committed.
    fn close_correction(&mut self, next_offset: i64) {
        let Some(correction) = self.correction.take() else {
            return;
        };
        let (first_offset, stream_before) =
            correction.first().unwrap_or((next_offset, self.stream_ms));
        let mut last_window_end = i64::MIN;
        let mut aggregates = Vec::new();
        for (start, tally) in correction.windows {
            let window = self.window(start);
            last_window_end = last_window_end.max(window.end_ms);
            aggregates.extend(tally.close(self.tp, window, next_offset));
        }
        self.held.push(HeldCorrection {
            first_offset,
            stream_before,
            next_offset,
            last_window_end,
            aggregates,
        });
        self.dirty = true;
        self.release_corrections();
    }

    /// Moves held corrections whose windows' closes are committed to the ready list.
    fn release_corrections(&mut self) {
        while let Some(h) = self.held.first() {
            if self
                .durable_horizon_ms
                .is_none_or(|d| d < h.last_window_end)
            {
                break;
            }
            let h = self.held.remove(0);
            self.corrected_to = Some(
                self.corrected_to
                    .map_or(h.next_offset, |c| c.max(h.next_offset)),
            );
            self.corrections_released += h.aggregates.len() as u64;
            self.ready.extend(h.aggregates);
            self.dirty = true;
        }
    }

    /// Whether the record at `offset` lies before the fold point of the checkpoint resumed
    /// from: it is re-read only to learn its id, and an earlier owner already counted it or
    /// dead-lettered it.
    pub fn rereads(&self, offset: i64) -> bool {
        offset < self.learn_until
    }

    /// Notes a record that was not folded in (undecodable), so the position moves past it.
    pub fn skip(&mut self, offset: i64) {
        self.advance(offset);
    }

    /// Records a hint that the partition has (or has not) caught up, as an idle poll says.
    pub fn set_caught_up(&mut self, caught_up: bool) {
        self.caught_up = caught_up;
    }

    /// Records the high watermark a batch came with: a hint, as the batch may be old.
    pub fn caught_up_with(&mut self, high_watermark: i64) {
        self.caught_up = self.position >= high_watermark;
    }

    /// The instant the oldest open window, or the open correction, closes at on idleness
    /// (`None` when nothing is open).
    fn idle_due(&self) -> Option<i64> {
        let window = self
            .open
            .keys()
            .next()
            .map(|&s| self.spec.closes_at(self.window(s)));
        let correction = self
            .correction
            .as_ref()
            .and_then(|c| c.opened_ms)
            .map(|o| o.saturating_add(self.spec.grace_ms()));
        match (window, correction) {
            (Some(w), Some(c)) => Some(w.min(c)),
            (w, c) => w.or(c),
        }
    }

    /// Whether a window or the correction is due on idleness at `now_ms` but waits for the
    /// bus to confirm that the partition has caught up (see
    /// [`PartitionWindows::confirm_caught_up`]).
    pub fn needs_confirmation(&self, now_ms: i64) -> bool {
        let Some(closes_at) = self.idle_due() else {
            return false;
        };
        self.caught_up && now_ms >= closes_at && self.confirmed_ms.is_none_or(|c| c < closes_at)
    }

    /// The bus's high watermark, asked at `as_of_ms`: when every record below it has been
    /// read, every record appended before `as_of_ms` has, and what closes by then may close
    /// on idleness.
    pub fn confirm_caught_up(&mut self, as_of_ms: i64, high_watermark: i64) {
        if self.position >= high_watermark {
            self.caught_up = true;
            self.confirmed_ms = Some(self.confirmed_ms.map_or(as_of_ms, |c| c.max(as_of_ms)));
        } else {
            self.caught_up = false;
        }
    }

    fn idle_closes(&self, now_ms: i64, closes_at: i64) -> bool {
        now_ms >= closes_at && self.confirmed_ms.is_some_and(|c| c >= closes_at)
    }

    /// Returns everything closed since the last call, one aggregate per book and window:
    /// windows closed by stream time as their records were read, and — at `now_ms` — on
    /// idleness once [`PartitionWindows::confirm_caught_up`] has confirmed, as of their
    /// closing time or later, that nothing of them is left to read; the same for the open
    /// correction, a grace period after it was first seen open; and corrections whose
    /// windows' closes have been committed since.
    pub fn close_due(&mut self, now_ms: i64) -> Vec<Aggregate> {
        while let Some(&start) = self.open.keys().next() {
            if !self.idle_closes(now_ms, self.spec.closes_at(self.window(start))) {
                break;
            }
            self.close_oldest_window();
        }
        if let Some(c) = self.correction.as_mut() {
            let opened = *c.opened_ms.get_or_insert(now_ms);
            if self.idle_closes(now_ms, opened.saturating_add(self.spec.grace_ms())) {
                self.close_correction(self.position);
            }
        }
        self.release_corrections();
        // Windows that can no longer be reached by a replay need no record.
        let fold = self.fold_offset();
        self.closed.retain(|&(_, next)| next > fold);
        std::mem::take(&mut self.ready)
    }

    /// The figures of every open window and of the open correction so far, without closing
    /// them. Published on shutdown so nothing read is lost even when no one replays the
    /// partition (the in-process bus); the complete aggregate a later owner publishes for
    /// the same offsets contains and replaces it.
    pub fn snapshot(&self) -> Vec<Aggregate> {
        let mut out = Vec::new();
        for (&start, tally) in &self.open {
            out.extend(tally.peek(self.tp, self.window(start), self.position));
        }
        if let Some(c) = &self.correction {
            for (&start, tally) in &c.windows {
                out.extend(tally.peek(self.tp, self.window(start), self.position));
            }
        }
        out
    }

    /// The fold point and the stream time just before it: the first record of the oldest
    /// open window, open correction or held correction, or the position.
    fn fold_point(&self) -> (i64, Option<i64>) {
        let tallies = self
            .open
            .values()
            .chain(self.correction.iter().flat_map(|c| c.windows.values()))
            .map(|t| (t.first_offset, t.stream_before));
        let held = self.held.iter().map(|h| (h.first_offset, h.stream_before));
        let point = tallies
            .chain(held)
            .filter(|(o, _)| *o < self.position)
            .min_by_key(|(o, _)| *o)
            .unwrap_or((self.position, self.stream_ms));
        if point.0 < self.learn_until {
            // Still re-reading what the checkpoint resumed from had folded: its fold point
            // and stream time stand (the records re-read move neither).
            return (self.learn_until, self.stream_ms);
        }
        point
    }

    /// The first record a new owner folds in: everything before it is published.
    pub fn fold_offset(&self) -> i64 {
        self.fold_point().0
    }

    /// The offset to commit: where a new owner starts reading, the start of the fold
    /// point's duplicate scope (or the first offset ever read, if later), so it learns
    /// every id a later record's duplicate decision depends on.
    pub fn commit_offset(&self) -> i64 {
        let fold = self.fold_offset();
        self.spec
            .dedup_scope_start(fold)
            .max(self.floor.unwrap_or(fold))
            .min(fold)
    }

    /// The position and checkpoint to commit, if they changed since the last call.
    pub fn take_checkpoint(&mut self, force: bool) -> Option<Committed> {
        if !self.dirty && !force {
            return None;
        }
        self.dirty = false;
        self.taken_horizon_ms = self.horizon_ms;
        let (fold, stream) = self.fold_point();
        let offset = self.commit_offset();
        let cp = Checkpoint {
            v: CHECKPOINT_VERSION,
            fold: (fold > offset).then_some(fold),
            // A resumed owner re-reading the records before the fold point is behind what
            // an earlier owner read: those records count as read.
            read: Some(self.position.max(fold)),
            stream,
            horizon: self.horizon_ms,
            closed: self.closed.clone(),
            corrected: self.corrected_to,
        };
        Some(Committed {
            offset,
            metadata: serde_json::to_string(&cp).unwrap_or_default(),
        })
    }

    /// The bus accepted the last checkpoint taken: the windows it closes are closed for
    /// every later owner, so corrections of them may be published.
    pub fn committed(&mut self) {
        if let Some(h) = self.taken_horizon_ms {
            self.durable_horizon_ms = Some(self.durable_horizon_ms.map_or(h, |d| d.max(h)));
        }
        self.release_corrections();
    }

    /// The bus refused the last checkpoint taken: it is taken again next time.
    pub fn commit_failed(&mut self) {
        self.dirty = true;
    }

    /// Aggregates closed and not yet returned by [`PartitionWindows::close_due`].
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Windows closed since the last call.
    pub fn take_windows_closed(&mut self) -> u64 {
        std::mem::take(&mut self.windows_closed)
    }

    /// Correction aggregates released for publishing since the last call.
    pub fn take_corrections_released(&mut self) -> u64 {
        std::mem::take(&mut self.corrections_released)
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

    /// How many event ids the duplicate check holds, and their heap bytes (estimated from
    /// the sets' capacities).
    pub fn dedup_memory(&self) -> (usize, usize) {
        (self.seen.len(), self.seen.heap_bytes())
    }

    /// How many windows the open correction corrects.
    pub fn open_corrections(&self) -> usize {
        self.correction.as_ref().map_or(0, |c| c.windows.len())
    }
}

#[cfg(test)]
mod tests;
