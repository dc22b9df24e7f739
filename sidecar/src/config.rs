//! Sidecar configuration: one YAML file plus `TRADESTORE_*` environment overrides,
//! validated at start. Secrets never live in the file: the API token comes from
//! `auth.token_file` (a mounted Secret) or the `TRADESTORE_API_TOKEN` variable.
//!
//! Environment overrides use `__` between levels, e.g.
//! `TRADESTORE_DUCKDB__THREADS=8` or `TRADESTORE_LISTEN=0.0.0.0:8080`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use croner::Cron;
use serde::{Deserialize, Serialize};
use tradestore_api::wire::{CLICKHOUSE_PASSWORD_ENV, CONFIG_ENV, ENV_PREFIX, PORT, REDIS_PASSWORD_ENV, TOKEN_ENV};

use crate::error::{Error, Result};

/// The whole sidecar configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory holding the database file (and later snapshots).
    pub data_dir: PathBuf,
    /// Database file name inside `data_dir`.
    pub database_file: String,
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Logging.
    pub log: LogConfig,
    /// DuckDB settings.
    pub duckdb: DuckdbConfig,
    /// The write path.
    pub writer: WriterConfig,
    /// The read path.
    pub reader: ReaderConfig,
    /// HTTP limits.
    pub http: HttpConfig,
    /// Authentication of mutating routes.
    pub auth: AuthConfig,
    /// Liveness and shutdown timing.
    pub lifecycle: LifecycleConfig,
    /// Backup snapshots.
    pub snapshots: SnapshotConfig,
    /// The Redis journal (off unless `redis.url` is set).
    pub redis: RedisConfig,
    /// Incremental sync to ClickHouse (off unless `clickhouse.url` is set).
    pub clickhouse: ClickhouseConfig,
    /// Periodic integrity checks.
    pub integrity: IntegrityConfig,
    /// Start-up recovery.
    pub recovery: RecoveryConfig,
    /// The commit log: where acknowledged changes are durable before DuckDB has them.
    pub commit_log: CommitLogConfig,
    /// Every version of every trade (`GET /v1/trades/{id}/history`).
    pub history: HistoryConfig,
}

/// How long the history keeps versions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Versions written longer ago than this are deleted (about once a minute);
    /// `0s` keeps every version forever.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig { retention: Duration::from_secs(30 * 24 * 3600) }
    }
}

/// The commit log (docs/durability.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CommitLogConfig {
    /// Directory of the segments (default `<data_dir>/log`); may be a volume of its own,
    /// as database operators offer for a WAL.
    pub dir: Option<PathBuf>,
    /// Size of one segment, zero-filled before use (default 64 MiB, at least 1 MiB).
    pub segment_bytes: u64,
}

impl Default for CommitLogConfig {
    fn default() -> Self {
        CommitLogConfig { dir: None, segment_bytes: 64 << 20 }
    }
}

/// Start-up recovery: how long it waits for the journal, and whether it may come up
/// without proof that it restored every change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// How long start-up waits for Redis when it needs the journal: to rebuild a file,
    /// or to check that the store does not end below the journal.
    #[serde(with = "humantime_serde")]
    pub journal_wait: Duration,
    /// Come up even when recovery cannot prove it holds every change (journal
    /// unreachable, empty or trimmed past the snapshot); the recovery report then says
    /// `complete: false` and why. Off: start-up fails with that reason instead.
    pub accept_data_loss: bool,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig { journal_wait: Duration::from_secs(30), accept_data_loss: false }
    }
}

/// Integrity check schedule and what a failure does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IntegrityConfig {
    /// Pause between checks (seed: every minute); 0s disables them.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// What a failed check does besides failing readiness.
    pub on_failure: OnIntegrityFailure,
}

/// Reaction to a failed integrity check.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnIntegrityFailure {
    /// Fail readiness, log and report; a human decides.
    Report,
    /// Also quarantine the database file and restart into recovery (newest verified
    /// snapshot + Redis journal), but only once the journal holds every committed
    /// change, so that nothing acknowledged is lost.
    Recover,
}

impl Default for IntegrityConfig {
    fn default() -> Self {
        IntegrityConfig { interval: Duration::from_secs(60), on_failure: OnIntegrityFailure::Report }
    }
}

