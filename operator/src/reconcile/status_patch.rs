//! How the status is written: a JSON merge patch from the stored status to the computed one, with
//! explicit nulls for fields that went away (a plain merge patch would keep them).
//!
//! Not server-side apply: the status was written with merge patches before, so its fields are
//! owned by an `Update` manager, and an apply that leaves a field out (a cleared fence) would not
//! remove a field that manager owns.

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use super::Result;
use crate::crd::{TradeStore, TradeStoreStatus};

/// Writes `st` as the whole status of `ts`; returns the stored object (its new resourceVersion
/// guards later patches).
pub(crate) async fn patch_status(api: &Api<TradeStore>, ts: &TradeStore, st: &TradeStoreStatus) -> Result<TradeStore> {
    let old = serde_json::to_value(ts.status.clone().unwrap_or_default()).expect("status serializes");
    let new = serde_json::to_value(st).expect("status serializes");
    let patch = json!({"status": merge_patch(&old, &new)});
    Ok(api.patch_status(&ts.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?)
}

/// The RFC 7386 merge patch that turns `old` into `new`.
pub fn merge_patch(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = serde_json::Map::new();
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) if ov == nv => {}
                    Some(ov) if ov.is_object() && nv.is_object() => {
                        patch.insert(k.clone(), merge_patch(ov, nv));
                    }
                    _ => {
                        patch.insert(k.clone(), nv.clone());
                    }
                }
            }
            for k in o.keys() {
                if !n.contains_key(k) {
                    patch.insert(k.clone(), Value::Null);
                }
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}
