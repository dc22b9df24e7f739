//! The desired state: `TradeStoreSpec` (from which kube derives the `TradeStore` kind) and its
//! sections. Doc comments on the fields become the descriptions in the generated CRD; defaults
//! named in `#[serde(default = ...)]` live in [`super::defaults`] and are written into the schema
//! too, so the API server fills them in.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tradestore_api::config::{MIN_BODY_BYTES, MIN_CHECKPOINT_THRESHOLD_BYTES, POOL_SIZE, THREADS};

use super::defaults::*;
use super::status::TradeStoreStatus;

/// A DuckDB trade-state store: one sidecar pod owning one database file on a persistent volume,
/// optionally next to the trading application's own containers.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tradestore.io",
    version = "v1alpha1",
    kind = "TradeStore",
    plural = "tradestores",
    singular = "tradestore",
    shortname = "ts",
    category = "tradestore",
    namespaced,
    status = "TradeStoreStatus",
    doc = "A DuckDB trade-state store run by the TradeStore operator",
    validation = kube::core::Rule::new("self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be a DNS-1035 label of at most 63 characters: it names the pod and the Service"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
    printcolumn(name = "Restarts", type_ = "integer", json_path = ".status.restarts.inWindow", priority = 1),
    printcolumn(name = "Last Backup", type_ = "date", json_path = ".status.backup.lastSuccessfulTime"),
    printcolumn(name = "Sync Lag", type_ = "integer", json_path = ".status.sync.lag"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Message", type_ = "string", json_path = ".status.message")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.commitLogStorage) == has(oldSelf.commitLogStorage)")
    .message("commitLogStorage can only be set when the store is created, and not removed: the commit log holds acknowledged changes the database file may not have yet"))]
pub struct TradeStoreSpec {
    /// Sidecar container image. The image must run
    /// `/usr/local/bin/sidecar --config /etc/tradestore/sidecar.yaml serve` as a non-root user.
    #[schemars(length(min = 1))]
    pub image: String,

    /// Image pull policy of the sidecar container (Always, IfNotPresent or Never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,

    /// Names of Secrets used to pull the images of the pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<String>,

    /// CPU and memory of the sidecar container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// The data volume holding the DuckDB file (and the commit log, unless `commitLogStorage`).
    pub storage: StorageSpec,

    /// A volume of its own for the sidecar's commit log (write-ahead log), as CloudNativePG's
    /// `walStorage`: every acknowledged write is flushed there first, so a faster class (or one
    /// that does not share I/O with the database file) shortens every write. Unset: the log is
    /// `log/` on the data volume. Can only be set when the store is created, and never removed:
    /// the log holds acknowledged changes the database file may not have yet. Retention follows
    /// `storage.retentionPolicy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_log_storage: Option<VolumeSpec>,

    /// DuckDB engine settings.
    #[serde(default)]
    pub duckdb: DuckdbSpec,

    /// Load limits of the sidecar (write queue, read pool, HTTP).
    #[serde(default)]
    pub limits: LimitsSpec,

    /// Health checks of the sidecar; a sidecar unresponsive for `unresponsiveSeconds` is restarted.
    #[serde(default)]
    pub probes: ProbesSpec,

    /// How many restarts are tolerated before the operator fences the store.
    #[serde(default)]
    pub restart_policy: RestartPolicySpec,

    /// On shutdown the sidecar finishes queued writes and checkpoints within this many seconds
    /// (the pod's termination grace period is 10 s longer).
    #[serde(default = "default_shutdown_grace")]
    #[schemars(range(min = 1, max = 3600))]
    pub shutdown_grace_seconds: i64,

    /// Sidecar logging.
    #[serde(default)]
    pub log: LogSpec,

    /// API authentication of the sidecar.
    #[serde(default)]
    pub auth: AuthSpec,

    /// Redis journal of every committed change (the sidecar's `redis` section; the URL is passed
    /// to the sidecar from the Secret, never written into the ConfigMap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSpec>,

    /// ClickHouse analytics sync (the sidecar's `clickhouse` section; URL, user and password are
    /// passed to the sidecar from Secrets). Adds the `SyncHealthy` condition and `status.sync`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clickhouse: Option<ClickHouseSpec>,

    /// Scheduled snapshot backups taken by the sidecar, their retention and target. Without it
    /// the sidecar takes no scheduled snapshots; on-demand ones (annotation
    /// `tradestore.io/backup-request`) go to a staging directory on the data volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,

    /// Periodic integrity checks run by the sidecar (every 60 s, failures reported, when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity_check: Option<IntegrityCheckSpec>,

