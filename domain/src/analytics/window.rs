//! Tumbling event-time windows.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use crate::Error;

/// Window length and grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    length_ms: i64,
    grace_ms: i64,
}

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
        })
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

/// Parses a duration such as `60s`, `2s`, `500ms`, `1m`, `1h` or a bare number of seconds.
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
        _ => {
            return Err(Error::invalid(format!(
                "{raw:?} has an unknown unit; use ms, s, m or h"
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
    }
}
