//! folio's cross-crate test support: contract suites that every implementation of a port
//! runs, and the `spawn_app()` helper of the end-to-end suite.
//!
//! # Layout
//! - [`contract`]: one async check per storage port, against the traits only; the
//!   [`contract_suite!`] macro turns them into tests for one store.
//! - [`app`]: a whole folio on a random port with its own database and bus.
//! - [`scenario`]: the HTTP scenario and its exact admin figures, shared by the embedded
//!   and the Kafka + PostgreSQL runs.
//! - [`bus_contract`]: the checks every `MessageBus` passes (in-process and Kafka); the
//!   [`bus_contract_suite!`] macro turns them into tests for one bus.
//! - [`kafka_env`]: the real broker and PostgreSQL a test runs against (named by
//!   `KAFKA_BOOTSTRAP` / `DATABASE_URL`, or containers), isolation per test, and Kafka's
//!   own command-line tools.
//! - [`traffic`] and [`stack`]: synthetic events with their exact figures, and folio's
//!   roles started one by one on a real broker so tests can stop, kill and restart them.
//! - [`chaos`]: the fault-injection suite behind the `chaos` binary: a seeded workload,
//!   process kills, rebalances, a broker restart, and an exact comparison at the end.

pub mod app;
pub mod bench;
pub mod bus_contract;
pub mod chaos;
pub mod contract;
pub mod kafka_env;
pub mod oracle;
pub mod scenario;
pub mod stack;
pub mod traffic;
