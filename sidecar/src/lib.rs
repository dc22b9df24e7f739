//! TradeStore sidecar: owns one DuckDB trade database file and serves it over HTTP.
//!
//! Write path: `http` → [`store::writer`] (bounded queue, group commit, the one read-write
//! connection) → DuckDB file (WAL fsync) → acknowledgement. Read path: [`store::reader`]
//! (connection pool) and the writer's in-memory [`store::state`].

pub mod app;
pub mod cli;
pub mod config;
pub mod durability;
pub mod error;
pub mod followers;
pub mod http;
pub mod serve;
pub mod store;
pub mod telemetry;
