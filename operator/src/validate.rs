//! The validate stage: a `TradeStore` becomes a [`Validated`] store, or a list of [`Problem`]s.
//! The CEL rules in the CRD catch most of these at admission; the operator checks again so an
//! object created against an older CRD (or with validation off) is reported as Invalid instead of
//! producing a broken pod. Later stages take a [`Validated`], so they cannot be handed a spec
//! that was not checked.

use std::collections::HashSet;
use std::fmt;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use tradestore_api::config::{
    ConfigError, MIN_BODY_BYTES, MIN_CHECKPOINT_THRESHOLD_BYTES, POOL_SIZE, ScheduleError, THREADS, schedule,
};

use crate::crd::{IntegrityFailurePolicy, S3Target, TradeStore, TradeStoreSpec, VolumeSpec};
use crate::names::{COMMIT_LOG_CLAIM_ANNOTATION, SIDECAR_CONTAINER, commit_log_pvc_name, pvc_name};
use crate::sidecar::{PORT, config};

/// A store whose spec passed [`validate`], with what validation parsed on the way.
#[derive(Debug)]
pub struct Validated<'a> {
    store: &'a TradeStore,
    schedule: Option<croner::Cron>,
}

impl<'a> Validated<'a> {
    /// The store itself.
    pub fn store(&self) -> &'a TradeStore {
        self.store
    }
    /// `spec.backup.schedule`, parsed (with `spec.backup`).
    pub fn schedule(&self) -> Option<&croner::Cron> {
        self.schedule.as_ref()
    }
}

impl std::ops::Deref for Validated<'_> {
    type Target = TradeStore;
    fn deref(&self) -> &TradeStore {
        self.store
    }
}

/// Everything wrong with a spec, in the order it was found. Its text is the problems joined by
/// `; ` (the status message and the `InvalidSpec` event).
#[derive(Debug)]
pub struct Invalid(pub Vec<Problem>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let texts: Vec<String> = self.0.iter().map(Problem::to_string).collect();
        f.write_str(&texts.join("; "))
    }
}

impl std::error::Error for Invalid {}

