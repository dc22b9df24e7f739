//! The commit log from the outside: `sidecar log verify` and `log dump` on a real log,
//! a torn end cut off at start with nothing acknowledged lost, and a flipped byte in
//! the middle of a segment refused by `verify` and by start-up alike.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::{Sidecar, binary, client, free_port, lose_commit_log, status, wait_exit, write_trades};
use serde_json::Value;
use tradestore_sidecar::store::log::{CommitLog, Record};

/// Runs `sidecar log ...` on the store in `dir`.
fn log_command(dir: &Path, args: &[&str]) -> Output {
    Command::new(binary())
        .arg("log")
        .args(args)
        .env_clear()
        .env("TRADESTORE_DATA_DIR", dir.join("data"))
        .output()
        .unwrap()
}

/// The one segment the log holds after a small run.
fn segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir.join("data").join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    assert_eq!(segs.len(), 1, "{segs:?}");
    segs.pop().unwrap()
}

fn flip(file: &Path, at: u64) {
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(file).unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0xff]).unwrap();
    f.sync_all().unwrap();
}

#[tokio::test]
async fn verify_and_dump_read_the_log_and_a_flipped_byte_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Sidecar::start(dir.path(), &[]).await;
    write_trades(&s, (0..50).map(|i| format!("t{i}"))).await;
    let patch = serde_json::json!({"expected_version": 1, "price": "7.5"});
    assert_eq!(client().patch(s.url("/v1/trades/t3")).json(&patch).send().await.unwrap().status(), 200);
    assert!(s.terminate(Duration::from_secs(30)).success());

    let out = log_command(dir.path(), &["verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["first_seq"].as_u64(), report["last_seq"].as_u64()), (Some(1), Some(51)), "{report}");
    assert!(report["torn"].is_null(), "{report}");

    let out = log_command(dir.path(), &["dump", "--from", "5", "--limit", "3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let got: Vec<(u64, &str, &str)> = lines
        .iter()
        .map(|l| (l["seq"].as_u64().unwrap(), l["change"].as_str().unwrap(), l["trade"]["id"].as_str().unwrap()))
        .collect();
    assert_eq!(got, [(5, "insert", "t4"), (6, "insert", "t5"), (7, "insert", "t6")]);
    assert!(lines[0]["before"].is_null(), "an insert replaced nothing: {}", lines[0]);
    let out = log_command(dir.path(), &["dump", "--from", "51"]);
    let update: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((update["change"].as_str(), update["trade"]["id"].as_str()), (Some("update"), Some("t3")), "{update}");
    let versions = (update["before"]["version"].as_i64(), update["trade"]["version"].as_i64());
    assert_eq!(versions, (Some(1), Some(2)), "the version it replaced, and the new one: {update}");
    assert_eq!(update["trade"]["price"], "7.5");

    // One byte in the first group: valid groups follow, so this is corruption, not a
    // torn write. Both the command and the store refuse, naming the segment.
    let seg = segment(dir.path());
    flip(&seg, 32 + 48);
    let out = log_command(dir.path(), &["verify"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("corrupt"), "{err}");
    let port = free_port();
    let mut s = Sidecar::spawn_on(dir.path(), port, &[]);
    let exit = wait_exit(&mut s).await;
    let log = s.log();
    assert!(!exit.success() && log.contains("is corrupt at offset"), "{exit}: {log}");
}

#[tokio::test]
async fn a_torn_end_is_cut_off_and_every_acknowledged_trade_stays() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Sidecar::start(dir.path(), &[]).await;
    write_trades(&s, (0..20).map(|i| format!("t{i}"))).await;
    s.kill();
    // What a crash in the middle of the next flush leaves: the beginning of a group
    // after the last acknowledged one, its CRC not matching.
    let seg = segment(dir.path());
    let report: Value = serde_json::from_slice(&log_command(dir.path(), &["verify"]).stdout).unwrap();
    let end = 32 + report["segments"][0]["used_bytes"].as_u64().unwrap();
    let mut f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.seek(SeekFrom::Start(end)).unwrap();
    f.write_all(b"TSGR\x00\x01\x00\x00garbage-of-a-torn-group").unwrap();
    f.sync_all().unwrap();
    let report: Value = serde_json::from_slice(&log_command(dir.path(), &["verify"]).stdout).unwrap();
    assert_eq!(report["torn"]["offset"].as_u64(), Some(end), "verify reports the torn end: {report}");

    let s = Sidecar::start(dir.path(), &[]).await;
    assert!(s.log().contains("cut off a torn end"), "{}", s.log());
    assert_eq!(status(&s).await["last_seq"], 20);
    for i in 0..20 {
        let r = client().get(s.url(&format!("/v1/trades/t{i}"))).send().await.unwrap();
        assert_eq!(r.status(), 200, "t{i} lost");
    }
    write_trades(&s, ["after".to_string()]).await;
    assert_eq!(status(&s).await["last_seq"], 21, "the next change follows on");
}

/// Every trade as the store answers it: (id, version, status, price).
async fn trades(s: &Sidecar, ids: &[String]) -> Vec<(String, i64, String, String)> {
    let mut out = Vec::new();
    for id in ids {
        let t: Value = client().get(s.url(&format!("/v1/trades/{id}"))).send().await.unwrap().json().await.unwrap();
        out.push((id.clone(), t["version"].as_i64().unwrap_or(-1), t["status"].to_string(), t["price"].to_string()));
    }
    out
}

fn lose_file(dir: &Path) {
    let data = dir.join("data");
    std::fs::remove_file(data.join("trades.duckdb")).unwrap();
    let _ = std::fs::remove_file(data.join("trades.duckdb.wal"));
}

/// The volume alone brings the store back: no Redis is configured, and the newest
/// snapshot plus the local commit log hold every change, history included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_or_damaged_file_comes_back_from_the_snapshot_and_the_local_log_alone() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("snaps");
    let env = [("TRADESTORE_SNAPSHOTS__DIR", snaps.to_str().unwrap())];
    let port = free_port();
    let mut s = Sidecar::start_on(dir.path(), port, &env).await;
    let c = client();
    let ids: Vec<String> = (0..80).map(|i| format!("l{i}")).collect();
    write_trades(&s, ids[..50].iter().cloned()).await;
    let snap: Value = c.post(s.url("/v1/snapshots")).send().await.unwrap().json().await.unwrap();
    assert_eq!(snap["seq"], 50);
    write_trades(&s, ids[50..].iter().cloned()).await;
    let r = c.patch(s.url("/v1/trades/l1")).json(&serde_json::json!({"expected_version": 1, "price": 7.0}));
    assert_eq!(r.send().await.unwrap().status(), 200);
    assert_eq!(c.delete(s.url("/v1/trades/l2")).send().await.unwrap().status(), 200);
    let before = trades(&s, &ids).await;

    // The file is lost.
    s.kill();
    lose_file(dir.path());
    let mut s = Sidecar::start_on(dir.path(), port, &env).await;
    let st = status(&s).await;
    let rec = &st["recovery"];
    assert_eq!((rec["reason"].as_str(), rec["snapshot_seq"].as_i64()), (Some("missing"), Some(50)), "{st}");
    assert_eq!((rec["replayed"].as_i64(), rec["log_replayed"].as_i64()), (Some(0), Some(32)), "{st}");
    assert_eq!((rec["complete"].as_bool(), st["last_seq"].as_i64()), (Some(true), Some(82)), "{st}");
    let log = &st["commit_log"];
    assert_eq!(log["replayed_at_start"].as_i64(), Some(32), "{st}");
    assert!(log["segments"].as_i64() >= Some(1) && log["replay_seconds"].as_f64() > Some(0.0), "{st}");
    assert_eq!(trades(&s, &ids).await, before);
    let history: Value = c.get(s.url("/v1/trades/l1/history")).send().await.unwrap().json().await.unwrap();
    assert_eq!(history["versions"].as_array().map(Vec::len), Some(2), "both versions of l1: {history}");

    // The file is damaged: moved aside, rebuilt the same way.
    s.kill();
    let db = dir.path().join("data").join("trades.duckdb");
    let len = std::fs::metadata(&db).unwrap().len() as usize;
    std::fs::write(&db, vec![0x5a; len.max(4096)]).unwrap();
    let _ = std::fs::remove_file(db.with_extension("duckdb.wal"));
    let mut s = Sidecar::start_on(dir.path(), port, &env).await;
    let st = status(&s).await;
    assert_ne!(st["recovery"]["reason"], "missing", "{st}");
    assert_eq!((st["recovery"]["log_replayed"].as_i64(), st["last_seq"].as_i64()), (Some(32), Some(82)), "{st}");
    assert_eq!(trades(&s, &ids).await, before);

    // The file and the log are lost: the snapshot cannot say what came after it.
    s.kill();
    lose_file(dir.path());
    lose_commit_log(dir.path());
    let mut refused = Sidecar::spawn_on(dir.path(), port, &env);
    assert!(!wait_exit(&mut refused).await.success(), "must not come up short");
    let log = refused.log();
    assert!(log.contains("cannot rebuild the database without losing changes"), "{log}");
    assert!(log.contains("there is no local commit log"), "{log}");
}

/// A store pointed at a log directory of its own while segments remain at the default
/// place refuses to start (it would skip their changes), and starts with everything
/// once they are moved.
#[tokio::test]
async fn a_log_left_at_the_default_place_is_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Sidecar::start(dir.path(), &[]).await;
    write_trades(&s, (0..10).map(|i| format!("m{i}"))).await;
    s.kill();
    let elsewhere = dir.path().join("log-volume");
    let env = [("TRADESTORE_COMMIT_LOG__DIR", elsewhere.to_str().unwrap())];
    let mut refused = Sidecar::spawn_on(dir.path(), free_port(), &env);
    assert!(!wait_exit(&mut refused).await.success());
    let log = refused.log();
    assert!(log.contains("still holds commit-log segments, which this start would skip"), "{log}");

    std::fs::rename(dir.path().join("data").join("log"), &elsewhere).unwrap();
    let s = Sidecar::start(dir.path(), &env).await;
    assert_eq!(status(&s).await["last_seq"], 10);
    for i in 0..10 {
        assert_eq!(client().get(s.url(&format!("/v1/trades/m{i}"))).send().await.unwrap().status(), 200);
    }
}

/// A log tail an older build wrote (JSON after-images, record kinds 1–3) and never
/// applied is replayed by this build with every version in the history, as that build
/// would have left it: it appended every image, and its records carry no before-image.
#[tokio::test]
async fn an_older_builds_log_tail_is_replayed_with_every_version_in_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let record = |kind: u8, id: &str, version: i64, seq: u64, status: &str| {
        let at = "2026-12-01T10:00:00.000001Z";
        let t = serde_json::json!({"id": id, "symbol": "OLD", "side": "buy", "quantity": "1.5", "price": "2",
            "status": status, "ts": at, "version": version, "seq": seq, "created_at": at, "updated_at": at});
        Record { seq, kind, payload: serde_json::to_vec(&t).unwrap() }
    };
    let records = [
        record(1, "a", 1, 1, "filled"),
        record(2, "a", 2, 2, "pending"),
        record(1, "b", 1, 3, "filled"),
        record(3, "b", 2, 4, "cancelled"),
    ];
    let mut log = CommitLog::open(&dir.path().join("data").join("log"), 1 << 20, 0).unwrap().log;
    log.append(&records).unwrap();
    drop(log);

    // A 1 s apply delay: were these taken back as the applier's backlog, DuckDB would
    // not hold them yet when the store answers.
    let s = Sidecar::start(dir.path(), &[("TRADESTORE_WRITER__APPLY_DELAY", "1s")]).await;
    let st = status(&s).await;
    assert_eq!((st["last_seq"].as_i64(), st["applied_seq"].as_i64()), (Some(4), Some(4)), "into DuckDB first: {st}");
    for (id, want) in [("a", [(1, "filled"), (2, "pending")]), ("b", [(1, "filled"), (2, "cancelled")])] {
        let h: Value =
            client().get(s.url(&format!("/v1/trades/{id}/history"))).send().await.unwrap().json().await.unwrap();
        let got: Vec<(i64, &str)> = h["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["version"].as_i64().unwrap(), t["status"].as_str().unwrap()))
            .collect();
        assert_eq!(got, want, "{h}");
    }
    let r = client().patch(s.url("/v1/trades/a")).json(&serde_json::json!({"expected_version": 2, "price": "3"}));
    assert_eq!(r.send().await.unwrap().status(), 200, "and it goes on from there");
}

/// What was acknowledged but not yet in DuckDB at a SIGKILL comes back as the backlog
/// it was: served at once after the restart (reads, the hot state, the writer's
/// refusals, lists), then applied behind. Whatever exceeds half of
/// `writer.max_apply_backlog` goes into DuckDB before the store serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_at_a_kill_is_served_at_once_after_the_restart_and_applied_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (port, c) = (free_port(), client());
    let slow = [("TRADESTORE_WRITER__APPLY_DELAY", "1s"), ("TRADESTORE_INTEGRITY__INTERVAL", "0s")];
    let mut s = Sidecar::start_on(dir.path(), port, &slow).await;
    let ids: Vec<String> = (0..200).map(|i| format!("b-{i}")).collect();
    let batch: Vec<Value> = ids.iter().map(|id| crate::common::trade_for(id)).collect();
    let r = c.post(s.url("/v1/trades/batch")).json(&serde_json::json!({ "trades": batch })).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let r = c.patch(s.url("/v1/trades/b-0")).json(&serde_json::json!({"expected_version": 1, "price": "7"}));
    assert_eq!(r.send().await.unwrap().status(), 200);
    assert_eq!(c.delete(s.url("/v1/trades/b-1")).send().await.unwrap().status(), 200);
    let state: Value = c.get(s.url("/v1/state")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed(&s).await, (200, 1), "a list shows what the overlay holds");
    let st = status(&s).await;
    assert_eq!(
        (st["last_seq"].as_i64(), st["applied_seq"].as_i64()),
        (Some(202), Some(0)),
        "all of it unapplied, the list did not wait for it: {st}"
    );
    s.kill();

    // 152 changes into DuckDB first (seqs 1..=152), the newest 50 — the rest of the
    // inserts, b-0's patch and b-1's cancel — taken back as the backlog.
    let env = [slow[0], slow[1], ("TRADESTORE_WRITER__MAX_APPLY_BACKLOG", "100")];
    let s = Sidecar::start_on(dir.path(), port, &env).await;
    let st = status(&s).await;
    assert_eq!((st["last_seq"].as_i64(), st["applied_seq"].as_i64()), (Some(202), Some(152)), "{st}");
    assert_eq!(st["commit_log"]["replayed_at_start"].as_i64(), Some(202), "{st}");
    assert!(s.log().contains("replayed=202 into_duckdb=152"), "{}", s.log());
    let served = trades(&s, &ids).await;
    let version = |id: &str| served.iter().find(|t| t.0 == id).map(|t| (t.1, t.2.as_str()));
    assert_eq!(version("b-0").map(|v| v.0), Some(2), "the patch, taken back");
    assert_eq!(version("b-1"), Some((2, "\"cancelled\"")), "the cancel, taken back");
    assert!(served.iter().skip(2).all(|t| t.1 == 1), "every insert: {served:?}");
    let after: Value = c.get(s.url("/v1/state")).send().await.unwrap().json().await.unwrap();
    assert_eq!(after, state, "the hot state as it was");
    let r = c.post(s.url("/v1/trades")).json(&crate::common::trade_for("b-170")).send().await.unwrap();
    assert_eq!(r.status(), 409, "a duplicate of a trade only the backlog holds");
    let r = c.patch(s.url("/v1/trades/b-0")).json(&serde_json::json!({"expected_version": 1, "price": "8"}));
    assert_eq!(r.send().await.unwrap().status(), 409, "a version the backlog superseded");

    assert_eq!(listed(&s).await, (200, 1), "a list shows the backlog at once");
    let history: Value = c.get(s.url("/v1/trades/b-0/history")).send().await.unwrap().json().await.unwrap();
    assert_eq!(history["versions"].as_array().map(Vec::len), Some(2), "both versions of b-0: {history}");
    assert_eq!(
        status(&s).await["applied_seq"],
        202,
        "b-0's history waits for DuckDB to hold its patch (the backlog: one transaction)"
    );
    assert_eq!(trades(&s, &ids).await, served, "DuckDB holds what was served from memory");
    assert_eq!(listed(&s).await, (200, 1), "and DuckDB lists the same");
    let r = c.patch(s.url("/v1/trades/b-0")).json(&serde_json::json!({"expected_version": 2, "price": "8"}));
    assert_eq!(r.send().await.unwrap().status(), 200, "the current version");
    assert_eq!(status(&s).await["last_seq"], 203, "the next change follows on");
}

