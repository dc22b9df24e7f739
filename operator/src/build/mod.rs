//! The build stage: pure functions from a validated store to the objects it owns (pod, volume
//! claims, Service, ConfigMap, token Secret) — no client, no I/O, unit-tested from fixture
//! specs against golden files.

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::TradeStore;
use crate::names::labels;
use crate::validate::Validated;

mod config_map;
mod pod;
mod pod_hash;
mod service;
mod token;
mod volume;

pub use config_map::config_map;
pub use pod::{DEFAULT_CPU_REQUEST, DEFAULT_MEMORY_REQUEST, pod};
pub use pod_hash::pod_spec_hash;
pub use service::service;
pub use token::{generate_token, token_secret};
pub use volume::{commit_log_pvc, pvc};

/// Everything the apply stage writes for one store, built at once from its validated spec.
pub struct Desired {
    /// `sidecar.yaml`.
    pub config_map: ConfigMap,
    /// The Service in front of the sidecar.
    pub service: Service,
    /// The data volume claim as first created.
    pub pvc: PersistentVolumeClaim,
    /// The commit log's volume claim as first created (with `spec.commitLogStorage`).
    pub commit_log_pvc: Option<PersistentVolumeClaim>,
    /// The pod as it is created.
    pub pod: Pod,
    /// The pod's spec hash (also its annotation).
    pub pod_hash: String,
}

impl Desired {
    /// Builds every object of `store`.
    pub fn of(store: &Validated<'_>) -> Desired {
        let ts = store.store();
        Desired {
            config_map: config_map(ts),
            service: service(ts),
            pvc: pvc(ts),
            commit_log_pvc: commit_log_pvc(ts),
            pod: pod(ts),
            pod_hash: pod_spec_hash(ts),
        }
    }
}

fn owner_ref(ts: &TradeStore) -> OwnerReference {
    ts.controller_owner_ref(&()).expect("a TradeStore read from the API has a uid")
}

fn meta(ts: &TradeStore, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: ts.namespace(),
        labels: Some(labels(ts)),
        owner_references: Some(vec![owner_ref(ts)]),
        ..ObjectMeta::default()
    }
}
