//! SeaORM entities: one module per table, mirroring the schema the migrations create.
//! Times are `i64` milliseconds since the Unix epoch, UTC (see `crate::time`).

pub mod book_file_chunks;
pub mod book_files;
pub mod books;
pub mod outbox;
pub mod purchases;
pub mod ratings;
pub mod reviews;
pub mod users;
pub mod window_stats;
