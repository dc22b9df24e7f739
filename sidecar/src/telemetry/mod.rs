//! What the process tells the outside about itself: Prometheus [`metrics`], the
//! [`health`] the probes read (with the reasons the process stops by itself), and the
//! [`logging`] set-up.

pub(crate) mod health;
pub(crate) mod logging;
pub(crate) mod metrics;

/// A status one background task writes and `/v1/status` reads. A plain mutex: both
/// sides hold it only to copy a small struct, never across an await.
pub(crate) type Shared<T> = std::sync::Arc<parking_lot::Mutex<T>>;