/// ClickHouse sync settings. The password comes from `TRADESTORE_CLICKHOUSE_PASSWORD`
/// or `clickhouse.password_file`, never from this file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClickhouseConfig {
    /// HTTP endpoint, e.g. `http://clickhouse:8123`; the sync is off when unset.
    pub url: Option<String>,
    /// Database of the target table.
    pub database: String,
    /// Target table (created if missing).
    pub table: String,
    /// User.
    pub user: String,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
    /// Pause between sync rounds (seed: 5 min; the latency target is 500 ms).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Most changes per insert.
    pub batch_size: usize,
    /// Retry pauses after consecutive failures, in milliseconds; the last repeats.
    pub backoff_ms: Vec<u64>,
    /// Consecutive failures after which the sync reports itself degraded (seed: 5).
    pub degraded_after: u32,
    /// Let the client validate row types against the server schema. Needs a server
    /// with `RowBinaryWithNamesAndTypes` (not ClickHouse 18.16); off by default.
    pub validation: bool,
}

impl Default for ClickhouseConfig {
    fn default() -> Self {
        ClickhouseConfig {
            url: None,
            database: "default".into(),
            table: "trades".into(),
            user: "default".into(),
            password_file: None,
            interval: Duration::from_millis(500),
            batch_size: 10_000,
            backoff_ms: vec![5_000, 15_000, 30_000, 60_000],
            degraded_after: 5,
            validation: false,
        }
    }
}

impl ClickhouseConfig {
    /// The retry schedule.
    pub(crate) fn backoff(&self) -> Vec<Duration> {
        self.backoff_ms.iter().map(|ms| Duration::from_millis(*ms)).collect()
    }
}

/// Redis journal settings. The password never lives in the file: it comes from
/// `TRADESTORE_REDIS_PASSWORD` or `redis.password_file` (a mounted Secret).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// e.g. `redis://redis.default.svc:6379/0`; the journal is off when unset.
    pub url: Option<String>,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
    /// Prefix of every key the sidecar writes.
    pub key_prefix: String,
    /// How long journal entries are kept (seed: 1 h).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Changes sent per `MULTI`/`EXEC`.
    pub batch_size: usize,
    /// Slowest retry pace while Redis is unreachable.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Longest wait for a connection or a reply; a stalled Redis then counts as down.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: None,
            password_file: None,
            key_prefix: "tradestore".into(),
            retention: Duration::from_secs(3600),
            batch_size: 1000,
            max_backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
        }
    }
}

/// Where snapshots go, when they are taken and how long they are kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// Directory of snapshots (in Kubernetes a second volume, not the data volume).
    /// With `s3` set it is the staging area: each snapshot is written here, uploaded,
    /// and only the newest stays here (for fast recovery and the integrity check).
    pub dir: PathBuf,
    /// Always keep at least this many of the newest snapshots.
    pub keep_last: usize,
    /// Older snapshots beyond `keep_last` are pruned once older than this (seed: 1 h);
    /// `0s` keeps nothing beyond `keep_last`.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Cron schedule of automatic snapshots, UTC: 5 fields (e.g. `0 * * * *`) or 6
    /// with leading seconds; none when unset.
    pub schedule: Option<String>,
    /// When the database file does not exist at start, restore this snapshot first
    /// (checksum verified) instead of starting empty: a snapshot directory path, or a
    /// snapshot id looked up in `dir` and then in `s3`.
    pub bootstrap_from: Option<String>,
    /// Also keep snapshots in an S3-compatible object store.
    pub s3: Option<S3Config>,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            dir: PathBuf::from("./snapshots"),
            keep_last: 3,
            max_age: Duration::from_secs(3600),
            schedule: None,
            bootstrap_from: None,
            s3: None,
        }
    }
}

