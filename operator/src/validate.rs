//! Validation of a `TradeStore` beyond what the schema checks. The CEL rules in the CRD catch most
//! of this at admission; the operator checks again so an object created against an older CRD (or
//! with validation off) is reported as Invalid instead of producing a broken pod.

use std::collections::HashSet;

use kube::ResourceExt;

use crate::crd::{IntegrityFailurePolicy, TradeStore};
use crate::resources::SIDECAR_CONTAINER;
use crate::sidecar_config::PORT;

/// Every problem found, one message each (empty: valid).
pub fn validate(ts: &TradeStore) -> Vec<String> {
    let mut errs = Vec::new();
    let s = &ts.spec;
    let name = ts.name_any();
    if !is_dns1035_label(&name) {
        errs.push(format!(
            "metadata.name {name:?} must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter, at most 63 characters): it names the pod and the Service"
        ));
    }
    if s.image.trim().is_empty() {
        errs.push("spec.image must not be empty".into());
    }
    match parse_quantity(&s.storage.size.0) {
        Some(b) if b > 0.0 => {}
        _ => errs.push(format!("spec.storage.size {:?} is not a positive quantity like 10Gi", s.storage.size.0)),
    }
    let d = &s.duckdb;
    if !(1..=256).contains(&d.threads) {
        errs.push(format!("spec.duckdb.threads must be 1..=256, got {}", d.threads));
    }
    if d.checkpoint_threshold_bytes < 65536 {
        errs.push("spec.duckdb.checkpointThresholdBytes must be at least 65536".into());
    }
    if d.max_wal_bytes < d.checkpoint_threshold_bytes {
        errs.push("spec.duckdb.maxWalBytes must be >= spec.duckdb.checkpointThresholdBytes".into());
    }
    if let Some(m) = &d.memory_limit
        && (m.is_empty() || !m.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'))
    {
        errs.push(format!("spec.duckdb.memoryLimit {m:?} is not a size like 512MiB or 2GB"));
    }
    let l = &s.limits;
    if l.queue_batches < 1 || l.max_batch_requests < 1 {
        errs.push("spec.limits.queueBatches and spec.limits.maxBatchRequests must be >= 1".into());
    }
    if !(1..=256).contains(&l.pool_size) {
        errs.push("spec.limits.poolSize must be 1..=256".into());
    }
    if l.max_body_bytes < 1024 {
        errs.push("spec.limits.maxBodyBytes must be at least 1024".into());
    }
    if l.max_list_limit < 1 || l.max_batch_trades < 1 || l.recent_trades < 0 {
        errs.push("spec.limits.maxListLimit and maxBatchTrades must be >= 1, recentTrades >= 0".into());
    }
    if l.acquire_timeout_millis < 1 || l.write_timeout_seconds < 1 {
        errs.push("spec.limits.acquireTimeoutMillis and writeTimeoutSeconds must be >= 1".into());
    }
    let p = &s.probes;
    if p.period_seconds < 1 || p.timeout_seconds < 1 || p.readiness_failure_threshold < 1 || p.startup_seconds < 1 {
        errs.push("spec.probes values must be >= 1".into());
    }
    if p.unresponsive_seconds < p.period_seconds {
        errs.push("spec.probes.unresponsiveSeconds must be >= spec.probes.periodSeconds".into());
    }
    if p.timeout_seconds > p.period_seconds {
        errs.push("spec.probes.timeoutSeconds must be <= spec.probes.periodSeconds".into());
    }
    if s.restart_policy.max_restarts < 1 || s.restart_policy.window_seconds < 10 {
        errs.push("spec.restartPolicy.maxRestarts must be >= 1 and windowSeconds >= 10".into());
    }
    if !(1..=3600).contains(&s.shutdown_grace_seconds) {
        errs.push("spec.shutdownGraceSeconds must be 1..=3600".into());
    }
    if s.log.level.trim().is_empty() {
        errs.push("spec.log.level must not be empty".into());
    }
    if s.run_as_user < 1 {
        errs.push("spec.runAsUser must be a non-root uid (>= 1)".into());
    }
    let mut names = HashSet::new();
    for (i, c) in s.containers.iter().enumerate() {
        if c.name == SIDECAR_CONTAINER {
            errs.push(format!("spec.containers[{i}].name {SIDECAR_CONTAINER:?} is reserved for the sidecar"));
        }
        if !names.insert(c.name.as_str()) {
            errs.push(format!("spec.containers[{i}].name {:?} is used twice", c.name));
        }
        if c.image.as_deref().unwrap_or("").is_empty() {
            errs.push(format!("spec.containers[{i}].image must be set"));
        }
        for port in c.ports.iter().flatten() {
            if port.container_port == PORT {
                errs.push(format!("spec.containers[{i}] uses port {PORT}, which the sidecar listens on"));
            }
        }
    }
    if let Some(b) = &s.backup {
        if b.target.volume.is_some() == b.target.s3.is_some() {
            errs.push("spec.backup.target must set exactly one of volume and s3".into());
        }
        if let Err(e) = parse_schedule(&b.schedule) {
            errs.push(format!("spec.backup.schedule {:?}: {e}", b.schedule));
        }
        if let Some(v) = &b.target.volume
            && v.claim_name == crate::resources::pvc_name(ts)
        {
            errs.push(format!("spec.backup.target.volume.claimName {:?} is the data volume", v.claim_name));
        }
        if let Some(t) = &b.target.s3 {
            errs.extend(validate_s3(t));
        }
    }
    if let Some(b) = &s.bootstrap
        && !is_snapshot_id(&b.snapshot_id)
    {
        errs.push(format!(
            "spec.bootstrap.snapshotId {:?} must be a snapshot id (letters, digits, '.', '_', '-'; no '/')",
            b.snapshot_id
        ));
    }
    if let Some(r) = &s.redis
        && r.key_prefix.as_deref().is_some_and(|p| p.trim().is_empty())
    {
        errs.push("spec.redis.keyPrefix must not be empty when set".into());
    }
    if let Some(c) = &s.clickhouse
        && c.database.as_deref().is_some_and(|d| d.trim().is_empty())
    {
        errs.push("spec.clickhouse.database must not be empty when set".into());
    }
    if s.integrity_check.as_ref().is_some_and(|i| i.on_failure == IntegrityFailurePolicy::Recover) && s.redis.is_none()
    {
        errs.push(
            "spec.integrityCheck.onFailure Recover needs spec.redis: recovery replays the Redis journal on top of \
             the newest snapshot, and without it would lose every change since that snapshot"
                .into(),
        );
    }
    errs
}

/// A 5-field cron expression (minute hour day-of-month month day-of-week, UTC), parsed the way the
/// sidecar parses `snapshots.schedule` (croner, no seconds, no year field).
pub fn parse_schedule(schedule: &str) -> Result<croner::Cron, String> {
    let fields = schedule.split_whitespace().count();
    if fields != 5 {
        return Err(format!("a cron schedule has 5 fields (minute hour day month weekday), not {fields}"));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(schedule)
        .map_err(|e| e.to_string())
}

fn validate_s3(t: &crate::crd::S3Target) -> Vec<String> {
    let mut errs = Vec::new();
    let b = t.bucket.as_bytes();
    let bucket_ok = (3..=63).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric();
    if !bucket_ok {
        errs.push(format!("spec.backup.target.s3.bucket {:?} is not a valid bucket name", t.bucket));
    }
    if let Some(p) = &t.prefix
        && !is_sane_prefix(p)
    {
        errs.push(format!(
            "spec.backup.target.s3.prefix {p:?} must be a relative key prefix like stores/ns/name (no leading '/', no empty, '.' or '..' segments, no spaces)"
        ));
    }
    if let Some(e) = &t.endpoint {
        match reqwest::Url::parse(e) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()) => {}
            _ => errs.push(format!("spec.backup.target.s3.endpoint {e:?} is not an http(s) URL")),
        }
    }
    if t.region.trim().is_empty() {
        errs.push("spec.backup.target.s3.region must not be empty".into());
    }
    errs
}

/// An S3 key prefix: slash-separated segments, no leading slash, no empty / `.` / `..` segments
/// (a single trailing slash is allowed), printable without whitespace.
pub fn is_sane_prefix(p: &str) -> bool {
    let body = p.strip_suffix('/').unwrap_or(p);
    !body.is_empty()
        && p.len() <= 512
        && !p.chars().any(|c| c.is_whitespace() || c.is_control())
        && body.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// A snapshot id as the sidecar names them: one path segment of letters, digits, `.`, `_`, `-`.
pub fn is_snapshot_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 253
        && id != "."
        && id != ".."
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// RFC 1035 label: what a Service name must be.
pub fn is_dns1035_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

/// A Kubernetes quantity in base units (bytes for storage), or None when unparsable.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * mult)
}
