//! The sidecar's integration tests: each module drives the real `sidecar` binary (and
//! real Redis, ClickHouse, S3 and DuckDB files where it needs them) through one concern.
//! One test binary rather than one per module: each would link DuckDB, tokio, warp and
//! the harness again, which cost CI more time to build than most of them take to run.

mod common;

mod api;
mod clickhouse_sync;
mod commit_log;
mod crash;
mod disk_full;
mod exact_followers;
mod exact_state;
mod http_hardening;
mod integrity_recovery;
mod journal;
mod journal_faults;
mod lifecycle;
mod operator_config;
mod s3_backups;
mod snapshots;
