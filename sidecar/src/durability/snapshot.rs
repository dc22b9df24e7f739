//! Backup snapshots: consistent copies of the database taken while writes go on,
//! each with a manifest (checksum, commit sequence covered, schema version, size),
//! retention, verification and restore.
//!
//! A snapshot is taken on a read connection: `ATTACH` a new file, then inside one
//! transaction read the covered sequence and `COPY FROM DATABASE` into it. DuckDB's
//! MVCC makes the copy exactly the committed state at the transaction's start; the
//! writer is never paused. (A raw file copy is not safe: a concurrent checkpoint can
//! tear it.) Layout: `<dir>/<id>/trades.duckdb` + `<dir>/<id>/manifest.json`; a
//! snapshot is written under `<id>.partial` and renamed into place when complete.
//!
//! The attached copy is visible to every connection of the instance, and a connection
//! that enumerates the catalog (`duckdb_tables()`) while it is attached holds a
//! reference that outlives `DETACH`: the copy then stays open, its data in its own WAL,
//! and is written out later. So the copy is checkpointed before it is detached,
//! catalog scans wait while a copy is attached ([`Snapshots::with_attach_lock`]),
//! and before the checksum is taken the copy must prove itself final (see
//! [`prove_final`]). A snapshot that cannot is refused, never published.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use duckdb::Connection;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tradestore_api::snapshot::{DB_FILE, MANIFEST, Manifest};

use crate::error::{Error, Result};
use crate::store::model::{format_micros, now_micros};

/// A snapshot directory with its retention policy.
pub(crate) struct Snapshots {
    dir: PathBuf,
    retention: Retention,
    busy: Mutex<()>,
    /// Held while a copy is attached to the live instance.
    attached: Mutex<()>,
}

/// Which snapshots to keep: always the newest `keep_last`; older ones only while
/// younger than `max_age` (zero: everything beyond `keep_last` goes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Retention {
    /// Newest snapshots always kept.
    pub keep_last: usize,
    /// Age beyond which older snapshots are pruned; zero keeps none beyond `keep_last`.
    pub max_age: Duration,
}

impl Retention {
    /// Ids of the snapshots in `all` (oldest first) that retention removes at `now_us`.
    pub(crate) fn expired(&self, all: &[Manifest], now_us: i64) -> Vec<String> {
        let excess = all.len().saturating_sub(self.keep_last);
        all.iter()
            .take(excess)
            .filter(|m| {
                self.max_age.is_zero()
                    || crate::store::model::parse_micros(&m.created_at)
                        .map(|t| now_us - t > self.max_age.as_micros() as i64)
                        .unwrap_or(true)
            })
            .map(|m| m.id.clone())
            .collect()
    }
}

impl Snapshots {
    /// Snapshots under `dir`, pruned by `retention` after each one taken.
    pub(crate) fn new(dir: PathBuf, retention: Retention) -> Self {
        Snapshots { dir, retention, busy: Mutex::new(()), attached: Mutex::new(()) }
    }

    /// Runs `f` holding the lock a snapshot holds while its copy is attached to the
    /// live instance. Queries that enumerate every attached database
    /// (`duckdb_tables()`, `duckdb_columns()`) run under it, so they never see a copy
    /// (and never keep one open past its `DETACH`).
    pub(crate) fn with_attach_lock<T>(&self, f: impl FnOnce() -> T) -> T {
        let _none = self.attached.lock();
        f()
    }

    /// Takes a consistent snapshot through `conn` (a read connection of the live
    /// database), then applies retention. One snapshot at a time.
    pub(crate) fn take(&self, conn: &Connection, schema_version: i64) -> Result<Manifest> {
        let _one_at_a_time = self.busy.lock();
        let started = std::time::Instant::now();
        std::fs::create_dir_all(&self.dir)?;
        let created = now_micros();
        let id = format!(
            "{}-{}",
            format_micros(created).replace([':', '.'], ""),
            &uuid::Uuid::now_v7().simple().to_string()[24..]
        );
        let partial = self.dir.join(format!("{id}.partial"));
        std::fs::create_dir_all(&partial)?;
        let file = partial.join(DB_FILE);
        let copied = self.with_attach_lock(|| copy_database(conn, &file)).and_then(|counts| {
            prove_final(&file, counts)?;
            Ok(counts)
        });
        let (seq, trade_rows) = match copied {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&partial);
                return Err(e);
            }
        };
        File::open(&file)?.sync_all()?;
        let manifest = Manifest {
            id: id.clone(),
            created_at: format_micros(created),
            seq,
            schema_version,
            trade_rows,
            size_bytes: std::fs::metadata(&file)?.len(),
            sha256: sha256_file(&file)?,
            duration_ms: started.elapsed().as_millis() as u64,
        };
        write_synced(&partial.join(MANIFEST), &serde_json::to_vec_pretty(&manifest).expect("manifest serializes"))?;
        std::fs::rename(&partial, self.dir.join(&id))?;
        File::open(&self.dir)?.sync_all()?;
        tracing::info!(id, seq, trade_rows, ms = manifest.duration_ms, "snapshot taken");
        self.prune()?;
        Ok(manifest)
    }

    /// Manifests of complete snapshots, oldest first.
    pub(crate) fn list(&self) -> Result<Vec<Manifest>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "partial") || !path.join(MANIFEST).is_file() {
                continue;
            }
            out.push(read_manifest(&path)?);
        }
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Applies retention, and removes leftovers of interrupted snapshots. Returns the
    /// ids removed.
    pub(crate) fn prune(&self) -> Result<Vec<String>> {
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "partial") {
                std::fs::remove_dir_all(&path)?;
            }
        }
        let removed = self.retention.expired(&self.list()?, now_micros());
        for id in &removed {
            std::fs::remove_dir_all(self.dir.join(id))?;
        }
        Ok(removed)
    }

    /// The newest complete snapshot and its directory.
    pub(crate) fn latest(&self) -> Result<Option<(Manifest, PathBuf)>> {
        Ok(self.list()?.pop().map(|m| {
            let dir = self.path_of(&m.id);
            (m, dir)
        }))
    }

    /// The directory holding the snapshots.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Directory of snapshot `id`.
    pub(crate) fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }
}

