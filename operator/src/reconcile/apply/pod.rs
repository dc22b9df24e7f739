//! The store's one pod: created by server-side apply, kept while its spec hash matches, replaced
//! (deleted, then created once the old one is gone) when it does not, removed while the store is
//! stopped or fenced, and replaced when it ended for good. Never a second pod while the old one
//! may still hold the volume.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, Preconditions};
use kube::runtime::events::EventType;

use super::{apply_params, is_terminating, namespace, owned_by};
use crate::build::Desired;
use crate::crd::{Phase, PodStatusRef, TradeStore, TradeStoreStatus};
use crate::names::{SPEC_HASH_ANNOTATION, pod_name};
use crate::reconcile::pod_facts::{node_not_ready, pod_phase, sidecar_ready};
use crate::reconcile::restarts::add_restarts;
use crate::reconcile::{Context, Error, Result};
use crate::validate::Validated;

/// What the pod step decided.
pub(crate) struct PodOutcome {
    /// The phase the store is in.
    pub(crate) phase: Phase,
    /// The sidecar is ready.
    pub(crate) ready: bool,
    /// Something is under way: (reason, message) of `Progressing`.
    pub(crate) progressing: Option<(&'static str, String)>,
    /// When to look again.
    pub(crate) requeue: Duration,
}

/// The store's pod, if any. A pod of that name the store does not own is an error: it is never
/// adopted or touched.
pub(crate) async fn current(ts: &TradeStore, ctx: &Context) -> Result<Option<Pod>> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace(ts));
    let name = pod_name(ts);
    match pods.get_opt(&name).await? {
        Some(p) if !owned_by(&p.metadata, ts) => Err(Error::ForeignPod(name)),
        found => Ok(found),
    }
}

