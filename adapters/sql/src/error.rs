//! Driver errors into domain errors, in one place: a unique violation is `Duplicate`, a
//! lost or busy database is `Unavailable` (retrying may help), anything else `Internal`.

use folio_domain::Error;
use sea_orm::sqlx;
use sea_orm::{DbErr, RuntimeErr, SqlErr};

/// The name health reports and `Unavailable` errors use for the database.
pub(crate) const DATABASE: &str = "database";

/// Maps any database error to the domain error a caller can act on.
pub(crate) fn db_err(e: DbErr) -> Error {
    match e.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(m)) => return Error::Duplicate(m),
        Some(SqlErr::ForeignKeyConstraintViolation(m)) => {
            return Error::Conflict(format!("a referenced user or book does not exist ({m})"))
        }
        _ => {}
    }
    if is_transient(&e) {
        return Error::Unavailable(DATABASE, e.to_string());
    }
    Error::Internal(format!("database: {e}"))
}

/// Like [`db_err`], with the message a caller shows for a unique violation.
pub(crate) fn unique_as(msg: impl Into<String>) -> impl FnOnce(DbErr) -> Error {
    let msg = msg.into();
    move |e| match db_err(e) {
        Error::Duplicate(_) => Error::Duplicate(msg),
        other => other,
    }
}

fn is_transient(e: &DbErr) -> bool {
    match e {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(s)) | DbErr::Query(RuntimeErr::SqlxError(s)) => match s {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(d) => d.code().is_some_and(|c| transient_code(&c)),
            _ => false,
        },
        _ => false,
    }
}

/// SQLite's busy/locked codes (a writer held the lock past the busy timeout) and
/// PostgreSQL's serialization, deadlock, shutdown and connection classes.
fn transient_code(code: &str) -> bool {
    matches!(
        code,
        "5" | "6" | "261" | "517" | "40001" | "40P01" | "53300" | "57P01" | "57P02" | "57P03"
    ) || code.starts_with("08")
}

/// An error for a stored value that does not fit the domain (a bug or a hand-edited row).
pub(crate) fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Internal(format!("database holds an invalid value: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_and_lost_connections_are_transient() {
        for code in ["5", "517", "40001", "40P01", "08006", "57P01"] {
            assert!(transient_code(code), "{code}");
        }
        for code in ["1", "19", "2067", "23505", "42P01"] {
            assert!(!transient_code(code), "{code}");
        }
    }

    #[test]
    fn pool_exhaustion_is_unavailable_and_the_rest_internal() {
        let e = db_err(DbErr::ConnectionAcquire(
            sea_orm::error::ConnAcquireErr::Timeout,
        ));
        assert!(matches!(e, Error::Unavailable(DATABASE, _)), "{e:?}");
        let e = db_err(DbErr::Custom("odd".into()));
        assert!(matches!(e, Error::Internal(_)), "{e:?}");
    }
}
