use std::time::Duration;

use chrono::{DateTime, Utc};

use std::collections::{BTreeMap, HashSet};

use super::*;
use crate::analytics::window::millis;
use crate::fixtures::{event_id as id, purchase, rating, view};
use crate::ids::{PurchaseId, UserId};
use crate::money::{Currency, Money};
use crate::topics::Topic;

const MIN: i64 = 60_000;

fn spec() -> WindowSpec {
    WindowSpec::new(Duration::from_secs(60), Duration::from_secs(5)).expect("valid spec")
}

fn at(ms: i64) -> DateTime<Utc> {
    millis(ms)
}

fn tp(topic: Topic) -> TopicPartition {
    TopicPartition::new(topic, 0)
}

#[test]
fn a_window_closes_when_stream_time_passes_its_end_plus_grace() {
    let mut p = PartitionWindows::resume(tp(Topic::BookViews), spec(), None);
    assert_eq!(p.ingest(0, &view(1, 10_000, 7, Some(1))), Ingested::Counted);
    assert_eq!(p.ingest(1, &view(2, 50_000, 7, None)), Ingested::Counted);
    // 64.999 s is inside the grace period: nothing closes.
    assert_eq!(p.ingest(2, &view(3, 64_999, 8, Some(2))), Ingested::Counted);
    assert!(p.close_due(0).is_empty());
    // 65 s = end (60 s) + grace (5 s): the first window closes.
    assert_eq!(p.ingest(3, &view(4, 65_000, 8, Some(2))), Ingested::Counted);
    let out = p.close_due(0);
    assert_eq!(out.len(), 1);
    let a = &out[0];
    assert_eq!((a.window_start, a.window_end), (at(0), at(MIN)));
    assert_eq!(a.book_id, BookId(7));
    assert_eq!(a.figures.events, 2);
    assert_eq!(a.figures.anonymous, 1);
    assert_eq!(a.figures.users.estimate(), 1);
    assert_eq!(
        (a.figures.first_at, a.figures.last_at),
        (Some(at(10_000)), Some(at(50_000)))
    );
    assert_eq!(
        (a.source.first_offset, a.source.next_offset),
        (0, 4),
        "covers every record read so far"
    );
    // The oldest open window starts at offset 2; the commit reaches back to the start of
    // its duplicate scope, no further than the first offset read.
    assert_eq!(p.fold_offset(), 2);
    assert_eq!(p.commit_offset(), 0);
}

#[test]
fn an_idle_partition_closes_its_windows_by_the_clock() {
    let mut p = PartitionWindows::resume(tp(Topic::BookViews), spec(), None);
    p.ingest(0, &view(1, 1_000, 7, Some(1)));
    p.caught_up_with(1);
    assert!(!p.needs_confirmation(64_999), "not before end + grace");
    assert!(p.needs_confirmation(65_000));
    assert!(
        p.close_due(65_000).is_empty(),
        "a hint alone closes nothing"
    );
    p.confirm_caught_up(64_999, 1);
    assert!(
        p.close_due(65_000).is_empty(),
        "confirmed only as of before end + grace"
    );
    p.confirm_caught_up(65_000, 1);
    assert!(!p.needs_confirmation(65_000));
    let out = p.close_due(65_000);
    assert_eq!(out.len(), 1);
    assert_eq!(p.fold_offset(), 1);
    assert_eq!(p.open_windows(), 0);
}

#[test]
fn a_partition_that_is_behind_does_not_close_by_the_clock() {
    let mut p = PartitionWindows::resume(tp(Topic::BookViews), spec(), None);
    p.ingest(0, &view(1, 1_000, 7, Some(1)));
    p.caught_up_with(100);
    p.confirm_caught_up(10 * MIN, 100);
    assert!(
        p.close_due(10 * MIN).is_empty(),
        "a backlog must not be judged by the wall clock"
    );
}

#[test]
fn late_events_inside_grace_count_and_beyond_it_are_late() {
    let mut p = PartitionWindows::resume(tp(Topic::BookViews), spec(), None);
    p.ingest(0, &view(1, 59_000, 7, Some(1)));
    p.ingest(1, &view(2, 62_000, 7, Some(1)));
    // Inside grace: window [0, 60 s) is still open.
    assert_eq!(p.ingest(2, &view(3, 30_000, 7, Some(2))), Ingested::Counted);
    p.ingest(3, &view(4, 70_000, 7, Some(1)));
    let closed = p.close_due(0);
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].figures.events, 2);
    // Beyond grace: the window has closed and published; the event goes to its correction.
    assert_eq!(
        p.ingest(4, &view(5, 20_000, 7, Some(3))),
        Ingested::Corrected
    );
}

#[test]
fn a_duplicate_event_id_counts_once() {
    let mut p = PartitionWindows::resume(tp(Topic::BookPurchases), spec(), None);
    assert_eq!(
        p.ingest(0, &purchase(1, 1_000, 7, 3, 1999)),
        Ingested::Counted
    );
    assert_eq!(
        p.ingest(1, &purchase(1, 1_000, 7, 3, 1999)),
        Ingested::Duplicate
    );
    assert_eq!(p.ingest(2, &purchase(2, 2_000, 7, 4, 1)), Ingested::Counted);
    p.confirm_caught_up(MIN + 5_000, 3);
    let out = p.close_due(MIN + 5_000);
    assert_eq!(out[0].figures.events, 2);
    assert_eq!(
        out[0].figures.revenue_cents, 2000,
        "exact cents, no floating point"
    );
    assert_eq!(out[0].figures.users.estimate(), 2);
}

