//! The analytics group's lag: how many records of its topics it has not read yet.
//!
//! The group's committed offset is no measure of that: it is the start of the fold
//! point's duplicate scope, which trails what the owner has read by up to the duplicate
//! horizon (`partition`'s module docs), so `high watermark − committed offset` would
//! report tens of thousands of records behind a group that has read everything. The lag
//! is counted from the read position each checkpoint records ([`read_position`]) instead:
//! as of each partition's last commit, the records on the log at or past it.

use super::partition::read_position;
use crate::ports::PartitionOffsets;

/// The records of `partitions` the group had not read as of each one's last commit:
/// Σ max(0, high watermark − max(read position, log start)). A partition the group never
/// committed counts from its log start, and records the log no longer holds count nowhere.
pub fn unread_records(partitions: &[PartitionOffsets]) -> u64 {
    partitions
        .iter()
        .map(|p| {
            let read = p
                .committed
                .as_ref()
                .map_or(p.log_start, read_position)
                .max(p.log_start);
            u64::try_from(p.high_watermark - read).unwrap_or(0)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::analytics::{PartitionWindows, WindowSpec};
    use crate::fixtures::view;
    use crate::ports::Committed;
    use crate::topics::{Topic, TopicPartition};

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition::new(Topic::BookViews, partition)
    }

    fn offsets(
        partition: i32,
        committed: Option<Committed>,
        log_start: i64,
        high_watermark: i64,
    ) -> PartitionOffsets {
        PartitionOffsets {
            partition: tp(partition),
            committed,
            log_start,
            high_watermark,
        }
    }

    fn committed(offset: i64, metadata: &str) -> Committed {
        Committed {
            offset,
            metadata: metadata.to_string(),
        }
    }

    /// A checkpoint taken after reading offsets 0..=11 of views one second apart, with
    /// windows of 10 s and 1 s of grace and the duplicate horizon of those settings.
    fn checkpoint_after_twelve_records() -> Committed {
        let spec =
            WindowSpec::new(Duration::from_secs(10), Duration::from_secs(1)).expect("valid spec");
        let mut p = PartitionWindows::resume(tp(0), spec, None);
        for o in 0..12 {
            p.ingest(o, &view(o as u128 + 1, o * 1_000, 7, Some(1)));
        }
        p.close_due(0);
        p.take_checkpoint(true).expect("checkpoint")
    }

    #[test]
    fn a_new_checkpoint_gives_the_read_position_not_the_committed_offset() {
        let cp = checkpoint_after_twelve_records();
        // The window [0, 10 s) closed at the record of 11 s: the fold point is the first
        // record of the open window [10 s, 20 s), offset 10; the commit trails it, the
        // worker had read 12 records.
        assert_eq!(cp.offset, 0);
        assert!(cp.metadata.contains("\"fold\":10"), "{}", cp.metadata);
        assert!(cp.metadata.contains("\"read\":12"), "{}", cp.metadata);
        assert_eq!(read_position(&cp), 12);
        assert_eq!(unread_records(&[offsets(0, Some(cp.clone()), 0, 20)]), 8);
        assert_eq!(unread_records(&[offsets(0, Some(cp), 0, 12)]), 0);
    }

    #[test]
    fn an_old_checkpoint_falls_back_to_its_fold_point_then_to_the_offset() {
        let old = committed(4, r#"{"v":3,"fold":10,"closed":[[0,11]]}"#);
        assert_eq!(read_position(&old), 10);
        let no_fold = committed(4, r#"{"v":3,"horizon":11000}"#);
        assert_eq!(read_position(&no_fold), 4);
        let not_a_checkpoint = committed(7, "");
        assert_eq!(read_position(&not_a_checkpoint), 7);
        // A read position below the committed offset is never believed.
        assert_eq!(read_position(&committed(9, r#"{"v":4,"read":3}"#)), 9);
        assert_eq!(
            unread_records(&[
                offsets(0, Some(old), 0, 25),
                offsets(1, Some(no_fold), 0, 25),
                offsets(2, Some(not_a_checkpoint), 0, 25),
            ]),
            15 + 21 + 18
        );
    }

    #[test]
    fn a_partition_without_a_commit_counts_from_its_log_start() {
        assert_eq!(unread_records(&[offsets(0, None, 30, 100)]), 70);
        assert_eq!(unread_records(&[offsets(0, None, 0, 0)]), 0);
        // A commit older than the log start counts only what the log still holds.
        assert_eq!(
            unread_records(&[offsets(1, Some(committed(5, "")), 30, 100)]),
            70
        );
    }

    #[test]
    fn a_read_position_past_the_high_watermark_counts_zero() {
        let ahead = committed(40, r#"{"v":4,"read":60}"#);
        assert_eq!(
            unread_records(&[offsets(0, Some(ahead), 0, 50), offsets(1, None, 10, 13)]),
            3
        );
    }
}