/// Copies the live database into a new file inside one read transaction and returns
/// (highest sequence, trade rows) as of that transaction.
fn copy_database(conn: &Connection, target: &Path) -> Result<(i64, i64)> {
    let source: String = conn.query_row("SELECT current_database()", [], |r| r.get(0))?;
    let alias = format!("snap_{}", uuid::Uuid::now_v7().simple());
    let target = target.to_str().ok_or_else(|| Error::Internal("snapshot path is not UTF-8".into()))?;
    conn.execute_batch(&format!("ATTACH '{}' AS {alias}", target.replace('\'', "''")))?;
    let result = (|| {
        conn.execute_batch("BEGIN TRANSACTION")?;
        let counts = conn.query_row("SELECT coalesce(max(seq), 0), count(*) FROM trades", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        });
        let copied =
            counts.and_then(|c| conn.execute_batch(&format!("COPY FROM DATABASE \"{source}\" TO {alias}")).map(|()| c));
        match copied {
            Ok(c) => {
                conn.execute_batch("COMMIT")?;
                // Write the copy into its file now, on this connection, whoever else
                // still holds a reference to it; DETACH alone may leave it in the WAL.
                conn.execute_batch(&format!("CHECKPOINT {alias}"))?;
                Ok(c)
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(Error::from(e))
            }
        }
    })();
    let detached = conn.execute_batch(&format!("DETACH {alias}"));
    let counts = result?;
    detached?;
    Ok(counts)
}

/// Proves the detached copy complete on its own before anything is published: no
/// WAL is left next to it (everything is in the file the checksum covers), and a
/// separate read-only DuckDB instance opening just that file sees exactly the rows and
/// the highest sequence the copying transaction saw. The instance is closed before
/// returning, so the checksum is taken of a file no one has open.
fn prove_final(file: &Path, (seq, rows): (i64, i64)) -> Result<()> {
    let refuse = |why: String| Err(Error::Snapshot(format!("{}: {why}; not publishing it", file.display())));
    if crate::store::db::wal_path(file).exists() {
        return refuse("the copy still has a WAL after CHECKPOINT and DETACH".into());
    }
    let read_only = duckdb::Config::default()
        .access_mode(duckdb::AccessMode::ReadOnly)?
        .enable_autoload_extension(false)?
        .threads(1)?;
    let found = {
        let copy = Connection::open_with_flags(file, read_only)?;
        copy.query_row("SELECT coalesce(max(seq), 0), count(*) FROM trades", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })?
    };
    if found != (seq, rows) {
        return refuse(format!(
            "the copy holds {} rows up to seq {}, the transaction saw {rows} up to seq {seq}",
            found.1, found.0
        ));
    }
    Ok(())
}

fn read_manifest(dir: &Path) -> Result<Manifest> {
    let raw = std::fs::read(dir.join(MANIFEST))?;
    serde_json::from_slice(&raw).map_err(|e| Error::Snapshot(format!("{}: bad manifest: {e}", dir.display())))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes)?;
    File::open(path)?.sync_all()?;
    Ok(())
}

/// SHA-256 of a file, hex.
pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Checks a snapshot directory: manifest readable, size and checksum match.
pub(crate) fn verify(dir: &Path) -> Result<Manifest> {
    let m = read_manifest(dir)?;
    let file = dir.join(DB_FILE);
    let size = std::fs::metadata(&file).map_err(|e| Error::Snapshot(format!("{}: {e}", file.display())))?.len();
    if size != m.size_bytes {
        return Err(Error::Snapshot(format!("{}: size {size} differs from manifest {}", file.display(), m.size_bytes)));
    }
    let sum = sha256_file(&file)?;
    if sum != m.sha256 {
        return Err(Error::Snapshot(format!(
            "{}: checksum {sum} differs from manifest {}; the snapshot is corrupt",
            file.display(),
            m.sha256
        )));
    }
    Ok(m)
}

