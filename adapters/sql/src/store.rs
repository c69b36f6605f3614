//! The store itself: connecting, migrating, and the transaction helpers every repository
//! uses.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use folio_domain::ports::Readiness;
use folio_domain::{Error, Result};
use sea_orm::sea_query::{Expr, IntoTableRef, Query};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    Statement, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use tracing::{debug, info, instrument, warn};

use crate::error::{db_err, DATABASE};
use crate::migration::Migrator;

/// How long a SQLite writer waits for another writer's lock before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections per process. SQLite serialises writers anyway (WAL lets readers proceed);
/// PostgreSQL gets a pool that two cores can keep busy.
const SQLITE_POOL: u32 = 4;
const POSTGRES_POOL: u32 = 10;
/// The PostgreSQL advisory lock held while migrating ("folio" in ASCII), so instances that
/// start together migrate one after the other.
const MIGRATION_LOCK: i64 = 0x0066_6f6c_696f;
/// SQLite has no advisory lock; a migration that raced another instance fails on the
/// bookkeeping row and is simply run again (every statement is `IF NOT EXISTS`).
const SQLITE_MIGRATION_ATTEMPTS: usize = 5;
/// Switching a new SQLite file to WAL needs an exclusive lock that the busy timeout does
/// not wait for, so instances creating the same file together retry the connection.
const SQLITE_CONNECT_ATTEMPTS: u32 = 20;
const SQLITE_CONNECT_BACKOFF: Duration = Duration::from_millis(25);

/// The environment variable [`SqlOptions::from_env`] reads the statistics retention from.
pub const STATS_RETENTION_ENV: &str = "FOLIO_STATS_RETENTION";

/// How long per-window statistics are kept unless configured otherwise.
pub const DEFAULT_STATS_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Settings of a [`SqlStore`] beyond its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlOptions {
    /// How long per-window statistics rows are kept before the sink prunes them (hourly
    /// and daily rollups keep every figure). `None` keeps them forever and never prunes
    /// by itself; [`SqlStore::prune_stats_before`] still works. Default: 7 days.
    pub stats_retention: Option<Duration>,
}

impl Default for SqlOptions {
    fn default() -> Self {
        SqlOptions {
            stats_retention: Some(DEFAULT_STATS_RETENTION),
        }
    }
}

impl SqlOptions {
    /// The defaults, with the retention taken from `FOLIO_STATS_RETENTION` when it is set:
    /// a number with a unit (`90m`, `36h`, `7d`, `2w`) or `off` to keep every window.
    pub fn from_env() -> Result<Self> {
        let mut options = SqlOptions::default();
        if let Ok(value) = std::env::var(STATS_RETENTION_ENV) {
            options.stats_retention = parse_retention(&value)?;
        }
        Ok(options)
    }
}

/// Parses a retention: `off` (or `forever`), or a positive number with a unit of `s`,
/// `m`, `h`, `d` or `w`.
pub fn parse_retention(value: &str) -> Result<Option<Duration>> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("off") || value.eq_ignore_ascii_case("forever") {
        return Ok(None);
    }
    let invalid = || {
        Error::invalid(format!(
            "{STATS_RETENTION_ENV} must be a positive number with a unit (s, m, h, d, w) or `off`; got {value:?}"
        ))
    };
    let unit_at = value
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = value.split_at(unit_at);
    let n: u64 = number.parse().map_err(|_| invalid())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(invalid()),
    };
    match n.checked_mul(seconds) {
        Some(secs) if secs > 0 => Ok(Some(Duration::from_secs(secs))),
        _ => Err(invalid()),
    }
}

/// folio's SQL store: every repository, the outbox, and the statistics sink and query.
///
/// Cloning is cheap (it shares one connection pool), so the composition root can hand the
/// same store to every port as `Arc<dyn Port>`.
#[derive(Clone)]
pub struct SqlStore {
    pub(crate) db: DatabaseConnection,
    pub(crate) options: SqlOptions,
    /// When this process last ran an automatic prune, shared by clones.
    pub(crate) last_prune: Arc<Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &self.db.get_database_backend())
            .field("options", &self.options)
            .finish()
    }
}

