//! The sidecar's configuration file (`sidecar.yaml`), rendered from the spec into the api
//! crate's [`Config`], the type the sidecar itself loads.
//!
//! The file holds only what differs from the sidecar's defaults ([`Config::default`], the
//! one set of defaults): the mount paths, the listen address, and the spec's values where
//! they are not the defaults. So a sidecar image older than the operator is never handed a
//! key it does not know (it rejects unknown keys) unless the spec asks for that setting.
//! Secrets (Redis and ClickHouse URLs, credentials) are never rendered here: they reach the
//! sidecar as environment variables from Secrets (the pod builder, `crate::build`).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use tradestore_api::config::{
    Config, ConfigError, LogFormat as SidecarLogFormat, OnIntegrityFailure, S3Config, SnapshotConfig,
};
use tradestore_api::wire::{self, mount};

use crate::crd::{IntegrityFailurePolicy, LogFormat, TradeStoreSpec};

/// The configuration the sidecar of `spec` runs with.
pub fn render(spec: &TradeStoreSpec) -> Config {
    let mut c = Config {
        data_dir: mount::DATA_DIR.into(),
        listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, wire::PORT)),
        snapshots: snapshots(spec),
        ..Config::default()
    };
    c.log.format = match spec.log.format {
        LogFormat::Json => SidecarLogFormat::Json,
        LogFormat::Text => SidecarLogFormat::Text,
    };
    c.log.level = spec.log.level.clone();
    engine(spec, &mut c);
    // Unset, the sidecar's default `<data_dir>/log` (on the data volume).
    c.commit_log.dir = spec.commit_log_storage.as_ref().map(|_| mount::COMMIT_LOG_DIR.into());
    c.auth.token_file = Some(mount::TOKEN_PATH.into());
    c.auth.protect_reads = spec.auth.protect_reads;
    c.lifecycle.liveness_deadline = seconds(spec.probes.unresponsive_seconds.into());
    c.lifecycle.shutdown_grace = seconds(spec.shutdown_grace_seconds);
    if let Some(prefix) = spec.redis.as_ref().and_then(|r| r.key_prefix.clone()) {
        c.redis.key_prefix = prefix;
    }
    if let Some(database) = spec.clickhouse.as_ref().and_then(|c| c.database.clone()) {
        c.clickhouse.database = database;
    }
    let integrity = spec.integrity_check.clone().unwrap_or_default();
    c.integrity.interval = seconds(integrity.interval_seconds);
    c.integrity.on_failure = match integrity.on_failure {
        IntegrityFailurePolicy::Report => OnIntegrityFailure::Report,
        IntegrityFailurePolicy::Recover => OnIntegrityFailure::Recover,
    };
    c
}

/// Checks the file rendered for `spec` with the sidecar's own rules, as the sidecar will
/// load it: with the Redis and ClickHouse URLs its environment brings from Secrets (stand-ins
/// here; the operator does not read those Secrets).
pub fn validate(spec: &TradeStoreSpec) -> Result<(), ConfigError> {
    let mut c = render(spec);
    if spec.redis.is_some() {
        c.redis.url = Some("redis://from-a-secret".into());
    }
    if spec.clickhouse.is_some() {
        c.clickhouse.url = Some("http://from-a-secret".into());
    }
    c.validate()
}

/// `spec.duckdb` and `spec.limits`: DuckDB, the writer, the read pool, the HTTP limits.
fn engine(spec: &TradeStoreSpec, c: &mut Config) {
    let (d, l) = (&spec.duckdb, &spec.limits);
    c.duckdb.threads = d.threads.map(|t| count(t.into()));
    c.duckdb.memory_limit = d.memory_limit.clone();
    c.duckdb.checkpoint_threshold_bytes = count(d.checkpoint_threshold_bytes);
    c.duckdb.checkpoint_every_commits = count(d.checkpoint_every_commits);
    c.duckdb.max_wal_bytes = count(d.max_wal_bytes);
    if let Some(ms) = d.idle_checkpoint_after_millis {
        c.duckdb.idle_checkpoint_after = Duration::from_millis(count(ms));
    }
    c.writer.queue_batches = count(l.queue_batches);
    c.writer.max_batch_requests = count(l.max_batch_requests);
    c.writer.recent_trades = count(l.recent_trades);
    c.reader.pool_size = count(l.pool_size.into());
    c.reader.acquire_timeout = Duration::from_millis(count(l.acquire_timeout_millis));
    c.reader.max_list_limit = count(l.max_list_limit);
    c.http.max_body_bytes = count(l.max_body_bytes);
    c.http.max_batch_trades = count(l.max_batch_trades);
    c.http.write_timeout = seconds(l.write_timeout_seconds);
}

fn snapshots(spec: &TradeStoreSpec) -> SnapshotConfig {
    let backup = spec.backup.as_ref();
    // Without spec.backup: the sidecar's keep_last, and nothing kept beyond it.
    let (keep_last, max_age) = match backup {
        Some(b) => (count(b.retention.keep_last.into()), seconds(b.retention.max_age_hours.saturating_mul(3600))),
        None => (SnapshotConfig::default().keep_last, Duration::ZERO),
    };
    let volume = backup.and_then(|b| b.target.volume.as_ref());
    let s3 = backup.and_then(|b| b.target.s3.as_ref()).map(|t| S3Config {
        bucket: t.bucket.clone(),
        prefix: t.prefix.clone().unwrap_or_default(),
        endpoint: t.endpoint.clone(),
        region: t.region.clone(),
    });
    SnapshotConfig {
        dir: if volume.is_some() { mount::BACKUP_DIR } else { mount::SNAPSHOT_STAGING_DIR }.into(),
        keep_last,
        max_age,
        schedule: backup.map(|b| b.schedule.trim().to_string()),
        bootstrap_from: spec.bootstrap.as_ref().map(|b| b.snapshot_id.clone()),
        s3,
    }
}

/// A count or size from the spec (signed in the CRD) as the sidecar's unsigned type.
/// Negative values become 0, which the sidecar's validation then refuses by name (the
/// validate stage runs it on the rendered file); every target type holds any non-negative
/// value of the CRD's field.
fn count<T: TryFrom<i64>>(v: i64) -> T {
    T::try_from(v.max(0)).unwrap_or_else(|_| panic!("{v} does not fit the sidecar's type"))
}

fn seconds(s: i64) -> Duration {
    Duration::from_secs(count(s))
}

/// The YAML file: `config` without the keys that equal the sidecar's defaults.
pub fn to_yaml(config: &Config) -> String {
    let mut doc = serde_json::to_value(config).expect("the sidecar config serializes");
    let defaults = serde_json::to_value(Config::default()).expect("the sidecar config serializes");
    drop_defaults(&mut doc, Some(&defaults));
    let body = serde_saphyr::to_string(&doc).expect("the sidecar config serializes to YAML");
    format!("# Rendered by the TradeStore operator from the TradeStore spec; edits are overwritten.\n{body}")
}

/// Removes from `doc` every value equal to the one at the same place in `defaults`, every
/// null without a default (an absent optional key means the same), and the sections left
/// empty by that.
fn drop_defaults(doc: &mut Value, defaults: Option<&Value>) {
    let Value::Object(fields) = doc else { return };
    fields.retain(|key, value| {
        let default = defaults.and_then(|d| d.get(key));
        drop_defaults(value, default);
        let differs = match default {
            Some(d) => value != d,
            None => !value.is_null(),
        };
        differs && value.as_object().is_none_or(|o| !o.is_empty())
    });
}