/// Restores the snapshot in `snapshot_dir` as `database` (which must not exist):
/// verifies it first, copies to a temporary name, fsyncs, renames into place.
pub fn restore(snapshot_dir: &Path, database: &Path) -> Result<Manifest> {
    if database.exists() {
        return Err(Error::Snapshot(format!(
            "{} already exists; restore only into an empty data directory",
            database.display()
        )));
    }
    let m = verify(snapshot_dir)?;
    let parent = database.parent().ok_or_else(|| Error::Snapshot("database path has no directory".into()))?;
    std::fs::create_dir_all(parent)?;
    let tmp = database.with_extension("restoring");
    std::fs::copy(snapshot_dir.join(DB_FILE), &tmp)?;
    File::open(&tmp)?.sync_all()?;
    if sha256_file(&tmp)? != m.sha256 {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Snapshot("copy does not match the manifest checksum".into()));
    }
    std::fs::rename(&tmp, database)?;
    File::open(parent)?.sync_all()?;
    tracing::info!(id = m.id, seq = m.seq, db = %database.display(), "restored snapshot");
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live_db(dir: &Path) -> Connection {
        let conn = Connection::open(dir.join("live.duckdb")).unwrap();
        crate::store::migrations::up(&conn, crate::store::migrations::embedded(), None).unwrap();
        conn.execute_batch(
            "INSERT INTO trades SELECT 't' || i, 'X', 'buy', 1, 1, 'filled', now()::TIMESTAMP, 1, i, \
             now()::TIMESTAMP, now()::TIMESTAMP FROM range(1, 101) r(i)",
        )
        .unwrap();
        conn
    }

    #[test]
    fn take_verify_restore_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let conn = live_db(dir.path());
        let snaps = Snapshots::new(dir.path().join("snaps"), Retention { keep_last: 2, max_age: Duration::ZERO });
        let first = snaps.take(&conn, 1).unwrap();
        assert_eq!((first.seq, first.trade_rows, first.schema_version), (100, 100, 1));
        verify(&snaps.path_of(&first.id)).unwrap();

        let target = dir.path().join("restored").join("trades.duckdb");
        restore(&snaps.path_of(&first.id), &target).unwrap();
        let restored = Connection::open(&target).unwrap();
        let n: i64 = restored.query_row("SELECT count(*) FROM trades", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 100);
        let v: i64 = restored.query_row("SELECT max(version) FROM schema_migrations", [], |r| r.get(0)).unwrap();
        assert_eq!(
            v,
            crate::store::migrations::embedded().last().unwrap().version,
            "schema_migrations travels with the copy"
        );
        assert!(restore(&snaps.path_of(&first.id), &target).unwrap_err().to_string().contains("already exists"));

        for _ in 0..3 {
            snaps.take(&conn, 1).unwrap();
        }
        let left = snaps.list().unwrap();
        assert_eq!(left.len(), 2, "keep_last = 2");
        assert!(left.iter().all(|m| m.id != first.id), "oldest pruned first");
    }

    #[test]
    fn a_corrupt_snapshot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let conn = live_db(dir.path());
        let snaps = Snapshots::new(dir.path().join("snaps"), Retention { keep_last: 5, max_age: Duration::ZERO });
        let m = snaps.take(&conn, 1).unwrap();
        let file = snaps.path_of(&m.id).join(DB_FILE);
        let mut bytes = std::fs::read(&file).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&file, bytes).unwrap();
        let e = restore(&snaps.path_of(&m.id), &dir.path().join("r").join("trades.duckdb")).unwrap_err().to_string();
        assert!(e.contains("corrupt"), "{e}");
        assert!(!dir.path().join("r").join("trades.duckdb").exists());
    }

    #[test]
    fn retention_by_age_keeps_young_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let conn = live_db(dir.path());
        let snaps =
            Snapshots::new(dir.path().join("snaps"), Retention { keep_last: 1, max_age: Duration::from_secs(3600) });
        for _ in 0..3 {
            snaps.take(&conn, 1).unwrap();
        }
        assert_eq!(snaps.list().unwrap().len(), 3, "none is older than an hour");
    }

    #[test]
    fn retention_keeps_the_newest_and_the_young() {
        let at = |id: &str, micros: i64| Manifest {
            id: id.into(),
            created_at: format_micros(micros),
            seq: 0,
            schema_version: 1,
            trade_rows: 0,
            size_bytes: 0,
            sha256: String::new(),
            duration_ms: 0,
        };
        let hour = 3_600_000_000i64;
        let all = [at("a", 0), at("b", 2 * hour), at("c", 3 * hour), at("d", 4 * hour)];
        let now = 4 * hour;
        let r = |keep_last, secs| Retention { keep_last, max_age: Duration::from_secs(secs) };
        assert_eq!(r(2, 0).expired(&all, now), ["a", "b"], "zero age: all beyond keep_last");
        assert_eq!(r(2, 3600 + 1800).expired(&all, now), ["a", "b"], "both older than 1.5 h");
        assert_eq!(r(1, 3 * 3600).expired(&all, now), ["a"], "b and c are young enough");
        assert!(r(4, 0).expired(&all, now).is_empty());
    }
}
