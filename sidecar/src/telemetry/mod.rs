//! Metrics and the probes' health state.

pub mod health;
pub mod metrics;
