//! Start-up recovery, and the proof that it is complete.
//!
//! **Rebuild** ([`run`]): a missing, unopenable or quarantined database file is rebuilt
//! in a scratch file from the newest snapshot whose checksum verifies plus the Redis
//! journal entries above the snapshot's `seq`, checkpointed, and only then renamed into
//! place (the unusable file and its WAL are moved aside, never deleted). A crash midway
//! leaves the cause in place, so the next start simply recovers again.
//!
//! **Catch-up** ([`catch_up`]): a file that opens but ends below the journal (a disk
//! that lost the flushed tail of DuckDB's WAL) gets the missing changes replayed from
//! the journal before the writer hands out any sequence number, so a `seq` is never
//! given to two different changes.
//!
//! Both replay only what the journal proves complete (see [`crate::followers::journal::stream`]):
//! the journal must be complete above the starting point (`journal:from <= seq`) and
//! reach the last sequence known to exist (the quarantine marker's, the damaged file's,
//! the journal's own). When that cannot be shown — Redis unreachable, restarted empty,
//! trimmed past the snapshot — start-up stops with an error saying so, unless
//! `recovery.accept_data_loss` is set; then the store comes up and the report
//! (`complete: false`, `warning`) says what may be missing.

use std::collections::HashMap;
use std::path::Path;

use tradestore_api::status::RecoveryReport;

use crate::config::{Config, OnIntegrityFailure};
use crate::durability::backup::Backups;
use crate::durability::{integrity, quarantine};
use crate::error::{Error, Result};
use crate::followers::journal::{
    self,
    stream::{self, Keys, Meta, Replay},
};
use crate::store::db::{self, Failure};
use crate::store::migrations;
use crate::store::model::{Trade, now_micros};

/// Why start-up rebuilds the file.
struct Cause {
    reason: String,
    /// The highest sequence known to exist, when the evidence says.
    known_seq: Option<i64>,
    /// The file exists and goes aside once the rebuild is ready.
    file_exists: bool,
    /// An unproven rebuild is refused by starting on the file as it is (a failed
    /// block scan at start: nothing is lost by serving it and reporting the damage).
    keep_file_if_unproven: bool,
}

const MISSING: &str = "missing";

/// What the journal can testify, or why it cannot.
type Witness<T> = std::result::Result<T, String>;

/// Rebuilds `cfg.database_path()` when it is missing (and something to recover from
/// exists), cannot be opened, was quarantined, or — with `integrity.on_failure:
/// recover` — fails the block scan at start; otherwise does nothing.
pub async fn run(cfg: &Config, backups: &Backups, redis: Option<&redis::Client>) -> Result<Option<RecoveryReport>> {
    let path = cfg.database_path();
    let scratch = path.with_extension("duckdb.recovering");
    remove_file_and_wal(&scratch)?; // left by an interrupted rebuild: derived data
    let Some(cause) = why_recover(cfg, &path)? else { return Ok(None) };
    let mut journal = redis.map(|c| Replay::connect(c, Keys::new(&cfg.redis.key_prefix), cfg.recovery.journal_wait));
    let meta = read_meta(&mut journal);
    let restored = backups.restore_newest(&scratch).await?;
    let nothing_anywhere = restored.is_none() && (redis.is_none() || matches!(meta, Ok(None)));
    if cause.reason == MISSING && nothing_anywhere {
        remove_file_and_wal(&scratch)?;
        return Ok(None); // a new store: no snapshot, and no journal to speak of
    }
    let base = restored.as_ref().map_or(0, |m| m.seq);
    let target = cause.known_seq.into_iter().chain(meta.clone().ok().flatten().map(|m| m.seq)).max();
    let mut report = RecoveryReport {
        reason: cause.reason.clone(),
        snapshot: restored.as_ref().map(|m| m.id.clone()),
        snapshot_seq: base,
        target_seq: target,
        ..Default::default()
    };
    if let Err(why) = prove(base, target, &meta) {
        if !cfg.recovery.accept_data_loss {
            remove_file_and_wal(&scratch)?;
            if cause.keep_file_if_unproven {
                tracing::error!(why, "integrity check failed at start; not rebuilding (unproven): serving the file");
                return Ok(None);
            }
            return Err(Error::Recovery(format!(
                "{}: cannot rebuild the database without losing changes: {why}. Fix the journal (Redis) and restart, \
                 restore explicitly (`sidecar restore --from <snapshot>`), or set recovery.accept_data_loss: true",
                cause.reason
            )));
        }
        tracing::error!(why, "recovery.accept_data_loss is set: rebuilding without proof of completeness");
        report.warning = Some(why);
    }
    let conn = db::open(&scratch, &cfg.duckdb)?;
    migrations::up(&conn, migrations::embedded(), None)?;
    if let Some(Ok(j)) = journal.as_mut() {
        report.replayed = replay(&conn, j, base)?;
    }
    report.seq = max_seq(&conn)?;
    conn.execute_batch("CHECKPOINT")?;
    drop(conn);
    report.complete = report.warning.is_none() && target.is_some_and(|t| report.seq >= t);
    install(&scratch, &path, cause.file_exists)?;
    tracing::warn!(?report, "recovered the database");
    Ok(Some(report))
}