#[test]
fn a_second_currency_is_rejected_not_summed() {
    let mut p = PartitionWindows::resume(tp(Topic::BookPurchases), spec(), None);
    p.ingest(0, &purchase(1, 1_000, 7, 3, 500));
    let eur = Event::BookPurchased {
        event_id: id(2),
        occurred_at: at(1_000),
        book_id: BookId(7),
        user_id: UserId(4),
        purchase_id: PurchaseId(2),
        price: Money::new(700, Currency::parse("EUR").expect("valid")),
    };
    assert!(matches!(p.ingest(1, &eur), Ingested::Rejected(_)));
    p.confirm_caught_up(MIN + 5_000, 2);
    let out = p.close_due(MIN + 5_000);
    assert_eq!(
        (out[0].figures.events, out[0].figures.revenue_cents),
        (1, 500)
    );
}

#[test]
fn a_rating_update_replaces_its_old_value() {
    let mut p = PartitionWindows::resume(tp(Topic::BookRatings), spec(), None);
    p.ingest(0, &rating(1, 1_000, 7, 1, 2, None));
    p.ingest(1, &rating(2, 2_000, 7, 2, 5, None));
    p.ingest(2, &rating(3, 3_000, 7, 1, 4, Some(2)));
    p.confirm_caught_up(MIN + 5_000, 3);
    let f = &p.close_due(MIN + 5_000)[0].figures;
    assert_eq!((f.ratings_created, f.ratings_updated), (2, 1));
    // Current ratings: user 1 → 4, user 2 → 5.
    assert_eq!(f.rating_sum_delta, 9);
    assert_eq!(f.rating_distribution_delta, [0, 0, 0, 1, 1]);
    assert_eq!(f.submitted_rating_sum, 11);
}

#[test]
fn a_new_owner_resumes_from_the_checkpoint_and_publishes_the_same_figures() {
    let events: Vec<Event> = vec![
        view(1, 1_000, 7, Some(1)),
        view(2, 61_000, 7, Some(2)),
        view(3, 59_000, 8, Some(3)), // window 0, inside grace
        view(4, 66_000, 7, Some(1)), // closes window 0
        view(5, 70_000, 8, Some(4)),
        view(6, 20_000, 7, Some(5)), // late for window 0: its correction
    ];
    // The first owner reads everything, closes window 0, commits, then dies.
    let mut first = PartitionWindows::resume(tp(Topic::BookViews), spec(), None);
    for (o, e) in events.iter().enumerate() {
        first.ingest(o as i64, e);
        if o == 3 {
            assert_eq!(first.close_due(0).len(), 2);
        }
    }
    let cp = first.take_checkpoint(false).expect("a window closed");
    assert_eq!(first.fold_offset(), 1, "window 1 opened at offset 1");
    assert_eq!(
        cp.offset, 0,
        "its duplicate scope reaches back to the first record"
    );
    first.committed();
    // The second owner replays from the committed offset.
    let mut second = PartitionWindows::resume(tp(Topic::BookViews), spec(), Some(&cp));
    let outcomes: Vec<Ingested> = events
        .iter()
        .enumerate()
        .skip(cp.offset as usize)
        .map(|(o, e)| second.ingest(o as i64, e))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            Ingested::Replayed, // window 0, already published
            Ingested::Counted,  // window 1
            Ingested::Replayed, // window 0, already published
            Ingested::Counted,
            Ingested::Counted,
            Ingested::Corrected, // late the first time too
        ]
    );
    // Both owners publish identical figures for window 1.
    first.confirm_caught_up(2 * MIN + 5_000, 6);
    second.confirm_caught_up(2 * MIN + 5_000, 6);
    let a = first.close_due(2 * MIN + 5_000);
    let b = second.close_due(2 * MIN + 5_000);
    assert_eq!(a, b);
    assert_eq!(a.iter().map(|x| x.figures.events).sum::<u64>(), 3);
    // And the same correction of window 0, a grace period later.
    let later = 2 * MIN + 10_000;
    first.confirm_caught_up(later, 6);
    second.confirm_caught_up(later, 6);
    let a = first.close_due(later);
    let b = second.close_due(later);
    assert_eq!(a, b);
    assert_eq!(a.len(), 1);
    assert_eq!(
        (
            a[0].window_start,
            a[0].source.first_offset,
            a[0].source.next_offset
        ),
        (at(0), 5, 6)
    );
}

/// Found by the chaos suite: an analytics instance frozen (SIGSTOP) while it owned a
/// partition. It had caught up before the pause; on-time records were appended during it;
/// after it the clock was past the window's end plus grace, and the window closed on the
/// old "caught up" before those records were read, which then went to the dead letters as
/// late. Only the bus's high watermark, asked after the pause, may let it close.
#[test]
fn a_stale_caught_up_hint_never_closes_a_window_with_records_unread() {
    let mut p = PartitionWindows::resume(tp(Topic::BookViews), spec(), None);
    p.ingest(0, &view(1, 1_000, 7, Some(1)));
    p.caught_up_with(1); // caught up before the pause
    let after_pause = 2 * MIN;
    assert!(
        p.close_due(after_pause).is_empty(),
        "the hint is not enough"
    );
    assert!(p.needs_confirmation(after_pause));
    // The bus knows better: offset 1 was appended (on time) during the pause.
    p.confirm_caught_up(after_pause, 2);
    assert!(p.close_due(after_pause).is_empty());
    assert!(
        !p.needs_confirmation(after_pause),
        "behind: wait for the records"
    );
    assert_eq!(p.ingest(1, &view(2, 2_000, 7, Some(2))), Ingested::Counted);
    p.caught_up_with(2);
    p.confirm_caught_up(after_pause + 100, 2);
    let out = p.close_due(after_pause + 100);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].figures.events, 2);
}