/// One thing wrong with a spec.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The name is used for the pod and the Service.
    #[error(
        "metadata.name {0:?} must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter, at most 63 characters): it names the pod and the Service"
    )]
    Name(String),
    /// A field that must not be empty (or blank) is.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// A field that may be left out is set, but blank.
    #[error("{0} must not be empty when set")]
    BlankWhenSet(&'static str),
    /// A number outside its range, or two fields that contradict each other; the text says which.
    #[error("{0}")]
    Range(&'static str),
    /// A range rule whose message names the value found.
    #[error("spec.duckdb.threads must be {THREADS:?}, got {0}")]
    Threads(i32),
    /// `spec.duckdb.checkpointThresholdBytes` is below the sidecar's minimum.
    #[error("spec.duckdb.checkpointThresholdBytes must be at least {MIN_CHECKPOINT_THRESHOLD_BYTES}")]
    CheckpointThreshold,
    /// `spec.limits.poolSize` is outside the sidecar's range.
    #[error("spec.limits.poolSize must be {POOL_SIZE:?}")]
    PoolSize,
    /// `spec.limits.maxBodyBytes` is below the sidecar's minimum.
    #[error("spec.limits.maxBodyBytes must be at least {MIN_BODY_BYTES}")]
    MaxBodyBytes,
    /// A volume's size is no positive quantity.
    #[error("{0} {1:?} is not a positive quantity like 10Gi")]
    Size(&'static str, String),
    /// The commit-log volume cannot hold the segments the sidecar preallocates.
    #[error(
        "spec.commitLogStorage.size {size:?} is too small: the commit log needs at least {min_mib} MiB (its active segment and the spare one filled ahead, {segment_mib} MiB each), and more to keep the segments a checkpoint or snapshot has not released yet"
    )]
    CommitLogTooSmall {
        /// The size as written.
        size: String,
        /// The smallest size accepted, in MiB.
        min_mib: u64,
        /// One segment, in MiB.
        segment_mib: u64,
    },
    /// `spec.commitLogStorage` set on a store whose commit log is on its data volume.
    #[error(
        "spec.commitLogStorage cannot be added to an existing store: its commit log is on the data volume (claim {0}), and a sidecar started on an empty log volume would skip the changes that log holds and the database file does not yet. Remove spec.commitLogStorage again, or create a new store with it and restore a snapshot of this one into it (spec.bootstrap.snapshotId)"
    )]
    CommitLogStorageAdded(String),
    /// `spec.commitLogStorage` removed from a store whose commit log is on a volume of its own.
    #[error(
        "spec.commitLogStorage cannot be removed: the store's commit log is on volume claim {0} (recorded on its data volume), and a sidecar started without it would skip the changes that log holds and the database file does not yet. Set spec.commitLogStorage again"
    )]
    CommitLogStorageRemoved(String),
    /// A commit-log claim left from a database whose data claim is gone.
    #[error(
        "volume claim {log} exists but the data claim {data} does not: it holds the commit log of a database that is gone (e.g. a data claim deleted for a restore), and replaying it into a new database would be wrong. Delete it (kubectl delete pvc {log}) to create the store"
    )]
    StaleCommitLogClaim {
        /// The commit log's claim.
        log: String,
        /// The data claim.
        data: String,
    },
    /// `spec.duckdb.memoryLimit` is no size.
    #[error("spec.duckdb.memoryLimit {0:?} is not a size like 512MiB or 2GB")]
    MemoryLimit(String),
    /// A user container takes the sidecar's name.
    #[error("spec.containers[{0}].name {SIDECAR_CONTAINER:?} is reserved for the sidecar")]
    ReservedContainerName(usize),
    /// Two user containers share a name.
    #[error("spec.containers[{0}].name {1:?} is used twice")]
    DuplicateContainerName(usize, String),
    /// A user container without an image.
    #[error("spec.containers[{0}].image must be set")]
    ContainerImage(usize),
    /// A user container listens on the sidecar's port.
    #[error("spec.containers[{0}] uses port {PORT}, which the sidecar listens on")]
    ContainerPort(usize),
    /// Zero or two backup targets.
    #[error("spec.backup.target must set exactly one of volume and s3")]
    BackupTargets,
    /// The backup schedule does not parse.
    #[error("spec.backup.schedule {schedule:?}: {source}")]
    Schedule {
        /// The schedule as written.
        schedule: String,
        /// Why it does not parse.
        #[source]
        source: ScheduleError,
    },
    /// The backup claim is the data claim or the commit log's.
    #[error("spec.backup.target.volume.claimName {0:?} is the {1} volume")]
    BackupClaimIsOwn(String, &'static str),
    /// No valid S3 bucket name.
    #[error("spec.backup.target.s3.bucket {0:?} is not a valid bucket name")]
    Bucket(String),
    /// No relative key prefix.
    #[error(
        "spec.backup.target.s3.prefix {0:?} must be a relative key prefix like stores/ns/name (no leading '/', no empty, '.' or '..' segments, no spaces)"
    )]
    Prefix(String),
    /// No http(s) URL.
    #[error("spec.backup.target.s3.endpoint {0:?} is not an http(s) URL")]
    Endpoint(String),
    /// No snapshot id.
    #[error("spec.bootstrap.snapshotId {0:?} must be a snapshot id (letters, digits, '.', '_', '-'; no '/')")]
    SnapshotId(String),
    /// A rebuild starts from a snapshot (or a journal complete from the first change).
    #[error(
        "spec.integrityCheck.onFailure Recover needs spec.backup (or spec.redis): a rebuild starts from the newest snapshot and replays the commit log after it; without snapshots the log is trimmed at every checkpoint and there is nothing to rebuild from"
    )]
    RecoverNeedsSnapshots,
    /// The sidecar's own validation refuses the config file rendered from the spec: a rule
    /// the checks above do not repeat (e.g. the smallest `memoryLimit`), caught here rather
    /// than by a sidecar that exits at start.
    #[error("the sidecar would refuse the config rendered from this spec: {0}")]
    SidecarConfig(#[source] ConfigError),
}

