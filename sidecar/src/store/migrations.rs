//! Schema migrations embedded from the repository's `migrations/` folder.
//!
//! Files are named `NNNN_name.up.sql` and `NNNN_name.down.sql`. The table
//! `schema_migrations` records each applied version with the SHA-256 of its
//! forward script. The sidecar refuses a file whose schema is newer than it knows
//! or whose applied scripts changed since they ran.

use std::sync::LazyLock;

use duckdb::Connection;
use include_dir::{Dir, include_dir};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

static DIR: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../migrations");

/// One migration: a forward and a rollback script.
#[derive(Debug, Clone)]
pub struct Migration {
    /// Version number, from 1 upwards without gaps.
    pub version: i64,
    /// Name from the file name.
    pub name: String,
    /// Forward script.
    pub up: String,
    /// Rollback script.
    pub down: String,
}

impl Migration {
    /// SHA-256 of the forward script, hex.
    pub(crate) fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.up.as_bytes()))
    }
}

/// A row of `schema_migrations`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Applied {
    /// Version.
    pub version: i64,
    /// Name.
    pub name: String,
    /// Checksum of the forward script that ran.
    pub checksum: String,
    /// When it ran (RFC 3339).
    pub applied_at: String,
}

/// What `migrate status` reports.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Status {
    /// Highest applied version (0 for an empty file).
    pub current: i64,
    /// Highest version this binary knows.
    pub latest: i64,
    /// Applied migrations.
    pub applied: Vec<Applied>,
    /// Known versions not applied yet.
    pub pending: Vec<i64>,
}

/// The migrations compiled into this binary, ordered by version.
pub fn embedded() -> &'static [Migration] {
    static ALL: LazyLock<Vec<Migration>> = LazyLock::new(|| {
        parse(DIR.files().map(|f| (f.path().to_string_lossy().into_owned(), f.contents())))
            .expect("embedded migrations are valid")
    });
    &ALL
}

/// Builds the ordered migration list from `(file name, contents)` pairs, checking
/// that every version has both scripts and versions run 1, 2, 3, … without gaps.
pub(crate) fn parse<'a>(files: impl Iterator<Item = (String, &'a [u8])>) -> Result<Vec<Migration>> {
    let mut map: std::collections::BTreeMap<i64, (String, Option<String>, Option<String>)> = Default::default();
    for (path, contents) in files {
        let bad = || Error::Migration(format!("unexpected file {path:?} (want NNNN_name.up.sql / .down.sql)"));
        let (stem, up) = if let Some(s) = path.strip_suffix(".up.sql") {
            (s, true)
        } else if let Some(s) = path.strip_suffix(".down.sql") {
            (s, false)
        } else {
            return Err(bad());
        };
        let (num, name) = stem.split_once('_').ok_or_else(bad)?;
        let version: i64 = num.parse().map_err(|_| bad())?;
        let text = String::from_utf8(contents.to_vec()).map_err(|_| bad())?;
        let entry = map.entry(version).or_insert_with(|| (name.to_string(), None, None));
        if entry.0 != name {
            return Err(Error::Migration(format!("version {version} has two names: {} and {name}", entry.0)));
        }
        if up { entry.1 = Some(text) } else { entry.2 = Some(text) }
    }
    let mut out = Vec::new();
    for (i, (version, (name, up, down))) in map.into_iter().enumerate() {
        if version != i as i64 + 1 {
            return Err(Error::Migration(format!("migration versions must run 1, 2, 3…; found {version}")));
        }
        let (Some(up), Some(down)) = (up, down) else {
            return Err(Error::Migration(format!("migration {version} needs both .up.sql and .down.sql")));
        };
        out.push(Migration { version, name, up, down });
    }
    Ok(out)
}

fn ensure_table(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    BIGINT PRIMARY KEY,
            name       VARCHAR NOT NULL,
            checksum   VARCHAR NOT NULL,
            applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        );",
    )?;
    Ok(())
}

fn applied(conn: &Connection) -> Result<Vec<Applied>> {
    ensure_table(conn)?;
    let mut stmt = conn.prepare(
        "SELECT version, name, checksum, strftime(applied_at, '%Y-%m-%dT%H:%M:%S.%fZ') FROM schema_migrations ORDER BY version",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Applied { version: r.get(0)?, name: r.get(1)?, checksum: r.get(2)?, applied_at: r.get(3)? })
    })?;
    Ok(rows.collect::<duckdb::Result<Vec<_>>>()?)
}

/// Reports applied and pending migrations.
pub(crate) fn status(conn: &Connection, known: &[Migration]) -> Result<Status> {
    let applied = applied(conn)?;
    let current = applied.last().map_or(0, |a| a.version);
    let pending = known.iter().map(|m| m.version).filter(|v| *v > current).collect();
    Ok(Status { current, latest: known.last().map_or(0, |m| m.version), applied, pending })
}

