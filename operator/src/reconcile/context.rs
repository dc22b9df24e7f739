//! What every reconciliation shares: the client, the event publisher, metrics, tunables, the
//! sidecar client, the clock, and each object's failure count for backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::Client;

use super::Error;
use super::events::Events;
use crate::metrics::Metrics;
use crate::sidecar::client::SidecarClient;

/// Default field manager of server-side apply.
pub const FIELD_MANAGER: &str = "tradestore-operator";

/// Tunables of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Field manager of server-side apply.
    pub field_manager: String,
    /// Call the sidecar's API: `/v1/status`, on-demand and final snapshots (needs network access
    /// to pod IPs).
    pub probe_sidecar: bool,
    /// Requeue interval of a healthy store (status refresh).
    pub resync: Duration,
    /// Requeue interval while something is in progress.
    pub poll: Duration,
    /// How long a deletion retries the final snapshot (`finalSnapshotOnDelete`) before it goes on
    /// without one.
    pub final_snapshot_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            field_manager: FIELD_MANAGER.into(),
            probe_sidecar: true,
            resync: Duration::from_secs(60),
            poll: Duration::from_secs(2),
            final_snapshot_timeout: Duration::from_secs(600),
        }
    }
}

/// Shared state of every reconciliation.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Event publisher.
    pub(crate) events: Events,
    /// Operator metrics.
    pub metrics: Metrics,
    /// Tunables.
    pub settings: Settings,
    /// Client of the sidecars' API.
    pub sidecar: Arc<dyn SidecarClient>,
    /// Current time (replaceable in tests).
    pub clock: Arc<dyn Fn() -> Timestamp + Send + Sync>,
    /// Consecutive failures per object, for backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context with the real clock.
    pub fn new(client: Client, metrics: Metrics, settings: Settings, sidecar: Arc<dyn SidecarClient>) -> Self {
        // A series that appears only with the first error cannot be alerted on (`rate()` of a
        // series that did not exist is empty, not 0): create every one at 0.
        for label in Error::metric_labels() {
            metrics.failures.with_label_values(&[label]);
        }
        Context {
            events: Events::new(client.clone()),
            client,
            metrics,
            settings,
            sidecar,
            clock: Arc::new(Timestamp::now),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The time decisions are made at.
    pub(crate) fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// Exponential backoff of an object's consecutive failures: 1 s, 2 s, 4 s … capped at 5 min.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut f = self.failures.lock().expect("backoff lock");
        let n = f.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(*n)
    }

    pub(crate) fn reset_backoff(&self, key: &str) {
        self.failures.lock().expect("backoff lock").remove(key);
    }
}

/// Delay after `n` consecutive failures (n ≥ 1).
pub fn backoff_delay(n: u32) -> Duration {
    let secs = 1u64 << (n.saturating_sub(1)).min(9);
    Duration::from_secs(secs.min(300))
}

/// `namespace/name`, the key of an object in logs and the backoff table.
pub(crate) fn key_of(meta: &ObjectMeta) -> String {
    format!("{}/{}", meta.namespace.as_deref().unwrap_or(""), meta.name.as_deref().unwrap_or(""))
}