/// The store as a [`Validated`] one, or every problem found.
pub fn validate(ts: &TradeStore) -> Result<Validated<'_>, Invalid> {
    let s = &ts.spec;
    let mut problems = Vec::new();
    check_name(ts, &mut problems);
    if s.image.trim().is_empty() {
        problems.push(Problem::Empty("spec.image"));
    }
    check_volumes(s, &mut problems);
    check_duckdb(s, &mut problems);
    check_limits(s, &mut problems);
    check_probes_and_lifecycle(s, &mut problems);
    check_containers(s, &mut problems);
    let schedule = check_backup(ts, &mut problems);
    check_followers_and_restore(s, &mut problems);
    if problems.is_empty()
        && let Err(e) = config::validate(s)
    {
        problems.push(Problem::SidecarConfig(e));
    }
    if problems.is_empty() { Ok(Validated { store: ts, schedule }) } else { Err(Invalid(problems)) }
}

fn check_name(ts: &TradeStore, problems: &mut Vec<Problem>) {
    let name = ts.name_any();
    if !is_dns1035_label(&name) {
        problems.push(Problem::Name(name));
    }
}

fn check_volumes(s: &TradeStoreSpec, problems: &mut Vec<Problem>) {
    check_size("spec.storage.size", &s.storage.volume, problems);
    let Some(log) = &s.commit_log_storage else { return };
    if let Some(bytes) = check_size("spec.commitLogStorage.size", log, problems) {
        let segment = config::render(s).commit_log.segment_bytes;
        // The active segment and the spare: less, and the first rotation finds no room.
        let min = 2 * segment;
        if bytes < min as f64 {
            let mib = |b: u64| b >> 20;
            let size = log.size.0.clone();
            problems.push(Problem::CommitLogTooSmall { size, min_mib: mib(min), segment_mib: mib(segment) });
        }
    }
}

/// The volume's size in bytes when it is a positive quantity.
fn check_size(field: &'static str, volume: &VolumeSpec, problems: &mut Vec<Problem>) -> Option<f64> {
    let bytes = parse_quantity(&volume.size.0).filter(|b| *b > 0.0);
    if bytes.is_none() {
        problems.push(Problem::Size(field, volume.size.0.clone()));
    }
    bytes
}

/// Where the commit log is cannot change once the store has its data volume: a sidecar pointed
/// at another log directory would start after the database file's last change and skip what the
/// old log holds beyond it. The data claim records the log's claim when it is created
/// ([`COMMIT_LOG_CLAIM_ANNOTATION`]), so the spec is held to that record; before the data claim
/// exists, a commit-log claim left from an earlier database must not be taken over.
pub fn check_commit_log_layout(
    store: &Validated<'_>,
    data_claim: Option<&PersistentVolumeClaim>,
    commit_log_claim_exists: bool,
) -> Result<(), Invalid> {
    let wanted = store.spec.commit_log_storage.is_some().then(|| commit_log_pvc_name(store));
    let problem = match data_claim {
        None if wanted.is_some() && commit_log_claim_exists => {
            Some(Problem::StaleCommitLogClaim { log: commit_log_pvc_name(store), data: pvc_name(store) })
        }
        None => None,
        Some(claim) => {
            let recorded = claim.annotations().get(COMMIT_LOG_CLAIM_ANNOTATION).cloned();
            match (recorded, wanted) {
                (None, Some(_)) => Some(Problem::CommitLogStorageAdded(claim.name_any())),
                (Some(log), None) => Some(Problem::CommitLogStorageRemoved(log)),
                _ => None,
            }
        }
    };
    problem.map_or(Ok(()), |p| Err(Invalid(vec![p])))
}

