//! Tumbling event-time windows.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use crate::Error;

/// Window length and grace period, how late events are handled (the lateness horizon
/// beyond which they are dead-lettered, and the block of offsets that bounds a correction;
/// docs/exactness.md, "Late events"), and the horizon of the duplicate check
/// (docs/exactness.md, "Duplicates").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    length_ms: i64,
    grace_ms: i64,
    lateness_ms: i64,
    block: i64,
    dedup_block: i64,
}

/// The default lateness horizon: the bookstore's default statistics retention, 7 days.
pub const DEFAULT_LATENESS_HORIZON: Duration = Duration::from_secs(7 * 24 * 3600);

/// The default correction block: a correction never spans offsets of two blocks of this
/// many offsets, so its range is the same whichever batch boundaries a replay sees.
pub const DEFAULT_CORRECTION_BLOCK: i64 = 1024;

/// The default duplicate horizon, in offsets per partition: a copy of an event whose first
/// copy lies at most this many offsets earlier in the partition is always recognised.
pub const DEFAULT_DEDUP_HORIZON: i64 = 65_536;

/// The duplicate check remembers event ids per block of offsets; the horizon is this many
/// whole blocks before the current one (so it remembers at most `horizon × (1 + 1/4)`
/// records' ids, and a record's scope starts on a block boundary, the same offset in every
/// run).
pub const DEDUP_BLOCKS: i64 = 4;

impl WindowSpec {
    /// A window length of at least one second that divides a day evenly (so windows line up
    /// across instances and restarts), and a grace period of at most one hour.
    pub fn new(length: Duration, grace: Duration) -> Result<Self, Error> {
        let length_ms = i64::try_from(length.as_millis()).unwrap_or(i64::MAX);
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        if length_ms < 1000 || 86_400_000 % length_ms != 0 {
            return Err(Error::invalid(format!(
                "window length must be at least 1s and divide a day evenly, got {length:?}"
            )));
        }
        if grace_ms > 3_600_000 {
            return Err(Error::invalid(format!(
                "grace period must be at most 1h, got {grace:?}"
            )));
        }
        Ok(WindowSpec {
            length_ms,
            grace_ms,
            lateness_ms: DEFAULT_LATENESS_HORIZON.as_millis() as i64,
            block: DEFAULT_CORRECTION_BLOCK,
            dedup_block: DEFAULT_DEDUP_HORIZON / DEDUP_BLOCKS,
        })
    }

    /// Events older than `horizon` (against the partition's stream time) are dead-lettered
    /// as `too_late` instead of correcting their window. At least the window length plus
    /// grace, at most a year.
    pub fn with_lateness_horizon(mut self, horizon: Duration) -> Result<Self, Error> {
        let ms = i64::try_from(horizon.as_millis()).unwrap_or(i64::MAX);
        if ms < self.length_ms + self.grace_ms || ms > 366 * 86_400_000 {
            return Err(Error::invalid(format!(
                "lateness horizon must be at least window plus grace and at most a year, got {horizon:?}"
            )));
        }
        self.lateness_ms = ms;
        Ok(self)
    }

    /// Offsets per correction block (at least 1).
    pub fn with_correction_block(mut self, offsets: i64) -> Self {
        self.block = offsets.max(1);
        self
    }

    /// Recognise a duplicate whose first copy lies at most `offsets` earlier in its partition
    /// (rounded up to a multiple of [`DEDUP_BLOCKS`], at least that many). Ids are kept for
    /// at most `offsets × 5/4` records per partition, and on restart a new owner re-reads
    /// up to that many records before its first open window to learn them.
    pub fn with_dedup_horizon(mut self, offsets: i64) -> Self {
        self.dedup_block = offsets.max(1).saturating_add(DEDUP_BLOCKS - 1) / DEDUP_BLOCKS;
        self
    }

    /// The guaranteed duplicate horizon, in offsets.
    pub fn dedup_horizon(&self) -> i64 {
        self.dedup_block.saturating_mul(DEDUP_BLOCKS)
    }

    /// Offsets per block of the duplicate check.
    pub fn dedup_block(&self) -> i64 {
        self.dedup_block
    }

    /// Where the duplicate scope of the record at `offset` starts: the record is a
    /// duplicate iff an earlier record of the same `event_id` lies in
    /// `[dedup_scope_start(offset), offset)`. Always at or before `offset - horizon`, and
    /// on a block boundary.
    pub fn dedup_scope_start(&self, offset: i64) -> i64 {
        (offset.div_euclid(self.dedup_block) - DEDUP_BLOCKS).saturating_mul(self.dedup_block)
    }

