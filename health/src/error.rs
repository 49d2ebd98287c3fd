//! The health domain's typed errors. The `api` crate maps each kind to its HTTP status.

/// Why a health operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or out of bounds (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// The request contradicts what is stored (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// No such record (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The embedded database failed; nothing was acknowledged.
    #[error("health database: {0}")]
    Store(String),
    /// The health domain is stopping or stopped.
    #[error("the health domain is shutting down")]
    ShuttingDown,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn store(context: &str, e: impl std::fmt::Display) -> Error {
        Error::Store(format!("{context}: {e}"))
    }
}