// ---------------------------------------------------------------------------------------
// Late events and corrections
// ---------------------------------------------------------------------------------------

use crate::analytics::Aggregate;
use crate::stats::{group_of, upsert_into, AggregateGroup};

/// Aggregates stored under the domain's upsert rule, as every sink keeps them.
#[derive(Default)]
struct Sink {
    groups: BTreeMap<AggregateGroup, Vec<Aggregate>>,
}

/// Per (window start ms, book): events, distinct users, first and last event time (ms).
type Cells = BTreeMap<(i64, i64), (u64, u64, i64, i64)>;

impl Sink {
    fn upsert(&mut self, aggregates: &[Aggregate]) {
        for a in aggregates {
            upsert_into(self.groups.entry(group_of(a)).or_default(), a);
        }
    }

    fn cells(&self) -> Cells {
        let mut folds: BTreeMap<(i64, i64), Figures> = BTreeMap::new();
        for a in self.groups.values().flatten() {
            let f = folds
                .entry((a.window_start.timestamp_millis(), a.book_id.get()))
                .or_default();
            f.events += a.figures.events;
            f.users.merge(&a.figures.users);
            f.first_at = f.first_at.min(a.figures.first_at).or(a.figures.first_at);
            f.last_at = f.last_at.max(a.figures.last_at);
        }
        folds
            .into_iter()
            .map(|(k, f)| {
                let ms = |t: Option<DateTime<Utc>>| t.map_or(-1, |t| t.timestamp_millis());
                (
                    k,
                    (f.events, f.users.estimate(), ms(f.first_at), ms(f.last_at)),
                )
            })
            .collect()
    }
}

/// The exact figures of `events`, written from the events themselves: each `event_id`
/// once, in the window of its time.
fn exact(events: &[&Event]) -> Cells {
    let mut seen = HashSet::new();
    let once: Vec<&Event> = events
        .iter()
        .copied()
        .filter(|e| seen.insert(e.event_id()))
        .collect();
    figures_of(&once, MIN)
}

/// The figures of every one of `events` (duplicates included), in windows of `len_ms`.
fn figures_of(events: &[&Event], len_ms: i64) -> Cells {
    let mut users: BTreeMap<(i64, i64), HashSet<i64>> = BTreeMap::new();
    let mut out: Cells = BTreeMap::new();
    for e in events {
        let t = e.occurred_at().timestamp_millis();
        let key = (t.div_euclid(len_ms) * len_ms, e.book_id().get());
        let c = out.entry(key).or_insert((0, 0, t, t));
        c.0 += 1;
        c.2 = c.2.min(t);
        c.3 = c.3.max(t);
        if let Some(u) = e.user_id() {
            users.entry(key).or_default().insert(u.get());
        }
    }
    for (k, c) in out.iter_mut() {
        c.1 = users.get(k).map_or(0, |u| u.len() as u64);
    }
    out
}

/// Where a simulated owner dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    /// After closing, before anything closed is published.
    BeforePublish,
    /// After publishing, before the commit.
    BeforeCommit,
    /// After the commit.
    AfterCommit,
}

/// What a simulated run of the worker loop over one partition left.
struct Run {
    sink: Sink,
    /// Dead-lettered records (offsets), replays included.
    too_late: Vec<i64>,
    corrected: u64,
    steps: usize,
    /// Whether a correction was open when the owner was killed.
    killed_with_open_correction: bool,
    max_metadata: usize,
    /// Commits whose offset lies before their fold point (a new owner re-reads records to
    /// learn their ids), and whose offset is past the first record.
    learning_commits: usize,
}

/// Drives the worker loop's order of effects over `log` (record `i` is appended at
/// `log[i].0` ms of the clock): every second, read up to `batch` records, confirm caught up
/// when asked, close, publish, commit, publish what the commit released. `kills` lists the
/// steps at which the owner dies; the next owner resumes from the last commit.
fn drive(spec: WindowSpec, log: &[(i64, Event)], batch: usize, kills: &[(usize, Kill)]) -> Run {
    drive_with_outage(spec, log, batch, kills, 0..0)
}

