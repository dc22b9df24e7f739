//! The operator's client of a sidecar's HTTP API: `GET /v1/status` (facts for the status) and
//! `POST /v1/snapshots` (on-demand and final snapshots). A trait, so the controller tests can
//! answer without a sidecar.

use std::time::Duration;

use futures::future::BoxFuture;
pub use tradestore_api::snapshot::Manifest;
pub use tradestore_api::status::{BackupStatus, CheckState, CheckStatus, JournalStatus, Status, SyncStatus};
use tradestore_api::wire;

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

/// `true` once a check has finished. "Not run yet" (just after start, or checks
/// disabled) is no failure and leaves nothing to report.
pub fn integrity_has_run(c: &CheckStatus) -> bool {
    c.last_run.is_some() && c.state != CheckState::NotRun
}

/// Everything the operator reads from `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct SidecarStatus {
    /// The facts copied into `status.sidecar`.
    pub report: SidecarReport,
    /// The newest complete snapshot.
    pub last_snapshot: Option<Manifest>,
    /// Backup target state.
    pub backup: BackupStatus,
    /// The ClickHouse sync.
    pub sync: SyncStatus,
    /// The Redis journal.
    pub journal: JournalStatus,
    /// The last integrity check.
    pub integrity: CheckStatus,
}

impl From<Status> for SidecarStatus {
    /// The one place the sidecar's document becomes the CRD's facts.
    fn from(d: Status) -> Self {
        SidecarStatus {
            report: SidecarReport {
                schema_version: Some(d.schema_version),
                last_seq: Some(d.last_seq),
                trade_rows: Some(d.trade_rows),
                wal_bytes: Some(i64::try_from(d.wal_bytes).unwrap_or(i64::MAX)),
                last_checkpoint_unix: Some(d.last_checkpoint_unix),
                queue_depth: Some(d.queue_depth),
                ready: Some(d.ready),
                not_ready_reason: d.not_ready_reason,
            },
            last_snapshot: d.last_snapshot,
            backup: d.backup,
            sync: d.sync,
            journal: d.journal,
            integrity: d.integrity,
        }
    }
}

/// Talks to one sidecar. `base` is `http://<pod IP>:8080`.
pub trait SidecarClient: Send + Sync {
    /// `GET /v1/status`; `token` is sent as a bearer token when reads are protected.
    fn status<'a>(&'a self, base: &'a str, token: Option<&'a str>) -> BoxFuture<'a, Result<SidecarStatus>>;
    /// `POST /v1/snapshots` (always authenticated): takes a snapshot now and returns its manifest.
    fn snapshot<'a>(&'a self, base: &'a str, token: &'a str) -> BoxFuture<'a, Result<Manifest>>;
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
            let mut req = self.client.get(format!("{base}{}", wire::STATUS_PATH)).timeout(STATUS_TIMEOUT);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.map_err(request_failed(WHAT))?;
            if !resp.status().is_success() {
                return Err(failure(WHAT, resp).await);
            }
            let d: Status = resp.json().await.map_err(request_failed(WHAT))?;
            Ok(d.into())
        })
    }

    fn snapshot<'a>(&'a self, base: &'a str, token: &'a str) -> BoxFuture<'a, Result<Manifest>> {
        Box::pin(async move {
            const WHAT: &str = "POST /v1/snapshots";
            let resp = self
                .client
                .post(format!("{base}{}", wire::SNAPSHOTS_PATH))
                .timeout(SNAPSHOT_TIMEOUT)
                .bearer_auth(token)
                .send()
                .await
                .map_err(request_failed(WHAT))?;
            if !resp.status().is_success() {
                return Err(failure(WHAT, resp).await);
            }
            let m: Manifest = resp.json().await.map_err(request_failed(WHAT))?;
            if m.id.is_empty() {
                return Err(SidecarError::NoSnapshotId { what: WHAT });
            }
            Ok(m)
        })
    }
}
