//! What a pod says about the sidecar in it: its phase, whether the sidecar container is ready,
//! how often it restarted, and where its API is. Pure reads of the pod object.

use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod};

use super::events::truncate;
use crate::crd::Termination;
use crate::names::SIDECAR_CONTAINER;
use crate::sidecar::PORT;

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
/// database unavailable to it. A pod on a node that stopped reporting is not ready whatever its
/// container statuses say: they are the kubelet's last report.
pub(crate) fn sidecar_ready(pod: &Pod) -> bool {
    pod_phase(pod) == "Running" && !node_not_ready(pod) && sidecar_statuses(pod).any(|c| c.ready)
}

/// Whether the node controller marked the pod not ready because its node stopped reporting (the
/// kubelet is down or cut off). It sets only the pod's `Ready` condition to False and leaves
/// `ContainersReady` and the container statuses as the kubelet last reported them; the kubelet
/// itself never reports `Ready=False` with `ContainersReady=True` for a pod without readiness
/// gates (the operator's pods have none). Seen on kind (e2e t14): the store stayed Ready for
/// minutes after its node was stopped, until this check.
pub(crate) fn node_not_ready(pod: &Pod) -> bool {
    let status = |type_: &str| {
        let conds = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
        conds.and_then(|cs| cs.iter().find(|c| c.type_ == type_)).map(|c| c.status.as_str())
    };
    status("Ready") == Some("False") && status("ContainersReady") == Some("True")
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

/// How the sidecar container last ended: its current state while it is down, else its last one.
pub(crate) fn sidecar_last_termination(pod: &Pod) -> Option<Termination> {
    sidecar_statuses(pod).find_map(|c| {
        let now = c.state.as_ref().and_then(|s| s.terminated.as_ref());
        let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        now.or(last).map(termination)
    })
}

/// Longest termination message kept (the kubelet keeps up to 4 kB of log lines).
const TERMINATION_MESSAGE_LIMIT: usize = 512;

fn termination(t: &ContainerStateTerminated) -> Termination {
    Termination {
        reason: t.reason.clone(),
        exit_code: t.exit_code,
        message: t.message.as_deref().map(|m| truncate(m.trim(), TERMINATION_MESSAGE_LIMIT)),
        finished_at: t.finished_at.clone(),
    }
}
