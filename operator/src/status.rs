//! Pure status computations: restart accounting over a sliding window, conditions.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::RestartStatus;
use crate::resources::SIDECAR_CONTAINER;

/// Condition types.
pub const READY: &str = "Ready";
/// The store is moving towards its desired state (pod being created or replaced).
pub const PROGRESSING: &str = "Progressing";
/// The store needs a human (fenced after too many restarts, invalid spec, conflicts).
pub const DEGRADED: &str = "Degraded";

/// The sidecar container's restart count in a pod (native sidecar or regular container).
pub fn sidecar_restart_count(pod: &Pod) -> i32 {
    let Some(st) = &pod.status else { return 0 };
    st.init_container_statuses
        .iter()
        .flatten()
        .chain(st.container_statuses.iter().flatten())
        .filter(|c| c.name == SIDECAR_CONTAINER)
        .map(|c| c.restart_count)
        .sum()
}

/// Whether the sidecar container reports ready (its `/readyz` passes). This, not the pod's Ready
/// condition, makes the store Ready: a user container that is not ready yet does not make the
/// database unavailable to it.
pub fn sidecar_ready(pod: &Pod) -> bool {
    let Some(st) = &pod.status else { return false };
    st.phase.as_deref() == Some("Running")
        && st
            .init_container_statuses
            .iter()
            .flatten()
            .chain(st.container_statuses.iter().flatten())
            .any(|c| c.name == SIDECAR_CONTAINER && c.ready)
}

/// The pod's phase (`Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`).
pub fn pod_phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

/// Updates restart accounting from the current pod (if any) at `now`: new restarts of the sidecar
/// container are recorded with the time they were observed; entries older than the window drop out.
pub fn account_restarts(prev: &RestartStatus, pod: Option<&Pod>, window_seconds: i64, now: Timestamp) -> RestartStatus {
    let mut next = prev.clone();
    if let Some(pod) = pod {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let count = sidecar_restart_count(pod);
        let delta =
            if prev.pod_uid.as_deref() == Some(uid.as_str()) { (count - prev.last_count).max(0) } else { count };
        add_restarts(&mut next, delta, now);
        next.pod_uid = Some(uid);
        next.last_count = count;
    }
    prune(&mut next, window_seconds, now);
    next
}

/// Records `n` restarts observed at `now` (e.g. a failed pod the operator replaces).
pub fn add_restarts(st: &mut RestartStatus, n: i32, now: Timestamp) {
    for _ in 0..n {
        st.recent.push(Time(now));
    }
    st.total += i64::from(n);
    st.in_window = st.recent.len() as i32;
}

/// Drops restarts older than the window.
pub fn prune(st: &mut RestartStatus, window_seconds: i64, now: Timestamp) {
    let oldest = now - SignedDuration::from_secs(window_seconds);
    st.recent.retain(|t| t.0 > oldest);
    st.in_window = st.recent.len() as i32;
}

/// Sets a condition, keeping `lastTransitionTime` when the status did not change.
pub fn set_condition(
    conds: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let message = message.into();
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = Time(now);
        }
        c.status = status;
        c.reason = reason.into();
        c.message = message;
        c.observed_generation = generation;
    } else {
        conds.push(Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time: Time(now),
        });
    }
}

/// Whether a condition is currently True.
pub fn condition_true(conds: &[Condition], type_: &str) -> bool {
    conds.iter().any(|c| c.type_ == type_ && c.status == "True")
}
