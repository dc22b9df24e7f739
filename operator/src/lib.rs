//! TradeStore operator: the `TradeStore` CRD and the controller that runs, restarts and reports
//! the DuckDB sidecar pod. See docs/operator.md.

pub mod controller;
pub mod crd;
pub mod leader;
pub mod metrics;
pub mod resources;
pub mod server;
pub mod sidecar_api;
pub mod sidecar_config;
pub mod status;
pub mod validate;
