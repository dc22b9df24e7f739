//! Opening the DuckDB file and mapping rows to [`Trade`]s.

use std::path::{Path, PathBuf};

use duckdb::types::{Decimal, TimeUnit, Value};
use duckdb::{Connection, Row};

use crate::config::DuckdbConfig;
use crate::error::{Error, Result};
use crate::model::{Side, Status, Trade};
use crate::money::Amount;

/// Columns selected by [`trade_from_row`], in order.
pub const TRADE_COLUMNS: &str = "id, symbol, side, quantity, price, status, epoch_us(ts), version, seq, \
     epoch_us(created_at), epoch_us(updated_at)";

/// Opens (or creates) the database file with the configured engine settings.
pub fn open(path: &Path, cfg: &DuckdbConfig) -> Result<Connection> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut flags = duckdb::Config::default().threads(i64::from(cfg.threads))?.enable_autoload_extension(false)?;
    if let Some(limit) = &cfg.memory_limit {
        flags = flags.max_memory(limit)?;
    }
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| Error::Internal(format!("cannot open database {}: {e}", path.display())))?;
    conn.execute_batch(&format!("SET checkpoint_threshold = '{}B';", cfg.checkpoint_threshold_bytes))?;
    Ok(conn)
}

/// Path of the write-ahead log DuckDB keeps next to the database file.
pub fn wal_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".wal");
    PathBuf::from(p)
}

/// Current WAL size in bytes (0 when there is none).
pub fn wal_size(db: &Path) -> u64 {
    std::fs::metadata(wal_path(db)).map(|m| m.len()).unwrap_or(0)
}

/// Maps a row selected with [`TRADE_COLUMNS`].
pub fn trade_from_row(row: &Row<'_>) -> duckdb::Result<Trade> {
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

/// A timestamp parameter from epoch microseconds.
pub fn timestamp(micros: i64) -> Value {
    Value::Timestamp(TimeUnit::Microsecond, micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_settings_are_applied_and_wal_autocheckpoint_is_the_same_knob() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DuckdbConfig { threads: 2, checkpoint_threshold_bytes: 3 * 1024 * 1024, ..Default::default() };
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
}
