//! Identifier newtypes. Database ids are positive integers; on the wire (Kafka keys, JSON)
//! they are decimal. Event ids are UUIDv7 so they sort by creation time.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Error;

macro_rules! int_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl $name {
            /// Validates a raw id: ids are positive.
            pub fn parse(raw: i64) -> Result<Self, Error> {
                if raw > 0 {
                    Ok(Self(raw))
                } else {
                    Err(Error::invalid(concat!($what, " id must be a positive integer")))
                }
            }

            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                let raw: i64 = s
                    .parse()
                    .map_err(|_| Error::invalid(concat!($what, " id must be a decimal integer")))?;
                Self::parse(raw)
            }
        }
    };
}

int_id!(
    /// A book in the catalog.
    BookId,
    "book"
);
int_id!(
    /// A registered user (reader or admin).
    UserId,
    "user"
);
int_id!(
    /// A purchase of one book by one user.
    PurchaseId,
    "purchase"
);
int_id!(
    /// A review of one book by one user.
    ReviewId,
    "review"
);

/// The unique id of an event: a UUIDv7, time-ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub uuid::Uuid);

impl EventId {
    /// A new UUIDv7 whose timestamp is `at` (the event's time, from the [`crate::ports::Clock`]).
    pub fn new_at(at: DateTime<Utc>) -> Self {
        let ms = at.timestamp_millis().max(0) as u64;
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            ms / 1000,
            ((ms % 1000) * 1_000_000) as u32,
        );
        EventId(uuid::Uuid::new_v7(ts))
    }

    /// The id as one 128-bit number, for compact de-duplication sets.
    pub fn as_u128(self) -> u128 {
        self.0.as_u128()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
