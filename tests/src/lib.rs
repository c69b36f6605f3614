//! folio's cross-crate test support: contract suites that every implementation of a port
//! runs, and the `spawn_app()` helper of the end-to-end suite.
//!
//! # Layout
//! - [`contract`]: one async check per storage port, against the traits only; the
//!   [`contract_suite!`] macro turns them into tests for one store.
//! - [`app`]: a whole folio on a random port with its own database and bus.

pub mod app;
pub mod contract;
