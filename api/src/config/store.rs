//! The store's sections: DuckDB, the single writer, the read pool.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::size::{MIN_MEMORY_LIMIT, parse_size};
use super::{ConfigError, bad};

/// Accepted `duckdb.threads`.
pub const THREADS: RangeInclusive<u32> = 1..=256;
/// Smallest `duckdb.checkpoint_threshold_bytes`: below it DuckDB would checkpoint after
/// nearly every commit.
pub const MIN_CHECKPOINT_THRESHOLD_BYTES: u64 = 64 * 1024;
/// Longest accepted `duckdb.idle_checkpoint_after`.
pub const MAX_IDLE_CHECKPOINT_AFTER: Duration = Duration::from_secs(3600);
/// Accepted `reader.pool_size`.
pub const POOL_SIZE: RangeInclusive<u32> = 1..=256;

/// DuckDB engine and durability settings (see docs/durability.md for how the seed
/// PRAGMAs map onto these).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DuckdbConfig {
    /// `SET threads`; unset: [`DuckdbConfig::threads`] picks one fewer than the CPUs
    /// the process may use. (The seed says 4: on a 2-CPU container that
    /// oversubscribes, DuckDB's scheduler spins, and a small statement costs about 3×
    /// the CPU; see docs/benchmarks.md.)
    pub threads: Option<u32>,
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
    /// The applier runs `CHECKPOINT` once it has had nothing to apply for this long and
    /// DuckDB's WAL holds anything: a checkpoint stops applying while it runs, so it is
    /// better taken in a lull than by DuckDB at a commit of the next burst. `0s` turns
    /// it off (PostgreSQL's `checkpoint_timeout` is the nearest relative).
    #[serde(with = "humantime_serde")]
    pub idle_checkpoint_after: Duration,
}

impl Default for DuckdbConfig {
    fn default() -> Self {
        DuckdbConfig {
            threads: None,
            memory_limit: None,
            checkpoint_threshold_bytes: 16 * 1024 * 1024,
            checkpoint_every_commits: 5_000,
            max_wal_bytes: 256 * 1024 * 1024,
            idle_checkpoint_after: Duration::from_secs(1),
        }
    }
}

impl DuckdbConfig {
    /// The threads DuckDB runs with: `threads` if set, else one fewer than the CPUs
    /// this process may use (its affinity and cgroup CPU quota, as
    /// `available_parallelism` reads them), at least one. One CPU is left to the write
    /// path (HTTP and the writer thread): DuckDB's work is mostly the applier's small
    /// transactions, which a second thread makes dearer, not faster (on 2 CPUs, one
    /// thread costs 20–35% less CPU a transaction and no more wall time).
    pub fn threads(&self) -> u32 {
        self.threads.unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cpus as u32).saturating_sub(1).clamp(*THREADS.start(), *THREADS.end())
        })
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(t) = self.threads
            && !THREADS.contains(&t)
        {
            return bad(format!("duckdb.threads must be {THREADS:?}, got {t}"));
        }
        if self.checkpoint_threshold_bytes < MIN_CHECKPOINT_THRESHOLD_BYTES {
            return bad(format!("duckdb.checkpoint_threshold_bytes must be at least {MIN_CHECKPOINT_THRESHOLD_BYTES}"));
        }
        if self.max_wal_bytes < self.checkpoint_threshold_bytes {
            return bad("duckdb.max_wal_bytes must be >= duckdb.checkpoint_threshold_bytes");
        }
        if self.idle_checkpoint_after > MAX_IDLE_CHECKPOINT_AFTER {
            return bad(format!("duckdb.idle_checkpoint_after must be at most {MAX_IDLE_CHECKPOINT_AFTER:?}"));
        }
        if let Some(m) = &self.memory_limit {
            let bytes = parse_size(m).map_err(|e| ConfigError::Invalid(format!("duckdb.memory_limit: {e}")))?;
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
    /// How long the applier gathers acknowledged changes before one DuckDB
    /// transaction takes them (at most [`MAX_APPLY_DELAY`]; `0s`: at once, unless the log
    /// is saturated — see `apply_delay_saturated`). A DuckDB
    /// transaction costs several ms of CPU whatever it holds (`benches/apply.rs`);
    /// gathering keeps that off the cores the write path needs. A list or history
    /// read that waits for DuckDB cuts the gathering short, so reads never pay it;
    /// followers (Redis, ClickHouse) and the apply lag do.
    #[serde(with = "humantime_serde")]
    pub apply_delay: Duration,
    /// How long a transaction may go on gathering while the log is saturated: while
    /// the groups it took so far average [`SATURATED_GROUP`] changes or more (requests
    /// queue behind the log's flush); at most [`MAX_APPLY_DELAY`], never shorter than
    /// `apply_delay`. Each DuckDB commit writes and syncs DuckDB's WAL on the disk the
    /// log flushes to; fewer of them leave the log's flushes faster when the flush is
    /// what bounds throughput (docs/benchmarks.md, sessions 17 and 18). Reads still cut
    /// the gathering short; followers and the apply lag see up to this much more under
    /// full load. `0s` turns it off (the same as `apply_delay`): for a store whose
    /// followers must trail by less than ~50 ms even under bursts.
    #[serde(with = "humantime_serde")]
    pub apply_delay_saturated: Duration,
}

/// Mean changes a log group at or above which the applier counts the log as saturated.
pub const SATURATED_GROUP: usize = 8;

/// Longest accepted `writer.apply_delay`.
pub const MAX_APPLY_DELAY: Duration = Duration::from_secs(1);

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            queue_batches: 10,
            max_batch_requests: 256,
            recent_trades: 10_000,
            max_apply_backlog: 100_000,
            apply_delay: Duration::from_millis(20),
            apply_delay_saturated: Duration::from_millis(100),
        }
    }
}

/// The commit log (docs/durability.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CommitLogConfig {
    /// Directory of the segments (default `<data_dir>/log`); may be a volume of its own,
    /// as database operators offer for a WAL.
    pub dir: Option<PathBuf>,
    /// Size of one segment, zero-filled before use (default 64 MiB, at least
    /// [`MIN_SEGMENT_BYTES`]).
    pub segment_bytes: u64,
}

/// Smallest `commit_log.segment_bytes`.
pub const MIN_SEGMENT_BYTES: u64 = 1 << 20;

impl Default for CommitLogConfig {
    fn default() -> Self {
        CommitLogConfig { dir: None, segment_bytes: 64 << 20 }
    }
}

impl CommitLogConfig {
    /// Most changes one group holds: half a segment of the largest record a trade
    /// makes (ids and symbols are bounded, so a trade's image is under 512 bytes).
    pub fn group_limit(&self) -> usize {
        (self.segment_bytes / 2 / 512) as usize
    }
}

/// How long the history keeps versions (`GET /v1/trades/{id}/history`).
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

impl Default for ReaderConfig {
    fn default() -> Self {
        ReaderConfig { pool_size: 10, acquire_timeout: Duration::from_secs(2), max_list_limit: 10_000 }
    }
}
