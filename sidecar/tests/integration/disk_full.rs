//! A full disk: the data directory is a small tmpfs, filled with a ballast file.
//!
//! 1. The WAL cannot grow: writes fail with a clear 503 (never a false acknowledgement),
//!    the process stays up, and once space returns the same process writes again.
//! 2. A checkpoint cannot be written: DuckDB invalidates the database and refuses every
//!    later statement, so the process must stop by itself, non-zero and promptly; once
//!    space returns the restart replays the WAL.
//!
//! Either way every acknowledged trade is there at the end. Needs root (it mounts a
//! tmpfs), so it is `#[ignore]`d for plain `cargo test`; `scripts/test.sh` runs it
//! explicitly with `--ignored`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{Sidecar, client, trade_for};
use serde_json::{Value, json};

struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn free_bytes(dir: &Path) -> u64 {
    let path = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0);
    st.f_bavail as u64 * st.f_frsize as u64
}

/// Writes a ballast file into `dir` until about `leave` bytes are free (or none: the
/// sidecar may take space meanwhile, filling its next log segment); returns its path.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    let path = dir.join("ballast");
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
    let chunk = vec![0u8; 4096];
    while free_bytes(dir) > leave + 4096 {
        match f.write_all(&chunk) {
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            written => written.unwrap(),
        }
    }
    f.sync_all().unwrap();
    path
}

/// Posts one batch of `n` trades named `<prefix>-<k>`; their ids when acknowledged,
/// else the HTTP status and body.
async fn batch(s: &Sidecar, prefix: &str, n: usize) -> Result<Vec<String>, (u16, Value)> {
    let ids: Vec<String> = (0..n).map(|k| format!("{prefix}-{k}")).collect();
    let trades: Vec<Value> = ids.iter().map(|id| trade_for(id)).collect();
    let r = match client().post(s.url("/v1/trades/batch")).json(&json!({ "trades": trades })).send().await {
        Ok(r) => r,
        Err(e) => return Err((0, json!({ "error": { "message": e.to_string() } }))),
    };
    match r.status().as_u16() {
        201 => Ok(ids),
        code => Err((code, r.json().await.unwrap_or_default())),
    }
}