    pub fn lateness_ms(&self) -> i64 {
        self.lateness_ms
    }

    pub fn correction_block(&self) -> i64 {
        self.block
    }

    /// The first offset of the block after the one holding `offset`.
    pub fn block_end(&self, offset: i64) -> i64 {
        (offset.div_euclid(self.block) + 1).saturating_mul(self.block)
    }

    pub fn length_ms(&self) -> i64 {
        self.length_ms
    }

    pub fn grace_ms(&self) -> i64 {
        self.grace_ms
    }

    /// The window holding the instant `t_ms` (milliseconds since the epoch).
    pub fn window_of(&self, t_ms: i64) -> Window {
        let start = t_ms.div_euclid(self.length_ms) * self.length_ms;
        Window {
            start_ms: start,
            end_ms: start + self.length_ms,
        }
    }

    /// The instant a window closes at: its end plus grace.
    pub fn closes_at(&self, w: Window) -> i64 {
        w.end_ms + self.grace_ms
    }
}

/// One window: `[start, end)` in milliseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl Window {
    pub fn start(&self) -> DateTime<Utc> {
        millis(self.start_ms)
    }

    pub fn end(&self) -> DateTime<Utc> {
        millis(self.end_ms)
    }
}

/// A UTC time from milliseconds since the epoch (clamped to chrono's range).
pub fn millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Parses a duration such as `60s`, `2s`, `500ms`, `1m`, `1h`, `7d` or a bare number of
/// seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, Error> {
    let s = raw.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| Error::invalid(format!("{raw:?} is not a duration like 60s, 500ms or 1m")))?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86_400),
        "w" => Duration::from_secs(n * 7 * 86_400),
        _ => {
            return Err(Error::invalid(format!(
                "{raw:?} has an unknown unit; use ms, s, m, h, d or w"
            )))
        }
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_tumble_on_the_epoch() {
        let spec = WindowSpec::new(Duration::from_secs(60), Duration::from_secs(5)).expect("valid");
        assert_eq!(
            spec.window_of(59_999),
            Window {
                start_ms: 0,
                end_ms: 60_000
            }
        );
        assert_eq!(
            spec.window_of(60_000),
            Window {
                start_ms: 60_000,
                end_ms: 120_000
            }
        );
        assert_eq!(
            spec.window_of(-1),
            Window {
                start_ms: -60_000,
                end_ms: 0
            }
        );
        assert_eq!(spec.closes_at(spec.window_of(0)), 65_000);
    }

    #[test]
    fn specs_and_durations_are_checked() {
        assert!(WindowSpec::new(Duration::from_millis(500), Duration::ZERO).is_err());
        assert!(WindowSpec::new(Duration::from_secs(7), Duration::ZERO).is_err());
        assert!(WindowSpec::new(Duration::from_secs(2), Duration::from_secs(7200)).is_err());
        assert_eq!(parse_duration("2s").ok(), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("1m").ok(), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("30").ok(), Some(Duration::from_secs(30)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 days").is_err());
        assert_eq!(
            parse_duration("7d").ok(),
            Some(Duration::from_secs(604_800))
        );
        let spec = WindowSpec::new(Duration::from_secs(60), Duration::from_secs(5)).expect("valid");
        assert_eq!(spec.lateness_ms(), 604_800_000, "7 days by default");
        assert!(spec.with_lateness_horizon(Duration::from_secs(64)).is_err());
        assert_eq!(
            spec.with_lateness_horizon(Duration::from_secs(3600))
                .map(|s| s.lateness_ms())
                .ok(),
            Some(3_600_000)
        );
        let spec = spec.with_correction_block(100);
        assert_eq!(
            (spec.block_end(0), spec.block_end(99), spec.block_end(100)),
            (100, 100, 200)
        );
    }

    #[test]
    fn the_dedup_scope_reaches_at_least_the_horizon_back_from_a_block_boundary() {
        let spec = WindowSpec::new(Duration::from_secs(60), Duration::from_secs(5)).expect("valid");
        assert_eq!(spec.dedup_horizon(), 65_536);
        assert_eq!(spec.dedup_block(), 16_384);
        let spec = spec.with_dedup_horizon(10);
        assert_eq!((spec.dedup_block(), spec.dedup_horizon()), (3, 12));
        assert_eq!(spec.with_dedup_horizon(0).dedup_horizon(), 4);
        for o in 0..100 {
            let s = spec.dedup_scope_start(o);
            assert_eq!(s % 3, 0, "on a block boundary");
            assert!(s <= o - 12 && s > o - 15, "offset {o}: scope from {s}");
        }
    }
}