fn check_duckdb(s: &TradeStoreSpec, problems: &mut Vec<Problem>) {
    let d = &s.duckdb;
    if let Some(threads) = d.threads
        && !u32::try_from(threads).is_ok_and(|t| THREADS.contains(&t))
    {
        problems.push(Problem::Threads(threads));
    }
    if !u64::try_from(d.checkpoint_threshold_bytes).is_ok_and(|b| b >= MIN_CHECKPOINT_THRESHOLD_BYTES) {
        problems.push(Problem::CheckpointThreshold);
    }
    if d.max_wal_bytes < d.checkpoint_threshold_bytes {
        problems.push(Problem::Range("spec.duckdb.maxWalBytes must be >= spec.duckdb.checkpointThresholdBytes"));
    }
    if let Some(m) = &d.memory_limit
        && (m.is_empty() || !m.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'))
    {
        problems.push(Problem::MemoryLimit(m.clone()));
    }
}

fn check_limits(s: &TradeStoreSpec, problems: &mut Vec<Problem>) {
    let l = &s.limits;
    let rules = [
        (
            l.queue_batches < 1 || l.max_batch_requests < 1,
            "spec.limits.queueBatches and spec.limits.maxBatchRequests must be >= 1",
        ),
        (
            l.max_list_limit < 1 || l.max_batch_trades < 1 || l.recent_trades < 0,
            "spec.limits.maxListLimit and maxBatchTrades must be >= 1, recentTrades >= 0",
        ),
        (
            l.acquire_timeout_millis < 1 || l.write_timeout_seconds < 1,
            "spec.limits.acquireTimeoutMillis and writeTimeoutSeconds must be >= 1",
        ),
    ];
    problems.extend(rules.into_iter().filter(|(broken, _)| *broken).map(|(_, rule)| Problem::Range(rule)));
    if !u32::try_from(l.pool_size).is_ok_and(|n| POOL_SIZE.contains(&n)) {
        problems.push(Problem::PoolSize);
    }
    if !u64::try_from(l.max_body_bytes).is_ok_and(|b| b >= MIN_BODY_BYTES) {
        problems.push(Problem::MaxBodyBytes);
    }
}

fn check_probes_and_lifecycle(s: &TradeStoreSpec, problems: &mut Vec<Problem>) {
    let p = &s.probes;
    let rules = [
        (
            p.period_seconds < 1 || p.timeout_seconds < 1 || p.readiness_failure_threshold < 1 || p.startup_seconds < 1,
            "spec.probes values must be >= 1",
        ),
        (
            p.unresponsive_seconds < p.period_seconds,
            "spec.probes.unresponsiveSeconds must be >= spec.probes.periodSeconds",
        ),
        (p.timeout_seconds > p.period_seconds, "spec.probes.timeoutSeconds must be <= spec.probes.periodSeconds"),
        (
            s.restart_policy.max_restarts < 1 || s.restart_policy.window_seconds < 10,
            "spec.restartPolicy.maxRestarts must be >= 1 and windowSeconds >= 10",
        ),
        (!(1..=3600).contains(&s.shutdown_grace_seconds), "spec.shutdownGraceSeconds must be 1..=3600"),
    ];
    problems.extend(rules.into_iter().filter(|(broken, _)| *broken).map(|(_, rule)| Problem::Range(rule)));
    if s.log.level.trim().is_empty() {
        problems.push(Problem::Empty("spec.log.level"));
    }
    if s.run_as_user < 1 {
        problems.push(Problem::Range("spec.runAsUser must be a non-root uid (>= 1)"));
    }
}

fn check_containers(s: &TradeStoreSpec, problems: &mut Vec<Problem>) {
    let mut names = HashSet::new();
    for (i, c) in s.containers.iter().enumerate() {
        if c.name == SIDECAR_CONTAINER {
            problems.push(Problem::ReservedContainerName(i));
        }
        if !names.insert(c.name.as_str()) {
            problems.push(Problem::DuplicateContainerName(i, c.name.clone()));
        }
        if c.image.as_deref().unwrap_or("").is_empty() {
            problems.push(Problem::ContainerImage(i));
        }
        let taken = c.ports.iter().flatten().filter(|port| port.container_port == PORT);
        problems.extend(taken.map(|_| Problem::ContainerPort(i)));
    }
}

/// Checks `spec.backup`; returns its parsed schedule.
fn check_backup(ts: &TradeStore, problems: &mut Vec<Problem>) -> Option<croner::Cron> {
    let b = ts.spec.backup.as_ref()?;
    if b.target.volume.is_some() == b.target.s3.is_some() {
        problems.push(Problem::BackupTargets);
    }
    let schedule = match schedule::parse(&b.schedule) {
        Ok(cron) => Some(cron),
        Err(source) => {
            problems.push(Problem::Schedule { schedule: b.schedule.clone(), source });
            None
        }
    };
    if let Some(v) = &b.target.volume {
        let log_claim = ts.spec.commit_log_storage.as_ref().map(|_| commit_log_pvc_name(ts));
        let own = [(Some(pvc_name(ts)), "data"), (log_claim, "commit log")];
        let taken = own.into_iter().find(|(claim, _)| claim.as_deref() == Some(v.claim_name.as_str()));
        problems.extend(taken.map(|(_, which)| Problem::BackupClaimIsOwn(v.claim_name.clone(), which)));
    }
    if let Some(t) = &b.target.s3 {
        check_s3(t, problems);
    }
    schedule
}

fn check_followers_and_restore(s: &TradeStoreSpec, problems: &mut Vec<Problem>) {
    if let Some(b) = &s.bootstrap
        && !is_snapshot_id(&b.snapshot_id)
    {
        problems.push(Problem::SnapshotId(b.snapshot_id.clone()));
    }
    if s.redis.as_ref().and_then(|r| r.key_prefix.as_deref()).is_some_and(|p| p.trim().is_empty()) {
        problems.push(Problem::BlankWhenSet("spec.redis.keyPrefix"));
    }
    if s.clickhouse.as_ref().and_then(|c| c.database.as_deref()).is_some_and(|d| d.trim().is_empty()) {
        problems.push(Problem::BlankWhenSet("spec.clickhouse.database"));
    }
    let recover = s.integrity_check.as_ref().is_some_and(|i| i.on_failure == IntegrityFailurePolicy::Recover);
    if recover && s.backup.is_none() && s.redis.is_none() {
        problems.push(Problem::RecoverNeedsSnapshots);
    }
}

fn check_s3(t: &S3Target, problems: &mut Vec<Problem>) {
    let b = t.bucket.as_bytes();
    let bucket_ok = (3..=63).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric();
    if !bucket_ok {
        problems.push(Problem::Bucket(t.bucket.clone()));
    }
    if let Some(p) = &t.prefix
        && !is_sane_prefix(p)
    {
        problems.push(Problem::Prefix(p.clone()));
    }
    if let Some(e) = &t.endpoint {
        match reqwest::Url::parse(e) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()) => {}
            _ => problems.push(Problem::Endpoint(e.clone())),
        }
    }
    if t.region.trim().is_empty() {
        problems.push(Problem::Empty("spec.backup.target.s3.region"));
    }
}

/// An S3 key prefix: slash-separated segments, no leading slash, no empty / `.` / `..` segments
/// (a single trailing slash is allowed), printable without whitespace.
fn is_sane_prefix(p: &str) -> bool {
    let body = p.strip_suffix('/').unwrap_or(p);
    !body.is_empty()
        && p.len() <= 512
        && !p.chars().any(|c| c.is_whitespace() || c.is_control())
        && body.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// A snapshot id as the sidecar names them: one path segment of letters, digits, `.`, `_`, `-`.
fn is_snapshot_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 253
        && id != "."
        && id != ".."
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// RFC 1035 label: what a Service name must be.
fn is_dns1035_label(s: &str) -> bool {
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