/// An S3-compatible bucket. Credentials come from the standard `AWS_ACCESS_KEY_ID` /
/// `AWS_SECRET_ACCESS_KEY` (and optional `AWS_SESSION_TOKEN`) variables, never from
/// this file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix under which snapshots live (`<prefix>/<id>/...`).
    #[serde(default)]
    pub prefix: String,
    /// Endpoint of a non-AWS store, e.g. `http://minio:9000`; AWS when unset.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region.
    #[serde(default = "default_region")]
    pub region: String,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `tradestore_sidecar=debug`.
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// DuckDB engine and durability settings (see docs/durability.md for how the seed
/// PRAGMAs map onto these).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DuckdbConfig {
    /// `SET threads` (seed: 4).
    pub threads: u32,
    /// `SET memory_limit`, e.g. `1GiB`; DuckDB's default (80% of RAM) when unset.
    pub memory_limit: Option<String>,
    /// `SET checkpoint_threshold` in bytes (`wal_autocheckpoint` is its alias):
    /// DuckDB checkpoints automatically once the WAL passes it.
    pub checkpoint_threshold_bytes: u64,
    /// The writer runs an explicit `CHECKPOINT` after this many commits
    /// (seed: 5,000 transactions). 0 disables the count trigger.
    pub checkpoint_every_commits: u64,
    /// Hard ceiling: the writer checkpoints whenever the WAL file exceeds this (seed: 256 MB).
    pub max_wal_bytes: u64,
}

/// The single writer and its queue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WriterConfig {
    /// How many group-commit batches may wait behind the one being committed
    /// (seed `queue_size: 10`). The queue holds `queue_batches × max_batch_requests`
    /// requests; when full, writes get 503 with Retry-After.
    pub queue_batches: usize,
    /// Most requests folded into one transaction.
    pub max_batch_requests: usize,
    /// Committed trades kept in memory for hot reads.
    pub recent_trades: usize,
    /// Most acknowledged changes DuckDB may lag behind; past it the writer waits
    /// (the queue fills, then writes get 503 with Retry-After).
    pub max_apply_backlog: usize,
}

/// Read connections.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReaderConfig {
    /// Read connection pool size (seed: 10).
    pub pool_size: u32,
    /// How long a read waits for a free connection before 503.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// Most trades one list request returns.
    pub max_list_limit: usize,
}

/// HTTP request limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest accepted request body.
    pub max_body_bytes: u64,
    /// Most trades in one batch insert.
    pub max_batch_trades: usize,
    /// How long a write waits for its commit before answering 503 (the write
    /// may still commit; the client should re-read before retrying).
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// A request head must be complete this long after its first byte.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A request body must be complete this long after its head (else 408).
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// A keep-alive connection with no request in progress is closed after this long.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Connections open at once (lowered to fit the file descriptor limit).
    pub max_connections: usize,
    /// On shutdown: how long the listener keeps accepting (writes get 503), and then
    /// how long connections stalled mid-request get before they are closed; each at
    /// most a quarter of `lifecycle.shutdown_grace`, so the final commit and checkpoint fit.
    #[serde(with = "humantime_serde")]
    pub shutdown_drain: Duration,
}

/// Bearer-token authentication.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// File holding the token (e.g. a mounted Kubernetes Secret). Mutating routes
    /// require `Authorization: Bearer <token>` when a token is configured.
    pub token_file: Option<PathBuf>,
    /// Also require the token for reads.
    pub protect_reads: bool,
}

/// Liveness deadline and shutdown grace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// `/healthz` fails when the writer has not made progress for this long
    /// (seed: unresponsive 10 s → restart).
    #[serde(with = "humantime_serde")]
    pub liveness_deadline: Duration,
    /// On SIGTERM: finish queued writes, checkpoint and exit within this time.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            database_file: "trades.duckdb".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], PORT)),
            log: LogConfig::default(),
            duckdb: DuckdbConfig::default(),
            writer: WriterConfig::default(),
            reader: ReaderConfig::default(),
            http: HttpConfig::default(),
            auth: AuthConfig::default(),
            lifecycle: LifecycleConfig::default(),
            snapshots: SnapshotConfig::default(),
            redis: RedisConfig::default(),
            clickhouse: ClickhouseConfig::default(),
            integrity: IntegrityConfig::default(),
            recovery: RecoveryConfig::default(),
            commit_log: CommitLogConfig::default(),
            history: HistoryConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: "info".into() }
    }
}

