//! The followers' sections: the Redis journal and the ClickHouse sync.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, bad};

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
    pub fn backoff(&self) -> Vec<Duration> {
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

impl RedisConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.timeout < Duration::from_millis(10) {
            return bad("redis.timeout must be at least 10ms");
        }
        if self.batch_size == 0 || self.key_prefix.is_empty() {
            return bad("redis.batch_size must be >= 1 and redis.key_prefix non-empty");
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
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.batch_size == 0 || self.backoff_ms.is_empty() || self.degraded_after == 0 {
            return bad(
                "clickhouse.batch_size, clickhouse.backoff_ms and clickhouse.degraded_after must be non-empty/>= 1",
            );
        }
        let ident = |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident(&self.table) || !ident(&self.database) {
            return bad("clickhouse.table and clickhouse.database must be plain identifiers");
        }
        Ok(())
    }
}
