//! Restart accounting and fencing: each new restart of the sidecar container is recorded with the
//! time it was seen, restarts older than the window drop out, and reaching
//! `restartPolicy.maxRestarts` within the window fences the store (no pod until a human sets a
//! new `tradestore.io/clear-fence` value).

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::runtime::events::EventType;

use super::Context;
use super::pod_facts::{sidecar_last_termination, sidecar_restart_count};
use crate::crd::{FenceStatus, RestartStatus, TradeStoreStatus};
use crate::names::CLEAR_FENCE_ANNOTATION;
use crate::validate::Validated;

/// Updates `st.restarts` from the current pod, acts on a new clear-fence value, and fences the
/// store when it restarted too often.
pub(crate) async fn account(
    store: &Validated<'_>,
    ctx: &Context,
    pod: Option<&Pod>,
    old: &TradeStoreStatus,
    st: &mut TradeStoreStatus,
    now: Timestamp,
) {
    let window = store.spec.restart_policy.window_seconds;
    st.restarts = account_restarts(&old.restarts, pod, window, now);
    // Read before anything deletes the pod: afterwards `kubectl describe pod` and `logs --previous`
    // are gone, and this is all that says why the sidecar died.
    if let Some(t) = pod.and_then(sidecar_last_termination) {
        st.restarts.last_termination = Some(t);
    }
    if st.restarts.total > old.restarts.total {
        restarted(store, ctx, st).await;
    }
    clear_fence_on_request(store, ctx, old, st).await;
    fence_after_too_many(store, ctx, st, now).await;
}

/// A Warning for each restart the kubelet made (a pod that ended has its own `PodFailed`).
async fn restarted(store: &Validated<'_>, ctx: &Context, st: &TradeStoreStatus) {
    let r = &st.restarts;
    let why = r.last_termination.as_ref().map(|t| format!("; last exit: {t}")).unwrap_or_default();
    let note = format!(
        "the sidecar container restarted (restart count {}, {} within the last {}s){why}",
        r.last_count, r.in_window, store.spec.restart_policy.window_seconds
    );
    ctx.events.publish(store, EventType::Warning, "SidecarRestarted", "Restart", note).await;
}

/// A human clears an automatic fence by setting a new clear-fence token.
async fn clear_fence_on_request(
    store: &Validated<'_>,
    ctx: &Context,
    old: &TradeStoreStatus,
    st: &mut TradeStoreStatus,
) {
    let Some(token) = store.annotations().get(CLEAR_FENCE_ANNOTATION) else { return };
    if old.cleared_fence_token.as_deref() == Some(token.as_str()) {
        return;
    }
    st.cleared_fence_token = Some(token.clone());
    if st.fence.take().is_some() {
        st.restarts.recent.clear();
        st.restarts.in_window = 0;
        let note = format!("fence cleared (token {token})");
        ctx.events.publish(store, EventType::Normal, "FenceCleared", "Unfence", note).await;
    }
}

async fn fence_after_too_many(store: &Validated<'_>, ctx: &Context, st: &mut TradeStoreStatus, now: Timestamp) {
    let policy = &store.spec.restart_policy;
    if st.fence.is_some() || st.restarts.in_window < policy.max_restarts {
        return;
    }
    let last = st.restarts.last_termination.clone();
    let why = last.as_ref().map(|t| format!("; last exit: {t}")).unwrap_or_default();
    let msg = format!(
        "the sidecar restarted {} times within {}s (maximum {}{why}); the pod was stopped. Investigate, then set the annotation {CLEAR_FENCE_ANNOTATION} to a new value",
        st.restarts.in_window, policy.window_seconds, policy.max_restarts
    );
    st.fence = Some(FenceStatus {
        reason: "TooManyRestarts".into(),
        message: msg.clone(),
        since: Time(now),
        last_termination: last,
    });
    ctx.events.publish(store, EventType::Warning, "TooManyRestarts", "Fence", msg).await;
}

/// Restart accounting from the current pod (if any) at `now`: new restarts of the sidecar
/// container are recorded with the time they were observed; entries older than the window drop
/// out.
pub(crate) fn account_restarts(
    prev: &RestartStatus,
    pod: Option<&Pod>,
    window_seconds: i64,
    now: Timestamp,
) -> RestartStatus {
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
pub(crate) fn add_restarts(st: &mut RestartStatus, n: i32, now: Timestamp) {
    for _ in 0..n {
        st.recent.push(Time(now));
    }
    st.total += i64::from(n);
    st.in_window = st.recent.len() as i32;
}

/// Drops restarts older than the window.
fn prune(st: &mut RestartStatus, window_seconds: i64, now: Timestamp) {
    let oldest = now - SignedDuration::from_secs(window_seconds);
    st.recent.retain(|t| t.0 > oldest);
    st.in_window = st.recent.len() as i32;
}
