//! What the operator calls things: the names of the objects a store owns, their labels, the
//! annotations users set on a TradeStore, and the sidecar container's name. Every stage uses
//! these, so they sit below all of them.

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::crd::{TradeStore, TradeStoreSpec};

/// Label naming the store a pod (or any owned object) belongs to; also the Service selector.
pub const STORE_LABEL: &str = "tradestore.io/store";
/// Annotation on the pod: hash of everything that shapes it.
pub const SPEC_HASH_ANNOTATION: &str = "tradestore.io/pod-spec-hash";
/// Annotation on the TradeStore: change its value to restart the pod.
pub const RESTART_ANNOTATION: &str = "tradestore.io/restart";
/// Annotation on the TradeStore: change its value to clear a fence set after too many restarts.
pub const CLEAR_FENCE_ANNOTATION: &str = "tradestore.io/clear-fence";
/// Annotation on the TradeStore: each new value makes the operator ask the sidecar for a snapshot.
pub const BACKUP_REQUEST_ANNOTATION: &str = "tradestore.io/backup-request";
/// Annotation on the data PVC, set when it is created: the claim holding the store's commit log
/// when that is a volume of its own. The data volume carries the record of where its log is, so a
/// retained and re-adopted volume keeps it, and a spec that moves the log is caught.
pub const COMMIT_LOG_CLAIM_ANNOTATION: &str = "tradestore.io/commit-log-claim";
/// Name of the sidecar container.
pub const SIDECAR_CONTAINER: &str = "sidecar";

/// Name of the pod (one fixed name per store: the API server itself guarantees there is never a
/// second pod of the same store).
pub fn pod_name(ts: &TradeStore) -> String {
    ts.name_any()
}
/// Name of the data PVC.
pub fn pvc_name(ts: &TradeStore) -> String {
    format!("{}-data", ts.name_any())
}
/// Name of the commit log's PVC (with `spec.commitLogStorage`).
pub fn commit_log_pvc_name(ts: &TradeStore) -> String {
    format!("{}-commit-log", ts.name_any())
}
/// Name of the Service.
pub fn service_name(ts: &TradeStore) -> String {
    ts.name_any()
}
/// Name of the ConfigMap holding `sidecar.yaml`.
pub fn config_map_name(ts: &TradeStore) -> String {
    format!("{}-config", ts.name_any())
}
/// Name of the Secret holding the API token (generated unless `spec.auth.tokenSecretName`).
pub fn token_secret_name(ts: &TradeStore) -> String {
    ts.spec.auth.token_secret_name.clone().unwrap_or_else(|| generated_token_secret_name(ts))
}
/// Name of the Secret the operator generates.
pub fn generated_token_secret_name(ts: &TradeStore) -> String {
    format!("{}-token", ts.name_any())
}

/// Labels every owned object carries.
pub fn labels(ts: &TradeStore) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "tradestore".to_string()),
        ("app.kubernetes.io/instance".to_string(), ts.name_any()),
        ("app.kubernetes.io/managed-by".to_string(), "tradestore-operator".to_string()),
        (STORE_LABEL.to_string(), ts.name_any()),
    ])
}

/// Selector of the store's pod.
pub fn selector(ts: &TradeStore) -> BTreeMap<String, String> {
    BTreeMap::from([(STORE_LABEL.to_string(), ts.name_any())])
}

/// The backup volume's claim (`spec.backup.target.volume.claimName`), if any.
pub fn backup_claim(spec: &TradeStoreSpec) -> Option<&str> {
    spec.backup.as_ref().and_then(|b| b.target.volume.as_ref()).map(|v| v.claim_name.as_str())
}