    /// Restore: a new store (no database file on its volume yet) starts from this snapshot
    /// instead of empty. Ignored once the database file exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapSpec>,

    /// Extra containers sharing the pod with the sidecar (the trading application). They reach the
    /// sidecar at http://127.0.0.1:8080; `TRADESTORE_URL` and `TRADESTORE_API_TOKEN` are injected
    /// unless the container sets them itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "containers_schema")]
    pub containers: Vec<Container>,

    /// Run the sidecar as a native sidecar (an init container with restartPolicy Always, Kubernetes
    /// 1.29+) when user containers are present, so it starts before and stops after them.
    #[serde(default = "default_true")]
    pub native_sidecar: bool,

    /// Labels and annotations added to the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_metadata: Option<PodMetadata>,

    /// Node selector of the pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Service account of the pod. When unset the pod gets no API token mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,

    /// Priority class of the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,

    /// User and group the sidecar runs as (also the fsGroup of the data volume).
    #[serde(default = "default_uid")]
    #[schemars(range(min = 1, max = 2147483647))]
    pub run_as_user: i64,

    /// Hibernate: delete the pod and keep the volume. Setting it back to false starts the store again.
    #[serde(default)]
    pub stopped: bool,

    /// Fence switch: no pod may run for this store (nobody writes to the volume) until set back to false.
    #[serde(default)]
    pub fenced: bool,
}

/// Image pull policy.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    /// Always pull.
    Always,
    /// Pull when missing on the node.
    IfNotPresent,
    /// Never pull.
    Never,
}

impl PullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// The data volume.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size, class and access mode of the claim.
    #[serde(flatten)]
    pub volume: VolumeSpec,

    /// What happens to the store's volumes (data and commit log) when the TradeStore is deleted:
    /// Retain (default) keeps them (ownerless), Delete removes them.
    #[serde(default)]
    pub retention_policy: RetentionPolicy,
}

/// A volume claim of the store: `storage` (the data volume) and `commitLogStorage` have these.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSpec {
    /// Requested size, e.g. `10Gi`. Growing it expands the volume when the storage class allows it;
    /// shrinking is refused.
    #[schemars(schema_with = "storage_size_schema")]
    pub size: Quantity,

    /// Storage class; the cluster default when unset. Fixed once the volume exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,

    /// Access mode of the volume. ReadWriteOncePod (the default) lets the API guarantee that only one
    /// pod ever mounts it. Fixed once the volume exists.
    #[serde(default)]
    pub access_mode: AccessMode,
}

/// Volume access mode.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum AccessMode {
    /// Only one pod may mount the volume (Kubernetes 1.29+, CSI volumes).
    #[default]
    ReadWriteOncePod,
    /// Only one node may mount the volume (for drivers without ReadWriteOncePod).
    ReadWriteOnce,
}

impl AccessMode {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::ReadWriteOncePod => "ReadWriteOncePod",
            AccessMode::ReadWriteOnce => "ReadWriteOnce",
        }
    }
}

/// What to do with the store's volumes on deletion.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RetentionPolicy {
    /// Keep the volume; the operator removes its owner reference so garbage collection leaves it.
    #[default]
    Retain,
    /// Delete the volume with the store.
    Delete,
}

/// DuckDB settings (see docs/durability.md).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.maxWalBytes >= self.checkpointThresholdBytes")
    .message("maxWalBytes must be >= checkpointThresholdBytes"))]
pub struct DuckdbSpec {
    /// `SET threads`; unset: one fewer than the CPUs the container may use (its CPU limit), at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = *THREADS.start(), max = *THREADS.end()))]
    pub threads: Option<i32>,

    /// `SET memory_limit`, e.g. `2GiB`; DuckDB's default (80% of the container's RAM) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?[A-Za-z]*$"))]
    pub memory_limit: Option<String>,

    /// DuckDB auto-checkpoint threshold (WAL size in bytes).
    #[serde(default = "default_checkpoint_threshold")]
    #[schemars(range(min = MIN_CHECKPOINT_THRESHOLD_BYTES))]
    pub checkpoint_threshold_bytes: i64,

    /// Explicit CHECKPOINT after this many commits (0 turns the count trigger off).
    #[serde(default = "default_checkpoint_every")]
    #[schemars(range(min = 0))]
    pub checkpoint_every_commits: i64,

    /// Explicit CHECKPOINT whenever the WAL file is larger than this.
    #[serde(default = "default_max_wal")]
    #[schemars(range(min = MIN_CHECKPOINT_THRESHOLD_BYTES))]
    pub max_wal_bytes: i64,

