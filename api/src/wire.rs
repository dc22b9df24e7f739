//! The names both sides must agree on: where the sidecar listens, its HTTP paths, the
//! environment variables it reads, and where its files are mounted in the pod.

/// The port the sidecar's HTTP API listens on.
pub const PORT: u16 = 8080;

/// `GET`: the status document ([`crate::status::Status`]).
pub const STATUS_PATH: &str = "/v1/status";
/// `POST`: take a snapshot now (answers its [`crate::snapshot::Manifest`]); `GET`: list them.
pub const SNAPSHOTS_PATH: &str = "/v1/snapshots";
/// Liveness probe.
pub const HEALTHZ_PATH: &str = "/healthz";
/// Readiness probe.
pub const READYZ_PATH: &str = "/readyz";
/// Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";

/// Prefix of the sidecar's configuration overrides (`TRADESTORE_DUCKDB__THREADS=8`: `__`
/// between levels).
pub const ENV_PREFIX: &str = "TRADESTORE";
/// The config file's path.
pub const CONFIG_ENV: &str = "TRADESTORE_CONFIG";
/// The API token (takes precedence over `auth.token_file`).
pub const TOKEN_ENV: &str = "TRADESTORE_API_TOKEN";
/// The Redis password (takes precedence over `redis.password_file`).
pub const REDIS_PASSWORD_ENV: &str = "TRADESTORE_REDIS_PASSWORD";
/// The ClickHouse password (takes precedence over `clickhouse.password_file`).
pub const CLICKHOUSE_PASSWORD_ENV: &str = "TRADESTORE_CLICKHOUSE_PASSWORD";

/// The database file's name inside the data directory (the sidecar's default
/// `database_file`, and what the operator renders).
pub const DATABASE_FILE: &str = "trades.duckdb";

/// Where the operator mounts each volume of the store's pod, and so the paths it writes
/// into the sidecar's config file. Outside a pod the sidecar's defaults are relative to
/// its working directory instead.
pub mod mount {
    /// The data volume (the store's PVC): the sidecar's `data_dir`.
    pub const DATA_DIR: &str = "/var/lib/tradestore";
    /// The snapshot directory without a backup volume: a staging directory on the data
    /// volume (with an S3 target, the local copy before the upload).
    pub const SNAPSHOT_STAGING_DIR: &str = "/var/lib/tradestore/snapshots";
    /// The backup volume (`spec.backup.target.volume`): the snapshot directory.
    pub const BACKUP_DIR: &str = "/var/lib/tradestore-backups";
    /// The commit log's own volume (`spec.commitLogStorage`): the sidecar's
    /// `commit_log.dir`. Beside the data volume, not inside it: a mount over
    /// `<data_dir>/log` would hide a log already there.
    pub const COMMIT_LOG_DIR: &str = "/var/lib/tradestore-commit-log";
    /// The ConfigMap with the config file.
    pub const CONFIG_DIR: &str = "/etc/tradestore";
    /// The config file's name in [`CONFIG_DIR`] (and its key in the ConfigMap).
    pub const CONFIG_FILE: &str = "sidecar.yaml";
    /// [`CONFIG_DIR`]/[`CONFIG_FILE`]: what the sidecar is started with (`--config`).
    pub const CONFIG_PATH: &str = "/etc/tradestore/sidecar.yaml";
    /// The Secret with the API token.
    pub const TOKEN_DIR: &str = "/var/run/secrets/tradestore";
    /// The token file's name in [`TOKEN_DIR`] (and its key in the Secret).
    pub const TOKEN_FILE: &str = "token";
    /// [`TOKEN_DIR`]/[`TOKEN_FILE`]: the sidecar's `auth.token_file`.
    pub const TOKEN_PATH: &str = "/var/run/secrets/tradestore/token";
    /// The scratch emptyDir: the only writable path besides the volumes (the root
    /// filesystem is read-only).
    pub const TMP_DIR: &str = "/tmp";

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn paths_are_their_directory_and_file() {
            assert_eq!(CONFIG_PATH, format!("{CONFIG_DIR}/{CONFIG_FILE}"));
            assert_eq!(TOKEN_PATH, format!("{TOKEN_DIR}/{TOKEN_FILE}"));
            assert!(SNAPSHOT_STAGING_DIR.starts_with(&format!("{DATA_DIR}/")));
            assert!(!COMMIT_LOG_DIR.starts_with(&format!("{DATA_DIR}/")));
        }
    }
}
