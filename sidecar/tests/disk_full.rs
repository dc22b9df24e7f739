//! A full disk: the data directory is a tiny tmpfs. Writes must fail with a clear
//! 503 (never a false acknowledgement), and every acknowledged trade must be there
//! when the files are moved to a disk with room.
//!
//! Needs root (it mounts a tmpfs), so it is `#[ignore]`d for plain `cargo test`;
//! `scripts/test.sh` runs it explicitly with `--ignored`.

mod common;

use std::process::Command;

use common::{Sidecar, client, trade_for};
use serde_json::{Value, json};

struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test]
#[ignore = "needs root to mount a tmpfs; run by scripts/test.sh with --ignored"]
async fn a_full_disk_refuses_writes_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let ok = Command::new("mount").args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"]).arg(&data).status().unwrap();
    assert!(ok.success(), "mount tmpfs (needs root)");
    let mount = Tmpfs(data.clone());

    let mut s = Sidecar::start(dir.path(), &[("TRADESTORE_DUCKDB__CHECKPOINT_EVERY_COMMITS", "0")]).await;
    let c = client();
    let mut acked = Vec::new();
    let mut refusal = None;
    for b in 0..2_000 {
        let ids: Vec<String> = (0..200).map(|k| format!("df-{b}-{k}")).collect();
        let trades: Vec<Value> = ids.iter().map(|id| trade_for(id)).collect();
        let r = c.post(s.url("/v1/trades/batch")).json(&json!({ "trades": trades })).send().await.unwrap();
        match r.status().as_u16() {
            201 => acked.extend(ids),
            503 => {
                refusal = Some(r.json::<Value>().await.unwrap());
                break;
            }
            other => panic!("unexpected {other}: {}", r.text().await.unwrap()),
        }
    }
    let refusal = refusal.expect("a 6 MiB disk must fill up");
    let msg = refusal["error"]["message"].as_str().unwrap();
    assert!(msg.contains("storage error"), "{refusal}");
    assert!(!acked.is_empty());
    // Whatever state DuckDB is in now, the process keeps answering probes.
    let health = c.get(s.url("/healthz")).send().await.unwrap();
    println!("after ENOSPC: /healthz {} ; refusal: {msg}", health.status());
    s.kill();

    // Move the files to a disk with room and start again: every acknowledged trade is there.
    let roomy = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(roomy.path().join("data")).unwrap();
    for f in std::fs::read_dir(&data).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), roomy.path().join("data").join(f.file_name())).unwrap();
    }
    drop(mount);
    let s = Sidecar::start(roomy.path(), &[]).await;
    for id in acked.iter().step_by(97).chain(acked.last()) {
        let r = c.get(s.url(&format!("/v1/trades/{id}"))).send().await.unwrap();
        assert_eq!(r.status(), 200, "acknowledged {id} lost");
    }
    let st: Value = c.get(s.url("/v1/status")).send().await.unwrap().json().await.unwrap();
    assert!(st["trade_rows"].as_u64().unwrap() >= acked.len() as u64, "{st} vs {}", acked.len());
    // And the store takes writes again.
    let r = c.post(s.url("/v1/trades")).json(&trade_for("after-disk-full")).send().await.unwrap();
    assert_eq!(r.status(), 201);
}
