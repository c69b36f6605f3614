//! The analytics role: event-time windows over each source partition, folded into
//! per-book figures and published as [`Aggregate`]s when a window closes.
//!
//! - [`window`]: tumbling windows and their grace period.
//! - [`sketch`]: the mergeable distinct-count sketch behind unique counts.
//! - [`aggregate`]: the published figure and its JSON form.
//! - [`partition`]: one partition's open windows, lateness and checkpoints.
//! - [`lag`]: the group's lag, counted from the read position its checkpoints record.
//! - [`worker`]: the consumer-group loop that drives it all through the ports.

pub mod aggregate;
pub mod lag;
pub mod partition;
pub mod sketch;
pub mod window;
pub mod worker;

pub use aggregate::{Aggregate, Figures, SourceRange};
pub use lag::unread_records;
pub use partition::{checkpoint_bytes_bound, read_position, Ingested, PartitionWindows};
pub use sketch::Sketch;
pub use window::{parse_duration, Window, WindowSpec};
pub use worker::{AnalyticsWorker, DeadLetter, DeadReason, StopFlag, Stopped, WorkerStats};
