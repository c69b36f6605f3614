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

/// The random bits of event ids: a xoshiro256++ generator (two 64-bit steps per id), fast
/// and with a period far beyond any process's ids, seeded once per thread from the
/// operating system's random source (two UUIDv4s).
struct IdBits(std::cell::Cell<[u64; 4]>);

impl IdBits {
    fn seeded() -> Self {
        let a = uuid::Uuid::new_v4().as_u128();
        let b = uuid::Uuid::new_v4().as_u128();
        IdBits(std::cell::Cell::new([
            a as u64,
            (a >> 64) as u64 | 1,
            b as u64,
            (b >> 64) as u64,
        ]))
    }

    fn step(s: &mut [u64; 4]) -> u64 {
        let out = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    fn next(&self) -> u128 {
        let mut s = self.0.get();
        let lo = Self::step(&mut s);
        let hi = Self::step(&mut s);
        self.0.set(s);
        (u128::from(hi) << 64) | u128::from(lo)
    }
}

thread_local! {
    static ID_BITS: IdBits = IdBits::seeded();
}

/// The unique id of an event: a UUIDv7, time-ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub uuid::Uuid);

impl EventId {
    /// A new UUIDv7 whose timestamp is `at` (the event's time, from the [`crate::ports::Clock`]).
    ///
    /// Its 74 random bits come from a per-thread generator seeded once from the operating
    /// system, not from a system call per id: a book view is the hottest path in the
    /// store. Ids must be unique (consumers de-duplicate by them), not unguessable: they
    /// are made here, never taken from a client.
    pub fn new_at(at: DateTime<Utc>) -> Self {
        let ms = at.timestamp_millis().max(0) as u64;
        let bits = ID_BITS.with(|g| g.next());
        let mut random = [0u8; 10];
        random.copy_from_slice(&bits.to_le_bytes()[..10]);
        EventId(uuid::Builder::from_unix_timestamp_millis(ms, &random).into_uuid())
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn event_ids_are_unique_v7_ids_of_their_instant() {
        let at = DateTime::<Utc>::from_timestamp_millis(1_764_000_000_123).expect("test value");
        let ids: Vec<EventId> = (0..200_000).map(|_| EventId::new_at(at)).collect();
        let distinct: HashSet<u128> = ids.iter().map(|id| id.as_u128()).collect();
        assert_eq!(distinct.len(), ids.len());
        for id in &ids[..100] {
            assert_eq!(id.0.get_version_num(), 7);
            let (secs, nanos) = id.0.get_timestamp().expect("test value").to_unix();
            assert_eq!(
                secs * 1000 + u64::from(nanos) / 1_000_000,
                1_764_000_000_123
            );
        }
        // Each thread has a generator of its own, seeded apart.
        let other: Vec<u128> = std::thread::spawn(move || {
            (0..200_000)
                .map(|_| EventId::new_at(at).as_u128())
                .collect()
        })
        .join()
        .expect("test value");
        assert!(other.iter().all(|id| !distinct.contains(id)));
    }
}
