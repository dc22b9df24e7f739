//! TradeStore operator: the `TradeStore` CRD and the controller that runs, restarts and reports
//! the DuckDB sidecar pod. See docs/operator.md.
//!
//! The modules, bottom up (each uses only the ones above it in this list):
//!
//! - [`crd`]: the resource — spec, defaults, status, conditions — and its YAML rendering.
//! - [`names`]: names of the owned objects, labels, annotations.
//! - [`sidecar`]: the sidecar's config file rendered from a spec (the api crate's type) and the
//!   client of its API.
//! - [`validate`]: a store becomes a `Validated` one, or a list of problems.
//! - [`build`]: pure builders of the owned objects from a validated store.
//! - [`reconcile`]: the staged reconciler (read → validate → build → apply → sidecar → status),
//!   restarts and fencing, deletion and the final snapshot.
//! - [`metrics`], [`server`] (`/metrics`, `/healthz`, `/readyz`), [`leader`] (Lease gating): the
//!   process around it.

pub mod build;
pub mod crd;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod reconcile;
pub mod server;
pub mod sidecar;
pub mod validate;