/// `tradestore_applier_delay_seconds` as the sidecar reports it.
/// Trades listed over the five symbols, cancelled ones included, and how many are cancelled.
async fn listed(s: &Sidecar) -> (usize, usize) {
    let (mut listed, mut cancelled) = (0, 0);
    for sym in 0..5 {
        let url = s.url(&format!("/v1/trades?symbol=SYM{sym}&limit=1000&include_cancelled=true"));
        let page: Value = client().get(url).send().await.unwrap().json().await.unwrap();
        let trades = page["trades"].as_array().unwrap();
        listed += trades.len();
        cancelled += trades.iter().filter(|t| t["status"] == "cancelled").count();
    }
    (listed, cancelled)
}

async fn apply_delay(s: &Sidecar) -> f64 {
    let text = client().get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.starts_with("tradestore_applier_delay_seconds ")).expect("the gauge");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Many clients posting small batches saturate the log (large groups): the applier's
/// transactions then go on gathering up to `writer.apply_delay_saturated`. Once the
/// burst ends it is back to `writer.apply_delay`, so a lone write after it is not held
/// the longer time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applier_gathers_longer_only_while_the_log_is_saturated() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("TRADESTORE_WRITER__APPLY_DELAY", "20ms"), ("TRADESTORE_WRITER__APPLY_DELAY_SATURATED", "150ms")];
    let s = Sidecar::start(dir.path(), &env).await;
    assert_eq!(apply_delay(&s).await, 0.02, "a quiet store gathers for apply_delay");
    // The load runs until the applier is seen gathering longer (or for 30 s at most).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..32)
        .map(|w| {
            let (c, url, stop) = (client(), s.url("/v1/trades/batch"), stop.clone());
            tokio::spawn(async move {
                let mut k = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let trades: Vec<Value> =
                        (0..20).map(|i| crate::common::trade_for(&format!("sat-{w}-{k}-{i}"))).collect();
                    let r = c.post(&url).json(&serde_json::json!({ "trades": trades })).send().await.unwrap();
                    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
                    k += 1;
                }
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut saturated = false;
    while !saturated && std::time::Instant::now() < deadline {
        saturated = apply_delay(&s).await == 0.15;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    assert!(saturated, "32 clients posting batches for 30 s never made the applier gather longer");
    let st = status(&s).await;
    let last = st["last_seq"].as_i64().unwrap();
    crate::common::wait_status(&s, "DuckDB holding the burst", |st| st["applied_seq"].as_i64() == Some(last)).await;
    write_trades(&s, ["after-the-burst".to_string()]).await;
    crate::common::wait_status(&s, "the lone write applied", |st| st["applied_seq"].as_i64() == Some(last + 1)).await;
    assert_eq!(apply_delay(&s).await, 0.02, "after the burst the applier gathers for apply_delay again");
}
