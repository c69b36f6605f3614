//! In-process adapters: the embedded mode's event bus and the fakes every test uses.
//!
//! # Layout
//! - [`MemoryBus`]: topics with partitions, keyed with Kafka's partitioner, and consumer
//!   groups with committed offsets, so the analytics worker and the statistics ingest run
//!   unchanged over it.
//! - [`MemoryStore`]: every repository, the outbox and the statistics sink and query, over
//!   one lock, with the same contracts as the SQL store (they share a contract suite).
//! - [`SystemClock`] and [`ManualClock`]: real time, and time a test advances by hand.
//! - [`SimulatedPayments`]: the built-in payment provider with a signed webhook.
//! - [`RecordingPublisher`] and [`NullPublisher`]: event publishers for tests and benchmarks.

mod bus;
mod clock;
mod payments;
mod publishers;
mod store;

pub use bus::{BusLimits, MemoryBus, MemoryConsumer};
pub use clock::{ManualClock, SystemClock};
pub use payments::{PaymentMode, SimulatedPayments, SIGNATURE_HEADER};
pub use publishers::{NullPublisher, RecordingPublisher};
pub use store::MemoryStore;
