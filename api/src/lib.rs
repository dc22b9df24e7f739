//! What the TradeStore sidecar and its operator say to each other, defined once: the
//! sidecar serves these types and the operator reads them, so the two cannot drift.
//! Serde only, no I/O: the operator depends on it without linking DuckDB, tokio or
//! warp.
//!
//! - [`status`]: the `GET /v1/status` document and its parts.
//! - [`snapshot`]: the manifest stored next to every snapshot (also what
//!   `POST /v1/snapshots` answers) and the file names inside a snapshot directory.
//! - [`wire`]: the port, the HTTP paths and the environment variables.

pub mod snapshot;
pub mod status;
pub mod wire;
