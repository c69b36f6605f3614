//! The domain's one error type. Each variant names a cause a caller can act on; the HTTP
//! adapter maps them to status codes in one place.

use std::fmt;

/// What went wrong, by cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input breaks a rule; the message says which (HTTP 422).
    #[error("{0}")]
    Invalid(String),
    /// The named thing does not exist (HTTP 404).
    #[error("{entity} {id} not found")]
    NotFound { entity: &'static str, id: String },
    /// A unique thing already exists (HTTP 409).
    #[error("{0}")]
    Duplicate(String),
    /// The request conflicts with the current state (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The action needs a completed purchase (HTTP 402).
    #[error("{0}")]
    PaymentRequired(String),
    /// Missing or bad credentials (HTTP 401).
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated, but not allowed (HTTP 403).
    #[error("{0}")]
    Forbidden(String),
    /// A dependency (database, broker, payment provider) is unavailable; retrying may help
    /// (HTTP 503).
    #[error("{0} unavailable: {1}")]
    Unavailable(&'static str, String),
    /// Anything else: a bug or an unexpected driver failure (HTTP 500).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result with the domain error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(msg: impl fmt::Display) -> Self {
        Error::Invalid(msg.to_string())
    }

    pub fn not_found(entity: &'static str, id: impl fmt::Display) -> Self {
        Error::NotFound {
            entity,
            id: id.to_string(),
        }
    }

    pub fn internal(err: impl fmt::Display) -> Self {
        Error::Internal(err.to_string())
    }
}