/// [`drive`], with every commit of the steps in `outage` refused by the bus.
fn drive_with_outage(
    spec: WindowSpec,
    log: &[(i64, Event)],
    batch: usize,
    kills: &[(usize, Kill)],
    outage: std::ops::Range<usize>,
) -> Run {
    let tp = tp(Topic::BookViews);
    let mut committed: Option<Committed> = None;
    let mut p = PartitionWindows::resume(tp, spec, None);
    let mut next = 0usize;
    let mut run = Run {
        sink: Sink::default(),
        too_late: Vec::new(),
        corrected: 0,
        steps: 0,
        killed_with_open_correction: false,
        max_metadata: 0,
        learning_commits: 0,
    };
    let end = log.iter().map(|(t, _)| *t).max().unwrap_or(0) + 3 * MIN;
    let mut now = 0;
    while now <= end {
        run.steps += 1;
        let step = run.steps;
        let visible = log.iter().take_while(|(t, _)| *t <= now).count();
        let upto = visible.min(next + batch);
        for (o, (_, e)) in log.iter().enumerate().take(upto).skip(next) {
            match p.ingest(o as i64, e) {
                Ingested::TooLate => {
                    run.too_late.push(o as i64);
                    p.touch();
                }
                Ingested::Corrected => run.corrected += 1,
                Ingested::Rejected(r) => panic!("rejected {r}"),
                _ => {}
            }
        }
        if upto > next {
            p.caught_up_with(visible as i64);
        } else {
            p.set_caught_up(true);
        }
        next = upto;
        if p.needs_confirmation(now) {
            p.confirm_caught_up(now, visible as i64);
        }
        let kill = kills.iter().find(|(s, _)| *s == step).map(|(_, k)| *k);
        let dies = |p: &mut PartitionWindows, run: &mut Run, committed: &Option<Committed>| {
            run.killed_with_open_correction |= p.open_corrections() > 0;
            *p = PartitionWindows::resume(tp, spec, committed.as_ref());
            committed.as_ref().map_or(0, |c| c.offset as usize)
        };
        let closed = p.close_due(now);
        if kill == Some(Kill::BeforePublish) {
            next = dies(&mut p, &mut run, &committed);
            now += 1000;
            continue;
        }
        run.sink.upsert(&closed);
        if kill == Some(Kill::BeforeCommit) {
            next = dies(&mut p, &mut run, &committed);
            now += 1000;
            continue;
        }
        if let Some(cp) = p.take_checkpoint(false) {
            run.max_metadata = run.max_metadata.max(cp.metadata.len());
            if cp.offset > 0 && cp.metadata.contains("\"fold\"") {
                run.learning_commits += 1;
            }
            if outage.contains(&step) {
                p.commit_failed();
            } else {
                committed = Some(cp);
                p.committed();
            }
        }
        if kill == Some(Kill::AfterCommit) {
            next = dies(&mut p, &mut run, &committed);
            now += 1000;
            continue;
        }
        if p.has_ready() {
            run.sink.upsert(&p.close_due(now));
            if let Some(cp) = p.take_checkpoint(false) {
                if outage.contains(&step) {
                    p.commit_failed();
                } else {
                    committed = Some(cp);
                    p.committed();
                }
            }
        }
        now += 1000;
    }
    run
}

/// A partition's traffic with late events: on-time views of windows 0–2; views of window
/// 0 arriving after it closed on idleness (one of them delivered twice, and an on-time
/// view among them that carries stream time past window 0's close); more late views
/// of windows 0 and 1 after window 1 closed by stream time; one view older than the
/// lateness horizon; and second copies of on-time views of windows 0, 1 and 2 arriving
/// after their windows closed (a spool or outbox re-delivering after a crash).
fn late_traffic() -> Vec<(i64, Event)> {
    vec![
        (1_000, view(1, 1_000, 7, Some(1))),
        (2_000, view(2, 2_000, 8, Some(2))),
        (30_000, view(3, 30_000, 7, Some(3))),
        (61_000, view(4, 61_000, 7, Some(1))),
        (62_000, view(5, 62_000, 7, Some(4))),
        // Window 0 closes on idleness at 65 s. Then, late:
        (80_000, view(6, 10_000, 7, Some(5))),
        (80_500, view(16, 80_500, 9, Some(11))), // on time: stream time passes window 0
        (81_000, view(7, 20_000, 8, Some(6))),
        (82_000, view(6, 10_000, 7, Some(5))), // the same event again
        (83_000, view(8, 40_000, 7, Some(1))),
        (84_000, view(9, 50_000, 9, Some(7))),
        (121_000, view(10, 121_000, 7, Some(2))),
        (126_000, view(11, 126_000, 9, Some(3))), // closes window 1 by stream time
        (127_000, view(12, 65_000, 7, Some(8))),  // late for window 1
        (128_000, view(13, 30_000, 8, Some(9))),  // late for window 0, a second time
        (129_000, view(14, 59_999, 8, Some(2))),
        (200_000, view(15, 1_000, 7, Some(10))), // older than the lateness horizon
        (200_500, view(3, 30_000, 7, Some(3))),  // on time at 2, again after window 0 closed
        (201_000, view(4, 61_000, 7, Some(1))),  // on time at 3, again after window 1 closed
        (202_000, view(10, 121_000, 7, Some(2))), // on time at 11, again after window 2 closed
    ]
}

/// Every copy of [`late_traffic`] lies within 16 offsets of its first.
fn late_spec() -> WindowSpec {
    spec()
        .with_lateness_horizon(Duration::from_secs(100))
        .expect("valid horizon")
        .with_correction_block(4)
        .with_dedup_horizon(16)
}

fn expected_late_traffic(log: &[(i64, Event)]) -> Cells {
    let counted: Vec<&Event> = log
        .iter()
        .filter(|(_, e)| e.event_id() != id(15))
        .map(|(_, e)| e)
        .collect();
    exact(&counted)
}