/// Replays the journal's changes above the store's last sequence into `conn` (the
/// open, migrated database), when Redis answers within `recovery.journal_wait` and
/// its journal is ahead.
pub fn catch_up(
    conn: &duckdb::Connection,
    cfg: &Config,
    redis: Option<&redis::Client>,
) -> Result<Option<RecoveryReport>> {
    let Some(client) = redis else { return Ok(None) };
    let marker = journal::diverged_marker(&cfg.database_path());
    if marker.exists() {
        tracing::error!(marker = %marker.display(), "the store diverged from the journal earlier: not replaying it; \
             reconcile the two, then remove the marker");
        return Ok(None);
    }
    let store = max_seq(conn)?;
    let mut journal = match Replay::connect(client, Keys::new(&cfg.redis.key_prefix), cfg.recovery.journal_wait) {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!(error = %e, "cannot compare the store with the Redis journal at start; the journal checks \
                 again once Redis answers");
            return Ok(None);
        }
    };
    let meta = journal.meta()?;
    let Some(Meta { seq: ahead, .. }) = meta.filter(|m| m.seq > store) else { return Ok(None) };
    let mut report = RecoveryReport {
        reason: format!("behind the journal: the file ends at seq {store}, the journal at {ahead}"),
        snapshot_seq: store,
        target_seq: Some(ahead),
        ..Default::default()
    };
    tracing::error!(store, journal = ahead, "the store lost committed changes the journal holds; replaying them");
    if let Err(why) = prove(store, Some(ahead), &Ok(meta)) {
        if !cfg.recovery.accept_data_loss {
            return Err(Error::Recovery(format!(
                "{}; the journal cannot replay them all: {why}. Set recovery.accept_data_loss: true to come up with \
                 what it holds (sequence numbers are still never reused)",
                report.reason
            )));
        }
        report.warning = Some(why);
    }
    report.replayed = replay(conn, &mut journal, store)?;
    report.seq = max_seq(conn)?;
    report.complete = report.warning.is_none() && report.seq >= ahead;
    conn.execute_batch("CHECKPOINT")?;
    tracing::warn!(?report, "caught up from the journal");
    Ok(Some(report))
}

/// Decides whether start-up must rebuild the file; touches nothing.
fn why_recover(cfg: &Config, path: &Path) -> Result<Option<Cause>> {
    let cause =
        |reason: String, known_seq| Cause { reason, known_seq, file_exists: true, keep_file_if_unproven: false };
    if let Some((reason, seq)) = quarantine::read(path)? {
        return Ok(Some(Cause { file_exists: path.exists(), ..cause(format!("quarantined: {reason}"), seq) }));
    }
    if !path.exists() {
        return Ok(Some(Cause { file_exists: false, ..cause(MISSING.into(), None) }));
    }
    let conn = match db::open(path, &cfg.duckdb) {
        // Only evidence of damage sends the file aside; a lock another process holds,
        // a full disk or too little memory is an error to fix, not a reason to rebuild.
        Err(e) if db::classify_duckdb(&e.to_string()) == Failure::Damage => {
            return Ok(Some(cause(e.to_string(), None)));
        }
        Err(e) => return Err(e),
        Ok(conn) => conn,
    };
    if cfg.integrity.on_failure != OnIntegrityFailure::Recover {
        return Ok(None);
    }
    match integrity::scan_blocks(&conn) {
        Ok(_) => Ok(None),
        Err(e) if db::classify(&e) == Failure::Damage => Ok(Some(Cause {
            keep_file_if_unproven: true,
            ..cause(format!("integrity check at start: {e}"), max_seq(&conn).ok())
        })),
        Err(e) => {
            tracing::warn!(error = %e, "the block scan at start was inconclusive; starting, the periodic check retries");
            Ok(None)
        }
    }
}

