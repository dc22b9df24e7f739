//! Integrity checks (DuckDB has no `PRAGMA integrity_check`). Every
//! `integrity.interval` and once at start, on a read connection:
//!
//! 1. **Blocks** — scan every column of every table. DuckDB verifies a block's checksum
//!    when it reads it from disk, so a flipped byte in any block not already in the
//!    buffer pool fails the scan with `Data Corruption Error`. (Blocks cached in memory
//!    are not re-read; they were verified when loaded.)
//! 2. **Invariants** — the in-memory trade state equals DuckDB's `trade_state` view,
//!    commit sequences are unique, and no sync watermark is ahead of the store.
//! 3. **Latest snapshot** — its size and SHA-256 still match its manifest.
//!
//! A failure makes readiness fail, shows in `/v1/status` and metrics, and is logged at
//! error level; the next passing check clears it. With `integrity.on_failure: recover`
//! a failure of the database checks (1 and 2) also stops the process cleanly; once the
//! journal holds every committed change the file is quarantined and the restart
//! recovers it (see [`crate::recovery`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::app::{App, StopReason};
use crate::config::OnIntegrityFailure;
use crate::error::{Error, Result};
use crate::model::format_micros;
use crate::reader::{Reader, load_symbol_states};
use crate::snapshot;

/// The last check's outcome, for `/v1/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckStatus {
    /// When the last check finished (RFC 3339).
    pub last_run: Option<String>,
    /// It passed.
    pub ok: bool,
    /// What failed.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: u64,
    /// Rows scanned.
    pub rows_scanned: i64,
}

/// Shared check status.
pub type SharedStatus = Arc<Mutex<CheckStatus>>;

/// Runs one full check and records it.
pub async fn check(app: &Arc<App>) -> CheckStatus {
    let started = Instant::now();
    let reader = app.reader.clone();
    let outcome = app
        .reader
        .with_conn(move |conn| {
            let rows = scan_blocks(conn)?;
            let dup: i64 = conn.query_row("SELECT count(*) - count(DISTINCT seq) FROM trades", [], |r| r.get(0))?;
            if dup != 0 {
                return Err(Error::Internal(format!("{dup} duplicate commit sequence numbers")));
            }
            let ahead: i64 = conn.query_row(
                "SELECT count(*) FROM sync_state WHERE watermark > (SELECT coalesce(max(seq), 0) FROM trades)",
                [],
                |r| r.get(0),
            )?;
            if ahead != 0 {
                return Err(Error::Internal("a sync watermark is ahead of the store".into()));
            }
            compare_hot_state(conn, &reader)?;
            Ok(rows)
        })
        .await;
    let database_failed = outcome.is_err();
    let outcome = outcome.and_then(|rows| {
        if let Some((_, dir)) = app.backups.latest_local()? {
            snapshot::verify(&dir)?;
        }
        Ok(rows)
    });
    let status = CheckStatus {
        last_run: Some(format_micros(crate::model::now_micros())),
        ok: outcome.is_ok(),
        error: outcome.as_ref().err().map(|e| e.to_string()),
        duration_ms: started.elapsed().as_millis() as u64,
        rows_scanned: *outcome.as_ref().unwrap_or(&0),
    };
    app.metrics.integrity_ok.set(i64::from(status.ok));
    app.metrics.integrity_duration.observe(started.elapsed().as_secs_f64());
    match &status.error {
        None => {
            app.health.set_integrity(None);
            tracing::debug!(ms = status.duration_ms, rows = status.rows_scanned, "integrity check passed");
        }
        Some(e) => {
            app.health.set_integrity(Some(e.clone()));
            tracing::error!(error = %e, "INTEGRITY CHECK FAILED");
            if database_failed && app.cfg.integrity.on_failure == OnIntegrityFailure::Recover {
                app.request_stop(StopReason::Recover(e.clone()));
            }
        }
    }
    *app.integrity.lock().unwrap_or_else(|e| e.into_inner()) = status.clone();
    status
}

/// Reads every value of every table of the open database, so that every block is
/// read from disk (and its checksum verified) unless already cached. Returns the rows.
pub fn scan_blocks(conn: &duckdb::Connection) -> Result<i64> {
    let tables: Vec<String> = conn
        .prepare("SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()")?
        .query_map([], |r| r.get(0))?
        .collect::<duckdb::Result<_>>()?;
    let mut rows = 0i64;
    for t in &tables {
        let cols: Vec<String> = conn
            .prepare(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = ? AND database_name = current_database()",
            )?
            .query_map([t], |r| r.get(0))?
            .collect::<duckdb::Result<_>>()?;
        // Hash every value: `count(col)` alone can be answered from validity masks
        // without reading the data blocks.
        let values = cols.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
        let (n, _): (i64, Option<u64>) =
            conn.query_row(&format!("SELECT count(*), bit_xor(hash({values})) FROM \"{t}\""), [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        rows += n;
    }
    Ok(rows)
}

/// Compares the in-memory trade state with the `trade_state` view at the same commit:
/// the transaction's snapshot is taken while the hot state is locked, and the pair is
/// used only when both are at the same sequence (a commit can be visible in DuckDB a
/// moment before the writer applies it in memory), retrying briefly otherwise.
fn compare_hot_state(conn: &duckdb::Connection, reader: &Reader) -> Result<()> {
    for _ in 0..20 {
        let (expected, hot_seq, db_seq) = reader.with_state(|hot| -> Result<_> {
            conn.execute_batch("BEGIN TRANSACTION")?;
            let db_seq: i64 = conn.query_row("SELECT coalesce(max(seq), 0) FROM trades", [], |r| r.get(0))?;
            Ok((hot.all_symbols(), hot.last_seq(), db_seq))
        })?;
        if hot_seq != db_seq {
            conn.execute_batch("ROLLBACK")?;
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let db_state = load_symbol_states(conn);
        conn.execute_batch("COMMIT")?;
        let db_state = db_state?;
        let same = db_state == expected; // exact: no epsilon (see crate::money)
        if !same {
            return Err(Error::Internal(format!(
                "in-memory trade state differs from the trade_state view at seq {db_seq}"
            )));
        }
        return Ok(());
    }
    tracing::warn!("integrity: store too busy to compare the hot state this round");
    Ok(())
}

/// Checks now and then every `interval`, until the process ends.
pub async fn run(app: Arc<App>, interval: Duration) {
    loop {
        check(&app).await;
        tokio::time::sleep(interval).await;
    }
}
