//! Deletion and the finalizer: the final snapshot when `finalSnapshotOnDelete` asks for it
//! ([`super::final_snapshot`]), then the pod stops gracefully (the sidecar drains and
//! checkpoints), then the volumes are kept or deleted, then the finalizer goes.
//!
//! Not kube's `finalizer()` helper: it removes the finalizer as soon as the cleanup returns `Ok`,
//! but this cleanup takes several reconciliations (waiting for the pod to stop, retrying the final
//! snapshot with backoff) and could only say "not done yet" by failing — counted, logged and
//! published as a reconcile error each time.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::json;
use tracing::info;

use super::apply::pod::delete_pod;
use super::apply::{is_terminating, namespace, other_owners, owned_by};
use super::context::key_of;
use super::final_snapshot;
use super::status_patch::patch_status;
use super::{Context, Error, Result};
use crate::crd::{Phase, RetentionPolicy, TradeStore};
use crate::names::{commit_log_pvc_name, pod_name, pvc_name};

/// Finalizer on every TradeStore: deletion waits for the pod to stop and applies the PVC
/// retention policy.
pub const FINALIZER: &str = "tradestore.io/finalizer";

pub(crate) fn has_finalizer(ts: &TradeStore) -> bool {
    ts.finalizers().iter().any(|f| f == FINALIZER)
}

pub(crate) async fn add_finalizer(ts: &TradeStore, api: &Api<TradeStore>) -> Result<()> {
    let mut finalizers = ts.finalizers().to_vec();
    finalizers.push(FINALIZER.into());
    set_finalizers(ts, api, finalizers).await
}

async fn remove_finalizer(ts: &TradeStore, api: &Api<TradeStore>) -> Result<()> {
    let finalizers: Vec<String> = ts.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    match set_finalizers(ts, api, finalizers).await {
        Err(Error::Kube(kube::Error::Api(s))) if s.is_not_found() => Ok(()),
        other => other,
    }
}

/// Merge patch of the finalizer list, guarded by the resourceVersion it was computed from (a
/// concurrent change makes it fail with a conflict and retry).
async fn set_finalizers(ts: &TradeStore, api: &Api<TradeStore>, finalizers: Vec<String>) -> Result<()> {
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": ts.resource_version()}});
    api.patch(&ts.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// One step of the deletion; requeues until the pod is gone, then lets the store go.
pub(crate) async fn cleanup(ts: &TradeStore, api: &Api<TradeStore>, ctx: &Context) -> Result<Action> {
    let mut ts = mark_terminating(ts, api).await?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace(&ts));
    let pod = pods.get_opt(&pod_name(&ts)).await?.filter(|p| owned_by(&p.metadata, &ts));
    if final_snapshot::wanted(&ts)
        && let Some(wait) = final_snapshot::take(&mut ts, api, ctx, pod.as_ref()).await?
    {
        return Ok(Action::requeue(wait));
    }
    if let Some(pod) = pod {
        if !is_terminating(&pod) {
            delete_pod(&pods, &pod).await?;
            let note = format!("deleting pod {}", pod_name(&ts));
            ctx.events.publish(&ts, EventType::Normal, "Stopping", "Delete", note).await;
        }
        return Ok(Action::requeue(ctx.settings.poll));
    }
    apply_retention(&ts, ctx).await?;
    remove_finalizer(&ts, api).await?;
    ctx.events.forget(&ts);
    info!(store = key_of(&ts.metadata), "finalized");
    Ok(Action::await_change())
}

/// Phase `Terminating` (once); returns the store as stored, whose resourceVersion guards the
/// finalizer patch.
async fn mark_terminating(ts: &TradeStore, api: &Api<TradeStore>) -> Result<TradeStore> {
    let mut st = ts.status.clone().unwrap_or_default();
    if st.phase == Some(Phase::Terminating) {
        return Ok(ts.clone());
    }
    st.phase = Some(Phase::Terminating);
    st.message = Some("deleting: waiting for the pod to stop".into());
    patch_status(api, ts, &st).await
}

/// The retention policy for every claim of the store: the data volume and the commit log's (by
/// name, whatever the spec says now: a log claim the store owns goes the way its data goes).
async fn apply_retention(ts: &TradeStore, ctx: &Context) -> Result<()> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace(ts));
    for name in [pvc_name(ts), commit_log_pvc_name(ts)] {
        retain_or_delete(ts, ctx, &pvcs, &name).await?;
    }
    Ok(())
}

/// `Retain`: the claim loses its owner reference so garbage collection leaves it; `Delete`: it
/// is deleted. A claim the store does not own is left alone.
async fn retain_or_delete(ts: &TradeStore, ctx: &Context, pvcs: &Api<PersistentVolumeClaim>, name: &str) -> Result<()> {
    let Some(pvc) = pvcs.get_opt(name).await?.filter(|p| owned_by(&p.metadata, ts)) else {
        return Ok(());
    };
    match ts.spec.storage.retention_policy {
        RetentionPolicy::Retain => {
            let patch = json!({"metadata": {"ownerReferences": other_owners(&pvc.metadata, ts)}});
            pvcs.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            let note = format!("kept volume claim {name}");
            ctx.events.publish(ts, EventType::Normal, "VolumeRetained", "Delete", note).await;
        }
        RetentionPolicy::Delete => {
            pvcs.delete(name, &DeleteParams::default()).await?;
            let note = format!("deleted volume claim {name}");
            ctx.events.publish(ts, EventType::Normal, "VolumeDeleted", "Delete", note).await;
        }
    }
    Ok(())
}
