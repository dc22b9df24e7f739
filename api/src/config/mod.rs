//! The sidecar's configuration file (`sidecar.yaml`), defined once. The sidecar reads it
//! (and adds the `TRADESTORE_*` environment overrides and the secrets, which are I/O);
//! the operator renders it from a TradeStore spec. The `Default` impls here are the only
//! defaults (the CRD's defaults are taken from them), [`Config::validate`] is the only set
//! of range rules, and [`schedule::parse`] the only cron rule, so the two sides cannot
//! disagree about what a file means.
//!
//! The sections live with the layer of the sidecar that reads them: [`store`] (DuckDB,
//! writer, reader), [`http`] (limits, auth, lifecycle), [`durability`] (snapshots,
//! integrity, recovery), [`followers`] (Redis journal, ClickHouse sync), [`log`].

mod durability;
mod followers;
mod http;
mod log;
pub mod schedule;
pub mod size;
mod store;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use durability::{DEFAULT_REGION, IntegrityConfig, OnIntegrityFailure, RecoveryConfig, S3Config, SnapshotConfig};
pub use followers::{ClickhouseConfig, RedisConfig};
pub use http::{AuthConfig, HttpConfig, LifecycleConfig, MIN_BODY_BYTES, MIN_LIVENESS_DEADLINE};
pub use log::{LogConfig, LogFormat};
pub use schedule::ScheduleError;
pub use store::{
    CommitLogConfig, DuckdbConfig, HistoryConfig, MAX_APPLY_DELAY, MAX_IDLE_CHECKPOINT_AFTER,
    MIN_CHECKPOINT_THRESHOLD_BYTES, MIN_SEGMENT_BYTES, POOL_SIZE, ReaderConfig, SATURATED_GROUP, THREADS, WriterConfig,
};

use crate::wire;

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
    /// Every version of every trade.
    pub history: HistoryConfig,
}

/// Why a configuration is refused. The text names the key, so a user can find it in the
/// file (or in the `TRADESTORE_*` variable that set it).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value outside its range, or two keys that contradict each other.
    #[error("{0}")]
    Invalid(String),
    /// `snapshots.schedule` is no cron expression.
    #[error("snapshots.schedule {schedule:?}: {source}")]
    Schedule {
        /// The schedule as written.
        schedule: String,
        /// Why it does not parse.
        #[source]
        source: ScheduleError,
    },
}

/// A [`ConfigError::Invalid`] with `msg`.
fn bad(msg: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid(msg.into()))
}

impl Default for Config {
    /// Settings for running the sidecar by hand in a working directory; in a pod the
    /// operator sets the paths to the mount points of [`wire`].
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            database_file: wire::DATABASE_FILE.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], wire::PORT)),
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

impl Config {
    /// Checks ranges and cross-field rules, section by section; the first broken rule
    /// is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.duckdb.validate()?;
        self.validate_queues()?;
        self.http.validate()?;
        if self.database_file.is_empty() || self.database_file.contains('/') {
            return bad("database_file must be a plain file name");
        }
        self.redis.validate()?;
        self.clickhouse.validate()?;
        self.snapshots.validate()?;
        let recover = self.integrity.on_failure == OnIntegrityFailure::Recover;
        if recover && self.snapshots.schedule.is_none() && self.redis.url.is_none() {
            return bad(
                "integrity.on_failure: recover needs snapshots.schedule (or the Redis journal, redis.url): a rebuild \
                 starts from the newest snapshot and replays the commit log after it; without snapshots the log is \
                 trimmed at every checkpoint and there is nothing to rebuild from",
            );
        }
        self.lifecycle.validate()
    }

    /// The writer queue, the read pool and the batch limits: rules across the
    /// `writer`, `reader` and `http` sections.
    fn validate_queues(&self) -> Result<(), ConfigError> {
        if self.writer.queue_batches == 0 || self.writer.max_batch_requests == 0 {
            return bad("writer.queue_batches and writer.max_batch_requests must be >= 1");
        }
        if self.writer.max_apply_backlog == 0 {
            return bad("writer.max_apply_backlog must be >= 1");
        }
        if self.writer.apply_delay > MAX_APPLY_DELAY {
            return bad(format!("writer.apply_delay must be at most {:?}", MAX_APPLY_DELAY));
        }
        if self.writer.apply_delay_saturated > MAX_APPLY_DELAY {
            return bad(format!("writer.apply_delay_saturated must be at most {:?}", MAX_APPLY_DELAY));
        }
        if self.commit_log.segment_bytes < MIN_SEGMENT_BYTES {
            return bad(format!("commit_log.segment_bytes must be at least {MIN_SEGMENT_BYTES} (1 MiB)"));
        }
        if self.http.max_batch_trades > self.commit_log.group_limit() {
            return bad(format!(
                "http.max_batch_trades {} does not fit a commit-log group at commit_log.segment_bytes {} \
                 (at most {}): raise the segment size",
                self.http.max_batch_trades,
                self.commit_log.segment_bytes,
                self.commit_log.group_limit()
            ));
        }
        if !POOL_SIZE.contains(&self.reader.pool_size) {
            return bad(format!("reader.pool_size must be {POOL_SIZE:?}"));
        }
        if self.reader.max_list_limit == 0 || self.http.max_batch_trades == 0 {
            return bad("reader.max_list_limit and http.max_batch_trades must be >= 1");
        }
        if self.http.max_body_bytes < MIN_BODY_BYTES {
            return bad(format!("http.max_body_bytes must be at least {MIN_BODY_BYTES}"));
        }
        Ok(())
    }

    /// Full path of the database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join(&self.database_file)
    }

    /// Where the commit log's segments live.
    pub fn commit_log_dir(&self) -> PathBuf {
        self.commit_log.dir.clone().unwrap_or_else(|| self.data_dir.join("log"))
    }

    /// Capacity of the writer queue in requests.
    pub fn queue_capacity(&self) -> usize {
        self.writer.queue_batches * self.writer.max_batch_requests
    }
}

#[cfg(test)]
mod tests;
