//! The upsert rule: which stored aggregates a new one replaces, written once for every
//! store (the in-memory store applies it directly, the SQL sink decides with it and then
//! writes what it decided).
//!
//! Aggregates are grouped by (window, book, source topic, source partition): the figures of
//! one window's records of one book from one partition. Within a group each aggregate names
//! the offsets it covers, `[first_offset, next_offset)`, and the analytics service
//! guarantees that the ranges of any two aggregates it publishes for one group are nested
//! or disjoint (docs/exactness.md, "Why ranges are nested or disjoint"). A larger range
//! holds every record of a smaller one inside it, so:
//! - an aggregate covered by a stored one (its range lies within the stored range) is a
//!   replay, or an older view of what is stored: it is **ignored**;
//! - otherwise it is **stored**, and **replaces** every stored aggregate whose range lies
//!   within its own: those records are all in the new figures;
//! - a disjoint range (a correction of the window, a new stretch of the log) **adds**.
//!
//! A stored range that partially overlaps the new one is neither: both stay, and the
//! records in the overlap count twice. folio's analytics never publishes such a pair; the
//! rule does not try to repair one.

use chrono::{DateTime, Utc};

use crate::analytics::{Aggregate, SourceRange};
use crate::ids::BookId;
use crate::topics::Topic;

/// The group an aggregate belongs to: (window start, book, source topic, source partition).
pub type AggregateGroup = (DateTime<Utc>, BookId, Topic, i32);

/// The group of `a`.
pub fn group_of(a: &Aggregate) -> AggregateGroup {
    (
        a.window_start,
        a.book_id,
        a.source.topic,
        a.source.partition,
    )
}

/// Whether `outer` covers every offset of `inner` (both of one group).
pub fn covers(outer: &SourceRange, inner: &SourceRange) -> bool {
    outer.first_offset <= inner.first_offset && inner.next_offset <= outer.next_offset
}

/// What storing an aggregate does to its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpsertDecision {
    /// A stored aggregate covers it: nothing changes.
    Ignore,
    /// It is stored; the stored aggregates at these indexes (of the slice given to
    /// [`decide_upsert`]) are covered by it and removed. None removed: it is new.
    Store { replaces: Vec<usize> },
}

/// The rule, over the ranges stored for the new aggregate's group.
pub fn decide_upsert(stored: &[SourceRange], new: &SourceRange) -> UpsertDecision {
    if stored.iter().any(|s| covers(s, new)) {
        return UpsertDecision::Ignore;
    }
    UpsertDecision::Store {
        replaces: stored
            .iter()
            .enumerate()
            .filter(|(_, s)| covers(new, s))
            .map(|(i, _)| i)
            .collect(),
    }
}

/// How one upsert went, for [`crate::ports::UpsertReport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    Inserted,
    Replaced,
    Ignored,
}

/// Applies the rule to one group held in memory: `group` holds the group's aggregates.
pub fn upsert_into(group: &mut Vec<Aggregate>, new: &Aggregate) -> Upserted {
    let ranges: Vec<SourceRange> = group.iter().map(|a| a.source).collect();
    match decide_upsert(&ranges, &new.source) {
        UpsertDecision::Ignore => Upserted::Ignored,
        UpsertDecision::Store { replaces } => {
            let replaced = !replaces.is_empty();
            let mut i = 0;
            group.retain(|_| {
                let keep = !replaces.contains(&i);
                i += 1;
                keep
            });
            group.push(new.clone());
            if replaced {
                Upserted::Replaced
            } else {
                Upserted::Inserted
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(first: i64, next: i64) -> SourceRange {
        SourceRange {
            topic: Topic::BookViews,
            partition: 0,
            first_offset: first,
            next_offset: next,
        }
    }

    #[test]
    fn a_covered_range_is_ignored_a_covering_one_replaces_a_disjoint_one_adds() {
        let stored = [r(0, 5), r(7, 9), r(9, 12)];
        assert_eq!(decide_upsert(&stored, &r(0, 5)), UpsertDecision::Ignore);
        assert_eq!(decide_upsert(&stored, &r(1, 4)), UpsertDecision::Ignore);
        assert_eq!(
            decide_upsert(&stored, &r(0, 10)),
            UpsertDecision::Store {
                replaces: vec![0, 1]
            },
            "a replayed window that read on covers the window and the first correction"
        );
        assert_eq!(
            decide_upsert(&stored, &r(7, 12)),
            UpsertDecision::Store {
                replaces: vec![1, 2]
            }
        );
        assert_eq!(
            decide_upsert(&stored, &r(12, 20)),
            UpsertDecision::Store { replaces: vec![] }
        );
        assert_eq!(
            decide_upsert(&[], &r(3, 4)),
            UpsertDecision::Store { replaces: vec![] }
        );
    }
}
