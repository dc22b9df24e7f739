//! The spec's defaults in one place: the functions serde and the schema call for a missing field,
//! and the `Default` impls of sections that may be left out as a whole (each built from the same
//! functions, so the two can never disagree). Where a field is a sidecar setting under another
//! name, its default is the sidecar's ([`tradestore_api::config`]), so a spec that leaves it out
//! renders nothing for it.

use std::time::Duration;

use tradestore_api::config::{
    DEFAULT_REGION, DuckdbConfig, HttpConfig, IntegrityConfig, LifecycleConfig, LogConfig, ReaderConfig, WriterConfig,
};

use super::spec::{
    BackupRetention, DuckdbSpec, IntegrityCheckSpec, IntegrityFailurePolicy, LimitsSpec, LogFormat, LogSpec,
    ProbesSpec, RestartPolicySpec,
};

pub(super) fn default_true() -> bool {
    true
}
pub(super) fn default_shutdown_grace() -> i64 {
    seconds(LifecycleConfig::default().shutdown_grace)
}
pub(super) fn default_uid() -> i64 {
    65532
}
pub(super) fn default_checkpoint_threshold() -> i64 {
    signed(DuckdbConfig::default().checkpoint_threshold_bytes)
}
pub(super) fn default_checkpoint_every() -> i64 {
    signed(DuckdbConfig::default().checkpoint_every_commits)
}
pub(super) fn default_max_wal() -> i64 {
    signed(DuckdbConfig::default().max_wal_bytes)
}
pub(super) fn default_queue_batches() -> i64 {
    signed(WriterConfig::default().queue_batches)
}
pub(super) fn default_max_batch_requests() -> i64 {
    signed(WriterConfig::default().max_batch_requests)
}
pub(super) fn default_recent_trades() -> i64 {
    signed(WriterConfig::default().recent_trades)
}
pub(super) fn default_pool_size() -> i32 {
    signed(ReaderConfig::default().pool_size)
}
pub(super) fn default_acquire_timeout_ms() -> i64 {
    signed(ReaderConfig::default().acquire_timeout.as_millis())
}
pub(super) fn default_max_list_limit() -> i64 {
    signed(ReaderConfig::default().max_list_limit)
}
pub(super) fn default_max_body_bytes() -> i64 {
    signed(HttpConfig::default().max_body_bytes)
}
pub(super) fn default_max_batch_trades() -> i64 {
    signed(HttpConfig::default().max_batch_trades)
}
pub(super) fn default_write_timeout() -> i64 {
    seconds(HttpConfig::default().write_timeout)
}
pub(super) fn default_period() -> i32 {
    5
}
pub(super) fn default_probe_timeout() -> i32 {
    2
}
pub(super) fn default_unresponsive() -> i32 {
    seconds(LifecycleConfig::default().liveness_deadline)
}
pub(super) fn default_readiness_failures() -> i32 {
    2
}
pub(super) fn default_startup() -> i32 {
    300
}
pub(super) fn default_max_restarts() -> i32 {
    3
}
pub(super) fn default_window() -> i64 {
    600
}
pub(super) fn default_log_level() -> String {
    LogConfig::default().level
}
pub(super) fn default_keep_last() -> i32 {
    24
}
pub(super) fn default_integrity_interval() -> i64 {
    seconds(IntegrityConfig::default().interval)
}
pub(super) fn default_region() -> String {
    DEFAULT_REGION.into()
}

/// A sidecar default (unsigned) as the CRD's signed type: the defaults are small numbers.
fn signed<S: Copy + std::fmt::Debug, T: TryFrom<S>>(v: S) -> T {
    T::try_from(v).unwrap_or_else(|_| panic!("the sidecar default {v:?} fits the CRD's type"))
}

/// A sidecar duration default in whole seconds.
fn seconds<T: TryFrom<u64>>(d: Duration) -> T {
    signed(d.as_secs())
}

impl Default for BackupRetention {
    fn default() -> Self {
        BackupRetention { keep_last: default_keep_last(), max_age_hours: 0 }
    }
}

impl Default for DuckdbSpec {
    fn default() -> Self {
        DuckdbSpec {
            threads: None,
            memory_limit: None,
            checkpoint_threshold_bytes: default_checkpoint_threshold(),
            checkpoint_every_commits: default_checkpoint_every(),
            max_wal_bytes: default_max_wal(),
            idle_checkpoint_after_millis: None,
        }
    }
}

impl Default for LimitsSpec {
    fn default() -> Self {
        LimitsSpec {
            queue_batches: default_queue_batches(),
            max_batch_requests: default_max_batch_requests(),
            recent_trades: default_recent_trades(),
            pool_size: default_pool_size(),
            acquire_timeout_millis: default_acquire_timeout_ms(),
            max_list_limit: default_max_list_limit(),
            max_body_bytes: default_max_body_bytes(),
            max_batch_trades: default_max_batch_trades(),
            write_timeout_seconds: default_write_timeout(),
        }
    }
}

impl Default for ProbesSpec {
    fn default() -> Self {
        ProbesSpec {
            period_seconds: default_period(),
            timeout_seconds: default_probe_timeout(),
            unresponsive_seconds: default_unresponsive(),
            readiness_failure_threshold: default_readiness_failures(),
            startup_seconds: default_startup(),
        }
    }
}

impl Default for RestartPolicySpec {
    fn default() -> Self {
        RestartPolicySpec { max_restarts: default_max_restarts(), window_seconds: default_window() }
    }
}

impl Default for LogSpec {
    fn default() -> Self {
        LogSpec { format: LogFormat::default(), level: default_log_level() }
    }
}

impl Default for IntegrityCheckSpec {
    fn default() -> Self {
        IntegrityCheckSpec {
            interval_seconds: default_integrity_interval(),
            on_failure: IntegrityFailurePolicy::default(),
        }
    }
}