    /// Explicit CHECKPOINT once nothing was applied for this many milliseconds and the
    /// WAL holds anything, so checkpoints fall in lulls rather than into a burst's
    /// commits (0 turns it off); unset: the sidecar's default, 1000. No CRD default, so
    /// stores created before the field keep their pod-spec hash (no restart on upgrade).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600000))]
    pub idle_checkpoint_after_millis: Option<i64>,
}

/// Load limits of the sidecar.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitsSpec {
    /// Group-commit batches that may wait behind the committing one; beyond, writes get 503.
    #[serde(default = "default_queue_batches")]
    #[schemars(range(min = 1, max = 100000))]
    pub queue_batches: i64,

    /// Most write requests folded into one transaction.
    #[serde(default = "default_max_batch_requests")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_batch_requests: i64,

    /// Committed trades kept in memory for hot reads.
    #[serde(default = "default_recent_trades")]
    #[schemars(range(min = 0))]
    pub recent_trades: i64,

    /// Read connection pool size.
    #[serde(default = "default_pool_size")]
    #[schemars(range(min = *POOL_SIZE.start(), max = *POOL_SIZE.end()))]
    pub pool_size: i32,

    /// How long a read waits for a pooled connection, in milliseconds.
    #[serde(default = "default_acquire_timeout_ms")]
    #[schemars(range(min = 1, max = 600000))]
    pub acquire_timeout_millis: i64,

    /// Most trades one list request returns.
    #[serde(default = "default_max_list_limit")]
    #[schemars(range(min = 1))]
    pub max_list_limit: i64,

    /// Largest accepted request body in bytes.
    #[serde(default = "default_max_body_bytes")]
    #[schemars(range(min = MIN_BODY_BYTES))]
    pub max_body_bytes: i64,

    /// Most trades in one batch insert.
    #[serde(default = "default_max_batch_trades")]
    #[schemars(range(min = 1))]
    pub max_batch_trades: i64,

    /// How long a write waits for its commit before the sidecar answers 503, in seconds.
    #[serde(default = "default_write_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub write_timeout_seconds: i64,
}

/// Probes of the sidecar container.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.unresponsiveSeconds >= self.periodSeconds")
    .message("unresponsiveSeconds must be >= periodSeconds"))]
#[x_kube(validation = kube::core::Rule::new("self.timeoutSeconds <= self.periodSeconds")
    .message("timeoutSeconds must be <= periodSeconds"))]
pub struct ProbesSpec {
    /// How often the probes run.
    #[serde(default = "default_period")]
    #[schemars(range(min = 1, max = 300))]
    pub period_seconds: i32,

    /// Timeout of one probe request.
    #[serde(default = "default_probe_timeout")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: i32,

    /// A sidecar whose liveness check fails for this long is restarted. Also the sidecar's
    /// `lifecycle.liveness_deadline` (writer heartbeat).
    #[serde(default = "default_unresponsive")]
    #[schemars(range(min = 1, max = 3600))]
    pub unresponsive_seconds: i32,

    /// Consecutive failed readiness checks before the pod leaves the Service.
    #[serde(default = "default_readiness_failures")]
    #[schemars(range(min = 1, max = 100))]
    pub readiness_failure_threshold: i32,

    /// Time allowed for start-up (WAL replay, migrations) before liveness checks begin.
    #[serde(default = "default_startup")]
    #[schemars(range(min = 1, max = 86400))]
    pub startup_seconds: i32,
}

/// Restart management.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestartPolicySpec {
    /// Once the sidecar has restarted this many times within `windowSeconds`, the operator fences
    /// the store: deletes the pod, sets Degraded and waits for a human.
    #[serde(default = "default_max_restarts")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_restarts: i32,

    /// Length of the sliding window restarts are counted in.
    #[serde(default = "default_window")]
    #[schemars(range(min = 10, max = 604800))]
    pub window_seconds: i64,
}

/// Sidecar log output.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogSpec {
    /// Line format.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter such as `info` or `tradestore_sidecar=debug`.
    #[serde(default = "default_log_level")]
    #[schemars(length(min = 1, max = 256))]
    pub level: String,
}

/// Log line format.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

/// API authentication.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Require the token for reads too (writes always need it).
    #[serde(default)]
    pub protect_reads: bool,
    /// Use this existing Secret (key `token`, at least 16 characters) instead of the generated
    /// `<name>-token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_name: Option<String>,
}

/// A key of a Secret in the store's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Redis connection, by Secret reference.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// Secret key holding the Redis URL (`redis://` or `rediss://`, credentials included).
    pub url_secret_ref: SecretKeyRef,
    /// Prefix of every key the store writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
}