/// Creates, keeps, replaces or removes the pod.
pub(crate) async fn reconcile(
    store: &Validated<'_>,
    ctx: &Context,
    desired: &Desired,
    current: Option<&Pod>,
    st: &mut TradeStoreStatus,
    now: Timestamp,
) -> Result<PodOutcome> {
    let fenced = store.spec.fenced || st.fence.is_some();
    let want_pod = !store.spec.stopped && !fenced;
    let idle_phase = if fenced { Phase::Fenced } else { Phase::Stopped };
    let Some(pod) = current else {
        if !want_pod {
            st.pod = None;
            return Ok(PodOutcome { phase: idle_phase, ready: false, progressing: None, requeue: ctx.settings.resync });
        }
        return create(store, ctx, desired, st).await;
    };
    let current_hash = pod.annotations().get(SPEC_HASH_ANNOTATION).cloned().unwrap_or_default();
    st.pod = Some(PodStatusRef {
        name: pod.name_any(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        spec_hash: current_hash.clone(),
    });
    if is_terminating(pod) {
        // Never start a second pod while the old one may still hold the volume.
        return Ok(PodOutcome {
            phase: if want_pod { Phase::Updating } else { idle_phase },
            ready: false,
            progressing: Some(("PodTerminating", "waiting for the old pod to stop".into())),
            requeue: ctx.settings.poll,
        });
    }
    if !want_pod {
        return remove(store, ctx, pod, idle_phase).await;
    }
    if current_hash != desired.pod_hash {
        return roll_out(store, ctx, pod, &current_hash, &desired.pod_hash).await;
    }
    let phase = pod_phase(pod);
    if phase == "Failed" || phase == "Succeeded" {
        // The pod will not come back by itself (e.g. evicted): count it as a restart and replace it.
        add_restarts(&mut st.restarts, 1, now);
        return replace_ended(store, ctx, pod, phase).await;
    }
    Ok(observe(pod, ctx))
}

async fn create(
    store: &Validated<'_>,
    ctx: &Context,
    desired: &Desired,
    st: &mut TradeStoreStatus,
) -> Result<PodOutcome> {
    let created = pods(store, ctx).patch(&pod_name(store), &apply_params(ctx), &Patch::Apply(&desired.pod)).await?;
    st.pod = Some(PodStatusRef {
        name: created.name_any(),
        uid: created.metadata.uid.clone().unwrap_or_default(),
        spec_hash: desired.pod_hash.clone(),
    });
    Ok(Transition {
        phase: Phase::Pending,
        type_: EventType::Normal,
        reason: "PodCreated",
        action: "Create",
        note: format!("created pod {} ({})", created.name_any(), desired.pod_hash),
        progress: "waiting for the new pod to become ready".into(),
    }
    .publish(ctx, store)
    .await)
}

/// Stopped or fenced: the pod goes, the volume stays.
async fn remove(ts: &TradeStore, ctx: &Context, pod: &Pod, idle_phase: Phase) -> Result<PodOutcome> {
    delete_pod(&pods(ts, ctx), pod).await?;
    let (reason, note) = match idle_phase {
        Phase::Fenced => ("Fencing", format!("deleting pod {}: the store is fenced", pod.name_any())),
        _ => ("Stopping", format!("deleting pod {}: spec.stopped is true", pod.name_any())),
    };
    Ok(Transition {
        phase: idle_phase,
        type_: EventType::Normal,
        reason,
        action: "Delete",
        note,
        progress: "waiting for the pod to stop".into(),
    }
    .publish(ctx, ts)
    .await)
}

/// The spec hash changed: delete the pod; the next reconciliations create the new one once the
/// old one is gone.
async fn roll_out(ts: &TradeStore, ctx: &Context, pod: &Pod, from: &str, to: &str) -> Result<PodOutcome> {
    delete_pod(&pods(ts, ctx), pod).await?;
    Ok(Transition {
        phase: Phase::Updating,
        type_: EventType::Normal,
        reason: "RollingOut",
        action: "Delete",
        note: format!("replacing pod {}: spec hash {from} → {to}", pod.name_any()),
        progress: "replacing the pod after a spec change".into(),
    }
    .publish(ctx, ts)
    .await)
}

async fn replace_ended(ts: &TradeStore, ctx: &Context, pod: &Pod, phase: &str) -> Result<PodOutcome> {
    delete_pod(&pods(ts, ctx), pod).await?;
    let reason = pod.status.as_ref().and_then(|s| s.reason.clone()).unwrap_or_else(|| phase.to_string());
    Ok(Transition {
        phase: Phase::Pending,
        type_: EventType::Warning,
        reason: "PodFailed",
        action: "Delete",
        note: format!("pod {} ended ({reason}); replacing it", pod.name_any()),
        progress: format!("replacing the pod that ended ({reason})"),
    }
    .publish(ctx, ts)
    .await)
}

/// The pod is the one wanted: Running once the sidecar is ready, else Pending.
fn observe(pod: &Pod, ctx: &Context) -> PodOutcome {
    if sidecar_ready(pod) {
        return PodOutcome { phase: Phase::Running, ready: true, progressing: None, requeue: ctx.settings.resync };
    }
    if node_not_ready(pod) {
        // The pod is left alone: its sidecar may still run and write on a node that only lost
        // its network (docs/operator.md, Node problems).
        return PodOutcome {
            phase: Phase::Pending,
            ready: false,
            progressing: Some((
                "NodeNotReady",
                "the pod's node stopped reporting; the pod stays until it is known to be gone".into(),
            )),
            requeue: ctx.settings.poll.max(Duration::from_secs(5)),
        };
    }
    PodOutcome {
        phase: Phase::Pending,
        ready: false,
        progressing: Some(("PodNotReady", "waiting for the pod to become ready".into())),
        requeue: ctx.settings.poll.max(Duration::from_secs(5)),
    }
}

fn pods(ts: &TradeStore, ctx: &Context) -> Api<Pod> {
    Api::namespaced(ctx.client.clone(), &namespace(ts))
}

/// Deletes this very pod (uid precondition: never a successor of the same name). Gone already
/// or replaced meanwhile is fine.
pub(crate) async fn delete_pod(pods: &Api<Pod>, pod: &Pod) -> Result<()> {
    let dp = DeleteParams {
        preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }),
        ..DeleteParams::default()
    };
    match pods.delete(&pod.name_any(), &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A pod step that started something (create, delete): its event, and an outcome that is not
/// ready, shows the step as Progressing (with the event's reason) and looks again after `poll`.
struct Transition {
    phase: Phase,
    type_: EventType,
    reason: &'static str,
    action: &'static str,
    note: String,
    progress: String,
}

impl Transition {
    async fn publish(self, ctx: &Context, ts: &TradeStore) -> PodOutcome {
        ctx.events.publish(ts, self.type_, self.reason, self.action, self.note).await;
        PodOutcome {
            phase: self.phase,
            ready: false,
            progressing: Some((self.reason, self.progress)),
            requeue: ctx.settings.poll,
        }
    }
}
