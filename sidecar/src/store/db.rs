//! Opening the DuckDB file and mapping rows to [`Trade`]s.

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use duckdb::arrow::array::{ArrayRef, Decimal64Array, Int64Array, StringArray, TimestampMicrosecondArray};
use duckdb::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit as ArrowTime};
use duckdb::arrow::record_batch::RecordBatch;
use duckdb::types::{Decimal, TimeUnit, Value};
use duckdb::{Connection, Row};

use crate::config::DuckdbConfig;
use crate::error::{Error, Result};
use crate::store::model::{Side, Status, Trade};
use crate::store::money::Amount;

/// Columns selected by [`trade_from_row`], in order.
pub(crate) const TRADE_COLUMNS: &str = "id, symbol, side, quantity, price, status, epoch_us(ts), version, seq, \
     epoch_us(created_at), epoch_us(updated_at)";

/// Opens (or creates) the database file with the configured engine settings.
pub fn open(path: &Path, cfg: &DuckdbConfig) -> Result<Connection> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut flags = duckdb::Config::default().threads(i64::from(cfg.threads()))?.enable_autoload_extension(false)?;
    if let Some(limit) = &cfg.memory_limit {
        flags = flags.max_memory(limit)?;
    }
    let conn =
        Connection::open_with_flags(path, flags).map_err(|source| Error::Open { path: path.to_path_buf(), source })?;
    conn.execute_batch(&format!("SET checkpoint_threshold = '{}B';", cfg.checkpoint_threshold_bytes))?;
    conn.execute_batch("SET max_vacuum_tasks = 0")?;
    Ok(conn)
}

/// How many row-group merges DuckDB's checkpoint may schedule: its default, for the
/// checkpoints that [`checkpoint`] lets compact.
///
/// DuckDB starts a new row group at the first append after a checkpoint in a table
/// without an index (`trade_history`), and its checkpoint merges row groups that are
/// not full ("vacuum": three into two, rewriting up to 368,640 rows). Such a
/// checkpoint costs up to three or four times a usual one, and a checkpoint DuckDB
/// runs by itself runs inside the applier's COMMIT, which the followers, history
/// reads and snapshots wait for (docs/benchmarks.md, session 19). [`open`] turns the
/// merges off; the sidecar lets them run only in its own checkpoints where no one
/// waits.
const VACUUM_TASKS: u32 = 100;

/// Runs `CHECKPOINT`; with `compact`, DuckDB may also merge row groups that are not
/// full (see [`VACUUM_TASKS`]). The setting is the database's, not the connection's,
/// so it is back at zero whatever the checkpoint returned.
pub fn checkpoint(conn: &Connection, compact: bool) -> duckdb::Result<()> {
    if !compact {
        return conn.execute_batch("CHECKPOINT");
    }
    conn.execute_batch(&format!("SET max_vacuum_tasks = {VACUUM_TASKS}"))?;
    let done = conn.execute_batch("CHECKPOINT");
    conn.execute_batch("SET max_vacuum_tasks = 0")?;
    done
}

/// What a failed call says about the store. Decided in one place, [`classify`], so
/// that the writer, the integrity check and the snapshot code agree on what may be
/// retried, what needs a restart, and what is evidence of damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The stored data is damaged: a block checksum mismatch, a corrupt or unreadable
    /// file, an invariant the integrity check found broken, a snapshot that does not
    /// match its manifest. Only this may quarantine the database file.
    Damage,
    /// DuckDB invalidated the database instance (a checkpoint that failed, an internal
    /// error): every later statement fails until the process reopens the file, which
    /// replays the WAL.
    Fatal,
    /// May pass when tried again: out of memory, interrupted, no free read connection,
    /// a full disk while appending to the WAL (the transaction rolls back, nothing else).
    Transient,
    /// Anything else: a constraint, bad SQL, a bug.
    Other,
}

/// Classifies an error. DuckDB errors are read from their text, because the C API
/// hands duckdb-rs no usable error type (every failure has state 1); the text starts
/// with DuckDB's exception type (`Out of Memory Error: …`, `FATAL Error: …`).
pub(crate) fn classify(e: &Error) -> Failure {
    match e {
        Error::Db(db) => classify_duckdb(&db.to_string()),
        Error::Integrity(_) | Error::Snapshot(_) => Failure::Damage,
        Error::Unavailable(_) | Error::Dependency { .. } => Failure::Transient,
        Error::Io(io) => match io.kind() {
            std::io::ErrorKind::Interrupted
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::StorageFull => Failure::Transient,
            _ => Failure::Other,
        },
        _ => Failure::Other,
    }
}