#[test]
fn a_late_event_corrects_its_window() {
    let mut p = PartitionWindows::resume(tp(Topic::BookViews), spec(), None);
    p.ingest(0, &view(1, 1_000, 7, Some(1)));
    p.confirm_caught_up(65_000, 1);
    let window = p.close_due(65_000);
    assert_eq!(window.len(), 1);
    let cp = p.take_checkpoint(false).expect("closed");
    p.committed();
    assert_eq!((p.fold_offset(), cp.offset), (1, 0));
    // Two late views of window 0 and a view of window 1, on time.
    assert_eq!(
        p.ingest(1, &view(2, 2_000, 7, Some(2))),
        Ingested::Corrected
    );
    assert_eq!(p.ingest(2, &view(3, 61_000, 7, Some(3))), Ingested::Counted);
    assert_eq!(
        p.ingest(3, &view(4, 59_999, 7, Some(1))),
        Ingested::Corrected
    );
    assert!(
        p.close_due(70_000).is_empty(),
        "a correction waits its grace"
    );
    assert_eq!(p.open_corrections(), 1);
    assert_eq!(p.fold_offset(), 1, "the correction is open from offset 1");
    assert_eq!(p.take_checkpoint(true).map(|c| c.offset), Some(0));
    p.confirm_caught_up(75_000, 4);
    let out = p.close_due(75_000);
    assert_eq!(out.len(), 1);
    let c = &out[0];
    assert_eq!((c.window_start, c.book_id), (at(0), BookId(7)));
    assert_eq!((c.source.first_offset, c.source.next_offset), (1, 4));
    assert_eq!(c.figures.events, 2);
    assert_eq!(c.figures.users.estimate(), 2);
    assert_eq!(
        (c.figures.first_at, c.figures.last_at),
        (Some(at(2_000)), Some(at(59_999)))
    );
    // The stored window is the sum of its aggregate and its correction.
    let mut sink = Sink::default();
    sink.upsert(&window);
    sink.upsert(&out);
    assert_eq!(sink.cells()[&(0, 7)], (3, 2, 1_000, 59_999));
    let cp = p.take_checkpoint(false).expect("changed");
    assert_eq!(
        (p.fold_offset(), cp.offset),
        (2, 0),
        "window 1 is open from 2; ids are learnt from 0"
    );
    // A replay from there skips what is published and rebuilds what is open.
    let mut q = PartitionWindows::resume(tp(Topic::BookViews), spec(), Some(&cp));
    assert_eq!(q.ingest(0, &view(1, 1_000, 7, Some(1))), Ingested::Replayed);
    assert_eq!(q.ingest(1, &view(2, 2_000, 7, Some(2))), Ingested::Replayed);
    assert_eq!(q.ingest(2, &view(3, 61_000, 7, Some(3))), Ingested::Counted);
    assert_eq!(
        q.ingest(3, &view(4, 59_999, 7, Some(1))),
        Ingested::Replayed
    );
    // A second copy of a corrected event, later in the block, counts nowhere.
    assert_eq!(
        q.ingest(4, &view(2, 2_000, 7, Some(2))),
        Ingested::Duplicate
    );
}

#[test]
fn a_run_without_faults_counts_every_late_event_once_and_dead_letters_only_too_late() {
    let log = late_traffic();
    for batch in [1, 2, 3, 100] {
        let run = drive(late_spec(), &log, batch, &[]);
        assert_eq!(
            run.sink.cells(),
            expected_late_traffic(&log),
            "batches of {batch}"
        );
        assert_eq!(run.too_late, vec![16], "batches of {batch}");
        assert_eq!(
            run.corrected, 7,
            "6 late events and no duplicate, batches of {batch}"
        );
        assert!(run.max_metadata < 4096);
        assert!(run.max_metadata <= checkpoint_bytes_bound(&late_spec()));
    }
}

#[test]
fn the_checkpoint_bound_grows_with_grace_over_window() {
    let spec = |w: u64, g: u64| {
        WindowSpec::new(Duration::from_secs(w), Duration::from_secs(g)).expect("valid")
    };
    // Fixed fields, then 36 bytes per closed window: "[9999999999999,9223372036854775807],"
    // less the last comma. 60 s with 5 s of grace lists at most 3 windows.
    let base = checkpoint_bytes_bound(&spec(60, 0));
    assert_eq!(checkpoint_bytes_bound(&spec(60, 5)), base + 36);
    assert_eq!(checkpoint_bytes_bound(&spec(60, 5)), 262);
    // 1 s windows with an hour of grace: 3,602 windows, far past Kafka's 4,096 bytes.
    assert_eq!(checkpoint_bytes_bound(&spec(1, 3600)), base + 3600 * 36);
    assert!(checkpoint_bytes_bound(&spec(60, 3600)) < 4096);
}

#[test]
fn a_duplicate_of_a_late_event_counts_once() {
    let log = late_traffic();
    let run = drive(late_spec(), &log, 100, &[]);
    let w0 = run.sink.cells()[&(0, 7)];
    // Views 1 (user 1) and 3 (user 3, again after the window closed) on time; 6 (user 5,
    // twice) and 8 (user 1) late.
    assert_eq!(w0, (4, 3, 1_000, 40_000));
}

#[test]
fn replays_from_any_checkpoint_store_exactly_the_same_figures() {
    let log = late_traffic();
    let want = expected_late_traffic(&log);
    let steps = drive(late_spec(), &log, 100, &[]).steps;
    let mut runs = 0;
    for batch in [1, 3, 100] {
        for step in 1..=steps {
            for kill in [Kill::BeforePublish, Kill::BeforeCommit, Kill::AfterCommit] {
                let run = drive(late_spec(), &log, batch, &[(step, kill)]);
                assert_eq!(
                    run.sink.cells(),
                    want,
                    "killed {kill:?} at step {step}, batches of {batch}"
                );
                assert!(run.too_late.iter().all(|&o| o == 16), "{:?}", run.too_late);
                runs += 1;
            }
        }
    }
    // Twice, at every pair of steps a few seconds apart.
    for first in 1..steps {
        for gap in [1, 2, 5] {
            let kills = [
                (first, Kill::BeforeCommit),
                (first + gap, Kill::AfterCommit),
            ];
            let run = drive(late_spec(), &log, 2, &kills);
            assert_eq!(run.sink.cells(), want, "killed at {kills:?}");
            runs += 1;
        }
    }
    // Commits refused for a stretch (the bus away), then a kill: what was closed but not
    // committed is closed again by the next owner, maybe at other positions; a copy of an
    // event is recognised whether the replay counted its first copy in the window or in a
    // correction.
    for from in 1..steps {
        for len in [1, 5, 20, 60] {
            for kill in [Kill::BeforeCommit, Kill::AfterCommit] {
                let until = from + len;
                let run =
                    drive_with_outage(late_spec(), &log, 100, &[(until, kill)], from..until + 1);
                assert_eq!(
                    run.sink.cells(),
                    want,
                    "commits refused in steps {from}..={until}, then killed {kill:?}"
                );
                runs += 1;
            }
        }
    }
    assert!(runs > 1000, "{runs} runs");
}

