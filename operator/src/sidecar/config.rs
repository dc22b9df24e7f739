//! The sidecar's configuration file (`sidecar.yaml`), rendered from the spec.
//!
//! The sidecar rejects unknown keys, so this mirrors exactly the schema in docs/sidecar.md
//! (`data_dir`, `database_file`, `listen`, `log`, `duckdb`, `writer`, `reader`, `http`, `auth`,
//! `lifecycle`, `snapshots`, `redis`, `clickhouse`, `integrity`). Durations are written the way the
//! sidecar parses them (`10s`, `2000ms`). Secrets (Redis and ClickHouse URLs, credentials) are
//! never rendered here: they reach the sidecar as environment variables from Secrets
//! (the pod builder, `crate::build`).

use serde::Serialize;

use crate::crd::{BackupRetention, IntegrityCheckSpec, IntegrityFailurePolicy, LogFormat, TradeStoreSpec};

/// Mount path of the data volume; the sidecar's `data_dir`.
pub const DATA_DIR: &str = "/var/lib/tradestore";
/// Database file name inside the data directory.
pub const DATABASE_FILE: &str = "trades.duckdb";
/// Where the sidecar writes snapshots without a backup volume: a staging directory on the data
/// volume (the only snapshot directory without `spec.backup`; the local copy before the upload
/// with an S3 target).
pub const SNAPSHOT_DIR: &str = "/var/lib/tradestore/snapshots";
/// Mount path of the backup volume (`spec.backup.target.volume`): the snapshot directory.
pub const BACKUP_DIR: &str = "/var/lib/tradestore-backups";
/// Snapshots kept without `spec.backup` (on the data volume).
pub const STAGING_KEEP_LAST: i32 = 3;
/// Directory the ConfigMap is mounted at.
pub const CONFIG_DIR: &str = "/etc/tradestore";
/// Key of the config file in the ConfigMap (and its file name).
pub const CONFIG_KEY: &str = "sidecar.yaml";
/// Full path of the config file in the container.
pub const CONFIG_PATH: &str = "/etc/tradestore/sidecar.yaml";
/// Directory the token Secret is mounted at.
pub const TOKEN_DIR: &str = "/var/run/secrets/tradestore";
/// Key of the token in the Secret (and its file name).
pub const TOKEN_KEY: &str = "token";
/// Full path of the token file in the container.
pub const TOKEN_PATH: &str = "/var/run/secrets/tradestore/token";
/// Port of the sidecar's HTTP API (Kubernetes types take it as i32).
pub const PORT: i32 = tradestore_api::wire::PORT as i32;

// The structs below mirror the sidecar's configuration sections one to one (docs/sidecar.md
// documents every key), so their fields carry no doc comments of their own.

/// The whole file.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct SidecarConfig {
    pub data_dir: String,
    pub database_file: String,
    pub listen: String,
    pub log: Log,
    pub duckdb: Duckdb,
    pub writer: Writer,
    pub reader: Reader,
    pub http: Http,
    pub auth: Auth,
    pub lifecycle: Lifecycle,
    pub snapshots: Snapshots,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<Redis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clickhouse: Option<Clickhouse>,
    pub integrity: Integrity,
}

/// Snapshot directory, retention, schedule, restore source and S3 target.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Snapshots {
    pub dir: String,
    pub keep_last: i32,
    /// `0s`: nothing kept beyond `keep_last`.
    pub max_age: String,
    /// 5-field cron, UTC; absent: no scheduled snapshots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// A snapshot id, restored when the database file does not exist.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3>,
}

/// S3 target (credentials come from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`).
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct S3 {
    pub bucket: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub region: String,
}

/// Redis journal (the URL comes from `TRADESTORE_REDIS__URL`).
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Redis {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
}

/// ClickHouse sync (URL, user and password come from the environment).
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Clickhouse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

