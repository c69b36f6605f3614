//! folio's domain: everything the bookstore and the analytics service *mean*, with no
//! runtime, driver or web framework in sight.
//!
//! # Layout
//! - [`ids`], [`money`], [`catalog`], [`accounts`], [`commerce`], [`feedback`]: the
//!   bookstore's entities, with validating constructors.
//! - [`events`] and [`topics`]: the five user-action events, their JSON form, and the topic
//!   catalog they travel on. [`partitioner`] is Kafka's default key-to-partition rule, shared
//!   by every bus so a record lands where a Java client would put it.
//! - [`ports`]: the traits adapters implement (repositories, buses, clock, payments...).
//! - [`services`]: the bookstore's use cases, written against ports only.
//! - [`analytics`]: event-time windows, mergeable unique-count sketches, the per-partition
//!   aggregator and the worker loop of the analytics role.
//! - [`stats`]: the read model admins see, and how it is derived from aggregates.
//!
//! # Flow
//! A handler calls a service; the service validates, writes through a repository (with a
//! transactional outbox where a row and its event must agree) or publishes straight to the
//! bus. The analytics worker folds events into per-partition windows and publishes one
//! [`analytics::Aggregate`] per (window, book, source partition). The bookstore's
//! [`services::StatsIngest`] upserts those into the [`ports::StatsSink`], where every
//! total, overview and popular list is derived.

pub mod accounts;
pub mod analytics;
pub mod catalog;
pub mod commerce;
pub mod error;
pub mod events;
pub mod feedback;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod ids;
pub mod money;
pub mod partitioner;
pub mod pipeline;
pub mod ports;
pub mod services;
pub mod stats;
pub mod topics;

pub use error::{Error, Result};
