//! Start-up recovery, and the proof that it is complete.
//!
//! **Rebuild** ([`run`]): a missing, unopenable or quarantined database file is rebuilt
//! in a scratch file from the newest snapshot whose checksum verifies, checkpointed, and
//! only then renamed into place (the unusable file and its WAL are moved aside, never
//! deleted); the local commit log then replays what the snapshot lacks, as on every
//! start. The Redis journal is replayed into the scratch file only when the local log
//! cannot bridge the gap by itself (a lost log volume, a log trimmed past the snapshot
//! that verified). A crash midway leaves the cause in place, so the next start simply
//! recovers again.
//!
//! **Catch-up** ([`catch_up`]): a file that opens but ends below the journal and the
//! local log (a disk that lost the flushed tail of DuckDB's WAL, and the log with it)
//! gets the missing changes replayed from the journal before the writer hands out any
//! sequence number, so a `seq` is never given to two different changes.
//!
//! Both replay only what the witnesses prove complete: the local log holds every change
//! in its span, and the journal (see [`crate::followers::journal::stream`]) every change
//! above `journal:from`. Chained from the starting point, they must reach the last
//! sequence known to exist (the quarantine marker's, the damaged file's, the journal's,
//! the log's own). When that cannot be shown — no log, Redis unreachable, restarted
//! empty, trimmed past the snapshot — start-up stops with an error saying so, unless
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
use crate::store::model::{Trade, now_micros};
use crate::store::{log, migrations};

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

/// What a witness can testify, or why it cannot.
pub type Witness<T> = std::result::Result<T, String>;

/// The changes a witness holds: every `seq` above `after`, up to and including `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    after: i64,
    to: i64,
}

/// What the local commit log in `dir` holds, read without changing it.
pub fn local_log(dir: &Path) -> Witness<Option<Span>> {
    if !dir.exists() {
        return Ok(None);
    }
    let report = log::verify(dir).map_err(|e| e.to_string())?;
    Ok(report.span().map(|(after, to)| Span { after: after as i64, to: to as i64 }))
}

/// The span a witness holds, if it could say.
fn held(local: &Witness<Option<Span>>) -> Option<Span> {
    local.as_ref().ok().copied().flatten()
}

/// Whether snapshot + local log alone would rebuild every change up to `last_seq`:
/// the log reaches back to the newest snapshot (`snapshot_seq`; without one, to the
/// first change) and on to `last_seq`.
pub fn log_rebuilds(local: &Witness<Option<Span>>, snapshot_seq: Option<i64>, last_seq: i64) -> bool {
    let base = snapshot_seq.unwrap_or(0);
    held(local).is_some_and(|s| s.after <= base && s.to >= last_seq)
}

