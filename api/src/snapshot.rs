//! A snapshot on disk or in a bucket: `<id>/trades.duckdb` and `<id>/manifest.json`.

use serde::{Deserialize, Serialize};

/// File name of the database copy inside a snapshot directory.
pub const DB_FILE: &str = "trades.duckdb";
/// File name of the manifest inside a snapshot directory.
pub const MANIFEST: &str = "manifest.json";

/// What a snapshot holds, stored next to it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Snapshot id (also its directory name, and what `snapshots.bootstrap_from` accepts).
    pub id: String,
    /// When it was taken (RFC 3339).
    pub created_at: String,
    /// Highest commit sequence it contains: every change up to here, nothing after.
    pub seq: i64,
    /// Schema version of the copied database.
    pub schema_version: i64,
    /// Rows in `trades`.
    pub trade_rows: i64,
    /// Size of the database copy in bytes.
    pub size_bytes: u64,
    /// SHA-256 of the database copy, hex.
    pub sha256: String,
    /// How long taking it took.
    pub duration_ms: u64,
}
