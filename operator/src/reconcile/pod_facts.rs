//! What a pod says about the sidecar in it: its phase, whether the sidecar container is ready,
//! how often it restarted, and where its API is. Pure reads of the pod object.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use crate::names::SIDECAR_CONTAINER;
use crate::sidecar::config::PORT;

/// The sidecar container's statuses (native sidecar: an init container; else a regular one).
fn sidecar_statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let st = pod.status.as_ref();
    let init = st.and_then(|s| s.init_container_statuses.as_ref()).into_iter().flatten();
    let regular = st.and_then(|s| s.container_statuses.as_ref()).into_iter().flatten();
    init.chain(regular).filter(|c| c.name == SIDECAR_CONTAINER)
}

/// The sidecar container's restart count in a pod.
pub(crate) fn sidecar_restart_count(pod: &Pod) -> i32 {
    sidecar_statuses(pod).map(|c| c.restart_count).sum()
}

/// Whether the sidecar container reports ready (its `/readyz` passes). This, not the pod's Ready
/// condition, makes the store Ready: a user container that is not ready yet does not make the
/// database unavailable to it.
pub(crate) fn sidecar_ready(pod: &Pod) -> bool {
    pod_phase(pod) == "Running" && sidecar_statuses(pod).any(|c| c.ready)
}

/// The pod's phase (`Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`).
pub(crate) fn pod_phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

/// `http://<pod IP>:8080`, once the pod has an IP.
pub(crate) fn sidecar_base(pod: &Pod) -> Option<String> {
    let ip = pod.status.as_ref()?.pod_ip.clone()?;
    let host = if ip.contains(':') { format!("[{ip}]") } else { ip };
    Some(format!("http://{host}:{PORT}"))
}