/// Classifies a DuckDB error message (see [`classify`]).
pub(crate) fn classify_duckdb(message: &str) -> Failure {
    let lower = message.to_ascii_lowercase();
    // An invalidated database quotes the original error, which may itself look
    // transient or like damage; the instance is unusable either way.
    if lower.contains("has been invalidated") {
        return Failure::Fatal;
    }
    let kind = message.split_once(" Error: ").map_or("", |(kind, _)| kind);
    match kind {
        "FATAL" | "INTERNAL" => return Failure::Fatal,
        "Out of Memory" | "Interrupt" => return Failure::Transient,
        _ => {}
    }
    const DAMAGE: [&str; 4] =
        ["corrupt database file", "corrupt wal file", "data corruption", "not a valid duckdb database file"];
    if kind == "Serialization" || DAMAGE.iter().any(|d| lower.contains(d)) {
        return Failure::Damage;
    }
    const TRANSIENT: [&str; 4] =
        ["no space left on device", "could not allocate", "failed to pin block", "resource temporarily unavailable"];
    if TRANSIENT.iter().any(|t| lower.contains(t)) {
        return Failure::Transient;
    }
    Failure::Other
}

/// Path of the write-ahead log DuckDB keeps next to the database file.
pub(crate) fn wal_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".wal");
    PathBuf::from(p)
}

/// Current WAL size in bytes (0 when there is none).
pub(crate) fn wal_size(db: &Path) -> u64 {
    std::fs::metadata(wal_path(db)).map(|m| m.len()).unwrap_or(0)
}

/// Maps a row selected with [`TRADE_COLUMNS`].
pub(crate) fn trade_from_row(row: &Row<'_>) -> duckdb::Result<Trade> {
    let side: String = row.get(2)?;
    let status: String = row.get(5)?;
    let bad = |what: &str, v: &str| {
        duckdb::Error::FromSqlConversionFailure(0, duckdb::types::Type::Text, format!("bad {what} {v:?}").into())
    };
    let amount = |i: usize| -> duckdb::Result<Amount> {
        let d: Decimal = row.get(i)?;
        Amount::from_sql(d).ok_or_else(|| bad("amount", &d.to_string()))
    };
    Ok(Trade {
        id: row.get(0)?,
        symbol: row.get(1)?,
        side: Side::parse(&side).ok_or_else(|| bad("side", &side))?,
        quantity: amount(3)?,
        price: amount(4)?,
        status: Status::parse(&status).ok_or_else(|| bad("status", &status))?,
        ts: row.get(6)?,
        version: row.get(7)?,
        seq: row.get(8)?,
        created_at: row.get(9)?,
        updated_at: row.get(10)?,
    })
}

/// A trade as the values of a `trades` row, in table column order.
pub fn row_values(t: &Trade) -> [Value; 11] {
    [
        Value::Text(t.id.clone()),
        Value::Text(t.symbol.clone()),
        Value::Text(t.side.as_str().into()),
        t.quantity.to_sql(),
        t.price.to_sql(),
        Value::Text(t.status.as_str().into()),
        timestamp(t.ts),
        Value::BigInt(t.version),
        Value::BigInt(t.seq),
        timestamp(t.created_at),
        timestamp(t.updated_at),
    ]
}

/// Appends `trades` to `table` (shaped like `trades`) through the Appender, as one
/// column batch: DuckDB copies whole columns instead of converting value by value.
pub fn append(conn: &Connection, table: &str, trades: &[&Trade]) -> Result<()> {
    if trades.is_empty() {
        return Ok(());
    }
    let mut app = conn.appender(table)?;
    app.append_record_batch(column_batch(trades))?;
    app.flush()?;
    Ok(())
}

