//! The Redis journal against a real `redis-server`: every committed change reaches
//! the stream exactly once, writes keep being acknowledged while Redis is down, and
//! the journal catches up (and reports degraded meanwhile).

use crate::common::servers::{Server, journal_seqs};
use crate::common::{Sidecar, client, free_port, lose_commit_log, status, trade_for, wait_status};
use serde_json::{Value, json};

async fn wait_journal(s: &Sidecar, want: impl Fn(&Value) -> bool) -> Value {
    wait_status(s, "the expected journal state", |st| want(&st["journal"])).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_follows_commits_and_catches_up_after_redis_outage() {
    let dir = tempfile::tempdir().unwrap();
    let rdir = tempfile::tempdir().unwrap();
    let rport = free_port();
    let mut redis = Server::redis(rdir.path(), rport);
    let url = format!("redis://127.0.0.1:{rport}/0");
    let s = Sidecar::start(dir.path(), &[("TRADESTORE_REDIS__URL", &url), ("TRADESTORE_REDIS__MAX_BACKOFF", "200ms")])
        .await;
    let c = client();
    for i in 0..60 {
        assert_eq!(c.post(s.url("/v1/trades")).json(&trade_for(&format!("j{i}"))).send().await.unwrap().status(), 201);
    }
    // The journal carries each trade's newest state: a cancel of j0 applied before the
    // journal read j0's insert would leave no entry at seq 1 (module doc). Wait for it.
    wait_journal(&s, |j| j["watermark"] == 60).await;
    assert_eq!(c.delete(s.url("/v1/trades/j0")).send().await.unwrap().status(), 200);
    wait_journal(&s, |j| j["watermark"] == 61 && j["healthy"] == true && j["lag"] == 0).await;
    assert_eq!(journal_seqs(rport).await, (1..=61).collect::<Vec<i64>>());
    {
        let rc = redis::Client::open(url.as_str()).unwrap();
        let mut conn = rc.get_multiplexed_async_connection().await.unwrap();
        let state: String = redis::cmd("GET").arg("tradestore:state:SYM1").query_async(&mut conn).await.unwrap();
        let mem: Value = c.get(s.url("/v1/state/SYM1")).send().await.unwrap().json().await.unwrap();
        assert_eq!(serde_json::from_str::<Value>(&state).unwrap(), mem, "Redis holds the hot state");
        let last: String = redis::cmd("GET").arg("tradestore:last_trade").query_async(&mut conn).await.unwrap();
        assert_eq!(serde_json::from_str::<Value>(&last).unwrap()["seq"], 61, "last_trade is the newest change");
    }

    // Redis goes away: writes are still acknowledged, the journal says it is degraded.
    redis.kill();
    for i in 60..100 {
        assert_eq!(c.post(s.url("/v1/trades")).json(&trade_for(&format!("j{i}"))).send().await.unwrap().status(), 201);
    }
    let st = wait_journal(&s, |j| j["healthy"] == false).await;
    assert!(st["journal"]["lag"].as_i64().unwrap() > 0, "{st}");
    let m = c.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("tradestore_journal_healthy 0"), "{m}");

    // Redis returns (with its append-only file): the journal catches up, each change once.
    let _redis = Server::redis(rdir.path(), rport);
    wait_journal(&s, |j| j["watermark"] == 101 && j["healthy"] == true).await;
    assert_eq!(journal_seqs(rport).await, (1..=101).collect::<Vec<i64>>());
}