/// Waits (a while) until DuckDB holds every acknowledged change, so that each batch
/// is one DuckDB transaction and commits can be counted.
async fn applied(s: &Sidecar) {
    for _ in 0..100 {
        let Ok(r) = client().get(s.url("/v1/status")).send().await else { return };
        let st: Value = r.json().await.unwrap_or_default();
        if st["applied_seq"] == st["last_seq"] {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the log's spare segment is allocated whole: filled after the ballast it
/// would take the room left for DuckDB's WAL.
async fn spare_ready(data: &Path) {
    let spare = data.join("log").join("spare.tmp");
    for _ in 0..500 {
        if std::fs::metadata(&spare).is_ok_and(|m| m.len().to_string() == SMALL_SEGMENTS.1) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the log's spare segment was never prepared");
}

async fn wal_bytes(s: &Sidecar) -> u64 {
    let st: Value = client().get(s.url("/v1/status")).send().await.unwrap().json().await.unwrap();
    st["wal_bytes"].as_u64().unwrap()
}

/// Commit-log segments that fit the 24 MiB volume (the default is 64 MiB), and the
/// batch limit that fits their groups.
const SMALL_SEGMENTS: (&str, &str) = ("TRADESTORE_COMMIT_LOG__SEGMENT_BYTES", "2097152");
const SMALL_BATCHES: (&str, &str) = ("TRADESTORE_HTTP__MAX_BATCH_TRADES", "2000");
/// One DuckDB transaction per batch: phase 2 counts transactions up to the checkpoint,
/// and gathering several batches into one would make the WAL, not the checkpoint, the
/// write that finds no room. Batches are large groups, so the saturated gathering is
/// off too.
const NO_APPLY_DELAY: [(&str, &str); 2] =
    [("TRADESTORE_WRITER__APPLY_DELAY", "0s"), ("TRADESTORE_WRITER__APPLY_DELAY_SATURATED", "0s")];

#[tokio::test]
#[ignore = "needs root to mount a tmpfs; run by scripts/test.sh with --ignored"]
async fn a_full_disk_refuses_writes_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let ok = Command::new("mount").args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"]).arg(&data).status().unwrap();
    assert!(ok.success(), "mount tmpfs (needs root)");
    let _mount = Tmpfs(data.clone());
    let mut acked = Vec::new();

    // 1. No checkpoint at all (count trigger off, thresholds far away): only the WAL grows.
    let no_checkpoints = [
        SMALL_SEGMENTS,
        SMALL_BATCHES,
        ("TRADESTORE_DUCKDB__CHECKPOINT_EVERY_COMMITS", "0"),
        ("TRADESTORE_DUCKDB__IDLE_CHECKPOINT_AFTER", "0s"),
        ("TRADESTORE_DUCKDB__CHECKPOINT_THRESHOLD_BYTES", "1073741824"),
        ("TRADESTORE_DUCKDB__MAX_WAL_BYTES", "1073741824"),
    ];
    let mut s = Sidecar::start(dir.path(), &no_checkpoints).await;
    for b in 0..10 {
        acked.extend(batch(&s, &format!("a{b}"), 200).await.unwrap());
    }
    spare_ready(&data).await;
    let ballast = fill(&data, 64 * 1024);
    let mut refusal = None;
    for b in 10..200 {
        match batch(&s, &format!("a{b}"), 200).await {
            Ok(ids) => acked.extend(ids),
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let (code, body) = refusal.expect("64 KiB of room must run out");
    assert_eq!(code, 503, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("storage error"), "{body}");
    assert_eq!(client().get(s.url("/healthz")).send().await.unwrap().status(), 200, "a full WAL is not fatal");
    std::fs::remove_file(&ballast).unwrap();
    // The applier retries DuckDB every second; until it got through, writes are refused.
    let deadline = Instant::now() + Duration::from_secs(5);
    let after = loop {
        match batch(&s, "a-after", 200).await {
            Ok(ids) => break ids,
            Err(e) => assert!(Instant::now() < deadline, "writes succeed again once space returns, no restart: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    acked.extend(after);
    assert!(s.terminate(Duration::from_secs(30)).success());

    // 2. The applier checkpoints after every 60 of its transactions (DuckDB's own size
    //    trigger is far away). After 55 batches the ballast leaves room for the WAL of the next few but
    //    not for the checkpoint, which writes the 11,000 trades' blocks into the file.
    let by_count = [
        SMALL_SEGMENTS,
        SMALL_BATCHES,
        NO_APPLY_DELAY[0],
        NO_APPLY_DELAY[1],
        ("TRADESTORE_DUCKDB__CHECKPOINT_EVERY_COMMITS", "60"),
        ("TRADESTORE_DUCKDB__IDLE_CHECKPOINT_AFTER", "0s"),
        ("TRADESTORE_DUCKDB__CHECKPOINT_THRESHOLD_BYTES", "1073741824"),
        ("TRADESTORE_DUCKDB__MAX_WAL_BYTES", "1073741824"),
    ];
    let mut s = Sidecar::start(dir.path(), &by_count).await;
    let mut b = 0;
    while b < 55 {
        acked.extend(batch(&s, &format!("b{b}"), 200).await.unwrap());
        applied(&s).await;
        b += 1;
    }
    let per_batch = wal_bytes(&s).await / 55;
    spare_ready(&data).await;
    let ballast = fill(&data, 8 * per_batch + 64 * 1024);
    let mut first_failure: Option<Instant> = None;
    let exit = loop {
        if let Some(code) = s.child.try_wait().unwrap() {
            break code;
        }
        // Time since the last acknowledged write: once DuckDB invalidated the database
        // nothing is acknowledged any more, and the process must be gone soon after.
        let since = first_failure.get_or_insert_with(Instant::now).elapsed();
        assert!(
            since < Duration::from_secs(15) && b < 2_000,
            "still running {since:?} after the last acknowledged write (batch {b}); log:\n{}",
            s.log()
        );
        match batch(&s, &format!("b{b}"), 200).await {
            Ok(ids) => {
                acked.extend(ids);
                first_failure = None;
                applied(&s).await;
            }
            Err((code, body)) => assert!(code == 503 || code == 0, "{code}: {body}"),
        }
        b += 1;
    };
    assert!(!exit.success(), "stops non-zero so the container is restarted: {exit}");
    let log = s.log();
    assert!(log.contains("database invalidated"), "{log}");
    std::fs::remove_file(&ballast).unwrap();

    // Space is back: the restart replays the WAL; every acknowledged trade is there.
    let s = Sidecar::start(dir.path(), &[SMALL_SEGMENTS, SMALL_BATCHES]).await;
    let st: Value = client().get(s.url("/v1/status")).send().await.unwrap().json().await.unwrap();
    assert!(st["trade_rows"].as_u64().unwrap() >= acked.len() as u64, "{st} vs {}", acked.len());
    for id in acked.iter().step_by(97).chain(acked.last()) {
        let r = client().get(s.url(&format!("/v1/trades/{id}"))).send().await.unwrap();
        assert_eq!(r.status(), 200, "acknowledged {id} lost");
    }
    let r = client().post(s.url("/v1/trades")).json(&trade_for("after-disk-full")).send().await.unwrap();
    assert_eq!(r.status(), 201);
}
