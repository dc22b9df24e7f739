//! Start-up recovery of a lost or corrupt database file: restore the newest snapshot
//! whose checksum verifies, then replay the Redis journal entries newer than it, so
//! the store comes back with every change the journal still holds.

use serde::Serialize;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::{Trade, now_micros};
use crate::{db, migrations, snapshot};

/// What recovery did, reported in `/v1/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Why recovery ran (`missing` or the open error).
    pub reason: String,
    /// The snapshot restored, if any.
    pub snapshot: Option<String>,
    /// Highest sequence the snapshot covered (0 without one).
    pub snapshot_seq: i64,
    /// Journal changes replayed on top.
    pub replayed: usize,
    /// Highest sequence after replay.
    pub seq: i64,
    /// A warning, e.g. a gap between the snapshot and the oldest journal entry.
    pub warning: Option<String>,
}

/// Recovers `cfg.database_path()` when it is missing (and something to recover from
/// exists) or cannot be opened; otherwise does nothing.
pub fn run(cfg: &Config, redis_password: Option<String>) -> Result<Option<Report>> {
    let path = cfg.database_path();
    let reason = if path.exists() {
        match db::open(&path, &cfg.duckdb) {
            Ok(_) => return Ok(None),
            Err(e) => {
                let aside = path.with_extension(format!("corrupt-{}", now_micros()));
                tracing::error!(error = %e, moved_to = %aside.display(), "database file unusable; recovering");
                std::fs::rename(&path, &aside)?;
                let wal = db::wal_path(&path);
                if wal.exists() {
                    std::fs::rename(&wal, aside.with_extension("wal"))?;
                }
                e.to_string()
            }
        }
    } else {
        "missing".to_string()
    };
    let snaps = snapshot::Snapshots::new(cfg.snapshots.dir.clone(), cfg.snapshots.keep_last, None);
    let newest_good = snaps.list()?.into_iter().rev().find(|m| match snapshot::verify(&snaps.path_of(&m.id)) {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(id = m.id, error = %e, "skipping unusable snapshot");
            false
        }
    });
    let journal = match &cfg.redis.url {
        Some(url) => read_journal(url, redis_password, &cfg.redis.key_prefix)?,
        None => Vec::new(),
    };
    if reason == "missing" && newest_good.is_none() && journal.is_empty() {
        return Ok(None); // a new store
    }
    let mut report = Report { reason, ..Default::default() };
    if let Some(m) = &newest_good {
        snapshot::restore(&snaps.path_of(&m.id), &path)?;
        report.snapshot = Some(m.id.clone());
        report.snapshot_seq = m.seq;
    }
    let conn = db::open(&path, &cfg.duckdb)?;
    migrations::up(&conn, migrations::embedded(), None)?;
    let newer: Vec<&Trade> = journal.iter().filter(|t| t.seq > report.snapshot_seq).collect();
    if let Some(first) = newer.first()
        && first.seq > report.snapshot_seq + 1
    {
        report.warning = Some(format!(
            "the journal starts at seq {} but the snapshot ends at {}: changes in between are lost",
            first.seq, report.snapshot_seq
        ));
    }
    replay(&conn, &newer)?;
    report.replayed = newer.len();
    report.seq = conn.query_row("SELECT coalesce(max(seq), 0) FROM trades", [], |r| r.get(0))?;
    conn.execute_batch("CHECKPOINT")?;
    tracing::warn!(?report, "recovered the database");
    Ok(Some(report))
}

/// Upserts journal states in sequence order, in one transaction.
fn replay(conn: &duckdb::Connection, trades: &[&Trade]) -> Result<()> {
    conn.execute_batch("BEGIN TRANSACTION")?;
    let result = (|| {
        let mut stmt = conn.prepare("INSERT OR REPLACE INTO trades VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")?;
        for t in trades {
            stmt.execute(duckdb::params_from_iter(db::row_values(t)))?;
        }
        Ok::<_, Error>(())
    })();
    match result {
        Ok(()) => Ok(conn.execute_batch("COMMIT")?),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Every journal entry, oldest first (the stream is trimmed to the retention window).
fn read_journal(url: &str, password: Option<String>, prefix: &str) -> Result<Vec<Trade>> {
    let unavailable = |e: redis::RedisError| Error::Unavailable(format!("redis (journal replay): {e}"));
    let client = crate::journal::redis_client(url, password)?;
    let mut conn = client.get_connection().map_err(unavailable)?;
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("{prefix}:journal"))
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .map_err(unavailable)?;
    entries
        .into_iter()
        .map(|(id, fields)| {
            let json = fields.into_iter().find(|(k, _)| k == "trade").map(|(_, v)| v);
            let json = json.ok_or_else(|| Error::Internal(format!("journal entry {id} has no trade")))?;
            serde_json::from_str(&json).map_err(|e| Error::Internal(format!("journal entry {id}: {e}")))
        })
        .collect()
}
