//! The operator's client of a sidecar's HTTP API: `GET /v1/status` (facts for the status) and
//! `POST /v1/snapshots` (on-demand and final snapshots). A trait, so the controller tests can
//! answer without a sidecar.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;

use crate::crd::SidecarReport;

/// Why a call to a sidecar failed. `what` names the call (`GET /v1/status`).
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// The request did not get an answer (unreachable, timed out) or the answer did not parse.
    #[error("{what}: {source}")]
    Request {
        /// The call.
        what: &'static str,
        /// What went wrong underneath.
        #[source]
        source: reqwest::Error,
    },
    /// The sidecar answered with an error status; `body` is its (shortened) error document.
    #[error("{what}: HTTP {status}{}", spaced(.body))]
    Status {
        /// The call.
        what: &'static str,
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The start of the answer's body.
        body: String,
    },
    /// A snapshot answer without an id cannot be recorded or restored from.
    #[error("{what}: the manifest has no id")]
    NoSnapshotId {
        /// The call.
        what: &'static str,
    },
    /// The operator was started with `--probe-sidecar=false`.
    #[error("the operator does not call sidecars (--probe-sidecar=false)")]
    ProbingOff,
    /// No ready sidecar to call.
    #[error("the sidecar is not ready")]
    NotReady,
    /// The token Secret holds no token yet.
    #[error("no API token yet")]
    NoToken,
}

/// ` body` without trailing white space, or nothing for an empty body.
fn spaced(body: &str) -> String {
    let body = body.trim_end();
    if body.is_empty() { String::new() } else { format!(" {body}") }
}

/// Result of a sidecar call.
pub type Result<T, E = SidecarError> = std::result::Result<T, E>;

/// Timeout of `GET /v1/status`.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// Timeout of `POST /v1/snapshots` (the sidecar copies and checksums the whole database first).
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(300);

/// A snapshot manifest as the sidecar returns it (`POST /v1/snapshots`, `last_snapshot`).
#[derive(Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(default)]
pub struct Snapshot {
    /// Snapshot id (what `snapshots.bootstrap_from` accepts).
    pub id: String,
    /// When it was taken (RFC 3339).
    pub created_at: String,
    /// Highest commit sequence it contains.
    pub seq: i64,
    /// Schema version of the copy.
    pub schema_version: i64,
    /// Rows in `trades`.
    pub trade_rows: i64,
    /// Size of the copy in bytes.
    pub size_bytes: u64,
    /// SHA-256 of the copy, hex.
    pub sha256: String,
    /// How long taking it took.
    pub duration_ms: u64,
}

/// The ClickHouse sync part of `/v1/status` (the sidecar's `SyncStatus`).
#[derive(Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(default)]
pub struct SyncReport {
    /// A ClickHouse URL is configured.
    pub enabled: bool,
    /// Consecutive failures reached the sidecar's `degraded_after`.
    pub degraded: bool,
    /// Highest sequence delivered.
    pub watermark: i64,
    /// Committed changes not delivered yet.
    pub lag: i64,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// The last error, while failing.
    pub last_error: Option<String>,
}

/// The Redis journal part of `/v1/status` (the sidecar's `JournalStatus`).
#[derive(Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(default)]
pub struct JournalReport {
    /// A Redis URL is configured.
    pub enabled: bool,
    /// The last attempt succeeded.
    pub healthy: bool,
    /// Highest sequence journaled.
    pub watermark: i64,
    /// Committed changes not journaled yet.
    pub lag: i64,
    /// The last error, while degraded.
    pub last_error: Option<String>,
}

/// The integrity part of `/v1/status` (the sidecar's `CheckStatus`).
#[derive(Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(default)]
pub struct IntegrityReport {
    /// `not_run`, `passed`, `failed` or `inconclusive` (a transient error such as out of
    /// memory kept the check from finishing); unset from sidecars older than the field.
    pub state: Option<String>,
    /// When the last check finished (RFC 3339); none yet when unset.
    pub last_run: Option<String>,
    /// The verdict; null until a check reached one (not run yet, or inconclusive).
    pub ok: Option<bool>,
    /// What failed.
    pub error: Option<String>,
}

impl IntegrityReport {
    /// True once a check has finished. "Not run yet" (just after start, or checks
    /// disabled) is no failure and leaves nothing to report.
    pub fn has_run(&self) -> bool {
        self.last_run.is_some() && self.state.as_deref() != Some("not_run")
    }
}

/// The backup part of `/v1/status` (the sidecar's `BackupStatus`).
#[derive(Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(default)]
pub struct BackupReport {
    /// The last snapshot attempt failed with this error (cleared by a success).
    pub last_error: Option<String>,
}

