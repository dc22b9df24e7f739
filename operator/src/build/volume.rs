//! The data volume claim as first created (later changes are the volume stage's merge patches).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements};

use super::meta;
use crate::crd::TradeStore;
use crate::names::pvc_name;

/// The data PVC as first created.
pub fn pvc(ts: &TradeStore) -> PersistentVolumeClaim {
    let st = &ts.spec.storage;
    PersistentVolumeClaim {
        metadata: meta(ts, pvc_name(ts)),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec![st.access_mode.as_str().to_string()]),
            storage_class_name: st.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), st.size.clone())])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}
