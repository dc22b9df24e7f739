//! The apply stage: one module per owned object that needs more than a server-side apply — the
//! token Secret ([`token`]: created once, never applied again), the volume claims ([`volume`]:
//! created, adopted, grown) and the pod ([`pod`]: created, kept, replaced or removed). The
//! ConfigMap and the Service are plain server-side applies, here.

pub mod pod;
pub mod token;
pub mod volume;

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};

use super::{Context, Result};
use crate::build::Desired;
use crate::crd::TradeStore;
use crate::names::{config_map_name, service_name};
use crate::validate::Validated;

/// ConfigMap and Service: server-side apply (a no-op on the server when unchanged).
pub(crate) async fn config_and_service(store: &Validated<'_>, ctx: &Context, desired: &Desired) -> Result<()> {
    let ns = namespace(store);
    let pp = apply_params(ctx);
    Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns)
        .patch(&config_map_name(store), &pp, &Patch::Apply(&desired.config_map))
        .await?;
    Api::<Service>::namespaced(ctx.client.clone(), &ns)
        .patch(&service_name(store), &pp, &Patch::Apply(&desired.service))
        .await?;
    Ok(())
}

/// Server-side apply with the operator's field manager, taking over fields others set.
pub(crate) fn apply_params(ctx: &Context) -> PatchParams {
    PatchParams::apply(&ctx.settings.field_manager).force()
}

pub(crate) fn is_terminating<K: Resource>(o: &K) -> bool {
    o.meta().deletion_timestamp.is_some()
}

/// Whether the store is among the object's owners.
pub(crate) fn owned_by(meta: &ObjectMeta, ts: &TradeStore) -> bool {
    let uid = ts.metadata.uid.as_deref();
    meta.owner_references.iter().flatten().any(|o| Some(o.uid.as_str()) == uid)
}

/// Whether another object is the object's controller.
pub(crate) fn has_foreign_controller(meta: &ObjectMeta, ts: &TradeStore) -> bool {
    let uid = ts.metadata.uid.as_deref();
    meta.owner_references.iter().flatten().any(|o| o.controller == Some(true) && Some(o.uid.as_str()) != uid)
}

/// The object's owner references without the store's (what stays when the store lets go).
pub(crate) fn other_owners(meta: &ObjectMeta, ts: &TradeStore) -> Vec<OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .filter(|o| Some(o.uid.as_str()) != ts.metadata.uid.as_deref())
        .cloned()
        .collect()
}

/// The store's namespace (every owned object lives there).
pub(crate) fn namespace(ts: &TradeStore) -> String {
    ts.namespace().unwrap_or_default()
}
