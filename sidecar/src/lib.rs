//! TradeStore sidecar: owns one DuckDB trade database file and serves it over HTTP.
//!
//! A tour in reading order, from the bottom layer up; a module only uses the ones
//! listed before it and its own layer's. ([`store::money`] and [`store::model`] are
//! plain values that import nothing else of the crate, so the error type below may
//! carry a trade.)
//!
//! - `tradestore_api` (the `api/` crate, below them all): what the sidecar says on the
//!   wire — the `/v1/status` document, the snapshot manifest, the port, the HTTP paths
//!   and the environment variable names — defined once for the sidecar and the operator.
//! - [`error`] and [`config`]: the one error type, and loading the configuration
//!   (the YAML file of `tradestore_api::config` + environment overrides, validated at
//!   start) and the secrets it points at.
//! - [`telemetry`]: what the process tells the outside about itself — Prometheus
//!   metrics, the liveness/readiness state the probes read (and the reasons the process
//!   stops by itself), log set-up.
//! - [`store`]: the DuckDB file and the only code that touches it. Write path: `http` →
//!   [`store::writer`] (bounded queue, exact decisions, group commit) → [`store::log`]
//!   (one `fdatasync` a group) → acknowledgement; behind it the applier brings the
//!   DuckDB file up in large transactions. Read path: [`store::reader`] (connection
//!   pool and the acknowledged-not-applied overlay) and the writer's in-memory
//!   [`store::state`].
//! - [`followers`]: background tasks that follow the commit sequence out of the file:
//!   the Redis journal and the ClickHouse sync.
//! - [`durability`]: what keeps the data when the file does not survive — snapshots
//!   (directory or S3), integrity checks, quarantine and start-up recovery (from a
//!   snapshot plus the journal).
//! - [`app`]: the wiring — start-up in order, the shared [`app::App`] context the
//!   handlers receive, the `/v1/status` document, and the background tasks under one
//!   cancellation token and task tracker.
//! - [`http`]: the API routes over [`app::App`], and the hardened hyper server.
//! - [`serve`]: `sidecar serve` — bind, start the app, serve HTTP, and stop in order
//!   (drain HTTP, final checkpoint, quarantine if asked, cancel and await the tasks).
//! - [`cli`]: the `sidecar` command (`serve`, `migrate`, `restore`, `config`).

pub(crate) mod app;
pub mod cli;
pub mod config;
pub mod durability;
pub mod error;
pub(crate) mod followers;
pub(crate) mod http;
pub(crate) mod serve;
pub mod store;
pub(crate) mod telemetry;
