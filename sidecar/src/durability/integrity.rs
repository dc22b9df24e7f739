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
//! Every error is classified ([`db::classify`]):
//! - **damage** (a checksum or corruption error from DuckDB, an invariant broken, a
//!   snapshot that does not match its manifest) and other errors fail the check: readiness
//!   fails, `/v1/status` and metrics show it, it is logged at error level; the next passing
//!   check clears it. With `integrity.on_failure: recover`, damage found by the database
//!   checks (1 and 2) — and only that — also stops the process cleanly; once the journal
//!   holds every committed change the file is quarantined and the restart recovers it
//!   (see [`crate::durability::quarantine`]).
//! - **transient** errors (out of memory, no free read connection, interrupted I/O) say
//!   nothing about the data: the database checks are retried, and if they still cannot
//!   finish the check is `inconclusive` (status, `tradestore_integrity_inconclusive_total`,
//!   a warning). Readiness keeps the previous verdict; nothing is quarantined.
//! - **fatal**: DuckDB invalidated the instance; the process stops (non-zero) so the
//!   restart reopens the file, like a fatal error on the write path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ConstantBuilder, Retryable};
use tokio_util::sync::CancellationToken;
use tradestore_api::status::{CheckState, CheckStatus};

use crate::config::OnIntegrityFailure;
use crate::durability::snapshot::{self, Snapshots};
use crate::error::{Error, Result};
use crate::store::db::{self, Failure};
use crate::store::model::{format_micros, now_micros};
use crate::store::reader::{Reader, load_symbol_states};
use crate::telemetry::Shared;
use crate::telemetry::health::Health;
use crate::telemetry::metrics::Metrics;

/// How often the database checks are tried again when they fail for a transient reason.
const RETRIES: usize = 2;
/// Pause between those attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// What a check reads and whom it tells: the periodic task owns one.
pub(crate) struct Checker {
    /// Read connections and the hot state to compare.
    pub reader: Reader,
    /// The local snapshot directory: its attach lock, and the newest snapshot to verify.
    pub snapshots: Arc<Snapshots>,
    /// Readiness follows the verdict; a fatal error or damage can stop the process.
    pub health: Arc<Health>,
    /// Verdict, duration and inconclusive checks.
    pub metrics: Arc<Metrics>,
    /// Whether damage the database checks find restarts into recovery.
    pub on_failure: OnIntegrityFailure,
    /// The last check, for `/v1/status`.
    pub status: Shared<CheckStatus>,
}

impl Checker {
    /// Checks now and then every `interval`, until `stop` is cancelled. A check in
    /// progress finishes first: its scan runs on a read connection off the runtime,
    /// which dropping the task would not stop.
    pub(crate) async fn run(self, interval: Duration, stop: CancellationToken) {
        loop {
            self.check().await;
            if stop.run_until_cancelled(tokio::time::sleep(interval)).await.is_none() {
                return;
            }
        }
    }

    /// Runs one full check, records it and reacts to a failure.
    pub(crate) async fn check(&self) -> CheckStatus {
        let started = Instant::now();
        let outcome = self.database_checks_retried().await;
        let database_failed = outcome.is_err();
        let outcome = outcome.and_then(|rows| {
            if let Some((_, dir)) = self.snapshots.latest()? {
                snapshot::verify(&dir)?;
            }
            Ok(rows)
        });
        let state = self.react(&outcome, database_failed);
        let status = CheckStatus {
            state,
            last_run: Some(format_micros(now_micros())),
            ok: match state {
                CheckState::Passed => Some(true),
                CheckState::Failed => Some(false),
                CheckState::NotRun | CheckState::Inconclusive => None,
            },
            error: outcome.as_ref().err().map(|e| e.to_string()),
            duration_ms: started.elapsed().as_millis() as u64,
            rows_scanned: *outcome.as_ref().unwrap_or(&0),
        };
        self.metrics.integrity_duration.observe(started.elapsed().as_secs_f64());
        *self.status.lock() = status.clone();
        status
    }

    /// The database checks (blocks and invariants), tried again while they fail for a
    /// transient reason.
    async fn database_checks_retried(&self) -> Result<i64> {
        (|| self.database_checks())
            .retry(ConstantBuilder::new().with_delay(RETRY_PAUSE).with_max_times(RETRIES))
            .sleep(tokio::time::sleep)
            .when(|e| db::classify(e) == Failure::Transient)
            .notify(|e, _| tracing::warn!(error = %e, "integrity check hit a transient error; retrying"))
            .await
    }