impl Default for DuckdbConfig {
    fn default() -> Self {
        DuckdbConfig {
            threads: 4,
            memory_limit: None,
            checkpoint_threshold_bytes: 16 * 1024 * 1024,
            checkpoint_every_commits: 5_000,
            max_wal_bytes: 256 * 1024 * 1024,
        }
    }
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig { queue_batches: 10, max_batch_requests: 256, recent_trades: 10_000, max_apply_backlog: 100_000 }
    }
}

impl Default for ReaderConfig {
    fn default() -> Self {
        ReaderConfig { pool_size: 10, acquire_timeout: Duration::from_secs(2), max_list_limit: 10_000 }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 4 * 1024 * 1024,
            max_batch_trades: 10_000,
            write_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            shutdown_drain: Duration::from_secs(2),
        }
    }
}

impl HttpConfig {
    fn validate(&self) -> Result<()> {
        let timeouts = [
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("idle_timeout", self.idle_timeout),
        ];
        if let Some((name, _)) = timeouts.iter().find(|(_, d)| *d < Duration::from_millis(100)) {
            return Err(Error::Config(format!("http.{name} must be at least 100ms")));
        }
        if self.max_connections == 0 {
            return Err(Error::Config("http.max_connections must be >= 1".into()));
        }
        Ok(())
    }
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig { liveness_deadline: Duration::from_secs(10), shutdown_grace: Duration::from_secs(25) }
    }
}

impl Config {
    /// Loads the file (if any), applies environment overrides from `env`, validates.
    pub fn load(file: Option<&Path>, env: HashMap<String, String>) -> Result<Self> {
        let mut builder = config::Config::builder()
            .add_source(config::Config::try_from(&Config::default()).map_err(|e| Error::Config(e.to_string()))?);
        if let Some(path) = file {
            if !path.is_file() {
                return Err(Error::Config(format!("config file {} does not exist", path.display())));
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Yaml));
        }
        let overrides: HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| {
                k.starts_with(&format!("{ENV_PREFIX}_"))
                    && ![TOKEN_ENV, CONFIG_ENV, REDIS_PASSWORD_ENV, CLICKHOUSE_PASSWORD_ENV].contains(&k.as_str())
            })
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(overrides)),
        );
        let cfg: Config =
            builder.build().and_then(|c| c.try_deserialize()).map_err(|e| Error::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges and cross-field rules, section by section.
    pub(crate) fn validate(&self) -> Result<()> {
        self.duckdb.validate()?;
        self.validate_queues()?;
        self.http.validate()?;
        if self.database_file.is_empty() || self.database_file.contains('/') {
            return bad("database_file must be a plain file name".into());
        }
        self.redis.validate()?;
        self.clickhouse.validate()?;
        self.snapshots.validate()?;
        if self.integrity.on_failure == OnIntegrityFailure::Recover && self.redis.url.is_none() {
            return bad(
                "integrity.on_failure: recover needs the Redis journal (redis.url): without it recovery would \
                 lose every change since the last snapshot"
                    .into(),
            );
        }
        if self.lifecycle.liveness_deadline < Duration::from_secs(1) {
            return bad("lifecycle.liveness_deadline must be at least 1s".into());
        }
        Ok(())
    }

    /// The writer queue, the read pool and the batch limits.
    fn validate_queues(&self) -> Result<()> {
        if self.writer.queue_batches == 0 || self.writer.max_batch_requests == 0 {
            return bad("writer.queue_batches and writer.max_batch_requests must be >= 1".into());
        }
        if self.writer.max_apply_backlog == 0 {
            return bad("writer.max_apply_backlog must be >= 1".into());
        }
        if self.commit_log.segment_bytes < 1 << 20 {
            return bad("commit_log.segment_bytes must be at least 1 MiB (1048576)".into());
        }
        if self.http.max_batch_trades > self.group_limit() {
            return bad(format!(
                "http.max_batch_trades {} does not fit a commit-log group at commit_log.segment_bytes {} \
                 (at most {}): raise the segment size",
                self.http.max_batch_trades,
                self.commit_log.segment_bytes,
                self.group_limit()
            ));
        }
        if self.reader.pool_size == 0 || self.reader.pool_size > 256 {
            return bad("reader.pool_size must be 1..=256".into());
        }
        if self.reader.max_list_limit == 0 || self.http.max_batch_trades == 0 {
            return bad("reader.max_list_limit and http.max_batch_trades must be >= 1".into());
        }
        if self.http.max_body_bytes < 1024 {
            return bad("http.max_body_bytes must be at least 1024".into());
        }
        Ok(())
    }

    /// Full path of the database file.
    pub(crate) fn database_path(&self) -> PathBuf {
        self.data_dir.join(&self.database_file)
    }

    /// Where the commit log's segments live.
    pub(crate) fn commit_log_dir(&self) -> PathBuf {
        self.commit_log.dir.clone().unwrap_or_else(|| self.data_dir.join("log"))
    }

    /// Most changes one commit-log group holds: half a segment of the largest record
    /// a trade makes (ids and symbols are bounded, so a trade's image is under 512 bytes).
    pub(crate) fn group_limit(&self) -> usize {
        (self.commit_log.segment_bytes / 2 / 512) as usize
    }

    /// Capacity of the writer queue in requests.
    pub(crate) fn queue_capacity(&self) -> usize {
        self.writer.queue_batches * self.writer.max_batch_requests
    }

    /// Reads the API token: the environment first, then `auth.token_file`.
    pub(crate) fn api_token(&self, env: &HashMap<String, String>) -> Result<Option<String>> {
        if let Some(t) = env.get(TOKEN_ENV) {
            return non_empty(t.trim(), TOKEN_ENV).map(Some);
        }
        match &self.auth.token_file {
            None => Ok(None),
            Some(path) => {
                let raw = std::fs::read_to_string(path)
                    .map_err(|e| Error::Config(format!("auth.token_file {}: {e}", path.display())))?;
                non_empty(raw.trim(), &path.display().to_string()).map(Some)
            }
        }
    }

    /// Reads the Redis password: the environment first, then `redis.password_file`.
    pub(crate) fn redis_password(&self, env: &HashMap<String, String>) -> Result<Option<String>> {
        secret(env, REDIS_PASSWORD_ENV, self.redis.password_file.as_deref(), "redis.password_file")
    }

    /// Reads the ClickHouse password: the environment first, then `clickhouse.password_file`.
    pub(crate) fn clickhouse_password(&self, env: &HashMap<String, String>) -> Result<Option<String>> {
        secret(env, CLICKHOUSE_PASSWORD_ENV, self.clickhouse.password_file.as_deref(), "clickhouse.password_file")
    }
}

