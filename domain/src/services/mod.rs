//! The bookstore's use cases, written against ports only.
//!
//! - [`Bookstore`]: every request-driven use case (accounts, catalog, purchases, downloads,
//!   reviews, ratings, admin statistics), with authorization checked here as well as at the
//!   edge.
//! - [`OutboxRelay`]: moves committed outbox rows onto the bus.
//! - [`StatsIngest`]: consumes aggregates and upserts them into the statistics sink.
//! - [`BookCache`]: the book page's read-through cache, correct across instances.
//! - [`BusEventPublisher`]: the [`crate::ports::EventPublisher`] over any record bus.

mod book_cache;
mod bookstore;
mod ingest;
mod publishing;
mod relay;

pub use book_cache::{
    BookCache, BookCacheStats, ServedBook, DEFAULT_REFRESH as DEFAULT_BOOK_PAGE_REFRESH,
};
pub use bookstore::{Bookstore, BookstoreDeps, Download, StoreConfig};
pub use ingest::{IngestStats, StatsIngest};
pub use publishing::{event_record, BusEventPublisher, EVENT_ID_HEADER, EVENT_TYPE_HEADER};
pub use relay::OutboxRelay;
