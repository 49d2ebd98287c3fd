//! The engine's error type: one enum for everything that can fail below the HTTP layer.
//!
//! Per-scan problems are not errors: they are [`crate::RejectReason`]s inside an
//! [`crate::IngestOutcome`]. An `Error` means the operation as a whole did not happen.

use std::io;
use std::path::PathBuf;

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on the data directory failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The log failed to make data durable earlier; it acknowledges nothing more until reopened.
    #[error("the log is poisoned after a failed write or sync ({0}); restart the server after fixing the disk")]
    Poisoned(String),
    /// The data directory is out of space (or the segment could not grow); nothing was acknowledged.
    #[error("no space left for the log: {0}")]
    NoSpace(String),
    /// Another process holds the data directory.
    #[error("data directory {0} is locked by another process (is another checkin-server running on it?)")]
    Locked(PathBuf),
    /// A segment older than the newest one is damaged: it is reported, never served.
    #[error("segment {path} is corrupt at offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A venue registration was refused as a whole.
    #[error(transparent)]
    InvalidVenue(#[from] crate::VenueSpecError),
    /// A trace request is malformed.
    #[error(transparent)]
    InvalidTrace(#[from] crate::TraceRequestError),
    /// The engine is shutting down.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// An entry forwarded elsewhere (cluster mode's audit stream) was not stored there.
    #[error("the audit entry was not stored in the cluster: {0}")]
    Forward(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        if source.raw_os_error() == Some(libc::ENOSPC) {
            return Error::NoSpace(context.into());
        }
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The same failure for each of several waiters (errors carrying an `io::Error` are not
    /// `Clone`): same variant where it matters to callers, same message otherwise.
    pub(crate) fn for_each_waiter(&self) -> Error {
        match self {
            Error::NoSpace(m) => Error::NoSpace(m.clone()),
            Error::Poisoned(m) => Error::Poisoned(m.clone()),
            Error::ShuttingDown => Error::ShuttingDown,
            Error::Io { context, source } => Error::Io {
                context: context.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            other => Error::Io {
                context: other.to_string(),
                source: std::io::Error::other("log append failed"),
            },
        }
    }

    /// True when retrying later may succeed without operator action on the data
    /// (disk full, shutting down); false for corruption and poisoning.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::NoSpace(_)
                | Error::ShuttingDown
                | Error::Io { .. }
                | Error::Poisoned(_)
                | Error::Forward(_)
        )
    }
}

/// Result alias of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Blocks on a callback-style operation: `start` is given the completion to call, and this
/// returns what it was called with ([`Error::ShuttingDown`] if it was dropped uncalled).
pub(crate) fn wait_for<T: Send + 'static>(
    start: impl FnOnce(Box<dyn FnOnce(Result<T>) + Send>),
) -> Result<T> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    start(Box::new(move |r| {
        let _ = tx.send(r);
    }));
    rx.recv().unwrap_or(Err(Error::ShuttingDown))
}
