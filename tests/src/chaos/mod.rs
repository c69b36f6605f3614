//! The chaos suite: folio end to end on real Kafka and PostgreSQL while processes crash,
//! instances join and leave, the broker restarts and records arrive twice, late or
//! malformed; then every stored figure is compared with the exact one. The binary is
//! `src/bin/chaos.rs` (`scripts/chaos`); what it checks is described in
//! `docs/exactness.md` ("The chaos suite").
//!
//! # Layout
//! - [`workload`]: the seeded workload, a schedule relative to the run's start: events
//!   (with window-edge times), duplicate deliveries, late events and poison records.
//! - [`expect`]: the exact figures of the events actually produced, per (book, window).
//! - [`producer`]: publishes the schedule in real time through folio's Kafka publisher,
//!   pausing (and shifting the rest of the schedule by whole windows) around a broker
//!   restart.
//! - [`fleet`]: the analytics and bookstore processes: start, `kill -9`, SIGTERM, reap.
//! - [`http`]: seeded HTTP traffic through the running bookstore (views, downloads,
//!   purchases, reviews, ratings; bursts of views around a SIGTERM or `kill -9`), every
//!   answer recorded with what it must add to the figures.
//! - [`dlq`]: reads `analytics.dlq` and matches each dead letter to what was injected.
//! - [`verify`]: reads the stored statistics through the `StatsQuery` port and lists
//!   every difference.
//! - [`run`]: the driver: profiles, the fault schedule, the quiet period and the summary.
//!
//! # Flow
//! workload -> producer -> Kafka -> analytics processes -> aggregates -> bookstore
//! process -> PostgreSQL -> verify; in parallel the driver injects faults, and at the end
//! the produced log becomes the expected figures.

pub mod dlq;
pub mod expect;
pub mod fleet;
pub mod http;
pub mod producer;
pub mod run;
pub mod verify;
pub mod workload;
