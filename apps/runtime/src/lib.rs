//! What every folio binary shares, so each `main.rs` is short wiring:
//!
//! - [`config`]: typed configuration blocks (clap, each flag with its environment
//!   variable) and folio's one duration syntax;
//! - [`telemetry`]: logs as text or JSON lines (`LOG_FORMAT`);
//! - [`metrics`]: each role's Prometheus metrics through the `metrics` crate;
//! - [`shutdown`] and [`supervisor`]: one stop signal, and tasks stopped in a declared
//!   order;
//! - [`bus`]: the in-process bus or Kafka, and its readiness check;
//! - the roles' composition: [`analytics`] and [`bookstore`], and [`ops`], the analytics
//!   service's metrics and health endpoints.

pub mod analytics;
pub mod bookstore;
pub mod bus;
pub mod config;
pub mod metrics;
pub mod ops;
pub mod shutdown;
pub mod supervisor;
pub mod telemetry;

pub use bus::{connect_bus, require_kafka, BusReadiness};
pub use config::{
    duration, AnalyticsArgs, BusArgs, HttpArgs, KafkaSecurityArgs, LogFormat, TelemetryArgs,
};
pub use metrics::Metrics;
pub use shutdown::Shutdown;
pub use supervisor::Supervisor;