/// A configuration error with `msg`.
fn bad(msg: String) -> Result<()> {
    Err(Error::Config(msg))
}

impl DuckdbConfig {
    fn validate(&self) -> Result<()> {
        if !(1..=256).contains(&self.threads) {
            return bad(format!("duckdb.threads must be 1..=256, got {}", self.threads));
        }
        if self.checkpoint_threshold_bytes < 64 * 1024 {
            return bad("duckdb.checkpoint_threshold_bytes must be at least 65536".into());
        }
        if self.max_wal_bytes < self.checkpoint_threshold_bytes {
            return bad("duckdb.max_wal_bytes must be >= duckdb.checkpoint_threshold_bytes".into());
        }
        if let Some(m) = &self.memory_limit {
            let bytes = parse_size(m).map_err(|e| Error::Config(format!("duckdb.memory_limit: {e}")))?;
            if bytes < MIN_MEMORY_LIMIT {
                return bad(format!(
                    "duckdb.memory_limit {m:?} is below the minimum of {} MiB: DuckDB cannot run the store's \
                     queries in less (it runs out of memory and may invalidate the database)",
                    MIN_MEMORY_LIMIT >> 20
                ));
            }
        }
        Ok(())
    }
}

impl RedisConfig {
    fn validate(&self) -> Result<()> {
        if self.timeout < Duration::from_millis(10) {
            return bad("redis.timeout must be at least 10ms".into());
        }
        if self.batch_size == 0 || self.key_prefix.is_empty() {
            return bad("redis.batch_size must be >= 1 and redis.key_prefix non-empty".into());
        }
        if let Some(url) = &self.url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return bad(format!("redis.url {url:?} must start with redis:// or rediss://"));
        }
        Ok(())
    }
}

