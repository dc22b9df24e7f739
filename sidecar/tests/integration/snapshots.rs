//! Snapshots of a live store under concurrent writes, restore by command and by
//! start-up bootstrap, and refusal of a corrupt snapshot.

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};

use crate::common::{Sidecar, binary, client, trade_for, wait_status};
use serde_json::Value;

fn ids_with_seq(db: &std::path::Path) -> Vec<(String, i64)> {
    let conn = duckdb::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT id, seq FROM trades").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_under_load_is_consistent_and_restores() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("snaps");
    let snaps_env = snaps.to_str().unwrap().to_string();
    let mut s = Sidecar::start(dir.path(), &[("TRADESTORE_SNAPSHOTS__DIR", &snaps_env)]).await;
    let c = client();
    let stop = Arc::new(Mutex::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (c, base, stop) = (c.clone(), s.base.clone(), stop.clone());
            tokio::spawn(async move {
                for n in 0.. {
                    if *stop.lock().unwrap() {
                        return n;
                    }
                    let r = c
                        .post(format!("{base}/v1/trades"))
                        .json(&trade_for(&format!("w{w}-{n}")))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 201);
                }
                unreachable!()
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = c.post(s.url("/v1/snapshots")).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let m: Value = r.json().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    *stop.lock().unwrap() = true;
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    assert_eq!(reqwest::Client::new().post(s.url("/v1/snapshots")).send().await.unwrap().status(), 401);
    let list: Value = c.get(s.url("/v1/snapshots")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["snapshots"][0]["id"], m["id"]);
    assert!(s.terminate(std::time::Duration::from_secs(30)).success());

    // The snapshot holds exactly the changes up to its sequence: writes went on
    // during it, and none of them is half in.
    let seq = m["seq"].as_i64().unwrap();
    let snap_dir = snaps.join(m["id"].as_str().unwrap());
    let live = ids_with_seq(&dir.path().join("data").join("trades.duckdb"));
    let in_snap: HashSet<String> =
        ids_with_seq(&snap_dir.join("trades.duckdb")).into_iter().map(|(id, _)| id).collect();
    let expected: HashSet<String> = live.iter().filter(|(_, s)| *s <= seq).map(|(id, _)| id.clone()).collect();
    assert!(seq > 0 && live.len() > expected.len(), "writes happened before and after (seq {seq}, {written} written)");
    assert_eq!(in_snap, expected);
    assert_eq!(m["trade_rows"].as_u64().unwrap() as usize, expected.len());

    // Restore by command into an empty data directory.
    let restored = tempfile::tempdir().unwrap();
    let out = Command::new(binary())
        .args(["restore", "--from", snap_dir.to_str().unwrap()])
        .env_clear()
        .env("TRADESTORE_DATA_DIR", restored.path().join("data"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s2 = Sidecar::start(restored.path(), &[]).await;
    let st: Value = c.get(s2.url("/v1/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(st["last_seq"].as_i64(), Some(seq));
    assert_eq!(st["trade_rows"].as_u64().unwrap() as usize, expected.len());
    drop(s2);

    // Bootstrap at start-up: no database file yet, so the snapshot is restored first.
    let boot = tempfile::tempdir().unwrap();
    let s3 = Sidecar::start(boot.path(), &[("TRADESTORE_SNAPSHOTS__BOOTSTRAP_FROM", snap_dir.to_str().unwrap())]).await;
    let st: Value = c.get(s3.url("/v1/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(st["last_seq"].as_i64(), Some(seq));
    drop(s3);

    // A corrupt snapshot is refused, and nothing is written.
    let file = snap_dir.join("trades.duckdb");
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x55;
    std::fs::write(&file, bytes).unwrap();
    let target = tempfile::tempdir().unwrap();
    let out = Command::new(binary())
        .args(["restore", "--from", snap_dir.to_str().unwrap()])
        .env_clear()
        .env("TRADESTORE_DATA_DIR", target.path().join("data"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("corrupt"), "{err}");
    assert!(!target.path().join("data").join("trades.duckdb").exists());
}

#[tokio::test]
async fn integrity_checks_catch_a_damaged_snapshot_and_flip_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("snaps");
    let env = [("TRADESTORE_SNAPSHOTS__DIR", snaps.to_str().unwrap()), ("TRADESTORE_INTEGRITY__INTERVAL", "100ms")];
    let s = Sidecar::start(dir.path(), &env).await;
    let c = client();
    for i in 0..20 {
        c.post(s.url("/v1/trades")).json(&trade_for(&format!("i{i}"))).send().await.unwrap();
    }
    let m: Value = c.post(s.url("/v1/snapshots")).send().await.unwrap().json().await.unwrap();
    let st = wait_status(&s, "a passing check", |st| {
        st["integrity"]["ok"] == true && st["integrity"]["rows_scanned"].as_i64() >= Some(20)
    })
    .await;
    println!("integrity check on 20 rows took {} ms", st["integrity"]["duration_ms"]);
    let file = snaps.join(m["id"].as_str().unwrap()).join("trades.duckdb");
    let good = std::fs::read(&file).unwrap();
    let mut bad = good.clone();
    let at = bad.len() / 3;
    bad[at] ^= 1;
    replace(&file, &bad);
    let st = wait_status(&s, "a failing check", |st| st["integrity"]["ok"] == false).await;
    assert!(st["integrity"]["error"].as_str().unwrap().contains("corrupt"), "{st}");
    let r = c.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("integrity"));
    assert_eq!(c.get(s.url("/healthz")).send().await.unwrap().status(), 200, "still live: no restart loop");
    let m = c.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("tradestore_integrity_ok 0"), "{m}");
    replace(&file, &good);
    wait_status(&s, "recovery of the check", |st| st["integrity"]["ok"] == true && st["ready"] == true).await;
}

/// Writes `bytes` over `file` at once (a rename), so a check running meanwhile reads
/// the old file or the new one, never the empty file `std::fs::write` starts with.
fn replace(file: &std::path::Path, bytes: &[u8]) {
    let tmp = file.with_extension("replacing");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// Snapshots taken while integrity checks run back to back (they enumerate the catalog,
/// which sees the attached copy) and writes go on: every published snapshot must be
/// complete and final — bigger than an empty DuckDB file, its file matching its
/// manifest's checksum, restorable with exactly `trade_rows` rows up to `seq` — and
/// readiness (which re-verifies the newest snapshot) must never drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_snapshot_taken_during_integrity_checks_is_final() {
    const SNAPSHOTS: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("snaps");
    let env = [
        ("TRADESTORE_SNAPSHOTS__DIR", snaps.to_str().unwrap()),
        ("TRADESTORE_SNAPSHOTS__KEEP_LAST", "1000"),
        ("TRADESTORE_INTEGRITY__INTERVAL", "1ms"),
    ];
    let mut s = Sidecar::start(dir.path(), &env).await;
    let c = client();
    let stop = Arc::new(Mutex::new(false));
    let writer = {
        let (c, base, stop) = (c.clone(), s.base.clone(), stop.clone());
        tokio::spawn(async move {
            for b in 0.. {
                if *stop.lock().unwrap() {
                    return;
                }
                let trades: Vec<Value> = (0..50).map(|k| trade_for(&format!("b{b}-{k}"))).collect();
                let r = c.post(format!("{base}/v1/trades/batch")).json(&serde_json::json!({ "trades": trades }));
                assert_eq!(r.send().await.unwrap().status(), 201);
                // Paced: unpaced, the store grows by ~10k trades a snapshot, and each
                // snapshot copies it all, so the test would grow quadratically.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
    };
    let mut manifests = Vec::new();
    let mut not_ready = Vec::new();
    for _ in 0..SNAPSHOTS {
        let r = c.post(s.url("/v1/snapshots")).send().await.unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        manifests.push(r.json::<Value>().await.unwrap());
        // The integrity check re-verifies the newest snapshot within milliseconds.
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        let ready = c.get(s.url("/readyz")).send().await.unwrap();
        if ready.status() != 200 {
            not_ready.push(ready.text().await.unwrap());
        }
    }
    *stop.lock().unwrap() = true;
    writer.await.unwrap();
    let st: Value = c.get(s.url("/v1/status")).send().await.unwrap().json().await.unwrap();
    assert!(s.terminate(std::time::Duration::from_secs(30)).success());
    assert!(not_ready.is_empty(), "readiness dropped {} times: {:?}", not_ready.len(), not_ready.first());
    assert_eq!(st["integrity"]["state"], "passed", "{st}");

    let mut bad = Vec::new();
    for m in &manifests {
        if let Err(why) = snapshot_is_final(&snaps.join(m["id"].as_str().unwrap()), m) {
            bad.push(why);
        }
    }
    assert!(bad.is_empty(), "{} of {SNAPSHOTS} snapshots are not final: {bad:#?}", bad.len());
}

/// Checks one snapshot from the outside: size, checksum, and a restore holding exactly
/// what the manifest says.
fn snapshot_is_final(dir: &std::path::Path, m: &Value) -> Result<(), String> {
    use sha2::Digest;
    let id = m["id"].as_str().unwrap();
    let bytes = std::fs::read(dir.join("trades.duckdb")).map_err(|e| format!("{id}: {e}"))?;
    if bytes.len() as u64 <= 12288 || bytes.len() as u64 != m["size_bytes"].as_u64().unwrap() {
        return Err(format!("{id}: {} bytes, manifest says {}", bytes.len(), m["size_bytes"]));
    }
    let sum = hex::encode(sha2::Sha256::digest(&bytes));
    if sum != m["sha256"].as_str().unwrap() {
        return Err(format!("{id}: sha256 {sum} differs from the manifest's {}", m["sha256"]));
    }
    let target = tempfile::tempdir().unwrap();
    let db = target.path().join("trades.duckdb");
    tradestore_sidecar::durability::snapshot::restore(dir, &db).map_err(|e| format!("{id}: restore: {e}"))?;
    let got = duckdb::Connection::open(&db)
        .and_then(|c| {
            c.query_row("SELECT count(*), coalesce(max(seq), 0) FROM trades", [], |r| Ok((r.get(0)?, r.get(1)?)))
        })
        .map_err(|e| format!("{id}: restored copy: {e}"))?;
    let want: (i64, i64) = (m["trade_rows"].as_i64().unwrap(), m["seq"].as_i64().unwrap());
    if got != want {
        return Err(format!("{id}: restored (rows, seq) {got:?}, manifest says {want:?}"));
    }
    Ok(())
}

/// With checks disabled no check ever runs: the status says so, distinctly from a
/// failure, and the store is ready.
#[tokio::test]
async fn integrity_status_says_not_run_until_a_check_finished() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sidecar::start(dir.path(), &[("TRADESTORE_INTEGRITY__INTERVAL", "0s")]).await;
    let st: Value = client().get(s.url("/v1/status")).send().await.unwrap().json().await.unwrap();
    let integrity = &st["integrity"];
    assert_eq!(integrity["state"], "not_run", "{st}");
    assert!(integrity["ok"].is_null() && integrity["last_run"].is_null() && integrity["error"].is_null(), "{st}");
    assert_eq!(client().get(s.url("/readyz")).send().await.unwrap().status(), 200);
}
