//! The eight tables statistics live in, and how a range of windows is cut into stretches of
//! them.
//!
//! `window_stats` holds one row per aggregate. Seven rollups hold its figures summed per
//! (bucket, book, source topic): per hour, per day and all time for each book, and per
//! window, hour, day and all time over every book (book 0). A row's bucket is the start of
//! the hour or (UTC) day its windows *start* in, so a range of window starts — which is
//! what a [`TimeRange`](folio_domain::stats::TimeRange) selects — is covered exactly by
//! whole buckets plus per-window rows at its ragged edges.
//!
//! Per-window rows (`window_stats`, `overview_windows`) are kept from the retention horizon
//! on; rollups are kept forever. Below the horizon a range is widened to whole hours.

use sea_orm::sea_query::Iden;

pub(crate) const HOUR_MS: i64 = 3_600_000;
pub(crate) const DAY_MS: i64 = 24 * HOUR_MS;

/// The start of the `unit`-long bucket (aligned to the Unix epoch, so UTC) holding `ms`.
pub(crate) fn floor_to(ms: i64, unit: i64) -> i64 {
    ms.div_euclid(unit) * unit
}

pub(crate) fn ceil_to(ms: i64, unit: i64) -> i64 {
    let f = floor_to(ms, unit);
    if f == ms {
        f
    } else {
        f.saturating_add(unit)
    }
}

/// How finely a table's rows are bucketed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Grain {
    Window,
    Hour,
    Day,
    All,
}

impl Grain {
    /// The bucket a window starting at `window_start` (ms) falls in.
    pub(crate) fn bucket(self, window_start: i64) -> i64 {
        match self {
            Grain::Window => window_start,
            Grain::Hour => floor_to(window_start, HOUR_MS),
            Grain::Day => floor_to(window_start, DAY_MS),
            Grain::All => 0,
        }
    }

    /// How long a bucket is, for grains of a fixed length: a history point below the
    /// horizon is a whole hour.
    pub(crate) fn length(self) -> Option<i64> {
        match self {
            Grain::Hour => Some(HOUR_MS),
            Grain::Day => Some(DAY_MS),
            Grain::Window | Grain::All => None,
        }
    }

    /// The window starts a bucket covers, `[start, end)`; `None` for the one unbounded
    /// all-time bucket. A window-grain bucket is its one window start.
    pub(crate) fn span(self, bucket: i64) -> Option<(i64, i64)> {
        match self {
            Grain::Window => Some((bucket, bucket.saturating_add(1))),
            Grain::Hour => Some((bucket, bucket.saturating_add(HOUR_MS))),
            Grain::Day => Some((bucket, bucket.saturating_add(DAY_MS))),
            Grain::All => None,
        }
    }
}

/// Whose figures a table sums: one book's, or every book's (stored under book 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Scope {
    Book,
    Overview,
}

/// A statistics table: `window_stats` (book scope, window grain) or one of the rollups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct StatsTable {
    pub(crate) scope: Scope,
    pub(crate) grain: Grain,
}

impl StatsTable {
    pub(crate) const WINDOWS: StatsTable = StatsTable::new(Scope::Book, Grain::Window);
    pub(crate) const BOOK_HOURLY: StatsTable = StatsTable::new(Scope::Book, Grain::Hour);
    pub(crate) const BOOK_DAILY: StatsTable = StatsTable::new(Scope::Book, Grain::Day);
    pub(crate) const BOOK_TOTAL: StatsTable = StatsTable::new(Scope::Book, Grain::All);
    pub(crate) const OVERVIEW_WINDOWS: StatsTable = StatsTable::new(Scope::Overview, Grain::Window);
    pub(crate) const OVERVIEW_HOURLY: StatsTable = StatsTable::new(Scope::Overview, Grain::Hour);
    pub(crate) const OVERVIEW_DAILY: StatsTable = StatsTable::new(Scope::Overview, Grain::Day);
    pub(crate) const OVERVIEW_TOTAL: StatsTable = StatsTable::new(Scope::Overview, Grain::All);

    /// Every rollup, each after the table it is rebuilt from ([`StatsTable::finer`]).
    pub(crate) const ROLLUPS: [StatsTable; 7] = [
        Self::BOOK_HOURLY,
        Self::BOOK_DAILY,
        Self::BOOK_TOTAL,
        Self::OVERVIEW_WINDOWS,
        Self::OVERVIEW_HOURLY,
        Self::OVERVIEW_DAILY,
        Self::OVERVIEW_TOTAL,
    ];

    pub(crate) const fn new(scope: Scope, grain: Grain) -> Self {
        StatsTable { scope, grain }
    }