impl SqlStore {
    /// Which database this store talks to: `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self.db.get_database_backend() {
            DbBackend::Postgres => "postgres",
            DbBackend::Sqlite => "sqlite",
            DbBackend::MySql => "mysql",
        }
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(self) -> Result<()> {
        self.db.close().await.map_err(db_err)
    }

    pub(crate) fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Begins a transaction that will read and then write `table`.
    ///
    /// SQLite starts transactions deferred: one that reads first and writes later fails
    /// with `SQLITE_BUSY` (without waiting) if another connection committed in between. A
    /// no-op write up front takes the write lock at once, waiting up to the busy timeout,
    /// so the reads that follow see the state the writes will apply to. PostgreSQL locks
    /// rows instead (`SELECT ... FOR UPDATE` in the callers).
    pub(crate) async fn begin_write(
        &self,
        table: impl IntoTableRef,
    ) -> Result<DatabaseTransaction> {
        let txn = self.db.begin().await.map_err(db_err)?;
        if self.backend() == DbBackend::Sqlite {
            let noop = Query::delete()
                .from_table(table)
                .and_where(Expr::cust("1 = 0"))
                .to_owned();
            txn.execute(txn.get_database_backend().build(&noop))
                .await
                .map_err(db_err)?;
        }
        Ok(txn)
    }

    /// Begins a transaction whose first statement writes (so SQLite takes the lock then).
    pub(crate) async fn begin(&self) -> Result<DatabaseTransaction> {
        self.db.begin().await.map_err(db_err)
    }
}

/// Connects to `url` (`sqlite://path?mode=rwc`, `sqlite::memory:` or `postgres://...`),
/// applies pending migrations, and returns the store with [`SqlOptions::default`].
pub async fn connect(url: &str) -> Result<SqlStore> {
    connect_with(url, SqlOptions::default()).await
}

/// [`connect`] with explicit options.
#[instrument(skip(url))]
pub async fn connect_with(url: &str, options: SqlOptions) -> Result<SqlStore> {
    let db = open(url, None).await?;
    migrate_connection(&db, url).await?;
    Ok(SqlStore {
        db,
        options,
        last_prune: Arc::new(Mutex::new(None)),
    })
}

/// Applies pending migrations to `url` and disconnects: the CLI's `migrate` subcommand.
#[instrument(skip(url))]
pub async fn migrate(url: &str) -> Result<()> {
    let db = open(url, Some(1)).await?;
    let outcome = migrate_connection(&db, url).await;
    let closed = db.close().await.map_err(db_err);
    outcome.and(closed)
}

/// Creates a new, uniquely named PostgreSQL schema and returns `url` with its
/// `search_path` set to it, so a test (or a throwaway instance) gets an empty database of
/// its own. [`Error::Invalid`] for a URL that is not PostgreSQL.
pub async fn fresh_schema_url(url: &str) -> Result<String> {
    if !is_postgres(url) {
        return Err(Error::invalid("a fresh schema needs a postgres:// URL"));
    }
    let schema = format!("folio_{}", uuid::Uuid::now_v7().simple());
    let db = open(url, Some(1)).await?;
    let created = db
        .execute_unprepared(&format!("CREATE SCHEMA \"{schema}\""))
        .await
        .map_err(db_err);
    let closed = db.close().await.map_err(db_err);
    created.and(closed)?;
    let sep = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{sep}options=-c%20search_path%3D{schema}"))
}