    async fn database_checks(&self) -> Result<i64> {
        // A start hands the applier the backlog the log replayed (the writer's
        // `take_back`): the hot state shows it at once, DuckDB a moment later. The
        // comparison needs both at one seq; if DuckDB lags on, it retries and skips.
        let _ = self.reader.caught_up().await;
        let (reader, snapshots) = (self.reader.clone(), self.snapshots.clone());
        self.reader
            .with_conn(move |conn| {
                let tables = snapshots.with_attach_lock(|| own_tables(conn))?;
                let rows = scan_tables(conn, &tables)?;
                check_invariants(conn)?;
                compare_hot_state(conn, &reader)?;
                Ok(rows)
            })
            .await
    }

    /// Updates readiness, metrics and logs for `outcome`, stops the process when the
    /// failure calls for it, and returns the resulting state.
    fn react(&self, outcome: &Result<i64>, database_failed: bool) -> CheckState {
        let e = match outcome {
            Ok(rows) => {
                self.health.set_integrity(None);
                self.metrics.integrity_ok.set(1);
                tracing::debug!(rows, "integrity check passed");
                return CheckState::Passed;
            }
            Err(e) => e,
        };
        let failure = db::classify(e);
        if failure == Failure::Transient {
            self.metrics.integrity_inconclusive.inc();
            tracing::warn!(error = %e, "integrity check inconclusive (a transient error, not evidence of damage)");
            return CheckState::Inconclusive;
        }
        self.health.set_integrity(Some(e.to_string()));
        self.metrics.integrity_ok.set(0);
        tracing::error!(error = %e, ?failure, "INTEGRITY CHECK FAILED");
        match failure {
            Failure::Fatal => self.health.set_fatal(e.to_string()),
            Failure::Damage if database_failed && self.on_failure == OnIntegrityFailure::Recover => {
                self.health.request_recovery(e.to_string())
            }
            _ => {}
        }
        CheckState::Failed
    }
}

/// Invariants of the stored data alone: unique commit sequences, no sync watermark
/// ahead of the store.
fn check_invariants(conn: &duckdb::Connection) -> Result<()> {
    let dup: i64 = conn.query_row("SELECT count(*) - count(DISTINCT seq) FROM trades", [], |r| r.get(0))?;
    if dup != 0 {
        return Err(Error::Integrity(format!("{dup} duplicate commit sequence numbers")));
    }
    let ahead: i64 = conn.query_row(
        "SELECT count(*) FROM sync_state WHERE watermark > (SELECT coalesce(max(seq), 0) FROM trades)",
        [],
        |r| r.get(0),
    )?;
    if ahead != 0 {
        return Err(Error::Integrity("a sync watermark is ahead of the store".into()));
    }
    Ok(())
}

/// Reads every value of every table of the open database, so that every block is
/// read from disk (and its checksum verified) unless already cached. Returns the rows.
pub fn scan_blocks(conn: &duckdb::Connection) -> Result<i64> {
    scan_tables(conn, &own_tables(conn)?)
}

/// The tables of the connection's own database and their columns. The catalog
/// functions visit every attached database, so the periodic check calls this under
/// [`snapshot::Snapshots::with_attach_lock`].
fn own_tables(conn: &duckdb::Connection) -> Result<Vec<(String, Vec<String>)>> {
    let tables: Vec<String> = conn
        .prepare("SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()")?
        .query_map([], |r| r.get(0))?
        .collect::<duckdb::Result<_>>()?;
    let mut out = Vec::with_capacity(tables.len());
    for t in tables {
        let cols: Vec<String> = conn
            .prepare(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = ? AND database_name = current_database()",
            )?
            .query_map([&t], |r| r.get(0))?
            .collect::<duckdb::Result<_>>()?;
        out.push((t, cols));
    }
    Ok(out)
}

fn scan_tables(conn: &duckdb::Connection, tables: &[(String, Vec<String>)]) -> Result<i64> {
    let mut rows = 0i64;
    for (t, cols) in tables {
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
        let same = db_state == expected; // exact: no epsilon (see crate::store::money)
        if !same {
            return Err(Error::Integrity(format!(
                "in-memory trade state differs from the trade_state view at seq {db_seq}"
            )));
        }
        return Ok(());
    }
    tracing::warn!("integrity: store too busy to compare the hot state this round");
    Ok(())
}