/// Every trade's (version, status) as the API reports it.
async fn versions(s: &Sidecar, ids: &[String]) -> Vec<(i64, String)> {
    let c = client();
    let mut out = Vec::new();
    for id in ids {
        let t: Value = c.get(s.url(&format!("/v1/trades/{id}"))).send().await.unwrap().json().await.unwrap();
        out.push((t["version"].as_i64().unwrap_or(-1), t["status"].as_str().unwrap_or("missing").to_string()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_or_corrupt_file_comes_back_from_snapshot_plus_journal() {
    let dir = tempfile::tempdir().unwrap();
    let rdir = tempfile::tempdir().unwrap();
    let rport = free_port();
    let _redis = Server::redis(rdir.path(), rport);
    let url = format!("redis://127.0.0.1:{rport}/0");
    let snaps = dir.path().join("snaps");
    let env = [("TRADESTORE_REDIS__URL", url.as_str()), ("TRADESTORE_SNAPSHOTS__DIR", snaps.to_str().unwrap())];
    let port = free_port();
    let mut s = Sidecar::start_on(dir.path(), port, &env).await;
    let c = client();
    let ids: Vec<String> = (0..80).map(|i| format!("r{i}")).collect();
    for id in &ids[..50] {
        assert_eq!(c.post(s.url("/v1/trades")).json(&trade_for(id)).send().await.unwrap().status(), 201);
    }
    let snap: Value = c.post(s.url("/v1/snapshots")).send().await.unwrap().json().await.unwrap();
    assert_eq!(snap["seq"], 50);
    for id in &ids[50..] {
        assert_eq!(c.post(s.url("/v1/trades")).json(&trade_for(id)).send().await.unwrap().status(), 201);
    }
    // Changes after the snapshot to trades the snapshot already holds.
    let r = c.patch(s.url("/v1/trades/r1")).json(&json!({"expected_version": 1, "price": 7.0})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(c.delete(s.url("/v1/trades/r2")).send().await.unwrap().status(), 200);
    let before = versions(&s, &ids).await;
    let last = wait_journal(&s, |j| j["watermark"] == 82 && j["lag"] == 0).await["last_seq"].clone();
    assert_eq!(last, 82);
    let db = dir.path().join("data").join("trades.duckdb");

    // The file is lost, and the commit log with it (a volume of its own, also lost):
    // only the journal holds what came after the snapshot.
    s.kill();
    std::fs::remove_file(&db).unwrap();
    let _ = std::fs::remove_file(dir.path().join("data").join("trades.duckdb.wal"));
    lose_commit_log(dir.path());
    let mut s = Sidecar::start_on(dir.path(), port, &env).await;
    let st = status(&s).await;
    assert_eq!(st["recovery"]["reason"], "missing", "{st}");
    assert_eq!(st["recovery"]["snapshot_seq"], 50, "{st}");
    assert_eq!((st["recovery"]["replayed"].as_i64(), st["recovery"]["log_replayed"].as_i64()), (Some(32), Some(0)));
    assert_eq!(st["last_seq"], 82);
    assert_eq!(versions(&s, &ids).await, before);
    // The journal holds r1's newest version only; the snapshot's one stays in the history.
    let h: Value = c.get(s.url("/v1/trades/r1/history")).send().await.unwrap().json().await.unwrap();
    let kept: Vec<i64> = h["versions"].as_array().unwrap().iter().map(|t| t["version"].as_i64().unwrap()).collect();
    assert_eq!(kept, [1, 2], "{h}");

    // The file is corrupt, and the log lost again.
    s.kill();
    let len = std::fs::metadata(&db).unwrap().len() as usize;
    std::fs::write(&db, vec![0x5a; len.max(4096)]).unwrap();
    let _ = std::fs::remove_file(dir.path().join("data").join("trades.duckdb.wal"));
    lose_commit_log(dir.path());
    let s = Sidecar::start_on(dir.path(), port, &env).await;
    let st = status(&s).await;
    assert_ne!(st["recovery"]["reason"], "missing", "{st}");
    assert_eq!(st["last_seq"], 82, "{st}");
    assert_eq!(versions(&s, &ids).await, before);
    let aside = std::fs::read_dir(dir.path().join("data"))
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().contains("corrupt-"));
    assert!(aside, "the corrupt file is kept aside for inspection");
}
