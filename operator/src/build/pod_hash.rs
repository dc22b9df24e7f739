//! The pod-spec hash: the one input that decides when the pod is replaced.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ResourceRequirements, Toleration};
use kube::ResourceExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::crd::{
    BackupRetention, BackupTarget, BootstrapSpec, ClickHouseSpec, DuckdbSpec, IntegrityCheckSpec, LimitsSpec, LogSpec,
    PodMetadata, ProbesSpec, PullPolicy, RedisSpec, TradeStore, TradeStoreSpec,
};
use crate::names::{RESTART_ANNOTATION, token_secret_name};

/// The inputs that shape the pod. Their hash decides when the pod is replaced: it covers the spec
/// fields the pod is built from and the restart annotation, not the operator's own code, so
/// upgrading the operator alone never restarts a store. New spec fields must be added here as
/// `Option`s skipped when unset, so existing hashes stay stable (a golden test pins one).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodInputs<'a> {
    spec: PodSpecInputs<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restart: Option<&'a str>,
    token_secret: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodSpecInputs<'a> {
    image: &'a str,
    image_pull_policy: &'a Option<PullPolicy>,
    image_pull_secrets: &'a Vec<String>,
    resources: &'a Option<ResourceRequirements>,
    duckdb: &'a DuckdbSpec,
    limits: &'a LimitsSpec,
    probes: &'a ProbesSpec,
    shutdown_grace_seconds: i64,
    log: &'a LogSpec,
    protect_reads: bool,
    containers: &'a Vec<Container>,
    native_sidecar: bool,
    pod_metadata: &'a Option<PodMetadata>,
    node_selector: &'a BTreeMap<String, String>,
    tolerations: &'a Vec<Toleration>,
    service_account_name: &'a Option<String>,
    priority_class_name: &'a Option<String>,
    run_as_user: i64,
    // Added with the backup/sync issue: skipped when unset, so older hashes stay valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    redis: Option<&'a RedisSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    clickhouse: Option<&'a ClickHouseSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backup: Option<BackupInputs<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    integrity_check: Option<&'a IntegrityCheckSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bootstrap: Option<&'a BootstrapSpec>,
    // Added with the commit-log volume, skipped when false for the same reason. Whether the
    // volume exists shapes the pod (a mount, the config's `commit_log.dir`); its size and class
    // do not, as `storage`'s do not.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    commit_log_volume: bool,
}

/// The backup settings the pod is built from (`finalSnapshotOnDelete` only matters to the
/// operator, so changing it restarts nothing).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BackupInputs<'a> {
    schedule: &'a str,
    retention: &'a BackupRetention,
    target: &'a BackupTarget,
}

/// Hash (hex sha256, 16 chars) of everything that shapes the pod.
pub fn pod_spec_hash(ts: &TradeStore) -> String {
    let s: &TradeStoreSpec = &ts.spec;
    let inputs = PodInputs {
        spec: PodSpecInputs {
            image: &s.image,
            image_pull_policy: &s.image_pull_policy,
            image_pull_secrets: &s.image_pull_secrets,
            resources: &s.resources,
            duckdb: &s.duckdb,
            limits: &s.limits,
            probes: &s.probes,
            shutdown_grace_seconds: s.shutdown_grace_seconds,
            log: &s.log,
            protect_reads: s.auth.protect_reads,
            containers: &s.containers,
            native_sidecar: s.native_sidecar,
            pod_metadata: &s.pod_metadata,
            node_selector: &s.node_selector,
            tolerations: &s.tolerations,
            service_account_name: &s.service_account_name,
            priority_class_name: &s.priority_class_name,
            run_as_user: s.run_as_user,
            redis: s.redis.as_ref(),
            clickhouse: s.clickhouse.as_ref(),
            backup: s.backup.as_ref().map(|b| BackupInputs {
                schedule: &b.schedule,
                retention: &b.retention,
                target: &b.target,
            }),
            integrity_check: s.integrity_check.as_ref(),
            bootstrap: s.bootstrap.as_ref(),
            commit_log_volume: s.commit_log_storage.is_some(),
        },
        restart: ts.annotations().get(RESTART_ANNOTATION).map(String::as_str),
        token_secret: token_secret_name(ts),
    };
    let bytes = serde_json::to_vec(&inputs).expect("pod inputs serialize");
    let digest = Sha256::digest(&bytes);
    hex::encode(&digest[..8])
}
