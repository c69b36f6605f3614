//! Is the pipeline keeping up? The bookstore notes when it accepts events
//! ([`EventMarks`], fed by [`MarkingPublisher`]: views and downloads as it publishes them,
//! outbox events once their row commits); the admin's pipeline view compares them with
//! the newest stored window ([`assess`]).
//!
//! An event at time `t` is in the window holding `t`, which is stored soon after that
//! window's end plus grace. So an accepted event later than the newest stored window's end
//! is *pending*; the pipeline is *stalled* when the oldest pending event is older than
//! three windows plus grace. No traffic is not a stall: with nothing pending an old newest
//! window only means the store is idle.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::events::Event;
use crate::ports::EventPublisher;
use crate::stats::StoredWindow;
use crate::Result;

/// When events were accepted: the first event time of each distinct second, oldest first.
/// Bounded: past [`EventMarks::CAPACITY`] seconds the oldest are forgotten, which only
/// makes a stall older than that look a little younger.
#[derive(Debug)]
pub struct EventMarks {
    seconds: Mutex<VecDeque<i64>>,
    /// The latest event time noted, in ms (`i64::MIN`: none).
    last_ms: AtomicI64,
}

impl Default for EventMarks {
    fn default() -> Self {
        EventMarks {
            seconds: Mutex::default(),
            last_ms: AtomicI64::new(i64::MIN),
        }
    }
}

impl EventMarks {
    /// One day of seconds with traffic: 0.7 MB at most.
    pub const CAPACITY: usize = 86_400;

    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<i64>> {
        self.seconds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes an event that happened at `at`.
    pub fn record(&self, at: DateTime<Utc>) {
        self.last_ms
            .fetch_max(at.timestamp_millis(), Ordering::Relaxed);
        let s = at.timestamp();
        let mut q = self.lock();
        match q.back() {
            Some(&last) if s <= last => {
                // The same second, or a clock step back: a mark at or after it exists.
                if s < last && q.front().is_none_or(|&first| s < first) {
                    q.push_front(s);
                }
            }
            _ => q.push_back(s),
        }
        while q.len() > Self::CAPACITY {
            q.pop_front();
        }
    }

    /// The earliest event not covered by a stored window ending at `covered_until` (all of
    /// them when nothing is stored). Marks it covers are forgotten.
    pub fn pending_since(&self, covered_until: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        let mut q = self.lock();
        if let Some(end) = covered_until {
            let end = end.timestamp();
            while q.front().is_some_and(|&s| s < end) {
                q.pop_front();
            }
        }
        q.front().and_then(|&s| DateTime::from_timestamp(s, 0))
    }

    /// The latest event noted, if any.
    pub fn last(&self) -> Option<DateTime<Utc>> {
        match self.last_ms.load(Ordering::Relaxed) {
            i64::MIN => None,
            ms => DateTime::from_timestamp_millis(ms),
        }
    }
}

/// An [`EventPublisher`] that notes in [`EventMarks`] each event it published, and each
/// event it hears was accepted through the outbox (purchases, reviews, ratings).
pub struct MarkingPublisher {
    inner: Arc<dyn EventPublisher>,
    marks: Arc<EventMarks>,
}

impl MarkingPublisher {
    pub fn new(inner: Arc<dyn EventPublisher>, marks: Arc<EventMarks>) -> Self {
        MarkingPublisher { inner, marks }
    }
}

impl MarkingPublisher {
    /// The one marking rule: an event is noted at its own time once it was accepted.
    fn accepted(&self, occurred_at: DateTime<Utc>) {
        self.marks.record(occurred_at);
    }
}

#[async_trait]
impl EventPublisher for MarkingPublisher {
    async fn publish(&self, event: &Event) -> Result<()> {
        self.inner.publish(event).await?;
        self.accepted(event.meta().occurred_at);
        Ok(())
    }

    fn outboxed(&self, occurred_at: DateTime<Utc>) {
        self.inner.outboxed(occurred_at);
        self.accepted(occurred_at);
    }
}

/// How the pipeline is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineState {
    /// Every event accepted long enough ago is in a stored window.
    Ok,
    /// The spool is replaying events from disk (the bus was away or slow): figures lag
    /// until it has caught up.
    Replaying,
    /// Events accepted more than [`Assessment::threshold`] ago are in no stored window.
    Stalled,
}

