//! What the TradeStore sidecar and its operator say to each other, defined once: the
//! sidecar serves these types and the operator reads them, so the two cannot drift.
//! Serde and small pure parsers only (croner for schedules, humantime for durations), no
//! I/O: the operator depends on it without linking DuckDB, tokio or warp.
//!
//! - [`status`]: the `GET /v1/status` document and its parts.
//! - [`snapshot`]: the manifest stored next to every snapshot (also what
//!   `POST /v1/snapshots` answers) and the file names inside a snapshot directory.
//! - [`config`]: the sidecar's configuration file with its defaults, its validation and
//!   the cron rule; the sidecar loads it, the operator renders it.
//! - [`wire`]: the port, the HTTP paths, the environment variables and the mount paths.

pub mod config;
pub mod snapshot;
pub mod status;
pub mod wire;
