//! The names both sides must agree on: where the sidecar listens, its HTTP paths, and
//! the environment variables it reads.

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