/// The `trades` table's columns, as Arrow types DuckDB maps one to one.
static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let (text, money, time) =
        (DataType::Utf8, DataType::Decimal64(18, 8), DataType::Timestamp(ArrowTime::Microsecond, None));
    let columns = [
        ("id", &text),
        ("symbol", &text),
        ("side", &text),
        ("quantity", &money),
        ("price", &money),
        ("status", &text),
        ("ts", &time),
        ("version", &DataType::Int64),
        ("seq", &DataType::Int64),
        ("created_at", &time),
        ("updated_at", &time),
    ];
    Arc::new(Schema::new(columns.map(|(name, t)| Field::new(name, t.clone(), false)).to_vec()))
});

fn column_batch(trades: &[&Trade]) -> RecordBatch {
    let text = |f: fn(&Trade) -> &str| Arc::new(trades.iter().map(|t| Some(f(t))).collect::<StringArray>()) as ArrayRef;
    let money = |f: fn(&Trade) -> Amount| {
        let units = Decimal64Array::from_iter_values(trades.iter().map(|t| f(t).units()));
        Arc::new(units.with_precision_and_scale(18, 8).expect("DECIMAL(18,8) is valid")) as ArrayRef
    };
    let time = |f: fn(&Trade) -> i64| {
        Arc::new(TimestampMicrosecondArray::from_iter_values(trades.iter().map(|t| f(t)))) as ArrayRef
    };
    let int = |f: fn(&Trade) -> i64| Arc::new(Int64Array::from_iter_values(trades.iter().map(|t| f(t)))) as ArrayRef;
    let columns = vec![
        text(|t| &t.id),
        text(|t| &t.symbol),
        text(|t| t.side.as_str()),
        money(|t| t.quantity),
        money(|t| t.price),
        text(|t| t.status.as_str()),
        time(|t| t.ts),
        int(|t| t.version),
        int(|t| t.seq),
        time(|t| t.created_at),
        time(|t| t.updated_at),
    ];
    RecordBatch::try_new(SCHEMA.clone(), columns).expect("columns match the schema")
}

