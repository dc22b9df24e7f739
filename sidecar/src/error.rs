//! The sidecar's one error type.

use std::path::PathBuf;

use crate::store::model::FieldError;

/// The error of a service the sidecar depends on, kept whole as the source.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong in the sidecar.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid or unreadable configuration.
    #[error("configuration error: {0}")]
    Config(String),
    /// The database file's schema does not fit this binary.
    #[error("migration error: {0}")]
    Migration(String),
    /// Start-up recovery cannot bring the store back without losing changes.
    #[error("recovery refused: {0}")]
    Recovery(String),
    /// A snapshot is missing, corrupt or cannot be used.
    #[error("snapshot error: {0}")]
    Snapshot(String),
    /// A DuckDB call failed.
    #[error("database error: {0}")]
    Db(#[from] duckdb::Error),
    /// A filesystem or network call failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The request is malformed.
    #[error("invalid request: {0}")]
    Invalid(FieldError),
    /// A request body that is not `application/json`.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// Missing or wrong bearer token.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// The named thing (e.g. `trade T-1`) does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The change conflicts with the stored state (duplicate id, stale version,
    /// cancelled trade); carries the current trade when there is one.
    #[error("conflict: {reason}")]
    Conflict {
        /// Why the change was refused.
        reason: String,
        /// The trade as currently stored.
        current: Option<Box<crate::store::model::Trade>>,
    },
    /// The service cannot take the request now (queue full, shutting down, pool busy).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A service the sidecar depends on (Redis, ClickHouse, the object store, the read
    /// pool) failed or did not answer; like [`Error::Unavailable`], it may pass when
    /// tried again.
    #[error("unavailable: {what}: {source}")]
    Dependency {
        /// Which service, as the message names it (`redis`, `clickhouse`, …).
        what: &'static str,
        /// Its error.
        #[source]
        source: Cause,
    },
    /// The database file cannot be opened (locked by another process, damaged, no
    /// space); the recovery decision reads DuckDB's message from the source.
    #[error("internal error: cannot open database {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// DuckDB's error.
        #[source]
        source: duckdb::Error,
    },
    /// An invariant broke; a bug or a damaged file.
    #[error("internal error: {0}")]
    Internal(String),
    /// The integrity check found stored data that contradicts itself (duplicate
    /// sequences, a watermark ahead of the store, a view that disagrees with memory):
    /// evidence of damage, unlike [`Error::Internal`].
    #[error("integrity violation: {0}")]
    Integrity(String),
}

impl From<tradestore_api::config::ConfigError> for Error {
    fn from(e: tradestore_api::config::ConfigError) -> Self {
        Error::Config(e.to_string())
    }
}

impl Error {
    /// A failure of the dependency `what` (see [`Error::Dependency`]).
    pub(crate) fn dependency(what: &'static str, source: impl Into<Cause>) -> Self {
        Error::Dependency { what, source: source.into() }
    }
}

/// Result with the sidecar's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