/// ClickHouse connection, by Secret reference.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClickHouseSpec {
    /// Secret key holding the ClickHouse HTTP URL.
    pub url_secret_ref: SecretKeyRef,
    /// Secret key holding the user name, when not in the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_secret_ref: Option<SecretKeyRef>,
    /// Secret key holding the password, when not in the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// Target database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

/// Snapshot backups (taken by the sidecar process; the operator only asks over its API).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// Cron schedule, UTC: 5 fields (minute hour day-of-month month day-of-week), e.g. `0 * * * *`,
    /// or 6 with a leading seconds field.
    #[schemars(length(min = 9, max = 128), regex(pattern = r"^\s*\S+(\s+\S+){4,5}\s*$"))]
    pub schedule: String,
    /// How many snapshots to keep.
    #[serde(default)]
    pub retention: BackupRetention,
    /// Where snapshots go.
    pub target: BackupTarget,
    /// Take a last snapshot when the TradeStore is deleted.
    #[serde(default)]
    pub final_snapshot_on_delete: bool,
}

/// Snapshot retention.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRetention {
    /// The newest this many snapshots are always kept.
    #[serde(default = "default_keep_last")]
    #[schemars(range(min = 1, max = 10000))]
    pub keep_last: i32,
    /// Older snapshots beyond `keepLast` are kept while younger than this many hours;
    /// 0 keeps none beyond `keepLast`.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub max_age_hours: i64,
}

/// Snapshot destination: exactly one of `volume` and `s3`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.volume) != has(self.s3)")
    .message("exactly one of volume and s3 must be set"))]
pub struct BackupTarget {
    /// A directory on a second PersistentVolumeClaim mounted into the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeTarget>,
    /// An S3-compatible bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Target>,
}

/// Backup volume.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeTarget {
    /// Existing PersistentVolumeClaim.
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
}

/// S3 bucket.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Target {
    /// Bucket name.
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Key prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Endpoint URL for non-AWS stores, e.g. `http://minio:9000` (plain HTTP is allowed when the
    /// scheme says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Region of the bucket.
    #[serde(default = "default_region")]
    #[schemars(length(min = 1, max = 64))]
    pub region: String,
    /// Secret with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret_name: String,
}

/// Integrity checks.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntegrityCheckSpec {
    /// Seconds between two checks (seed: every minute).
    #[serde(default = "default_integrity_interval")]
    #[schemars(range(min = 10, max = 604800))]
    pub interval_seconds: i64,
    /// What the sidecar does when a check fails: Report (readiness, status and metrics show it)
    /// or Recover (also quarantine the file once a rebuild can hold every change and restart into
    /// recovery from the newest verified snapshot plus the commit log, and the Redis journal for
    /// what the log lacks; needs `backup` or `redis`).
    #[serde(default)]
    pub on_failure: IntegrityFailurePolicy,
}

/// Reaction to a failed integrity check.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum IntegrityFailurePolicy {
    /// Report it (not ready, status, metrics) and wait for a human.
    #[default]
    Report,
    /// Report it, then quarantine the file and recover from the newest verified snapshot plus
    /// the commit log (each recovery is one container restart).
    Recover,
}

/// Restore source of a new store.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapSpec {
    /// Id of a snapshot in the backup target (`spec.backup.target`, else the data volume's
    /// staging directory), e.g. from `status.backup.lastSnapshot` of the store it was taken from.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[A-Za-z0-9._-]+$"))]
    pub snapshot_id: String,
}

/// Extra pod metadata.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
pub struct PodMetadata {
    /// Labels added to the pod (the operator's own labels win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to the pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn containers_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Container>>();
    // Containers are identified by name, like in a PodSpec.
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["name"]));
    schema
}

/// A size the API server checks itself: a Kubernetes quantity without a sign (the pattern
/// controller-gen writes for `resource.Quantity`, minus the sign), so `-1Gi` and `abc` are refused
/// at apply time instead of only by the operator. Integers stay allowed (`x-kubernetes-int-or-string`;
/// the pattern applies to strings only).
fn storage_size_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Quantity>();
    schema.insert("pattern".into(), STORAGE_SIZE_PATTERN.into());
    schema
}

/// Digits with an optional fraction, then an optional binary (`Ki`…`Ei`), decimal (`k`…`E`) or
/// exponent suffix. No `m` (milli): a fraction of a byte is no size.
pub const STORAGE_SIZE_PATTERN: &str = r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[kMGTPE]|([eE]\+?[0-9]+))?$";
