//! The store's volume claims as first created (later changes are the volume stage's merge
//! patches): the data volume, and the commit log's own with `spec.commitLogStorage`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements};

use super::meta;
use crate::crd::{TradeStore, VolumeSpec};
use crate::names::{COMMIT_LOG_CLAIM_ANNOTATION, commit_log_pvc_name, pvc_name};

/// The data PVC as first created. With a commit-log volume it records that volume's claim
/// (annotation [`COMMIT_LOG_CLAIM_ANNOTATION`]), so the data volume itself says where the rest of
/// its changes are.
pub fn pvc(ts: &TradeStore) -> PersistentVolumeClaim {
    let mut pvc = claim(ts, pvc_name(ts), &ts.spec.storage.volume);
    if ts.spec.commit_log_storage.is_some() {
        let annotations = BTreeMap::from([(COMMIT_LOG_CLAIM_ANNOTATION.to_string(), commit_log_pvc_name(ts))]);
        pvc.metadata.annotations = Some(annotations);
    }
    pvc
}

/// The commit log's PVC as first created, with `spec.commitLogStorage`.
pub fn commit_log_pvc(ts: &TradeStore) -> Option<PersistentVolumeClaim> {
    let volume = ts.spec.commit_log_storage.as_ref()?;
    Some(claim(ts, commit_log_pvc_name(ts), volume))
}

fn claim(ts: &TradeStore, name: String, volume: &VolumeSpec) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: meta(ts, name),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec![volume.access_mode.as_str().to_string()]),
            storage_class_name: volume.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), volume.size.clone())])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}
