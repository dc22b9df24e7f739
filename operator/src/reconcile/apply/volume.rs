//! The store's volume claims — the data volume, and the commit log's own with
//! `spec.commitLogStorage` — alike: created by server-side apply, adopted when retained from an
//! earlier store of the same name, grown when the spec asks for more and the storage class allows
//! it. Shrinking and changing immutable fields are refused with Warning events. Before any of
//! that, where the commit log is is held to what the data claim records ([`commit_log_layout`]).

use std::cmp::Ordering;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimSpec};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use serde_json::json;

use super::{apply_params, has_foreign_controller, namespace, other_owners, owned_by};
use crate::crd::{StorageStatus, TradeStore, TradeStoreStatus};
use crate::names::{backup_claim, commit_log_pvc_name, pvc_name};
use crate::reconcile::{Context, Error, Result};
use crate::validate::{Invalid, Validated, check_commit_log_layout, parse_quantity};

/// The data claim as it is (and, while it does not exist, whether a commit-log claim does), held
/// to where the spec puts the commit log.
pub(crate) async fn commit_log_layout(store: &Validated<'_>, ctx: &Context) -> Result<Result<(), Invalid>> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace(store));
    let data = pvcs.get_opt(&pvc_name(store)).await?;
    let log_claim_exists = data.is_none()
        && store.spec.commit_log_storage.is_some()
        && pvcs.get_opt(&commit_log_pvc_name(store)).await?.is_some();
    Ok(check_commit_log_layout(store, data.as_ref(), log_claim_exists))
}

/// Creates the claim `desired`, or brings the existing one in line; returns its state for the
/// status. Spec-change warnings are published only when the spec changed since the last status
/// (`old`), so they are not repeated every resync.
pub(crate) async fn ensure(
    store: &Validated<'_>,
    ctx: &Context,
    desired: &PersistentVolumeClaim,
    old: &TradeStoreStatus,
) -> Result<StorageStatus> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace(store));
    let name = desired.name_any();
    let want = desired.spec.clone().unwrap_or_default();
    let Some(cur) = pvcs.get_opt(&name).await? else {
        let created = pvcs.patch(&name, &apply_params(ctx), &Patch::Apply(desired)).await?;
        let note = format!("created volume claim {name} ({})", shown(requested_size(&want).as_ref()));
        ctx.events.publish(store, EventType::Normal, "VolumeCreated", "Create", note).await;
        return Ok(storage_status(&created));
    };
    if has_foreign_controller(&cur.metadata, store) {
        return Err(Error::ForeignVolume(name));
    }
    let spec_changed = old.observed_generation != store.metadata.generation;
    let cur_spec = cur.spec.clone().unwrap_or_default();
    let sizes = Sizes { requested: requested_size(&cur_spec), wanted: requested_size(&want) };
    if spec_changed {
        refuse_shrink_and_immutable_changes(store, ctx, &name, &cur_spec, &want, &sizes).await;
    }
    let size = decide_size(store, ctx, &name, &cur_spec, &sizes, spec_changed).await?;
    let requested = sizes.requested;
    // Adopt a retained claim (e.g. the store was deleted with Retain and created again).
    let needs_owner = !owned_by(&cur.metadata, store);
    if needs_owner || size != requested {
        let updated = patch_claim(store, ctx, &pvcs, &cur, desired, size.as_ref()).await?;
        return Ok(storage_status(&updated));
    }
    Ok(storage_status(&cur))
}

fn requested_size(spec: &PersistentVolumeClaimSpec) -> Option<Quantity> {
    spec.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage")).cloned()
}

/// What an existing claim requests, and what the spec asks of it.
struct Sizes {
    requested: Option<Quantity>,
    wanted: Option<Quantity>,
}

impl Sizes {
    /// How the wanted size compares with the requested one (None: either is unknown).
    fn change(&self) -> Option<Ordering> {
        let bytes = |q: &Option<Quantity>| q.as_ref().and_then(|q| parse_quantity(&q.0));
        bytes(&self.wanted)?.partial_cmp(&bytes(&self.requested)?)
    }
}

fn shown(q: Option<&Quantity>) -> &str {
    q.map(|q| q.0.as_str()).unwrap_or("?")
}

