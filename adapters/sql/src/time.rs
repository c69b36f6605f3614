//! Times are stored as BIGINT milliseconds since the Unix epoch, UTC: the precision events
//! carry on the wire, and a type that compares, groups and aggregates the same way on
//! SQLite and PostgreSQL. Sub-millisecond parts of incoming times are dropped.

use chrono::{DateTime, Utc};
use folio_domain::Error;

use crate::error::corrupt;

pub(crate) fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(ms: i64) -> Result<DateTime<Utc>, Error> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt(format!("timestamp {ms} ms")))
}

pub(crate) fn from_ms_opt(ms: Option<i64>) -> Result<Option<DateTime<Utc>>, Error> {
    ms.map(from_ms).transpose()
}
