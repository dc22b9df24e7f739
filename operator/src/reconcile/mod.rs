//! The reconciler, in stages (as Stackable's operators are built): **read** the store fresh →
//! **validate** it into a [`Validated`](crate::validate::Validated) store → **build** the desired
//! objects (pure, [`crate::build`]) → **apply** them, one module per owned object ([`apply`]) →
//! talk to the **sidecar** ([`sidecar`]) → **status** ([`status`]). Restart accounting and fencing
//! ([`restarts`]) and deletion with the finalizer and the final snapshot ([`deletion`],
//! [`final_snapshot`]) have modules of their own. This file is the driver: it only orders the
//! stages.

mod apply;
mod context;
mod deletion;
pub(crate) mod error;
mod events;
mod final_snapshot;
mod pod_facts;
mod restarts;
mod sidecar;
mod status;
mod status_patch;

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::Api;
use kube::core::error_boundary::{DeserializeGuard, InvalidObject};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::warn;

pub use context::{Context, FIELD_MANAGER, Settings, backoff_delay};
pub use deletion::FINALIZER;
pub use error::{Error, Result};
pub use status_patch::merge_patch;

use crate::build::Desired;
use crate::crd::TradeStore;
use crate::validate::validate;
use context::key_of;

/// Controller entry point: an object that does not even deserialize gets a Warning event and is
/// left alone (the watch goes on).
pub async fn reconcile(obj: Arc<DeserializeGuard<TradeStore>>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciliations.inc();
    match &obj.0 {
        Ok(ts) => reconcile_measured(ts, &ctx).await,
        Err(invalid) => {
            report_undeserializable(invalid, &ctx).await;
            Ok(Action::await_change())
        }
    }
}

/// Requeue with backoff after an error.
pub fn error_policy(obj: Arc<DeserializeGuard<TradeStore>>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = match &obj.0 {
        Ok(ts) => key_of(&ts.metadata),
        Err(inv) => key_of(&inv.metadata),
    };
    let delay = ctx.backoff(&key);
    warn!(object = key, error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// One reconciliation of a store, timed and counted; a failure is also told to the store's owner
/// as an event.
async fn reconcile_measured(ts: &TradeStore, ctx: &Context) -> Result<Action> {
    let started = Instant::now();
    let res = reconcile_store(ts, ctx).await;
    ctx.metrics.duration.observe(started.elapsed().as_secs_f64());
    match &res {
        Ok(_) => ctx.reset_backoff(&key_of(&ts.metadata)),
        Err(e) => {
            ctx.metrics.failures.with_label_values(&[e.metric_label()]).inc();
            if !e.is_routine() {
                ctx.events.publish(ts, EventType::Warning, "ReconcileFailed", "Reconcile", e.to_string()).await;
            }
        }
    }
    res
}

async fn report_undeserializable(invalid: &InvalidObject, ctx: &Context) {
    ctx.metrics.failures.with_label_values(&[error::INVALID_OBJECT]).inc();
    warn!(object = key_of(&invalid.metadata), error = %invalid.error, "TradeStore does not deserialize");
    let m = &invalid.metadata;
    let reference = ObjectReference {
        api_version: Some(TradeStore::api_version(&()).into_owned()),
        kind: Some(TradeStore::kind(&()).into_owned()),
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        ..ObjectReference::default()
    };
    ctx.events.publish_on(&reference, EventType::Warning, "InvalidObject", "Reconcile", invalid.error.clone()).await;
}

/// Read: the store fresh from the API, not the watch cache, because decisions depend on the
/// operator's own last status (restart window, fence), which the cache may not have seen yet.
/// Then the deletion path, the finalizer, or the live pipeline.
async fn reconcile_store(cached: &TradeStore, ctx: &Context) -> Result<Action> {
    let ns = cached.namespace().unwrap_or_else(|| "default".into());
    let api: Api<TradeStore> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(ts) = api.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let has_finalizer = deletion::has_finalizer(&ts);
    if ts.metadata.deletion_timestamp.is_some() {
        if !has_finalizer {
            return Ok(Action::await_change());
        }
        return deletion::cleanup(&ts, &api, ctx).await;
    }
    if !has_finalizer {
        deletion::add_finalizer(&ts, &api).await?;
        return Ok(Action::await_change());
    }
    reconcile_live(&ts, &api, ctx).await
}

/// The pipeline of a live store.
async fn reconcile_live(ts: &TradeStore, api: &Api<TradeStore>, ctx: &Context) -> Result<Action> {
    let now = ctx.now();
    let old = ts.status.clone().unwrap_or_default();
    let store = match validate(ts) {
        Ok(store) => store,
        Err(invalid) => return status::report_invalid(ts, api, ctx, &old, &invalid, now).await,
    };
    if let Err(invalid) = apply::volume::commit_log_layout(&store, ctx).await? {
        status::report_invalid(ts, api, ctx, &old, &invalid, now).await?;
        // Claims are not watched: look again after a resync (e.g. a stale claim was deleted).
        return Ok(Action::requeue(ctx.settings.resync));
    }
    let desired = Desired::of(&store);

    let mut st = old.clone();
    let token = apply::token::ensure(&store, ctx).await?;
    apply::config_and_service(&store, ctx, &desired).await?;
    // The data claim first: it records the commit log's claim, so a commit-log claim without a
    // data claim is always one left from an earlier database.
    st.storage = Some(apply::volume::ensure(&store, ctx, &desired.pvc, &old).await?);
    st.commit_log_storage = match &desired.commit_log_pvc {
        Some(pvc) => Some(apply::volume::ensure(&store, ctx, pvc, &old).await?),
        None => None,
    };
    let missing_claim = apply::volume::missing_backup_claim(&store, ctx).await?;
    let current = match apply::pod::current(&store, ctx).await {
        Err(Error::ForeignPod(pod)) => return status::report_foreign_pod(ts, api, ctx, &old, st, pod, now).await,
        other => other?,
    };
    restarts::account(&store, ctx, current.as_ref(), &old, &mut st, now).await;
    let outcome = apply::pod::reconcile(&store, ctx, &desired, current.as_ref(), &mut st, now).await?;
    let requeue = sidecar::exchange(&store, ctx, current.as_ref(), &outcome, token.as_deref(), &mut st, now).await;

    status::conclude(&store, &outcome, &mut st, now);
    if let Some(claim) = missing_claim {
        status::backup_claim_missing(ts, ctx, &old, &mut st, &claim, now).await;
    }
    status::publish(ts, api, ctx, &old, &st).await?;
    Ok(Action::requeue(requeue))
}
