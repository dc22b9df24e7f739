//! Start-up recovery of a lost or corrupt database file: restore the newest snapshot
//! whose checksum verifies, then replay the Redis journal entries newer than it, so
//! the store comes back with every change the journal still holds. Triggered by a
//! missing or unopenable file, or by a quarantine marker that a failed integrity
//! check leaves (`integrity.on_failure: recover`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::backup::Backups;
use crate::config::{Config, OnIntegrityFailure};
use crate::error::{Error, Result};
use crate::model::{Trade, now_micros};
use crate::{db, integrity, migrations};

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
/// exists), cannot be opened, was quarantined by a failed integrity check, or — with
/// `integrity.on_failure: recover` — fails the block scan at start while the journal
/// provably holds every change; otherwise does nothing.
pub async fn run(cfg: &Config, backups: &Backups, redis_password: Option<String>) -> Result<Option<Report>> {
    let path = cfg.database_path();
    let Some(reason) = why_recover(cfg, redis_password.clone())? else { return Ok(None) };
    let journal = match &cfg.redis.url {
        Some(url) => read_journal(url, redis_password, &cfg.redis.key_prefix)?,
        None => Vec::new(),
    };
    let restored = backups.restore_newest(&path).await?;
    if reason == MISSING && restored.is_none() && journal.is_empty() {
        return Ok(None); // a new store
    }
    let mut report = Report { reason, ..Default::default() };
    if let Some(m) = &restored {
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
    drop(conn);
    let marker = quarantine_marker(&path);
    if marker.exists() {
        std::fs::remove_file(&marker)?;
    }
    tracing::warn!(?report, "recovered the database");
    Ok(Some(report))
}

const MISSING: &str = "missing";

/// The file whose presence sends the next start into recovery.
fn quarantine_marker(database: &Path) -> PathBuf {
    database.with_extension("quarantine")
}

/// Marks the database file for recovery at the next start (after an integrity
/// failure, once the journal holds every committed change).
pub fn quarantine(database: &Path, reason: &str) -> Result<()> {
    let marker = quarantine_marker(database);
    std::fs::write(&marker, reason)?;
    std::fs::File::open(&marker)?.sync_all()?;
    tracing::error!(marker = %marker.display(), reason, "database quarantined; the next start recovers it");
    Ok(())
}

/// Decides whether start-up must recover, and if so moves the unusable file (and its
/// WAL) aside — never deletes it.
fn why_recover(cfg: &Config, redis_password: Option<String>) -> Result<Option<String>> {
    let path = cfg.database_path();
    let marker = quarantine_marker(&path);
    let reason = if marker.exists() {
        format!("quarantined: {}", std::fs::read_to_string(&marker).unwrap_or_default().trim())
    } else if !path.exists() {
        return Ok(Some(MISSING.into()));
    } else {
        match db::open(&path, &cfg.duckdb) {
            Err(e) => e.to_string(),
            Ok(conn) if cfg.integrity.on_failure == OnIntegrityFailure::Recover => {
                match integrity::scan_blocks(&conn) {
                    Ok(_) => return Ok(None),
                    Err(e) if journal_covers(cfg, &conn, redis_password) => format!("integrity check at start: {e}"),
                    Err(e) => {
                        tracing::error!(
                            error = %e,
                            "integrity check failed at start, but the journal does not provably hold every change: \
                             not recovering automatically"
                        );
                        return Ok(None);
                    }
                }
            }
            Ok(_) => return Ok(None),
        }
    };
    if path.exists() {
        let aside = path.with_extension(format!("corrupt-{}", now_micros()));
        tracing::error!(reason, moved_to = %aside.display(), "database file unusable; recovering");
        std::fs::rename(&path, &aside)?;
        let wal = db::wal_path(&path);
        if wal.exists() {
            std::fs::rename(&wal, aside.with_extension("wal"))?;
        }
    }
    Ok(Some(reason))
}

/// True when the Redis journal's watermark is at or past the store's last sequence
/// (false when either cannot be read).
fn journal_covers(cfg: &Config, conn: &duckdb::Connection, redis_password: Option<String>) -> bool {
    let Some(url) = &cfg.redis.url else { return false };
    let store: Result<i64> =
        conn.query_row("SELECT coalesce(max(seq), 0) FROM trades", [], |r| r.get(0)).map_err(Error::from);
    let journal = (|| -> Result<Option<i64>> {
        let client = crate::journal::redis_client(url, redis_password)?;
        let mut c = client.get_connection().map_err(|e| Error::Unavailable(format!("redis: {e}")))?;
        redis::cmd("GET")
            .arg(format!("{}:journal:seq", cfg.redis.key_prefix))
            .query(&mut c)
            .map_err(|e| Error::Unavailable(format!("redis: {e}")))
    })();
    match (store, journal) {
        (Ok(s), Ok(Some(j))) => j >= s,
        _ => false,
    }
}

/// Upserts the newest journaled state of each trade, in one transaction: the states
/// are appended to a temporary table and merged with one `INSERT OR REPLACE`, so a
/// journal of millions of changes replays at appender speed.
fn replay(conn: &duckdb::Connection, trades: &[&Trade]) -> Result<()> {
    let mut newest: HashMap<&str, &Trade> = HashMap::with_capacity(trades.len());
    for t in trades {
        newest.insert(t.id.as_str(), t); // in sequence order: the last one wins
    }
    conn.execute_batch("CREATE OR REPLACE TEMP TABLE replay AS SELECT * FROM trades LIMIT 0; BEGIN TRANSACTION")?;
    let result = (|| {
        let mut app = conn.appender("replay")?;
        for t in newest.values() {
            app.append_row(db::row_values(t))?;
        }
        app.flush()?;
        drop(app);
        conn.execute_batch("INSERT OR REPLACE INTO trades SELECT * FROM replay")?;
        Ok::<_, Error>(())
    })();
    match result {
        Ok(()) => Ok(conn.execute_batch("COMMIT; DROP TABLE replay")?),
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
    let mut out = Vec::new();
    let mut from = "-".to_string();
    loop {
        let page: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(format!("{prefix}:journal"))
            .arg(&from)
            .arg("+")
            .arg("COUNT")
            .arg(JOURNAL_PAGE)
            .query(&mut conn)
            .map_err(unavailable)?;
        let full = page.len() == JOURNAL_PAGE;
        for (id, fields) in page {
            let json = fields.into_iter().find(|(k, _)| k == "trade").map(|(_, v)| v);
            let json = json.ok_or_else(|| Error::Internal(format!("journal entry {id} has no trade")))?;
            out.push(serde_json::from_str(&json).map_err(|e| Error::Internal(format!("journal entry {id}: {e}")))?);
            from = format!("({id}"); // exclusive: the next page starts after this entry
        }
        if !full {
            return Ok(out);
        }
    }
}

/// Journal entries read per `XRANGE` call.
const JOURNAL_PAGE: usize = 10_000;