#[test]
fn a_correction_spanning_a_rebalance_is_completed_by_the_next_owner() {
    let log = late_traffic();
    let want = expected_late_traffic(&log);
    let steps = drive(late_spec(), &log, 100, &[]).steps;
    let mut spanning = 0;
    for step in 1..=steps {
        for kill in [Kill::BeforeCommit, Kill::AfterCommit] {
            let run = drive(late_spec(), &log, 100, &[(step, kill)]);
            if run.killed_with_open_correction {
                spanning += 1;
                assert_eq!(run.sink.cells(), want, "rebalanced {kill:?} at step {step}");
            }
        }
    }
    assert!(
        spanning >= 4,
        "{spanning} rebalances with a correction open"
    );
}

#[test]
fn a_correction_closes_at_its_block_end_whatever_the_batches() {
    // Block of 4 offsets: late records at 4, 5 and 6 of window 0; records 8 and 9 on time.
    let spec = spec().with_correction_block(4);
    let mut p = PartitionWindows::resume(tp(Topic::BookViews), spec, None);
    p.ingest(0, &view(1, 1_000, 7, Some(1)));
    p.ingest(1, &view(2, 61_000, 7, Some(1)));
    p.ingest(2, &view(3, 62_000, 7, Some(1)));
    p.ingest(3, &view(4, 66_000, 7, Some(1))); // closes window 0 at 4
    assert_eq!(p.close_due(0).len(), 1);
    p.take_checkpoint(false);
    p.committed();
    for (o, n) in [(4, 5), (5, 6), (6, 7)] {
        assert_eq!(
            p.ingest(o, &view(n, 1_000 * n as i64, 7, Some(2))),
            Ingested::Corrected
        );
    }
    p.skip(7); // an undecodable record
    assert!(p.close_due(0).is_empty());
    assert_eq!(p.ingest(8, &view(8, 67_000, 7, Some(1))), Ingested::Counted);
    assert_eq!(p.open_corrections(), 0, "offset 8 is past the block end");
    let out = p.close_due(0);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].source.first_offset, out[0].source.next_offset),
        (4, 8)
    );
    assert_eq!(out[0].figures.events, 3);
    let cp = p.take_checkpoint(false).expect("changed");
    assert_eq!(p.fold_offset(), 1, "window 1 is open from offset 1");
    assert_eq!(cp.offset, 0);
    assert!(cp.metadata.contains("\"corrected\":8"), "{}", cp.metadata);
}

#[test]
fn an_event_older_than_the_lateness_horizon_is_too_late() {
    let spec = spec()
        .with_lateness_horizon(Duration::from_secs(100 * 60))
        .expect("valid");
    let mut p = PartitionWindows::resume(tp(Topic::BookViews), spec, None);
    p.ingest(0, &view(1, 1_000, 7, Some(1)));
    p.ingest(1, &view(2, 30 * MIN, 7, Some(1)));
    p.ingest(2, &view(3, 120 * MIN, 7, Some(1))); // closes windows 0 and 30 by stream time
    assert_eq!(p.close_due(0).len(), 2);
    p.take_checkpoint(false);
    p.committed();
    // 2 h behind stream time: beyond the 100 min horizon.
    assert_eq!(p.ingest(3, &view(4, 2_000, 7, Some(2))), Ingested::TooLate);
    // 90 min behind: corrected.
    assert_eq!(
        p.ingest(4, &view(5, 30 * MIN + 1_000, 8, Some(2))),
        Ingested::Corrected
    );
    assert_eq!(p.open_corrections(), 1);
    assert_eq!(p.fold_offset(), 2, "window 120 is open from offset 2");
}

/// A correction must not be published before the close of its window is committed: a
/// later owner would otherwise count its records in the window itself, closing it at
/// another position, and the two ranges would overlap.
#[test]
fn a_correction_waits_for_the_close_of_its_window_to_be_committed() {
    let mut p = PartitionWindows::resume(tp(Topic::BookViews), spec(), None);
    p.ingest(0, &view(1, 1_000, 7, Some(1)));
    p.confirm_caught_up(65_000, 1);
    assert_eq!(p.close_due(65_000).len(), 1);
    let cp = p.take_checkpoint(false).expect("closed");
    p.commit_failed(); // the bus refused it
    p.ingest(1, &view(2, 2_000, 7, Some(2)));
    assert!(p.close_due(70_000).is_empty(), "open for a grace period");
    p.confirm_caught_up(80_000, 2);
    assert!(
        p.close_due(80_000).is_empty(),
        "closed, but held until committed"
    );
    assert_eq!(p.open_corrections(), 0);
    assert_eq!(
        p.fold_offset(),
        1,
        "the held correction keeps the fold point"
    );
    assert_eq!(p.take_checkpoint(false).map(|c| c.offset), Some(0));
    p.committed();
    let out = p.close_due(80_000);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].source.first_offset, out[0].source.next_offset),
        (1, 2)
    );
    assert_eq!(cp.offset, 0);
}

