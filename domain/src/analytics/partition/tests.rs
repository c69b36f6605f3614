use std::time::Duration;

use chrono::{DateTime, Utc};

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
    // The oldest open window starts at offset 2.
    assert_eq!(p.commit_offset(), 2);
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
    assert_eq!(p.commit_offset(), 1);
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
    // Beyond grace: the window has closed and published.
    assert_eq!(p.ingest(4, &view(5, 20_000, 7, Some(3))), Ingested::Late);
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
        view(6, 20_000, 7, Some(5)), // late for window 0
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
    assert_eq!(cp.offset, 1, "window 1 opened at offset 1");
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
            Ingested::Counted,  // window 1
            Ingested::Replayed, // window 0, already published
            Ingested::Counted,
            Ingested::Counted,
            Ingested::Late, // late the first time too
        ]
    );
    // Both owners publish identical figures for window 1.
    first.confirm_caught_up(2 * MIN + 5_000, 6);
    second.confirm_caught_up(2 * MIN + 5_000, 6);
    let a = first.close_due(2 * MIN + 5_000);
    let b = second.close_due(2 * MIN + 5_000);
    assert_eq!(a, b);
    assert_eq!(a.iter().map(|x| x.figures.events).sum::<u64>(), 3);
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
