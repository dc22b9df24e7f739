//! The `/v1/status` document: what the store, its followers and its durability
//! machinery report, gathered from the handles each keeps.

use serde::Serialize;

use super::App;
use crate::durability::backup::BackupStatus;
use crate::durability::integrity::CheckStatus;
use crate::durability::recovery;
use crate::durability::snapshot::Manifest;
use crate::followers::clickhouse::SyncStatus;
use crate::followers::journal::JournalStatus;
use crate::store::db;

/// The `/v1/status` document.
#[derive(Debug, Serialize)]
pub(crate) struct StatusDoc {
    /// Schema version.
    pub schema_version: i64,
    /// Sequence of the last committed change.
    pub last_seq: i64,
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
    pub recovery: Option<recovery::Report>,
    /// The last integrity check.
    pub integrity: CheckStatus,
}

impl App {
    /// The current status document.
    pub fn status(&self) -> StatusDoc {
        let readiness = self.health.readiness();
        StatusDoc {
            schema_version: self.schema_version,
            last_seq: self.metrics.last_seq.get(),
            trade_rows: self.metrics.trade_rows.get(),
            wal_bytes: db::wal_size(&self.cfg.database_path()),
            last_checkpoint_unix: self.metrics.last_checkpoint.get(),
            queue_depth: self.metrics.queue_depth.get(),
            ready: readiness.is_ok(),
            not_ready_reason: readiness.err(),
            journal: self.journal_status(),
            sync: self.sync.as_ref().map(|s| s.lock().clone()).unwrap_or_default(),
            last_snapshot: self.backups.last(),
            backup: self.backups.status(),
            recovery: self.recovery.clone(),
            integrity: self.integrity.lock().clone(),
        }
    }

    /// The journal's status, its lag measured against the last commit now (so it keeps
    /// growing while Redis is down).
    fn journal_status(&self) -> JournalStatus {
        let Some(j) = &self.journal else { return JournalStatus::default() };
        let mut s = j.lock().clone();
        s.lag = (self.metrics.last_seq.get() - s.watermark).max(0);
        s
    }
}
