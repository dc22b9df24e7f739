//! The sidecar's configuration file (`sidecar.yaml`), rendered from the spec.
//!
//! The sidecar rejects unknown keys, so this mirrors exactly the schema in docs/sidecar.md
//! (`data_dir`, `database_file`, `listen`, `log`, `duckdb`, `writer`, `reader`, `http`, `auth`,
//! `lifecycle`, `snapshots`). Durations are written the way the sidecar parses them (`10s`, `2000ms`).

use serde::Serialize;

use crate::crd::{LogFormat, TradeStoreSpec};

/// Mount path of the data volume; the sidecar's `data_dir`.
pub const DATA_DIR: &str = "/var/lib/tradestore";
/// Database file name inside the data directory.
pub const DATABASE_FILE: &str = "trades.duckdb";
/// Where the sidecar writes backup snapshots: on the data volume until the backup
/// issue adds a separate target (a second volume or object storage).
pub const SNAPSHOT_DIR: &str = "/var/lib/tradestore/snapshots";
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
/// Port of the sidecar's HTTP API.
pub const PORT: i32 = 8080;

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
}

/// Only the directory is rendered; retention keeps the sidecar's defaults for now.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Snapshots {
    pub dir: String,
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
            snapshots: Snapshots { dir: SNAPSHOT_DIR.into() },
        }
    }

    /// The YAML file.
    pub fn to_yaml(&self) -> String {
        let body = serde_saphyr::to_string(self).expect("the sidecar config serializes to YAML");
        format!("# Rendered by the TradeStore operator from the TradeStore spec; edits are overwritten.\n{body}")
    }
}