impl ClickhouseConfig {
    fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.backoff_ms.is_empty() || self.degraded_after == 0 {
            return bad(
                "clickhouse.batch_size, clickhouse.backoff_ms and clickhouse.degraded_after must be non-empty/>= 1"
                    .into(),
            );
        }
        let ident = |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident(&self.table) || !ident(&self.database) {
            return bad("clickhouse.table and clickhouse.database must be plain identifiers".into());
        }
        Ok(())
    }
}

impl SnapshotConfig {
    fn validate(&self) -> Result<()> {
        if self.keep_last == 0 {
            return bad("snapshots.keep_last must be >= 1".into());
        }
        if let Some(expr) = &self.schedule {
            parse_schedule(expr)?;
        }
        if let Some(s3) = &self.s3 {
            if s3.bucket.is_empty() {
                return bad("snapshots.s3.bucket must not be empty".into());
            }
            if let Some(e) = &s3.endpoint
                && !(e.starts_with("http://") || e.starts_with("https://"))
            {
                return bad(format!("snapshots.s3.endpoint {e:?} must start with http:// or https://"));
            }
        }
        Ok(())
    }
}

/// Parses a cron expression, UTC: 5 fields (minute hour day-of-month month
/// day-of-week), or 6 with a leading seconds field.
pub(crate) fn parse_schedule(expr: &str) -> Result<Cron> {
    let fields = expr.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(Error::Config(format!(
            "snapshots.schedule {expr:?}: expected 5 cron fields (minute hour day month weekday) or 6 with \
             leading seconds, got {fields}"
        )));
    }
    expr.parse::<Cron>().map_err(|e| Error::Config(format!("snapshots.schedule {expr:?}: {e}")))
}

/// Smallest accepted `duckdb.memory_limit`. Measured with DuckDB 1.5.6, 4 threads and
/// batches of 1,000 trades (docs/sidecar.md, "Memory"): with 3 MB the first batch fails,
/// with 8 MiB writes fail after 16,000 trades and 12 MiB after 50,000, each time with
/// `Out of Memory Error`. 16 MiB is the least that runs a small store; the primary-key
/// index grows with the store, so real stores need more (200,000 trades: 32 MiB).
pub(crate) const MIN_MEMORY_LIMIT: u64 = 16 << 20;

/// Parses a size the way DuckDB's `memory_limit` reads it: a number (decimals allowed)
/// and a unit: `B`, `KB`/`MB`/`GB`/`TB` (powers of 1000, also `K`, `M`, `G`, `T`) or
/// `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024), case-insensitive, spaces allowed between.
/// Percentages are refused: DuckDB 1.5's configuration API rejects them.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim());
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a size like 512MiB or 2GB"))?;
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "%" => return Err(format!("{text:?}: percentages are not accepted; give a size like 512MiB")),
        "" => return Err(format!("{text:?} has no unit; give a size like 512MiB or 2GB")),
        other => return Err(format!("{text:?}: unknown unit {other:?} (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")),
    };
    Ok((value * multiplier as f64) as u64)
}

fn secret(env: &HashMap<String, String>, var: &str, file: Option<&Path>, key: &str) -> Result<Option<String>> {
    if let Some(p) = env.get(var) {
        return Ok(Some(p.trim().to_string()));
    }
    match file {
        None => Ok(None),
        Some(path) => std::fs::read_to_string(path)
            .map(|p| Some(p.trim().to_string()))
            .map_err(|e| Error::Config(format!("{key} {}: {e}", path.display()))),
    }
}

