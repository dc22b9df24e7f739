//! The `/v1/status` document ([`tradestore_api::status::Status`]), gathered from the
//! handles the store, its followers and its durability machinery keep.

use tradestore_api::status::{JournalStatus, LogStatus, Status};

use super::App;
use crate::store::db;

impl App {
    /// The current status document.
    pub fn status(&self) -> Status {
        let readiness = self.health.readiness();
        Status {
            schema_version: self.schema_version,
            last_seq: self.metrics.last_seq.get(),
            applied_seq: self.metrics.applied_seq.get(),
            commit_log: LogStatus {
                segments: self.metrics.log_segments.get(),
                apply_backlog: (self.metrics.last_seq.get() - self.metrics.applied_seq.get()).max(0),
                replayed_at_start: self.metrics.log_replayed.get(),
                replay_seconds: self.metrics.log_replay_seconds.get(),
            },
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
