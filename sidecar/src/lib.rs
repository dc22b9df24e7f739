//! TradeStore sidecar: owns one DuckDB trade database file and serves it over HTTP.
//!
//! Write path: `http` → [`writer`] (bounded queue, group commit, the one read-write
//! connection) → DuckDB file (WAL fsync) → acknowledgement. Read path: [`reader`]
//! (connection pool) and the writer's in-memory [`state`].

pub mod app;
pub mod backup;
pub mod config;
pub mod db;
pub mod error;
pub mod health;
pub mod http;
pub mod integrity;
pub mod journal;
pub mod metrics;
pub mod migrations;
pub mod model;
pub mod money;
pub mod reader;
pub mod recovery;
pub mod remote;
pub mod shutdown;
pub mod snapshot;
pub mod state;
pub mod sync;
pub mod writer;