// ---------------------------------------------------------------------------------------
// The duplicate check: a horizon of offsets
// ---------------------------------------------------------------------------------------

/// The spool or the outbox relay re-delivers an event after a crash, once its window has
/// closed: the first copy was counted on time in the window, the second must not count
/// in a correction.
#[test]
fn an_on_time_event_delivered_again_after_its_window_closed_counts_once() {
    let mut p = PartitionWindows::resume(tp(Topic::BookPurchases), spec(), None);
    assert_eq!(
        p.ingest(0, &purchase(1, 1_000, 7, 3, 1999)),
        Ingested::Counted
    );
    assert_eq!(
        p.ingest(1, &purchase(2, 66_000, 7, 4, 500)),
        Ingested::Counted
    );
    let window = p.close_due(0);
    assert_eq!(window.len(), 1, "window 0 closed by stream time");
    p.take_checkpoint(false);
    p.committed();
    assert_eq!(
        p.ingest(2, &purchase(1, 1_000, 7, 3, 1999)),
        Ingested::Duplicate,
        "the second copy, late"
    );
    assert_eq!(
        p.ingest(3, &purchase(3, 2_000, 7, 5, 100)),
        Ingested::Corrected
    );
    // A new owner resuming from the checkpoint decides the same.
    let cp = p.take_checkpoint(true).expect("checkpoint");
    let mut q = PartitionWindows::resume(tp(Topic::BookPurchases), spec(), Some(&cp));
    let log = [
        purchase(1, 1_000, 7, 3, 1999),
        purchase(2, 66_000, 7, 4, 500),
        purchase(1, 1_000, 7, 3, 1999),
        purchase(3, 2_000, 7, 5, 100),
    ];
    let outcomes: Vec<Ingested> = log
        .iter()
        .enumerate()
        .skip(cp.offset as usize)
        .map(|(o, e)| q.ingest(o as i64, e))
        .collect();
    assert_eq!(
        outcomes[outcomes.len() - 2..],
        [Ingested::Duplicate, Ingested::Corrected]
    );
    assert!(p.close_due(80_000).is_empty() && q.close_due(80_000).is_empty());
    p.confirm_caught_up(85_000, 4);
    q.confirm_caught_up(85_000, 4);
    let (a, b) = (p.close_due(85_000), q.close_due(85_000));
    assert_eq!(a, b);
    assert_eq!(
        (a[0].figures.events, a[0].figures.revenue_cents),
        (1, 100),
        "the correction holds the new purchase only"
    );
}

#[test]
fn a_copy_is_a_duplicate_within_the_horizon_and_counts_again_beyond_its_scope() {
    // Horizon 8: blocks of 2, the scope of offset o starts at (o / 2 - 4) * 2.
    let spec = spec().with_dedup_horizon(8);
    let mut p = PartitionWindows::resume(tp(Topic::BookViews), spec, None);
    assert_eq!(p.ingest(0, &view(1, 1_000, 7, Some(1))), Ingested::Counted);
    for o in 1..9 {
        p.ingest(o, &view(100 + o as u128, 1_000, 7, Some(1)));
    }
    // 9 back, but offset 9's scope is [0, 9).
    assert_eq!(
        p.ingest(9, &view(1, 1_000, 7, Some(1))),
        Ingested::Duplicate
    );
    // 10's scope is [2, 10): offset 0 is out, but the copy at 9 is a record of it too.
    assert_eq!(
        p.ingest(10, &view(1, 1_000, 7, Some(1))),
        Ingested::Duplicate
    );
    // 10 back from offset 1, and 11's scope is [2, 11): counted again.
    assert_eq!(
        p.ingest(11, &view(101, 1_000, 7, Some(1))),
        Ingested::Counted
    );
    // Exactly the horizon back: always a duplicate.
    assert_eq!(
        p.ingest(12, &view(104, 1_000, 7, Some(1))),
        Ingested::Duplicate
    );
    assert_eq!(p.dedup_memory().0, 9, "the ids of offsets 4 to 12");
}

#[test]
fn the_commit_reaches_back_to_the_duplicate_scope_of_the_fold_point() {
    let spec = spec().with_dedup_horizon(8);
    let mut p = PartitionWindows::resume(tp(Topic::BookViews), spec, None);
    // On-time views at offsets 0..20 of windows 0 and 1; window 0 closes at offset 15.
    for o in 0..20i64 {
        let t = if o < 15 { 1_000 + o } else { 66_000 + o };
        p.ingest(o, &view(o as u128 + 1, t, 7, Some(1)));
    }
    assert_eq!(p.close_due(0).len(), 1);
    assert_eq!(p.fold_offset(), 15, "window 1 is open from 15");
    let cp = p.take_checkpoint(false).expect("closed");
    assert_eq!(
        cp.offset, 6,
        "(15 / 2 - 4) * 2: the scope of offset 15 starts at 6"
    );
    assert!(cp.metadata.contains("\"fold\":15"), "{}", cp.metadata);
    // A new owner learns ids from 6 to 15 and folds from 15 on: a copy of offset 13 at 20
    // (whose scope is [12, 20)) is a duplicate for both.
    let mut q = PartitionWindows::resume(tp(Topic::BookViews), spec, Some(&cp));
    for o in 6..20i64 {
        let t = if o < 15 { 1_000 + o } else { 66_000 + o };
        let want = if o < 15 {
            Ingested::Replayed
        } else {
            Ingested::Counted
        };
        assert_eq!(
            q.ingest(o, &view(o as u128 + 1, t, 7, Some(1))),
            want,
            "offset {o}"
        );
    }
    let copy = view(14, 1_013, 7, Some(1));
    assert_eq!(p.ingest(20, &copy), Ingested::Duplicate);
    assert_eq!(q.ingest(20, &copy), Ingested::Duplicate);
    assert_eq!(p.take_checkpoint(true), q.take_checkpoint(true));
}

