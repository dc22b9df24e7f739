//! The `GET /v1/status` document: facts about one store for people and for the
//! operator. Every part defaults when absent, so a reader copes with a sidecar older
//! than a field.

use serde::{Deserialize, Serialize};

use crate::snapshot::Manifest;

/// The `/v1/status` document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    /// Schema version.
    pub schema_version: i64,
    /// Sequence of the last acknowledged change (durable in the commit log).
    pub last_seq: i64,
    /// Sequence of the last change DuckDB holds (queries and followers see up to here).
    #[serde(default)]
    pub applied_seq: i64,
    /// The commit log.
    pub commit_log: LogStatus,
    /// Rows in the trades table.
    pub trade_rows: i64,
    /// WAL size in bytes.
    pub wal_bytes: u64,
    /// Unix time of the last checkpoint, the sidecar's or DuckDB's own (0 = none since start).
    pub last_checkpoint_unix: i64,
    /// Writes waiting for the writer.
    pub queue_depth: i64,
    /// Readiness, with the reason when not ready.
    pub ready: bool,
    /// Why not ready, if so.
    pub not_ready_reason: Option<String>,
    /// The Redis journal (`enabled: false` when not configured).
    pub journal: JournalStatus,
    /// The ClickHouse sync (`enabled: false` when not configured).
    pub sync: SyncStatus,
    /// The newest complete snapshot (in the bucket when one is configured).
    pub last_snapshot: Option<Manifest>,
    /// Backup target, schedule and last failure.
    pub backup: BackupStatus,
    /// What start-up recovery did, if it ran.
    pub recovery: Option<RecoveryReport>,
    /// The last integrity check.
    pub integrity: CheckStatus,
}

/// What `/v1/status` reports about the commit log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogStatus {
    /// Segment files on disk (the active one included).
    pub segments: i64,
    /// Acknowledged changes DuckDB does not hold yet (`last_seq - applied_seq`).
    pub apply_backlog: i64,
    /// Changes the log replayed into DuckDB when this process started, and the seconds
    /// that took.
    pub replayed_at_start: i64,
    pub replay_seconds: f64,
}

/// The journal's condition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalState {
    /// No round has finished yet.
    #[default]
    Connecting,
    /// The last round succeeded.
    Healthy,
    /// The last round failed; retrying.
    Degraded,
    /// Redis holds changes the store does not: appending stopped (see the sidecar's `followers::journal`).
    Diverged,
}

/// What `/v1/status` reports about the journal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JournalStatus {
    /// A Redis URL is configured.
    pub enabled: bool,
    /// Connecting, healthy, degraded or diverged.
    pub state: JournalState,
    /// The last round succeeded (`state == healthy`).
    pub healthy: bool,
    /// Highest sequence journaled.
    pub watermark: i64,
    /// The journal is complete above this sequence (`journal:from`).
    pub from: i64,
    /// Committed changes not journaled yet.
    pub lag: i64,
    /// The last error, while degraded or diverged.
    pub last_error: Option<String>,
}

/// What `/v1/status` reports about the sync.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncStatus {
    /// A ClickHouse URL is configured.
    pub enabled: bool,
    /// Consecutive failures reached `degraded_after`.
    pub degraded: bool,
    /// Highest sequence delivered (and recorded).
    pub watermark: i64,
    /// Committed changes not delivered yet.
    pub lag: i64,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// The last error, while failing.
    pub last_error: Option<String>,
}

/// What `/v1/status` says about backups.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackupStatus {
    /// Where snapshots are kept: a directory, or `s3://bucket/prefix`.
    pub target: String,
    /// The cron schedule, if any.
    pub schedule: Option<String>,
    /// When the next scheduled snapshot is due (RFC 3339).
    pub next_run: Option<String>,
    /// The last snapshot attempt failed with this error (cleared by a success).
    pub last_error: Option<String>,
}

/// What recovery did, reported in `/v1/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecoveryReport {
    /// Why recovery ran (`missing`, the open error, `quarantined: …`, `behind the journal`).
    pub reason: String,
    /// The snapshot restored, if any.
    pub snapshot: Option<String>,
    /// Highest sequence the starting point covered (the snapshot's, or the file's on catch-up).
    pub snapshot_seq: i64,
    /// Redis journal entries replayed on top (only what the local commit log lacked).
    pub replayed: usize,
    /// Changes the local commit log replayed on top, after the journal's.
    pub log_replayed: u64,
    /// Highest sequence after replay.
    pub seq: i64,
    /// The highest sequence known to have existed, which recovery had to reach
    /// (unknown when neither the evidence nor the journal says).
    pub target_seq: Option<i64>,
    /// Recovery proved it holds every change up to `target_seq`.
    pub complete: bool,
    /// What could not be proven (only with `recovery.accept_data_loss`).
    pub warning: Option<String>,
}

/// Where the checks stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    /// No check has finished since start (or checks are disabled): not a failure.
    #[default]
    NotRun,
    /// The last check passed.
    Passed,
    /// The last check failed.
    Failed,
    /// The last check could not finish for a transient reason, even when retried: no
    /// verdict (readiness keeps the previous one).
    Inconclusive,
}

impl CheckState {
    /// The state as it is written on the wire (and in the TradeStore status).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckState::NotRun => "not_run",
            CheckState::Passed => "passed",
            CheckState::Failed => "failed",
            CheckState::Inconclusive => "inconclusive",
        }
    }
}

/// The last check's outcome, for `/v1/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckStatus {
    /// Where the checks stand.
    pub state: CheckState,
    /// When the last check finished (RFC 3339).
    pub last_run: Option<String>,
    /// The verdict: true when it passed, false when it failed, null when no check has
    /// reached one (not run yet, or inconclusive).
    pub ok: Option<bool>,
    /// What failed (or why the check was inconclusive).
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: u64,
    /// Rows scanned.
    pub rows_scanned: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_reads_back_as_written() {
        let status = Status {
            schema_version: 3,
            last_seq: 42,
            journal: JournalStatus { enabled: true, state: JournalState::Diverged, ..Default::default() },
            integrity: CheckStatus { state: CheckState::Inconclusive, ok: None, ..Default::default() },
            last_snapshot: Some(Manifest { id: "s1".into(), seq: 40, ..Default::default() }),
            ..Default::default()
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["journal"]["state"], "diverged");
        assert_eq!(json["integrity"]["state"], "inconclusive");
        for state in [CheckState::NotRun, CheckState::Passed, CheckState::Failed, CheckState::Inconclusive] {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str(), "as_str is the wire name");
        }
        assert_eq!(serde_json::from_value::<Status>(json).unwrap(), status);
    }

    #[test]
    fn a_document_from_an_older_sidecar_reads_with_defaults() {
        let old: Status = serde_json::from_str(r#"{"last_seq": 7, "journal": {"enabled": true}}"#).unwrap();
        assert_eq!((old.last_seq, old.journal.enabled, old.journal.state), (7, true, JournalState::Connecting));
        assert_eq!(old.integrity.state, CheckState::NotRun);
    }
}