impl PipelineState {
    pub fn name(self) -> &'static str {
        match self {
            PipelineState::Ok => "ok",
            PipelineState::Replaying => "replaying",
            PipelineState::Stalled => "stalled",
        }
    }
}

/// The verdict, with what it rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub state: PipelineState,
    /// How old the oldest pending event may get: three windows plus grace.
    pub threshold: Duration,
    /// The oldest accepted event in no stored window, if any.
    pub pending_since: Option<DateTime<Utc>>,
    /// The newest stored window's age (now minus its end), when there is one.
    pub newest_window_age: Option<Duration>,
    /// One plain sentence for the page.
    pub message: String,
}

/// What [`assess`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct PipelineInputs {
    pub now: DateTime<Utc>,
    pub newest: Option<StoredWindow>,
    pub pending_since: Option<DateTime<Utc>>,
    pub window: Duration,
    pub grace: Duration,
    /// The spool is replaying from disk.
    pub replaying: bool,
    /// Events in the spool the bus has not acknowledged.
    pub spooled: u64,
}

fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> Duration {
    (now - then).to_std().unwrap_or(Duration::ZERO)
}

/// Whole seconds, as a person reads them: `45 s`, `12 min 5 s`, `3 h 2 min`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// Judges the pipeline: stalled when an event older than three windows plus grace is in
/// no stored window; otherwise replaying while the spool replays; otherwise ok.
pub fn assess(i: PipelineInputs) -> Assessment {
    let threshold = i.window * 3 + i.grace;
    let newest_window_age = i.newest.map(|w| age(i.now, w.window_end));
    let overdue = i.pending_since.filter(|p| age(i.now, *p) > threshold);
    let (state, message) = if let Some(p) = overdue {
        let stored = match (i.newest, newest_window_age) {
            (Some(w), Some(a)) => format!(
                "the newest stored window ended {} ago ({})",
                human(a),
                w.window_end.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            _ => "no window is stored yet".to_string(),
        };
        (
            PipelineState::Stalled,
            format!(
                "Stalled: events accepted {} ago are not in the statistics yet, and {stored}. \
                 Expected within {} (3 windows + grace). Is the analytics service running \
                 and the bus reachable?",
                human(age(i.now, p)),
                human(threshold)
            ),
        )
    } else if i.replaying {
        (
            PipelineState::Replaying,
            format!(
                "Catching up: the event spool is replaying {} events from disk after the bus \
                 was away or slow; figures lag until it is done.",
                i.spooled
            ),
        )
    } else {
        let m = match (i.pending_since, newest_window_age) {
            (Some(_), _) => "OK: recent events are on their way into the next windows.".into(),
            (None, Some(a)) => format!(
                "OK: every event accepted is in a stored window; the newest ended {} ago.",
                human(a)
            ),
            (None, None) => "OK: no events yet.".into(),
        };
        (PipelineState::Ok, m)
    };
    Assessment {
        state,
        threshold,
        pending_since: i.pending_since,
        newest_window_age,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_772_366_400 + secs, 0).unwrap_or_default()
    }

    fn window(start: i64, end: i64) -> Option<StoredWindow> {
        Some(StoredWindow {
            window_start: t(start),
            window_end: t(end),
        })
    }

    fn inputs(now: i64, newest: Option<StoredWindow>, pending: Option<i64>) -> PipelineInputs {
        PipelineInputs {
            now: t(now),
            newest,
            pending_since: pending.map(t),
            window: Duration::from_secs(60),
            grace: Duration::from_secs(5),
            replaying: false,
            spooled: 0,
        }
    }

    #[test]
    fn marks_keep_one_entry_per_second_and_forget_what_a_window_covers() {
        let marks = EventMarks::new();
        assert_eq!(marks.pending_since(None), None);
        for s in [10, 10, 11, 11, 30, 29, 5] {
            marks.record(t(s) + chrono::Duration::milliseconds(300));
        }
        assert_eq!(
            *marks.lock(),
            VecDeque::from(vec![
                t(5).timestamp(),
                t(10).timestamp(),
                t(11).timestamp(),
                t(30).timestamp()
            ])
        );
        assert_eq!(marks.pending_since(None), Some(t(5)));
        assert_eq!(marks.pending_since(Some(t(11))), Some(t(11)));
        assert_eq!(marks.pending_since(Some(t(12))), Some(t(30)));
        assert_eq!(marks.pending_since(Some(t(31))), None);
        assert_eq!(
            marks.last(),
            Some(t(30) + chrono::Duration::milliseconds(300))
        );
    }

    /// Publishes nothing, keeps what it heard of.
    #[derive(Default)]
    struct Inner {
        published: Mutex<Vec<Event>>,
        outboxed: Mutex<Vec<DateTime<Utc>>>,
    }

    #[async_trait]
    impl EventPublisher for Inner {
        async fn publish(&self, event: &Event) -> Result<()> {
            self.published.lock().expect("lock").push(event.clone());
            Ok(())
        }

        fn outboxed(&self, occurred_at: DateTime<Utc>) {
            self.outboxed.lock().expect("lock").push(occurred_at);
        }
    }

    #[test]
    fn outbox_events_are_marked_at_their_own_time_like_published_ones() {
        let marks = Arc::new(EventMarks::new());
        let inner = Arc::new(Inner::default());
        let publisher = MarkingPublisher::new(inner.clone(), marks.clone());
        // A rating accepted through the outbox, alone: a pipeline with only such traffic
        // can be stalled.
        publisher.outboxed(t(40) + chrono::Duration::milliseconds(250));
        assert_eq!(
            marks.last(),
            Some(t(40) + chrono::Duration::milliseconds(250))
        );
        assert_eq!(marks.pending_since(Some(t(0))), Some(t(40)));
        assert_eq!(
            *inner.outboxed.lock().expect("lock"),
            vec![t(40) + chrono::Duration::milliseconds(250)]
        );
        assert!(inner.published.lock().expect("lock").is_empty());
        let mut i = inputs(40 + 186, window(0, 30), None);
        i.pending_since = marks.pending_since(Some(t(30)));
        assert_eq!(assess(i).state, PipelineState::Stalled);
        // An earlier outbox event moves the oldest pending mark back.
        publisher.outboxed(t(35));
        assert_eq!(marks.pending_since(Some(t(30))), Some(t(35)));
        assert_eq!(
            marks.last(),
            Some(t(40) + chrono::Duration::milliseconds(250))
        );
    }

    #[test]
    fn an_old_window_with_nothing_pending_is_idle_not_stalled() {
        let a = assess(inputs(10_000, window(0, 60), None));
        assert_eq!(a.state, PipelineState::Ok);
        assert_eq!(a.newest_window_age, Some(Duration::from_secs(9_940)));
        assert_eq!(
            a.message,
            "OK: every event accepted is in a stored window; the newest ended 2 h 45 min ago."
        );
    }

    #[test]
    fn pending_events_stall_once_older_than_three_windows_and_grace() {
        let threshold = Duration::from_secs(185);
        let on_time = assess(inputs(185 + 100, window(0, 60), Some(100)));
        assert_eq!(
            (on_time.state, on_time.threshold),
            (PipelineState::Ok, threshold)
        );
        let late = assess(inputs(186 + 100, window(0, 60), Some(100)));
        assert_eq!(late.state, PipelineState::Stalled);
        assert_eq!(
            late.message,
            "Stalled: events accepted 3 min 6 s ago are not in the statistics yet, and the \
             newest stored window ended 3 min 46 s ago (2026-03-01 12:01:00 UTC). Expected \
             within 3 min 5 s (3 windows + grace). Is the analytics service running and the \
             bus reachable?"
        );
        let never = assess(inputs(500, None, Some(0)));
        assert_eq!(never.state, PipelineState::Stalled);
        assert!(
            never.message.contains("no window is stored yet"),
            "{}",
            never.message
        );
    }

    #[test]
    fn a_replaying_spool_is_reported_unless_something_is_stalled() {
        let mut i = inputs(100, window(0, 60), Some(90));
        i.replaying = true;
        i.spooled = 42;
        let a = assess(i);
        assert_eq!(a.state, PipelineState::Replaying);
        assert!(a.message.contains("replaying 42 events"), "{}", a.message);
        i.now = t(1_000);
        assert_eq!(assess(i).state, PipelineState::Stalled);
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human(Duration::from_millis(59_900)), "59 s");
        assert_eq!(human(Duration::from_secs(725)), "12 min 5 s");
        assert_eq!(human(Duration::from_secs(3 * 3600 + 120 + 7)), "3 h 2 min");
    }
}