    pub(crate) fn name(self) -> &'static str {
        match (self.scope, self.grain) {
            (Scope::Book, Grain::Window) => "window_stats",
            (Scope::Book, Grain::Hour) => "stats_hourly",
            (Scope::Book, Grain::Day) => "stats_daily",
            (Scope::Book, Grain::All) => "stats_total",
            (Scope::Overview, Grain::Window) => "overview_windows",
            (Scope::Overview, Grain::Hour) => "overview_hourly",
            (Scope::Overview, Grain::Day) => "overview_daily",
            (Scope::Overview, Grain::All) => "overview_total",
        }
    }

    /// The column holding the bucket: `window_stats` predates the rollups and names it
    /// after the window.
    pub(crate) fn key(self) -> &'static str {
        if self == Self::WINDOWS {
            "window_start"
        } else {
            "bucket_start"
        }
    }

    /// The table a rollup row is recomputed from: the next finer grain of its scope, and
    /// `window_stats` for the per-window overview.
    pub(crate) fn finer(self) -> Option<StatsTable> {
        let grain = match self.grain {
            Grain::Window => return (self.scope == Scope::Overview).then_some(Self::WINDOWS),
            Grain::Hour => Grain::Window,
            Grain::Day => Grain::Hour,
            Grain::All => Grain::Day,
        };
        Some(StatsTable::new(self.scope, grain))
    }

    /// The book a rollup row of this table is stored under.
    pub(crate) fn book_of(self, book: i64) -> i64 {
        match self.scope {
            Scope::Book => book,
            Scope::Overview => 0,
        }
    }
}

impl Iden for StatsTable {
    fn unquoted(&self, s: &mut dyn std::fmt::Write) {
        // Writing to a String-backed writer does not fail.
        let _ = s.write_str(self.name());
    }
}

/// The rows of `table` whose bucket lies in `[lo, hi)` (open ends unbounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    pub(crate) table: StatsTable,
    pub(crate) lo: Option<i64>,
    pub(crate) hi: Option<i64>,
}

impl Piece {
    fn new(scope: Scope, grain: Grain, lo: Option<i64>, hi: Option<i64>) -> Self {
        Piece {
            table: StatsTable::new(scope, grain),
            lo,
            hi,
        }
    }
}

/// A range of window starts in ms, `[from, to)`, open ends unbounded.
pub(crate) type Span = (Option<i64>, Option<i64>);

/// Widens a bound older than the horizon to its whole hour: below the horizon only hourly
/// rollups remain, so a range there counts every hour it touches, in full.
pub(crate) fn widen((from, to): Span, horizon: Option<i64>) -> Span {
    let Some(h) = horizon else {
        return (from, to);
    };
    (
        from.map(|f| if f < h { floor_to(f, HOUR_MS) } else { f }),
        to.map(|t| if t < h { ceil_to(t, HOUR_MS) } else { t }),
    )
}

/// The stretches whose rows, added up, are the figures of `span` (already [`widen`]ed):
/// the all-time table for an open range, else whole days, whole hours at their sides and
/// per-window rows at the ragged edges. Each window start falls in exactly one piece.
pub(crate) fn plan_totals(scope: Scope, span: Span) -> Vec<Piece> {
    let (from, to) = span;
    if from.is_none() && to.is_none() {
        return vec![Piece::new(scope, Grain::All, None, None)];
    }
    let first_hour = from.map(|f| ceil_to(f, HOUR_MS));
    let end_hour = to.map(|t| floor_to(t, HOUR_MS));
    if let (Some(f), Some(t), Some(a), Some(b)) = (from, to, first_hour, end_hour) {
        if a >= b {
            // No whole hour inside: per-window rows only.
            return vec![Piece::new(scope, Grain::Window, Some(f), Some(t))];
        }
    }
    let mut pieces = Vec::new();
    if let (Some(f), Some(a)) = (from, first_hour) {
        if f < a {
            pieces.push(Piece::new(scope, Grain::Window, Some(f), Some(a)));
        }
    }
    if let (Some(t), Some(b)) = (to, end_hour) {
        if b < t {
            pieces.push(Piece::new(scope, Grain::Window, Some(b), Some(t)));
        }
    }
    let first_day = first_hour.map(|a| ceil_to(a, DAY_MS));
    let end_day = end_hour.map(|b| floor_to(b, DAY_MS));
    if let (Some(a), Some(b), Some(c), Some(d)) = (first_hour, end_hour, first_day, end_day) {
        if c >= d {
            // No whole day inside: hours only.
            pieces.push(Piece::new(scope, Grain::Hour, Some(a), Some(b)));
            return pieces;
        }
    }
    if let (Some(a), Some(c)) = (first_hour, first_day) {
        if a < c {
            pieces.push(Piece::new(scope, Grain::Hour, Some(a), Some(c)));
        }
    }
    if let (Some(b), Some(d)) = (end_hour, end_day) {
        if d < b {
            pieces.push(Piece::new(scope, Grain::Hour, Some(d), Some(b)));
        }
    }
    pieces.push(Piece::new(scope, Grain::Day, first_day, end_day));
    pieces
}

