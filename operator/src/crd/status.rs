//! The observed state, written by the operator only: phase, conditions, restarts, fence, and the
//! facts copied from the sidecar's `/v1/status`.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where the store is in its life.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// The pod is being created or is starting.
    Pending,
    /// The sidecar is ready.
    Running,
    /// The pod is being replaced after a change.
    Updating,
    /// Hibernating (`spec.stopped`): no pod, volume kept.
    Stopped,
    /// No pod may run: fenced by `spec.fenced` or after too many restarts.
    Fenced,
    /// The spec is invalid; nothing was changed.
    Invalid,
    /// Deletion in progress.
    Terminating,
}

/// Observed state, written by the operator.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TradeStoreStatus {
    /// Summary of the store's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing, Degraded; BackupReady with `spec.backup`; SyncHealthy with
    /// `spec.clickhouse`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Human-readable detail of the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The pod currently running the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodStatusRef>,
    /// Restart accounting of the sidecar container.
    #[serde(default)]
    pub restarts: RestartStatus,
    /// Set when the operator fenced the store after too many restarts. Clear it by setting the
    /// annotation `tradestore.io/clear-fence` to a new value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<FenceStatus>,
    /// The last `tradestore.io/clear-fence` value acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleared_fence_token: Option<String>,
    /// The data volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageStatus>,
    /// The commit log's own volume (only with `spec.commitLogStorage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_log_storage: Option<StorageStatus>,
    /// The sidecar's own report (`GET /v1/status`) when it was reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<SidecarReport>,
    /// Snapshots: the newest one, on-demand requests, the final snapshot on deletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,
    /// The ClickHouse sync as the sidecar reports it (only with `spec.clickhouse`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncStatus>,
    /// The Redis journal as the sidecar reports it (only with `spec.redis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<JournalStatus>,
    /// The sidecar's last integrity check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<IntegrityStatus>,
}

/// The pod of the store.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodStatusRef {
    /// Pod name.
    pub name: String,
    /// Pod UID.
    #[serde(default)]
    pub uid: String,
    /// The pod-spec hash the pod was created with.
    #[serde(default)]
    pub spec_hash: String,
}

/// Restart accounting.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestartStatus {
    /// Restarts observed since the store was created (or the fence was last cleared).
    #[serde(default)]
    pub total: i64,
    /// Restarts within the current window.
    #[serde(default)]
    pub in_window: i32,
    /// When the restarts of the current window were observed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<Time>,
    /// UID of the pod whose restart count was last read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// The sidecar container's restartCount last read from that pod.
    #[serde(default)]
    pub last_count: i32,
    /// How the sidecar container last ended (from the pod's `lastState`), kept so the cause
    /// survives the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_termination: Option<Termination>,
}

/// How a container ended, as the kubelet reported it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Termination {
    /// The kubelet's reason, e.g. `OOMKilled` or `Error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Exit code of the process (137: killed by SIGKILL, e.g. by the out-of-memory killer).
    #[serde(default)]
    pub exit_code: i32,
    /// The container's termination message (its last log lines, with `FallbackToLogsOnError`),
    /// shortened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
}

impl std::fmt::Display for Termination {
    /// `OOMKilled, exit code 137`: what events and messages quote.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.reason {
            Some(reason) => write!(f, "{reason}, exit code {}", self.exit_code),
            None => write!(f, "exit code {}", self.exit_code),
        }
    }
}

/// Why the operator fenced the store.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FenceStatus {
    /// Machine-readable reason, e.g. `TooManyRestarts`.
    pub reason: String,
    /// Details.
    pub message: String,
    /// When the fence was set.
    pub since: Time,
    /// How the sidecar ended before the fence (the pod, and with it `kubectl logs --previous`, is
    /// gone afterwards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_termination: Option<Termination>,
}

/// A volume claim's state.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageStatus {
    /// PersistentVolumeClaim name.
    pub claim_name: String,
    /// Requested size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<Quantity>,
    /// Provisioned size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Quantity>,
}

/// Facts from the sidecar's `GET /v1/status`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarReport {
    /// Applied migration version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<i64>,
    /// Last commit sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<i64>,
    /// Rows in the trades table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_rows: Option<i64>,
    /// Size of the WAL file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_bytes: Option<i64>,
    /// Unix time of the last checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint_unix: Option<i64>,
    /// Writer queue depth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<i64>,
    /// The sidecar's own readiness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// Why it is not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_ready_reason: Option<String>,
}

/// Backup state.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// When the newest snapshot was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    /// Id of the newest snapshot (usable as `spec.bootstrap.snapshotId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_snapshot: Option<String>,
    /// Highest commit sequence the newest snapshot contains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<i64>,
    /// The last `tradestore.io/backup-request` value acted upon (set a new value to ask again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request: Option<String>,
    /// When the last snapshot the operator asked for failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    /// The sidecar's last snapshot attempt (scheduled or requested) failed with this error;
    /// cleared by its next success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar_error: Option<String>,
    /// The final snapshot of a store being deleted (`spec.backup.finalSnapshotOnDelete`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_snapshot: Option<FinalSnapshotStatus>,
}

/// Progress of the final snapshot taken before the pod of a deleted store is stopped.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FinalSnapshotStatus {
    /// First attempt.
    pub started: Time,
    /// Attempts so far.
    pub attempts: i32,
    /// No attempt before this time (backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<Time>,
    /// Finished: taken, or given up after the time limit (then deletion went on without it).
    #[serde(default)]
    pub done: bool,
    /// Id of the final snapshot, when taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// The last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The ClickHouse sync, as reported by the sidecar.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// Highest commit sequence delivered to ClickHouse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<i64>,
    /// Committed changes not delivered yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<i64>,
    /// The sidecar gave up retrying quickly (consecutive failures reached its threshold).
    #[serde(default)]
    pub degraded: bool,
    /// The last error, while failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The Redis journal, as reported by the sidecar.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JournalStatus {
    /// Highest commit sequence journaled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<i64>,
    /// Committed changes not journaled yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<i64>,
    /// The last attempt succeeded.
    #[serde(default)]
    pub healthy: bool,
    /// The last error, while failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The last integrity check, as reported by the sidecar.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntegrityStatus {
    /// When it finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// `passed`, `failed`, or `inconclusive` (a transient error such as out of memory kept
    /// the check from finishing: no verdict, not a failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// It passed; unset when the check was inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    /// What failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