fn non_empty(token: &str, source: &str) -> Result<String> {
    if token.len() < 16 {
        return Err(Error::Config(format!("API token from {source} must be at least 16 characters")));
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn write(yaml: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), yaml).unwrap();
        f
    }

    #[test]
    fn defaults_follow_the_seeds() {
        let c = Config::load(None, HashMap::new()).unwrap();
        assert_eq!(c.duckdb.threads, 4);
        assert_eq!(c.writer.queue_batches, 10);
        assert_eq!(c.reader.pool_size, 10);
        assert_eq!(c.duckdb.checkpoint_every_commits, 5_000);
        assert_eq!(c.duckdb.max_wal_bytes, 256 * 1024 * 1024);
        assert_eq!(c.lifecycle.liveness_deadline, Duration::from_secs(10));
    }

    #[test]
    fn file_then_environment_override() {
        let f = write("duckdb:\n  threads: 2\nlifecycle:\n  shutdown_grace: 5s\nlisten: 0.0.0.0:9000\n");
        let c = Config::load(Some(f.path()), env(&[("TRADESTORE_DUCKDB__THREADS", "8"), ("OTHER", "x")])).unwrap();
        assert_eq!(c.duckdb.threads, 8);
        assert_eq!(c.lifecycle.shutdown_grace, Duration::from_secs(5));
        assert_eq!(c.listen.port(), 9000);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_clear_errors() {
        let typo = write("duckdb:\n  thread: 2\n");
        let e = Config::load(Some(typo.path()), HashMap::new()).unwrap_err().to_string();
        assert!(e.contains("thread"), "{e}");
        let range = write("duckdb:\n  threads: 0\n");
        let e = Config::load(Some(range.path()), HashMap::new()).unwrap_err().to_string();
        assert!(e.contains("duckdb.threads"), "{e}");
        let e = Config::load(None, env(&[("TRADESTORE_LISTEN", "nope")])).unwrap_err().to_string();
        assert!(e.contains("listen"), "{e}");
        let e = Config::load(Some(Path::new("/nonexistent.yaml")), HashMap::new()).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
    }

    #[test]
    fn sizes_parse_like_duckdb_reads_them() {
        let ok = [
            ("512MiB", 512 << 20),
            ("2GB", 2_000_000_000),
            ("1.5 GiB", 3 << 29),
            ("64mib", 64 << 20),
            ("100M", 100_000_000),
            ("4096 B", 4096),
            ("1TiB", 1 << 40),
            ("8k", 8_000),
        ];
        for (text, bytes) in ok {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for bad in ["", "MB", "100", "50%", "1.2.3GB", "12 parsecs", "-1GB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_memory_limit_too_small_to_run_is_refused() {
        let limit = |v: &str| Config::load(None, env(&[("TRADESTORE_DUCKDB__MEMORY_LIMIT", v)]));
        for small in ["3MB", "8MiB", "16MB", "15.9MiB"] {
            let e = limit(small).unwrap_err().to_string();
            assert!(e.contains("duckdb.memory_limit") && e.contains("minimum of 16 MiB"), "{small}: {e}");
        }
        assert!(limit("ten").unwrap_err().to_string().contains("not a size"));
        assert_eq!(limit("16MiB").unwrap().duckdb.memory_limit.as_deref(), Some("16MiB"));
        assert!(limit("2GB").is_ok());
    }

    #[test]
    fn schedules_are_five_field_cron() {
        use chrono::Utc;
        let every_hour = parse_schedule("0 * * * *").unwrap();
        let from = chrono::DateTime::parse_from_rfc3339("2026-01-01T10:20:00Z").unwrap().with_timezone(&Utc);
        let next = every_hour.find_next_occurrence(&from, false).unwrap();
        assert_eq!(next.to_rfc3339(), "2026-01-01T11:00:00+00:00");
        let every_two_seconds = parse_schedule("*/2 * * * * *").unwrap();
        let next = every_two_seconds.find_next_occurrence(&from, false).unwrap();
        assert_eq!(next.to_rfc3339(), "2026-01-01T10:20:02+00:00");
        for bad in ["* * * *", "0 0 * * * * 2026", "61 * * * *", "nonsense"] {
            assert!(parse_schedule(bad).unwrap_err().to_string().contains("snapshots.schedule"), "{bad}");
        }
    }

    #[test]
    fn token_comes_from_env_or_file_and_must_be_long_enough() {
        let c = Config::load(None, HashMap::new()).unwrap();
        assert_eq!(c.api_token(&HashMap::new()).unwrap(), None);
        let e = env(&[(TOKEN_ENV, "0123456789abcdef")]);
        assert_eq!(c.api_token(&e).unwrap().as_deref(), Some("0123456789abcdef"));
        assert!(c.api_token(&env(&[(TOKEN_ENV, "short")])).is_err());
        let f = write("fedcba9876543210\n");
        let mut c2 = c.clone();
        c2.auth.token_file = Some(f.path().to_path_buf());
        assert_eq!(c2.api_token(&HashMap::new()).unwrap().as_deref(), Some("fedcba9876543210"));
    }
}