/// Everything the operator reads from `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct SidecarStatus {
    /// The facts copied into `status.sidecar`.
    pub report: SidecarReport,
    /// The newest complete snapshot.
    pub last_snapshot: Option<Snapshot>,
    /// Backup target state.
    pub backup: BackupReport,
    /// The ClickHouse sync.
    pub sync: SyncReport,
    /// The Redis journal.
    pub journal: JournalReport,
    /// The last integrity check.
    pub integrity: IntegrityReport,
}

/// Talks to one sidecar. `base` is `http://<pod IP>:8080`.
pub trait SidecarClient: Send + Sync {
    /// `GET /v1/status`; `token` is sent as a bearer token when reads are protected.
    fn status<'a>(&'a self, base: &'a str, token: Option<&'a str>) -> BoxFuture<'a, Result<SidecarStatus>>;
    /// `POST /v1/snapshots` (always authenticated): takes a snapshot now and returns its manifest.
    fn snapshot<'a>(&'a self, base: &'a str, token: &'a str) -> BoxFuture<'a, Result<Snapshot>>;
}

/// The real client: HTTP with short timeouts ([`STATUS_TIMEOUT`], [`SNAPSHOT_TIMEOUT`]).
pub struct HttpSidecarClient {
    client: reqwest::Client,
}

impl HttpSidecarClient {
    /// A client with the default timeouts.
    pub fn new() -> Self {
        let client = reqwest::Client::builder().connect_timeout(STATUS_TIMEOUT).build().expect("reqwest client");
        HttpSidecarClient { client }
    }
}

impl Default for HttpSidecarClient {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Deserialize)]
struct StatusDoc {
    schema_version: Option<i64>,
    last_seq: Option<i64>,
    trade_rows: Option<i64>,
    wal_bytes: Option<i64>,
    last_checkpoint_unix: Option<i64>,
    queue_depth: Option<i64>,
    ready: Option<bool>,
    not_ready_reason: Option<String>,
    #[serde(default)]
    last_snapshot: Option<Snapshot>,
    #[serde(default)]
    backup: BackupReport,
    #[serde(default)]
    sync: SyncReport,
    #[serde(default)]
    journal: JournalReport,
    #[serde(default)]
    integrity: IntegrityReport,
}

fn request_failed(what: &'static str) -> impl FnOnce(reqwest::Error) -> SidecarError {
    move |source| SidecarError::Request { what, source }
}

/// The error of a failed request, with the start of its body (the sidecar answers
/// `{"error": ..., "message": ...}`).
async fn failure(what: &'static str, resp: reqwest::Response) -> SidecarError {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    SidecarError::Status { what, status, body: body.chars().take(300).collect() }
}

impl SidecarClient for HttpSidecarClient {
    fn status<'a>(&'a self, base: &'a str, token: Option<&'a str>) -> BoxFuture<'a, Result<SidecarStatus>> {
        Box::pin(async move {
            const WHAT: &str = "GET /v1/status";
            let mut req = self.client.get(format!("{base}/v1/status")).timeout(STATUS_TIMEOUT);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.map_err(request_failed(WHAT))?;
            if !resp.status().is_success() {
                return Err(failure(WHAT, resp).await);
            }
            let d: StatusDoc = resp.json().await.map_err(request_failed(WHAT))?;
            Ok(SidecarStatus {
                report: SidecarReport {
                    schema_version: d.schema_version,
                    last_seq: d.last_seq,
                    trade_rows: d.trade_rows,
                    wal_bytes: d.wal_bytes,
                    last_checkpoint_unix: d.last_checkpoint_unix,
                    queue_depth: d.queue_depth,
                    ready: d.ready,
                    not_ready_reason: d.not_ready_reason,
                },
                last_snapshot: d.last_snapshot,
                backup: d.backup,
                sync: d.sync,
                journal: d.journal,
                integrity: d.integrity,
            })
        })
    }

    fn snapshot<'a>(&'a self, base: &'a str, token: &'a str) -> BoxFuture<'a, Result<Snapshot>> {
        Box::pin(async move {
            const WHAT: &str = "POST /v1/snapshots";
            let resp = self
                .client
                .post(format!("{base}/v1/snapshots"))
                .timeout(SNAPSHOT_TIMEOUT)
                .bearer_auth(token)
                .send()
                .await
                .map_err(request_failed(WHAT))?;
            if !resp.status().is_success() {
                return Err(failure(WHAT, resp).await);
            }
            let m: Snapshot = resp.json().await.map_err(request_failed(WHAT))?;
            if m.id.is_empty() {
                return Err(SidecarError::NoSnapshotId { what: WHAT });
            }
            Ok(m)
        })
    }
}