/// Drops the schema a [`fresh_schema_url`] URL points at, with everything in it. Returns
/// `false` for a URL that names no such schema (nothing is dropped then).
pub async fn drop_fresh_schema(schema_url: &str) -> Result<bool> {
    let Some(schema) = fresh_schema_of(schema_url) else {
        return Ok(false);
    };
    let db = open(schema_url, Some(1)).await?;
    let dropped = async {
        // Waiting for a lock held elsewhere would hang a test's tear-down.
        db.execute_unprepared("SET lock_timeout = '5s'").await?;
        db.execute_unprepared(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await
    }
    .await
    .map_err(db_err);
    let closed = db.close().await.map_err(db_err);
    dropped.and(closed)?;
    Ok(true)
}

/// The schema name in a [`fresh_schema_url`] URL: `folio_` and 32 lowercase hex digits.
fn fresh_schema_of(url: &str) -> Option<&str> {
    if !is_postgres(url) {
        return None;
    }
    let (_, rest) = url.split_once("search_path%3D")?;
    let schema = rest.split('&').next()?;
    let hex = schema.strip_prefix("folio_")?;
    (hex.len() == 32
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(schema)
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

fn is_sqlite_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

async fn open(url: &str, pool: Option<u32>) -> Result<DatabaseConnection> {
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        // Statement logging would log every query at INFO through `log`; tracing spans
        // from sea-orm remain.
        .sqlx_logging(false);
    if url.starts_with("sqlite:") {
        if is_sqlite_memory(url) {
            // Every connection to `:memory:` is a database of its own, and recycling the
            // one connection would empty it: keep exactly one for the store's lifetime.
            let forever = Duration::from_secs(365 * 24 * 3600);
            opts.max_connections(1)
                .min_connections(1)
                .idle_timeout(forever)
                .max_lifetime(forever);
        } else {
            opts.max_connections(pool.unwrap_or(SQLITE_POOL));
        }
        opts.map_sqlx_sqlite_opts(|o| {
            o.journal_mode(SqliteJournalMode::Wal)
                // In WAL mode NORMAL loses nothing on a process crash, only on power loss.
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(true)
        });
    } else if is_postgres(url) {
        opts.max_connections(pool.unwrap_or(POSTGRES_POOL));
    } else {
        return Err(Error::invalid(
            "DATABASE_URL must start with sqlite:// (or sqlite::memory:) or postgres://",
        ));
    }
    if !url.starts_with("sqlite:") {
        return Database::connect(opts).await.map_err(db_err);
    }
    let mut attempt = 1;
    loop {
        match Database::connect(opts.clone()).await.map_err(db_err) {
            Err(Error::Unavailable(_, e)) if attempt < SQLITE_CONNECT_ATTEMPTS => {
                debug!(error = %e, attempt, "SQLite is busy; connecting again");
                tokio::time::sleep(SQLITE_CONNECT_BACKOFF * attempt).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn migrate_connection(db: &DatabaseConnection, url: &str) -> Result<()> {
    match db.get_database_backend() {
        DbBackend::Postgres => migrate_postgres(url).await,
        _ => {
            let mut attempt = 1;
            loop {
                match Migrator::up(db, None).await {
                    Ok(()) => return Ok(()),
                    Err(e) if attempt < SQLITE_MIGRATION_ATTEMPTS => {
                        warn!(error = %e, attempt, "migration raced another instance; retrying");
                        attempt += 1;
                    }
                    Err(e) => return Err(db_err(e)),
                }
            }
        }
    }
}

/// Migrates under a session-level advisory lock, on a connection of its own: the lock
/// belongs to the session, so it must be taken and released on the same connection.
async fn migrate_postgres(url: &str) -> Result<()> {
    let conn = open(url, Some(1)).await?;
    let lock = |sql: &str| {
        Statement::from_sql_and_values(DbBackend::Postgres, sql, [MIGRATION_LOCK.into()])
    };
    let outcome = async {
        conn.execute(lock("SELECT pg_advisory_lock($1)"))
            .await
            .map_err(db_err)?;
        let migrated = Migrator::up(&conn, None).await.map_err(db_err);
        let unlocked = conn
            .execute(lock("SELECT pg_advisory_unlock($1)"))
            .await
            .map(|_| ())
            .map_err(db_err);
        migrated.and(unlocked)
    }
    .await;
    // Closing ends the session, which also releases the lock if unlocking failed.
    let closed = conn.close().await.map_err(db_err);
    outcome.and(closed)?;
    info!("database schema is up to date");
    Ok(())
}

#[async_trait]
impl Readiness for SqlStore {
    fn name(&self) -> &'static str {
        DATABASE
    }

    async fn check(&self) -> Result<()> {
        let stmt = Statement::from_string(self.backend(), "SELECT 1");
        match self.db.query_one(stmt).await {
            Ok(_) => Ok(()),
            Err(e) => Err(Error::Unavailable(DATABASE, e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fresh_schema_of;

    #[test]
    fn only_a_fresh_schema_url_names_a_schema_to_drop() {
        let schema = "folio_019aa7e2d4c87f10b3e5a1c2d3e4f5a6";
        let url = format!("postgres://u:p@h/db?options=-c%20search_path%3D{schema}");
        assert_eq!(fresh_schema_of(&url), Some(schema));
        let more =
            format!("postgres://u:p@h/db?sslmode=disable&options=-c%20search_path%3D{schema}&x=1");
        assert_eq!(fresh_schema_of(&more), Some(schema));
        // Not made by fresh_schema_url: never dropped.
        assert_eq!(fresh_schema_of("postgres://u:p@h/db"), None);
        assert_eq!(
            fresh_schema_of("postgres://u:p@h/db?options=-c%20search_path%3Dpublic"),
            None
        );
        assert_eq!(
            fresh_schema_of("postgres://u:p@h/db?options=-c%20search_path%3Dfolio_x\";drop"),
            None
        );
        assert_eq!(
            fresh_schema_of(&format!("sqlite://x?options=-c%20search_path%3D{schema}")),
            None
        );
    }
}