/// Rebuilds `cfg.database_path()` when it is missing (and something to recover from
/// exists), cannot be opened, was quarantined, or — with `integrity.on_failure:
/// recover` — fails the block scan at start; otherwise does nothing.
pub async fn run(cfg: &Config, backups: &Backups, redis: Option<&redis::Client>) -> Result<Option<RecoveryReport>> {
    let path = cfg.database_path();
    let scratch = path.with_extension("duckdb.recovering");
    remove_file_and_wal(&scratch)?; // left by an interrupted rebuild: derived data
    let Some(cause) = why_recover(cfg, &path)? else { return Ok(None) };
    let local = &local_log(&cfg.commit_log_dir());
    let mut journal = redis.map(|c| Replay::connect(c, Keys::new(&cfg.redis.key_prefix), cfg.recovery.journal_wait));
    let meta = read_meta(&mut journal);
    let restored = backups.restore_newest(&scratch).await?;
    let span = held(local);
    let nothing_anywhere = restored.is_none() && span.is_none() && (redis.is_none() || matches!(meta, Ok(None)));
    if cause.reason == MISSING && nothing_anywhere {
        remove_file_and_wal(&scratch)?;
        return Ok(None); // a new store: no snapshot, no log, and no journal to speak of
    }
    let base = restored.as_ref().map_or(0, |m| m.seq);
    let journaled = meta.clone().ok().flatten().map(|m| m.seq);
    let target = cause.known_seq.into_iter().chain(journaled).chain(span.map(|s| s.to)).max();
    let mut report = RecoveryReport {
        reason: cause.reason.clone(),
        snapshot: restored.as_ref().map(|m| m.id.clone()),
        snapshot_seq: base,
        target_seq: target,
        ..Default::default()
    };
    if let Err(why) = prove(base, target, local, &meta) {
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
    let log_suffices = target.is_some_and(|t| reach(base, span.as_slice()) >= t);
    if let (false, Some(Ok(j))) = (log_suffices, journal.as_mut()) {
        report.replayed = replay(&conn, j, base)?;
    }
    report.seq = max_seq(&conn)?;
    conn.execute_batch("CHECKPOINT")?;
    drop(conn);
    install(&scratch, &path, cause.file_exists)?;
    tracing::warn!(?report, "rebuilt the database file; the commit log replays next");
    Ok(Some(report))
}

/// Completes a report once the commit log has replayed `log_replayed` changes into
/// the recovered store, which now ends at `seq`.
pub fn finish(mut report: RecoveryReport, log_replayed: u64, seq: i64) -> RecoveryReport {
    report.log_replayed = log_replayed;
    report.seq = seq;
    report.complete = report.warning.is_none() && report.target_seq.is_some_and(|t| seq >= t);
    tracing::warn!(?report, "recovered");
    report
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
    if meta.as_ref().is_none_or(|m| m.seq <= store) {
        return Ok(None); // the usual start: read the log only when the journal is ahead
    }
    // What the local log holds, it replays next, with every version's history.
    let local = &local_log(&cfg.commit_log_dir());
    let local_reach = reach(store, held(local).as_slice());
    let Some(Meta { seq: ahead, .. }) = meta.filter(|m| m.seq > local_reach) else { return Ok(None) };
    let mut report = RecoveryReport {
        reason: format!("behind the journal: the file ends at seq {store}, the journal at {ahead}"),
        snapshot_seq: store,
        target_seq: Some(ahead),
        ..Default::default()
    };
    tracing::error!(store, journal = ahead, "the store lost committed changes the journal holds; replaying them");
    if let Err(why) = prove(store, Some(ahead), local, &Ok(meta)) {
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

/// How far from `base` the witnesses' spans, chained, hold every change.
fn reach(base: i64, spans: &[Span]) -> i64 {
    let mut reach = base;
    loop {
        let next = spans.iter().filter(|s| s.after <= reach).map(|s| s.to).fold(reach, i64::max);
        if next == reach {
            return reach;
        }
        reach = next;
    }
}

fn journal_span(meta: &Witness<Option<Meta>>) -> Option<Span> {
    match meta {
        Ok(Some(Meta { from: Some(from), seq })) => Some(Span { after: *from, to: *seq }),
        _ => None,
    }
}

/// Ok when the local log and the journal, chained, provably hold every change above
/// `base` up to `target` (the highest sequence known to exist; `None`: nothing says).
fn prove(base: i64, target: Option<i64>, local: &Witness<Option<Span>>, meta: &Witness<Option<Meta>>) -> Witness<()> {
    let span = held(local);
    let spans: Vec<Span> = span.into_iter().chain(journal_span(meta)).collect();
    // Without a log, the journal's own rules decide (an emptied Redis proves nothing).
    if span.is_some() && target.is_some_and(|t| reach(base, &spans) >= t) {
        return Ok(());
    }
    let from_log = reach(base, span.as_slice());
    prove_by_journal(from_log, target, meta).map_err(|why| match local {
        Err(e) => format!("{why}; the local commit log is unreadable ({e})"),
        Ok(None) => format!("{why}; there is no local commit log"),
        Ok(Some(s)) if s.after > base => {
            format!("{why}; the local commit log holds only seq {} to {}", s.after + 1, s.to)
        }
        Ok(Some(_)) => why,
    })
}

/// Ok when the journal provably holds every change above `base` up to `target`.
fn prove_by_journal(base: i64, target: Option<i64>, meta: &Witness<Option<Meta>>) -> Witness<()> {
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
/// transaction: appended to a temporary table and merged with one `INSERT OR REPLACE`;
/// the versions it replaces go to the history first.
fn upsert(conn: &duckdb::Connection, trades: &[Trade]) -> Result<()> {
    let mut newest: HashMap<&str, &Trade> = HashMap::with_capacity(trades.len());
    for t in trades {
        newest.insert(t.id.as_str(), t); // in sequence order: the last one wins
    }
    conn.execute_batch("CREATE OR REPLACE TEMP TABLE replay AS SELECT * FROM trades LIMIT 0; BEGIN TRANSACTION")?;
    let result = (|| {
        db::append(conn, "replay", &newest.values().copied().collect::<Vec<_>>())?;
        conn.execute_batch(
            "INSERT INTO trade_history SELECT t.* FROM trades t JOIN replay r ON t.id = r.id \
             WHERE t.version < r.version; INSERT OR REPLACE INTO trades SELECT * FROM replay",
        )?;
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

    const NO_LOG: Witness<Option<Span>> = Ok(None);

    fn log(after: i64, to: i64) -> Witness<Option<Span>> {
        Ok(Some(Span { after, to }))
    }

    #[test]
    fn completeness_needs_a_journal_from_the_starting_point_to_the_last_known_change() {
        assert_eq!(prove(50, Some(80), &NO_LOG, &meta(Some(40), 80)), Ok(()));
        assert!(prove(50, Some(80), &NO_LOG, &meta(Some(51), 80)).unwrap_err().contains("only above seq 51"));
        assert!(prove(50, Some(90), &NO_LOG, &meta(Some(0), 80)).unwrap_err().contains("ends at seq 80"));
        assert!(prove(50, Some(80), &NO_LOG, &meta(None, 80)).unwrap_err().contains("journal:from"));
        assert!(prove(50, Some(50), &NO_LOG, &Ok(None)).is_err(), "an empty Redis proves nothing");
        assert!(prove(50, None, &NO_LOG, &Err("unreachable".into())).is_err(), "nothing known: nothing proven");
        let err = prove(50, Some(80), &NO_LOG, &Err("unreachable".into())).unwrap_err();
        assert!(err.contains("unreachable") && err.contains("no local commit log"), "{err}");
        assert_eq!(prove(80, Some(80), &NO_LOG, &Err("unreachable".into())), Ok(()), "the evidence ends at the base");
    }

    #[test]
    fn the_local_log_proves_alone_or_chained_with_the_journal() {
        let no_redis: Witness<Option<Meta>> = Err("no journal is configured".into());
        assert_eq!(prove(50, Some(90), &log(30, 90), &no_redis), Ok(()), "the log holds all after the snapshot");
        assert_eq!(prove(0, Some(90), &log(0, 90), &no_redis), Ok(()), "an untrimmed log without a snapshot");
        let err = prove(50, Some(90), &log(60, 90), &no_redis).unwrap_err();
        assert!(err.contains("holds only seq 61 to 90"), "a gap between the snapshot and the log: {err}");
        assert_eq!(prove(50, Some(90), &log(60, 90), &meta(Some(40), 70)), Ok(()), "the journal bridges the gap");
        assert_eq!(
            prove(50, Some(120), &log(40, 90), &meta(Some(80), 120)),
            Ok(()),
            "the journal goes on after the log"
        );
        let err = prove(50, Some(120), &log(40, 90), &meta(Some(95), 120)).unwrap_err();
        assert!(err.contains("only above seq 95"), "{err}");
        let err = prove(50, Some(90), &Err("corrupt at offset 7".into()), &no_redis).unwrap_err();
        assert!(err.contains("corrupt at offset 7") && err.contains("no journal"), "{err}");
    }

    #[test]
    fn the_log_alone_rebuilds_when_it_reaches_back_to_the_snapshot() {
        assert!(log_rebuilds(&log(40, 90), Some(50), 90));
        assert!(log_rebuilds(&log(0, 90), None, 90), "no snapshot: a log from the first change");
        assert!(!log_rebuilds(&log(60, 90), Some(50), 90), "trimmed past the snapshot");
        assert!(!log_rebuilds(&log(30, 90), None, 90), "no snapshot and a trimmed log");
        assert!(!log_rebuilds(&log(40, 80), Some(50), 90), "short of the last change");
        assert!(!log_rebuilds(&NO_LOG, Some(50), 90));
        assert!(!log_rebuilds(&Err("corrupt".into()), Some(50), 90));
    }

    #[test]
    fn reach_follows_spans_in_any_order_and_stops_at_a_gap() {
        let s = |after, to| Span { after, to };
        assert_eq!(reach(10, &[]), 10);
        assert_eq!(reach(10, &[s(30, 50), s(5, 30)]), 50);
        assert_eq!(reach(10, &[s(11, 50)]), 10, "seq 11 is in neither");
        assert_eq!(reach(60, &[s(5, 30)]), 60, "a span behind the base adds nothing");
    }
}