/// Refuses a file this binary must not touch: a schema newer than it knows, a gap,
/// or an applied migration whose script changed.
pub(crate) fn check(conn: &Connection, known: &[Migration]) -> Result<Status> {
    let st = status(conn, known)?;
    if st.current > st.latest {
        return Err(Error::Migration(format!(
            "database schema version {} is newer than this binary knows ({}); upgrade the sidecar",
            st.current, st.latest
        )));
    }
    for (i, a) in st.applied.iter().enumerate() {
        if a.version != i as i64 + 1 {
            return Err(Error::Migration(format!("schema_migrations has a gap before version {}", a.version)));
        }
        let m = &known[i];
        if m.checksum() != a.checksum {
            return Err(Error::Migration(format!(
                "migration {} ({}) changed after it was applied: checksum {} in the database, {} in this binary",
                a.version,
                a.name,
                a.checksum,
                m.checksum()
            )));
        }
    }
    Ok(st)
}

/// Applies pending migrations up to `target` (all when None) in one transaction.
/// Returns the versions applied.
pub fn up(conn: &Connection, known: &[Migration], target: Option<i64>) -> Result<Vec<i64>> {
    let st = check(conn, known)?;
    let target = target.unwrap_or(st.latest);
    if target > st.latest {
        return Err(Error::Migration(format!("no migration {target}; latest is {}", st.latest)));
    }
    let todo: Vec<&Migration> = known.iter().filter(|m| m.version > st.current && m.version <= target).collect();
    if todo.is_empty() {
        return Ok(vec![]);
    }
    in_transaction(conn, |conn| {
        for m in &todo {
            conn.execute_batch(&m.up)
                .map_err(|e| Error::Migration(format!("migration {} ({}) failed: {e}", m.version, m.name)))?;
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (?, ?, ?)",
                duckdb::params![m.version, m.name, m.checksum()],
            )?;
        }
        Ok(())
    })?;
    Ok(todo.iter().map(|m| m.version).collect())
}

/// Rolls back applied migrations above version `to`, newest first, in one transaction.
/// Returns the versions rolled back.
pub(crate) fn down(conn: &Connection, known: &[Migration], to: i64) -> Result<Vec<i64>> {
    let st = check(conn, known)?;
    if to < 0 {
        return Err(Error::Migration("--to must be >= 0".into()));
    }
    let todo: Vec<&Migration> = known.iter().rev().filter(|m| m.version > to && m.version <= st.current).collect();
    in_transaction(conn, |conn| {
        for m in &todo {
            conn.execute_batch(&m.down)
                .map_err(|e| Error::Migration(format!("rollback of {} ({}) failed: {e}", m.version, m.name)))?;
            conn.execute("DELETE FROM schema_migrations WHERE version = ?", [m.version])?;
        }
        Ok(())
    })?;
    Ok(todo.iter().map(|m| m.version).collect())
}