/// Integrity checks.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Integrity {
    pub interval: String,
    /// `report` or `recover`.
    pub on_failure: &'static str,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Log {
    pub format: &'static str,
    pub level: String,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Duckdb {
    pub threads: i32,
    pub memory_limit: Option<String>,
    pub checkpoint_threshold_bytes: i64,
    pub checkpoint_every_commits: i64,
    pub max_wal_bytes: i64,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Writer {
    pub queue_batches: i64,
    pub max_batch_requests: i64,
    pub recent_trades: i64,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Reader {
    pub pool_size: i32,
    pub acquire_timeout: String,
    pub max_list_limit: i64,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Http {
    pub max_body_bytes: i64,
    pub max_batch_trades: i64,
    pub write_timeout: String,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Auth {
    pub token_file: String,
    pub protect_reads: bool,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Lifecycle {
    pub liveness_deadline: String,
    pub shutdown_grace: String,
}

impl SidecarConfig {
    /// The configuration for a spec.
    pub fn from_spec(spec: &TradeStoreSpec) -> Self {
        SidecarConfig {
            data_dir: DATA_DIR.into(),
            database_file: DATABASE_FILE.into(),
            listen: format!("0.0.0.0:{PORT}"),
            log: Log {
                format: match spec.log.format {
                    LogFormat::Json => "json",
                    LogFormat::Text => "text",
                },
                level: spec.log.level.clone(),
            },
            duckdb: Duckdb {
                threads: spec.duckdb.threads,
                memory_limit: spec.duckdb.memory_limit.clone(),
                checkpoint_threshold_bytes: spec.duckdb.checkpoint_threshold_bytes,
                checkpoint_every_commits: spec.duckdb.checkpoint_every_commits,
                max_wal_bytes: spec.duckdb.max_wal_bytes,
            },
            writer: Writer {
                queue_batches: spec.limits.queue_batches,
                max_batch_requests: spec.limits.max_batch_requests,
                recent_trades: spec.limits.recent_trades,
            },
            reader: Reader {
                pool_size: spec.limits.pool_size,
                acquire_timeout: format!("{}ms", spec.limits.acquire_timeout_millis),
                max_list_limit: spec.limits.max_list_limit,
            },
            http: Http {
                max_body_bytes: spec.limits.max_body_bytes,
                max_batch_trades: spec.limits.max_batch_trades,
                write_timeout: format!("{}s", spec.limits.write_timeout_seconds),
            },
            auth: Auth { token_file: TOKEN_PATH.into(), protect_reads: spec.auth.protect_reads },
            lifecycle: Lifecycle {
                liveness_deadline: format!("{}s", spec.probes.unresponsive_seconds),
                shutdown_grace: format!("{}s", spec.shutdown_grace_seconds),
            },
            snapshots: snapshots(spec),
            redis: spec.redis.as_ref().map(|r| Redis { key_prefix: r.key_prefix.clone() }),
            clickhouse: spec.clickhouse.as_ref().map(|c| Clickhouse { database: c.database.clone() }),
            integrity: integrity(spec.integrity_check.clone().unwrap_or_default()),
        }
    }

    /// The YAML file.
    pub fn to_yaml(&self) -> String {
        let body = serde_saphyr::to_string(self).expect("the sidecar config serializes to YAML");
        format!("# Rendered by the TradeStore operator from the TradeStore spec; edits are overwritten.\n{body}")
    }
}

fn snapshots(spec: &TradeStoreSpec) -> Snapshots {
    let backup = spec.backup.as_ref();
    let retention = match backup {
        Some(b) => b.retention.clone(),
        None => BackupRetention { keep_last: STAGING_KEEP_LAST, max_age_hours: 0 },
    };
    let volume = backup.and_then(|b| b.target.volume.as_ref());
    let s3 = backup.and_then(|b| b.target.s3.as_ref()).map(|t| S3 {
        bucket: t.bucket.clone(),
        prefix: t.prefix.clone(),
        endpoint: t.endpoint.clone(),
        region: t.region.clone(),
    });
    Snapshots {
        dir: if volume.is_some() { BACKUP_DIR } else { SNAPSHOT_DIR }.into(),
        keep_last: retention.keep_last,
        max_age: format!("{}{}", retention.max_age_hours, if retention.max_age_hours == 0 { "s" } else { "h" }),
        schedule: backup.map(|b| b.schedule.trim().to_string()),
        bootstrap_from: spec.bootstrap.as_ref().map(|b| b.snapshot_id.clone()),
        s3,
    }
}

fn integrity(spec: IntegrityCheckSpec) -> Integrity {
    Integrity {
        interval: format!("{}s", spec.interval_seconds),
        on_failure: match spec.on_failure {
            IntegrityFailurePolicy::Report => "report",
            IntegrityFailurePolicy::Recover => "recover",
        },
    }
}