#[test]
fn the_duplicate_check_holds_a_bounded_number_of_ids_whatever_the_traffic() {
    let spec = spec().with_dedup_horizon(1024);
    let mut p = PartitionWindows::resume(tp(Topic::BookViews), spec, None);
    let mut most = (0, 0);
    // 50,000 events, all in one open window.
    for o in 0..50_000i64 {
        assert_eq!(
            p.ingest(
                o,
                &view(o as u128 + 1, 1_000 + o % 50_000, 7, Some(o % 100))
            ),
            Ingested::Counted
        );
        let (ids, bytes) = p.dedup_memory();
        most = (most.0.max(ids), most.1.max(bytes));
    }
    assert_eq!(p.open_windows(), 1);
    assert_eq!(most.0, 1024 + 256, "four blocks of 256 and the current one");
    assert!(
        most.1 <= 5 * (512 * 17 + 16) + 512 * 17 + 16,
        "{} bytes",
        most.1
    );
}

/// The horizon's model: the record at `o` counts iff no earlier record of its `event_id`
/// lies in `[dedup_scope_start(o), o)`, whichever windows, corrections or owners count
/// them.
fn by_offsets(spec: WindowSpec, log: &[(i64, Event)]) -> Cells {
    let counted: Vec<&Event> = log
        .iter()
        .enumerate()
        .filter(|(o, (_, e))| {
            let from = spec.dedup_scope_start(*o as i64).max(0) as usize;
            !log[from..*o]
                .iter()
                .any(|(_, x)| x.event_id() == e.event_id())
        })
        .map(|(_, (_, e))| e)
        .collect();
    figures_of(&counted, spec.length_ms())
}

/// 10 s windows; a view a second, on three books; every sixth 25 s late; after every
/// fourth a copy of a record 1 to 20 offsets back — on time or late, and its first copy
/// counted on time or in a correction; after every ninth a third copy of the last one
/// copied (its first copy beyond the horizon, its second within).
fn copies_traffic() -> Vec<(i64, Event)> {
    let mut log: Vec<(i64, Event)> = Vec::new();
    let distances = [1, 2, 5, 7, 8, 9, 10, 11, 13, 20];
    let mut last_copy = None;
    for i in 0..60i64 {
        let at = 1_000 * i + 500;
        let t = if i % 6 == 5 { (at - 25_000).max(0) } else { at };
        log.push((at, view(i as u128 + 1, t, 7 + i % 3, Some(i % 5))));
        if i % 4 == 3 {
            let d = distances[(i as usize / 4) % distances.len()];
            if let Some((_, e)) = log.len().checked_sub(d).map(|k| log[k].clone()) {
                log.push((at, e.clone()));
                last_copy = Some(e);
            }
        }
        if i % 9 == 8 {
            if let Some(e) = last_copy.clone() {
                log.push((at, e));
            }
        }
    }
    log
}

fn copies_spec() -> WindowSpec {
    WindowSpec::new(Duration::from_secs(10), Duration::from_secs(2))
        .expect("valid spec")
        .with_lateness_horizon(Duration::from_secs(100))
        .expect("valid horizon")
        .with_correction_block(4)
        .with_dedup_horizon(8)
}

#[test]
fn replays_decide_every_copy_by_offsets_alone_within_and_beyond_the_horizon() {
    let log = copies_traffic();
    let spec = copies_spec();
    let want = by_offsets(spec, &log);
    let every_id_once = exact(&log.iter().map(|(_, e)| e).collect::<Vec<_>>());
    assert_ne!(
        want.values().map(|c| c.0).sum::<u64>(),
        every_id_once.values().map(|c| c.0).sum::<u64>(),
        "some copies lie beyond the horizon"
    );
    let plain = drive(spec, &log, 100, &[]);
    assert_eq!(plain.sink.cells(), want);
    assert!(plain.corrected > 0 && plain.max_metadata < 4096);
    assert!(plain.learning_commits > 0, "new owners would re-read ids");
    let steps = plain.steps;
    let mut runs = 0;
    for batch in [1, 3, 100] {
        for step in 1..=steps {
            for kill in [Kill::BeforePublish, Kill::BeforeCommit, Kill::AfterCommit] {
                let run = drive(spec, &log, batch, &[(step, kill)]);
                assert_eq!(
                    run.sink.cells(),
                    want,
                    "killed {kill:?} at step {step}, batches of {batch}"
                );
                assert!(run.too_late.is_empty());
                runs += 1;
            }
        }
    }
    for first in 1..steps {
        let kills = [(first, Kill::BeforeCommit), (first + 3, Kill::AfterCommit)];
        let run = drive(spec, &log, 2, &kills);
        assert_eq!(run.sink.cells(), want, "killed at {kills:?}");
        runs += 1;
    }
    for from in (1..steps).step_by(3) {
        for len in [1, 5, 20] {
            let until = from + len;
            let run = drive_with_outage(
                spec,
                &log,
                100,
                &[(until, Kill::AfterCommit)],
                from..until + 1,
            );
            assert_eq!(
                run.sink.cells(),
                want,
                "commits refused in steps {from}..={until}, then killed"
            );
            runs += 1;
        }
    }
    assert!(runs > 1000, "{runs} runs");
}