async fn refuse_shrink_and_immutable_changes(
    store: &Validated<'_>,
    ctx: &Context,
    name: &str,
    cur_spec: &PersistentVolumeClaimSpec,
    want: &PersistentVolumeClaimSpec,
    sizes: &Sizes,
) {
    if sizes.change() == Some(Ordering::Less) {
        let (cur, wanted) = (shown(sizes.requested.as_ref()), shown(sizes.wanted.as_ref()));
        let note = format!("volume claim {name} is {cur} and cannot shrink to {wanted}");
        ctx.events.publish(store, EventType::Warning, "VolumeShrinkRefused", "Resize", note).await;
    }
    let modes = cur_spec.access_modes.clone().unwrap_or_default();
    let class_differs = want.storage_class_name.is_some() && want.storage_class_name != cur_spec.storage_class_name;
    if class_differs || Some(&modes) != want.access_modes.as_ref() {
        let note = format!(
            "storage class and access mode of volume claim {name} cannot change; keeping {:?} {:?}",
            cur_spec.storage_class_name, modes
        );
        ctx.events.publish(store, EventType::Warning, "VolumeSpecImmutable", "Resize", note).await;
    }
}

/// The size the claim should request: the spec's when it grows and the class can expand, else
/// what it requests now.
async fn decide_size(
    store: &Validated<'_>,
    ctx: &Context,
    name: &str,
    cur_spec: &PersistentVolumeClaimSpec,
    sizes: &Sizes,
    spec_changed: bool,
) -> Result<Option<Quantity>> {
    let requested = sizes.requested.as_ref();
    if sizes.change() != Some(Ordering::Greater) {
        return Ok(requested.cloned());
    }
    if expandable(ctx, cur_spec.storage_class_name.as_deref()).await? {
        let note = format!("expanding volume claim {name} to {}", shown(sizes.wanted.as_ref()));
        ctx.events.publish(store, EventType::Normal, "VolumeExpanding", "Resize", note).await;
        return Ok(sizes.wanted.clone());
    }
    if spec_changed {
        let note = format!(
            "storage class {:?} does not allow volume expansion; volume claim {name} stays at {}",
            cur_spec.storage_class_name,
            shown(requested)
        );
        ctx.events.publish(store, EventType::Warning, "VolumeResizeUnsupported", "Resize", note).await;
    }
    Ok(requested.cloned())
}

/// Whether the claim's storage class allows volume expansion (no class: no).
async fn expandable(ctx: &Context, class: Option<&str>) -> Result<bool> {
    let Some(class) = class else { return Ok(false) };
    let class = Api::<StorageClass>::all(ctx.client.clone()).get_opt(class).await?;
    Ok(class.and_then(|c| c.allow_volume_expansion).unwrap_or(false))
}

/// A JSON merge patch of only what may change (labels, our owner reference, the requested size).
/// Not server-side apply: an apply without the immutable fields would drop our ownership of
/// them, and the API server would try to remove them.
async fn patch_claim(
    ts: &TradeStore,
    ctx: &Context,
    pvcs: &Api<PersistentVolumeClaim>,
    cur: &PersistentVolumeClaim,
    desired: &PersistentVolumeClaim,
    size: Option<&Quantity>,
) -> Result<PersistentVolumeClaim> {
    let mut owners = other_owners(&cur.metadata, ts);
    owners.extend(desired.metadata.owner_references.clone().unwrap_or_default());
    let mut patch = json!({"metadata": {"labels": desired.metadata.labels, "ownerReferences": owners}});
    if let Some(size) = size {
        patch["spec"] = json!({"resources": {"requests": {"storage": size}}});
    }
    let mp = PatchParams { field_manager: Some(ctx.settings.field_manager.clone()), ..PatchParams::default() };
    Ok(pvcs.patch(&cur.name_any(), &mp, &Patch::Merge(&patch)).await?)
}

fn storage_status(pvc: &PersistentVolumeClaim) -> StorageStatus {
    StorageStatus {
        claim_name: pvc.name_any(),
        requested: pvc.spec.as_ref().and_then(requested_size),
        capacity: pvc.status.as_ref().and_then(|s| s.capacity.as_ref()).and_then(|c| c.get("storage")).cloned(),
    }
}

/// The backup claim (`spec.backup.target.volume.claimName`) when it does not exist: the pod
/// cannot start without it, and the scheduler says so only in an event on the pod.
pub(crate) async fn missing_backup_claim(store: &Validated<'_>, ctx: &Context) -> Result<Option<String>> {
    let Some(claim) = backup_claim(&store.spec) else { return Ok(None) };
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace(store));
    Ok(pvcs.get_opt(claim).await?.is_none().then(|| claim.to_string()))
}