fn in_transaction(conn: &Connection, f: impl FnOnce(&Connection) -> Result<()>) -> Result<()> {
    conn.execute_batch("BEGIN TRANSACTION")?;
    match f(conn) {
        Ok(()) => Ok(conn.execute_batch("COMMIT")?),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> Connection {
        Connection::open_in_memory().unwrap()
    }

    fn table_exists(conn: &Connection, name: &str) -> bool {
        conn.query_row("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name], |r| r.get::<_, i64>(0))
            .unwrap()
            == 1
    }

    #[test]
    fn embedded_set_is_well_formed() {
        let all = embedded();
        assert!(!all.is_empty());
        assert_eq!(all[0].version, 1);
        assert_eq!(all[0].name, "init");
    }

    #[test]
    fn parse_rejects_gaps_missing_halves_and_stray_files() {
        let f = |names: &[&str]| parse(names.iter().map(|n| (n.to_string(), b"SELECT 1;".as_slice())));
        assert!(f(&["0001_a.up.sql", "0001_a.down.sql"]).is_ok());
        assert!(f(&["0001_a.up.sql"]).is_err());
        assert!(f(&["0001_a.up.sql", "0001_a.down.sql", "0003_c.up.sql", "0003_c.down.sql"]).is_err());
        assert!(f(&["README.md"]).is_err());
    }

    fn latest() -> i64 {
        embedded().last().unwrap().version
    }

    #[test]
    fn forward_then_rollback_then_forward_again() {
        let conn = mem();
        let all: Vec<i64> = (1..=latest()).collect();
        assert_eq!(up(&conn, embedded(), None).unwrap(), all);
        assert!(table_exists(&conn, "trades") && table_exists(&conn, "sync_state"));
        assert!(up(&conn, embedded(), None).unwrap().is_empty(), "idempotent");
        assert_eq!(status(&conn, embedded()).unwrap().current, latest());
        assert_eq!(down(&conn, embedded(), 1).unwrap(), (2..=latest()).rev().collect::<Vec<_>>());
        assert!(table_exists(&conn, "trades") && !table_exists(&conn, "sync_state"), "partial rollback");
        assert_eq!(down(&conn, embedded(), 0).unwrap(), vec![1]);
        assert!(!table_exists(&conn, "trades"));
        assert_eq!(status(&conn, embedded()).unwrap().current, 0);
        assert_eq!(up(&conn, embedded(), Some(1)).unwrap(), vec![1], "up to a target");
        assert_eq!(up(&conn, embedded(), None).unwrap(), (2..=latest()).collect::<Vec<_>>());
        assert!(table_exists(&conn, "trades"));
    }

    #[test]
    fn refuses_a_newer_schema() {
        let conn = mem();
        up(&conn, embedded(), None).unwrap();
        conn.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (999, 'future', 'x')", [])
            .unwrap();
        let e = check(&conn, embedded()).unwrap_err().to_string();
        assert!(e.contains("newer than this binary"), "{e}");
        assert!(up(&conn, embedded(), None).is_err());
    }

    #[test]
    fn refuses_a_changed_script() {
        let conn = mem();
        up(&conn, embedded(), None).unwrap();
        let mut changed = embedded().to_vec();
        changed[0].up.push_str("\n-- edited after release\n");
        let e = check(&conn, &changed).unwrap_err().to_string();
        assert!(e.contains("changed after it was applied"), "{e}");
    }

    #[test]
    fn a_failing_migration_leaves_nothing_behind() {
        let conn = mem();
        let mut set = embedded().to_vec();
        set.push(Migration {
            version: latest() + 1,
            name: "broken".into(),
            up: "CREATE TABLE t2 (x INT); SELECT nope;".into(),
            down: "DROP TABLE t2;".into(),
        });
        let e = up(&conn, &set, None).unwrap_err().to_string();
        assert!(e.contains(&format!("migration {} (broken) failed", latest() + 1)), "{e}");
        assert_eq!(status(&conn, &set).unwrap().current, 0, "the whole run rolled back");
        assert!(!table_exists(&conn, "trades"));
    }

    fn insert_double(conn: &Connection, id: &str, quantity: f64, price: f64) {
        conn.execute(
            "INSERT INTO trades VALUES (?, 'X', 'buy', ?, ?, 'filled', now()::TIMESTAMP, 1, \
             (SELECT coalesce(max(seq), 0) + 1 FROM trades), now()::TIMESTAMP, now()::TIMESTAMP)",
            duckdb::params![id, quantity, price],
        )
        .unwrap();
    }

    #[test]
    fn exact_money_converts_what_clients_sent_and_refuses_what_it_cannot_hold() {
        let conn = mem();
        up(&conn, embedded(), Some(2)).unwrap();
        insert_double(&conn, "a", 0.1, 189.5);
        insert_double(&conn, "b", 0.2, 0.00000001);
        insert_double(&conn, "c", 9_999_999_999.5, -37.63);
        insert_double(&conn, "too-fine", 1.0, 0.123456789);
        insert_double(&conn, "too-big", 1e10, 1.0);
        let e = up(&conn, embedded(), Some(3)).unwrap_err().to_string();
        assert!(e.contains("too-big, too-fine") && !e.contains(" a,"), "{e}");
        assert_eq!(status(&conn, embedded()).unwrap().current, 2, "nothing changed");
        conn.execute_batch("DELETE FROM trades WHERE id LIKE 'too-%'").unwrap();
        up(&conn, embedded(), Some(3)).unwrap();
        let text = |sql: &str| -> String { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(
            text("SELECT string_agg(quantity::VARCHAR || '@' || price::VARCHAR, ' ' ORDER BY id) FROM trades"),
            "0.10000000@189.50000000 0.20000000@0.00000001 9999999999.50000000@-37.63000000"
        );
        assert_eq!(text("SELECT buy_quantity::VARCHAR FROM trade_state"), "9999999999.80000000", "exact sum");
        assert_eq!(
            text("SELECT buy_notional::VARCHAR FROM trade_state"),
            "-376299999962.2349999980000000",
            "0.1 × 189.5 + 0.2 × 0.00000001 - 9999999999.5 × 37.63, in 128 bits"
        );
        assert_eq!(
            text("SELECT typeof(buy_notional) FROM trade_state"),
            "DECIMAL(38,16)",
            "notionals keep all 16 decimals"
        );
        down(&conn, embedded(), 2).unwrap();
        assert_eq!(text("SELECT string_agg(price::VARCHAR, ' ' ORDER BY id) FROM trades"), "189.5 1e-08 -37.63");
    }
}