fn read_meta(journal: &mut Option<Result<Replay>>) -> Witness<Option<Meta>> {
    match journal {
        None => Err("no journal is configured (redis.url)".into()),
        Some(Err(e)) => Err(format!("the journal is unreachable ({e})")),
        Some(Ok(j)) => j.meta().map_err(|e| format!("the journal is unreadable ({e})")),
    }
}

/// Ok when the journal provably holds every change above `base` up to `target` (the
/// highest sequence known to exist; `None`: only the journal can say).
fn prove(base: i64, target: Option<i64>, meta: &Witness<Option<Meta>>) -> Witness<()> {
    let known_covered = target.is_some_and(|t| t <= base);
    match meta {
        Err(_) if known_covered => Ok(()),
        Err(why) => Err(why.clone()),
        Ok(None) => Err("Redis holds no journal: nothing proves which changes came after the starting point".into()),
        Ok(Some(Meta { from: None, .. })) => Err("the journal predates completeness tracking (no journal:from)".into()),
        Ok(Some(Meta { from: Some(from), .. })) if *from > base => Err(format!(
            "the journal is complete only above seq {from}, but the starting point ends at seq {base}: changes in \
             between are gone (take snapshots more often than redis.retention)"
        )),
        Ok(Some(m)) if target.is_some_and(|t| m.seq < t) => Err(format!(
            "the journal ends at seq {}, but changes up to seq {} existed",
            m.seq,
            target.unwrap_or_default()
        )),
        Ok(Some(_)) => Ok(()),
    }
}

/// Moves the unusable file (and its WAL) aside, then the rebuilt one into place, and
/// clears the quarantine marker.
fn install(scratch: &Path, path: &Path, file_exists: bool) -> Result<()> {
    if db::wal_path(scratch).exists() {
        return Err(Error::Recovery("the rebuilt file still has a WAL after its checkpoint".into()));
    }
    if file_exists && path.exists() {
        let aside = path.with_extension(format!("duckdb.corrupt-{}", now_micros()));
        tracing::error!(moved_to = %aside.display(), "moving the unusable database file aside");
        std::fs::rename(path, &aside)?;
        let wal = db::wal_path(path);
        if wal.exists() {
            std::fs::rename(&wal, db::wal_path(&aside))?;
        }
    }
    std::fs::rename(scratch, path)?;
    quarantine::clear(path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn remove_file_and_wal(file: &Path) -> Result<()> {
    for f in [file.to_path_buf(), db::wal_path(file)] {
        match std::fs::remove_file(&f) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

fn max_seq(conn: &duckdb::Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT coalesce(max(seq), 0) FROM trades", [], |r| r.get(0))?)
}

/// Replays every journal entry above `after`, a page per transaction so memory stays
/// bounded by the page, not the journal. Returns the entries replayed.
fn replay(conn: &duckdb::Connection, journal: &mut Replay, mut after: i64) -> Result<usize> {
    let mut replayed = 0;
    loop {
        let page = journal.page_after(after)?;
        let Some(last) = page.last() else { return Ok(replayed) };
        after = last.seq;
        replayed += page.len();
        upsert(conn, &page)?;
        if page.len() < stream::PAGE {
            return Ok(replayed);
        }
    }
}

/// Upserts the newest state of each trade in `trades` (sequence order), in one
/// transaction: appended to a temporary table and merged with one `INSERT OR REPLACE`.
fn upsert(conn: &duckdb::Connection, trades: &[Trade]) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(from: Option<i64>, seq: i64) -> Witness<Option<Meta>> {
        Ok(Some(Meta { from, seq }))
    }

    #[test]
    fn completeness_needs_a_journal_from_the_starting_point_to_the_last_known_change() {
        assert_eq!(prove(50, Some(80), &meta(Some(40), 80)), Ok(()));
        assert_eq!(prove(50, None, &meta(Some(50), 90)), Ok(()), "the journal is the only witness");
        assert!(prove(50, Some(80), &meta(Some(51), 80)).unwrap_err().contains("only above seq 51"));
        assert!(prove(50, Some(90), &meta(Some(0), 80)).unwrap_err().contains("ends at seq 80"));
        assert!(prove(50, Some(80), &meta(None, 80)).unwrap_err().contains("journal:from"));
        assert!(prove(50, Some(50), &Ok(None)).is_err(), "an empty Redis proves nothing");
        assert!(prove(50, None, &Err("unreachable".into())).is_err(), "nothing known: nothing proven");
        assert_eq!(prove(80, Some(80), &Err("unreachable".into())), Ok(()), "the evidence ends at the snapshot");
    }
}