/// The stretches a history of `span` (already [`widen`]ed) reads: hourly rollups below the
/// horizon, per-window rows from it on.
pub(crate) fn plan_history(scope: Scope, span: Span, horizon: Option<i64>) -> Vec<Piece> {
    let (from, to) = span;
    let Some(h) = horizon else {
        return vec![Piece::new(scope, Grain::Window, from, to)];
    };
    let mut pieces = Vec::new();
    if from.is_none_or(|f| f < h) {
        let hi = to.map_or(h, |t| t.min(h));
        if from.is_none_or(|f| f < hi) {
            pieces.push(Piece::new(scope, Grain::Hour, from, Some(hi)));
        }
    }
    let lo = from.map_or(h, |f| f.max(h));
    if to.is_none_or(|t| lo < t) {
        pieces.push(Piece::new(scope, Grain::Window, Some(lo), to));
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = 60_000;

    /// Every window start in `[lo, hi)` by `step`, and which piece holds it.
    fn holder(pieces: &[Piece], ws: i64) -> Vec<usize> {
        pieces
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                let b = p.table.grain.bucket(ws);
                p.lo.is_none_or(|lo| b >= lo) && p.hi.is_none_or(|hi| b < hi)
            })
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn every_window_start_in_a_range_falls_in_exactly_one_piece() {
        let day0 = 20_000 * DAY_MS;
        let bounds = [
            None,
            Some(day0),
            Some(day0 + 7 * M),
            Some(day0 + HOUR_MS),
            Some(day0 + HOUR_MS + 59 * M),
            Some(day0 + 3 * HOUR_MS + 30 * M),
            Some(day0 + DAY_MS),
            Some(day0 + DAY_MS + 2 * HOUR_MS + M),
            Some(day0 + 3 * DAY_MS + 5 * HOUR_MS),
            Some(day0 + 3 * DAY_MS + 5 * HOUR_MS + 17 * M),
        ];
        for from in bounds {
            for to in bounds {
                if let (Some(f), Some(t)) = (from, to) {
                    if f >= t {
                        continue;
                    }
                }
                let pieces = plan_totals(Scope::Book, (from, to));
                let mut ws = day0 - DAY_MS;
                while ws < day0 + 5 * DAY_MS {
                    let inside = from.is_none_or(|f| ws >= f) && to.is_none_or(|t| ws < t);
                    let held = holder(&pieces, ws);
                    assert_eq!(
                        held.len(),
                        usize::from(inside),
                        "{ws} in {from:?}..{to:?}: {pieces:?}"
                    );
                    ws += M;
                }
            }
        }
    }

    #[test]
    fn open_ranges_read_the_all_time_rollup_and_short_ones_windows_only() {
        assert_eq!(
            plan_totals(Scope::Overview, (None, None)),
            vec![Piece::new(Scope::Overview, Grain::All, None, None)]
        );
        let f = 20_000 * DAY_MS + 10 * M;
        assert_eq!(
            plan_totals(Scope::Book, (Some(f), Some(f + 30 * M))),
            vec![Piece::new(
                Scope::Book,
                Grain::Window,
                Some(f),
                Some(f + 30 * M)
            )]
        );
    }

    #[test]
    fn below_the_horizon_ranges_widen_to_hours_and_history_reads_hours() {
        let h = 20_000 * DAY_MS + 5 * HOUR_MS;
        let span = widen(
            (Some(h - 2 * HOUR_MS + 10 * M), Some(h - HOUR_MS + M)),
            Some(h),
        );
        assert_eq!(span, (Some(h - 2 * HOUR_MS), Some(h)));
        let span = widen((Some(h - 10 * M), Some(h + 10 * M)), Some(h));
        assert_eq!(span, (Some(h - HOUR_MS), Some(h + 10 * M)));
        assert_eq!(
            plan_history(Scope::Book, span, Some(h)),
            vec![
                Piece::new(Scope::Book, Grain::Hour, Some(h - HOUR_MS), Some(h)),
                Piece::new(Scope::Book, Grain::Window, Some(h), Some(h + 10 * M)),
            ]
        );
        assert_eq!(
            plan_history(Scope::Overview, (None, None), Some(h)),
            vec![
                Piece::new(Scope::Overview, Grain::Hour, None, Some(h)),
                Piece::new(Scope::Overview, Grain::Window, Some(h), None),
            ]
        );
        assert_eq!(
            plan_history(Scope::Book, (Some(h + M), None), Some(h)),
            vec![Piece::new(Scope::Book, Grain::Window, Some(h + M), None)]
        );
        assert_eq!(
            plan_history(Scope::Book, (None, Some(h - HOUR_MS)), Some(h)),
            vec![Piece::new(
                Scope::Book,
                Grain::Hour,
                None,
                Some(h - HOUR_MS)
            )]
        );
        assert_eq!(
            plan_history(Scope::Book, (None, None), None),
            vec![Piece::new(Scope::Book, Grain::Window, None, None)]
        );
    }
}