/// A timestamp parameter from epoch microseconds.
pub fn timestamp(micros: i64) -> Value {
    Value::Timestamp(TimeUnit::Microsecond, micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_batch_appends_every_value_exactly() {
        use crate::store::change::tests::trade;
        let conn = Connection::open_in_memory().unwrap();
        crate::store::migrations::up(&conn, crate::store::migrations::embedded(), None).unwrap();
        let mut b = trade("b", 3, 9, Status::Cancelled);
        (b.side, b.quantity, b.price) = (Side::Sell, Amount::parse("9999999999.99999999").unwrap(), Amount::whole(0));
        let trades = [trade("a", 1, 8, Status::Filled), b];
        append(&conn, "trades", &trades.iter().collect::<Vec<_>>()).unwrap();
        let mut stmt = conn.prepare(&format!("SELECT {TRADE_COLUMNS} FROM trades ORDER BY id")).unwrap();
        let back: Vec<Trade> = stmt.query_map([], trade_from_row).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(back, trades);
        append(&conn, "trades", &[]).unwrap();
    }

    fn duckdb_error(conn: &Connection, sql: &str) -> Error {
        Error::from(conn.execute_batch(sql).expect_err(sql))
    }

    #[test]
    fn real_duckdb_errors_are_classified() {
        let small = duckdb::Config::default().max_memory("4MiB").unwrap().threads(1).unwrap();
        let conn = Connection::open_in_memory_with_flags(small).unwrap();
        // A list aggregate cannot spill: it must hold every value in memory at once.
        let oom = duckdb_error(&conn, "SELECT list(i::VARCHAR) FROM range(2000000) r(i)");
        assert!(oom.to_string().contains("Out of Memory Error"), "{oom}");
        assert_eq!(classify(&oom), Failure::Transient, "{oom}");

        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1)").unwrap();
        let dup = duckdb_error(&conn, "INSERT INTO t VALUES (1)");
        assert_eq!(classify(&dup), Failure::Other, "{dup}");

        let corrupt = damaged_block_error();
        assert!(corrupt.to_string().contains("checksum"), "{corrupt}");
        assert_eq!(classify(&corrupt), Failure::Damage, "{corrupt}");

        // Seen from DuckDB 1.5.6 on a full tmpfs (the root-only test in tests/disk_full.rs
        // produces them for real): a WAL append that failed rolls back and can be retried;
        // a checkpoint that failed invalidates the instance.
        let wal = "TransactionContext Error: Failed to commit: Could not write file \"/d/t.duckdb.wal\": No space \
                   left on device";
        assert_eq!(classify_duckdb(wal), Failure::Transient);
        let checkpoint = "FATAL Error: Failed to create checkpoint because of error: Could not write file \
                          \"/d/t.duckdb\": No space left on device";
        assert_eq!(classify_duckdb(checkpoint), Failure::Fatal);
        let after = "FATAL Error: Failed: database has been invalidated because of a previous fatal error. The \
                     database must be restarted prior to being used again.\nOriginal error: \"Corrupt database file\"";
        assert_eq!(classify_duckdb(after), Failure::Fatal);
        assert_eq!(classify(&Error::Unavailable("no free read connection".into())), Failure::Transient);
        assert_eq!(classify(&Error::Integrity("duplicate sequences".into())), Failure::Damage);
    }

    /// The error DuckDB gives when a scan reads a data block whose checksum fails.
    fn damaged_block_error() -> Error {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.duckdb");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t AS SELECT i, i::VARCHAR || 'x' AS s FROM range(300000) r(i); CHECKPOINT")
            .unwrap();
        let block: i64 = conn
            .query_row(
                "SELECT block_id FROM pragma_storage_info('t') WHERE column_name = 's' AND block_id >= 0 LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        drop(conn);
        // 3 header blocks of 4 KiB, then 256 KiB blocks starting with their checksum.
        let at = 3 * 4096 + block as usize * 256 * 1024 + 64;
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at..at + 64].iter_mut().for_each(|b| *b ^= 0x5a);
        std::fs::write(&path, bytes).unwrap();
        let conn = Connection::open(&path).unwrap();
        duckdb_error(&conn, "SELECT count(*), bit_xor(hash(s)) FROM t")
    }

    #[test]
    fn engine_settings_are_applied_and_wal_autocheckpoint_is_the_same_knob() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DuckdbConfig { threads: Some(2), checkpoint_threshold_bytes: 3 * 1024 * 1024, ..Default::default() };
        let conn = open(&dir.path().join("x.duckdb"), &cfg).unwrap();
        let get = |name: &str| -> String {
            conn.query_row(&format!("SELECT current_setting('{name}')::VARCHAR"), [], |r| r.get(0)).unwrap()
        };
        assert_eq!(get("threads"), "2");
        let threshold = get("checkpoint_threshold");
        assert!(threshold.starts_with("3.0 MiB") || threshold.starts_with("3.1 MB"), "{threshold}");
        assert_eq!(get("wal_autocheckpoint"), threshold, "wal_autocheckpoint is an alias");
        for missing in ["enable_wal", "journal_mode", "synchronous", "queue_size"] {
            let e = conn.execute_batch(&format!("SET {missing} = 1")).unwrap_err().to_string();
            assert!(e.contains("unrecognized configuration parameter"), "{missing}: {e}");
        }
        assert!(conn.execute_batch("PRAGMA integrity_check").is_err(), "DuckDB has no integrity_check");
    }

    /// The row-group merges wait for a compacting checkpoint: DuckDB starts a row
    /// group at the first append after each checkpoint in a table without an index.
    #[test]
    fn only_a_compacting_checkpoint_merges_the_row_groups_appends_started() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("x.duckdb"), &DuckdbConfig::default()).unwrap();
        conn.execute_batch("CREATE TABLE history (n BIGINT, s VARCHAR)").unwrap();
        let append_and_checkpoint = |compact: bool| {
            conn.execute_batch("INSERT INTO history SELECT i, md5(i::VARCHAR) FROM range(1000) r(i)").unwrap();
            checkpoint(&conn, compact).unwrap();
        };
        let row_groups = || -> i64 {
            conn.query_row("SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('history')", [], |r| r.get(0))
                .unwrap()
        };
        for _ in 0..4 {
            append_and_checkpoint(false);
        }
        assert_eq!(row_groups(), 4, "a checkpoint under load leaves the row groups as they are");
        append_and_checkpoint(true);
        assert_eq!(row_groups(), 1, "a compacting checkpoint merges them");
        let vacuum_tasks: i64 = conn.query_row("SELECT current_setting('max_vacuum_tasks')", [], |r| r.get(0)).unwrap();
        assert_eq!(vacuum_tasks, 0, "the merges are off again after it");
        append_and_checkpoint(false);
        assert_eq!(row_groups(), 2);
    }
}
