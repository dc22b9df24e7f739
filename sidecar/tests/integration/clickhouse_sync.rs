//! Incremental sync against a real `clickhouse-server`: inserts, updates and cancels
//! converge; ClickHouse down → writes still acknowledged, sync degraded, then caught
//! up; the sidecar SIGKILLed mid-sync → after restart ClickHouse's final view equals
//! DuckDB's table row for row, with no duplicate.

use std::time::{Duration, Instant};

use crate::common::clickhouse::ClickHouse;
use crate::common::servers::Server;
use crate::common::{Sidecar, client, free_port, open_db, trade_for};
use serde_json::{Value, json};

async fn wait_sync(s: &Sidecar, what: &str, want: impl Fn(&Value, i64) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st: Value = client().get(s.url("/v1/status")).send().await.unwrap().json().await.unwrap();
        if want(&st["sync"], st["last_seq"].as_i64().unwrap()) {
            return;
        }
        assert!(Instant::now() < deadline, "sync never got {what}: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn write_some(s: &Sidecar, prefix: &str, n: usize) {
    let c = client();
    let trades: Vec<Value> = (0..n).map(|i| trade_for(&format!("{prefix}{i}"))).collect();
    let r = c.post(s.url("/v1/trades/batch")).json(&json!({ "trades": trades })).send().await.unwrap();
    assert_eq!(r.status(), 201);
    for i in (0..n).step_by(7) {
        let r = c
            .patch(s.url(&format!("/v1/trades/{prefix}{i}")))
            .json(&json!({"expected_version": 1, "price": 1.5}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    for i in (3..n).step_by(11) {
        assert_eq!(c.delete(s.url(&format!("/v1/trades/{prefix}{i}"))).send().await.unwrap().status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_converges_to_duckdb_through_outages_and_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let chdir = tempfile::tempdir().unwrap();
    let (http, tcp) = (free_port(), free_port());
    let mut ch = ClickHouse::start(chdir.path(), http, tcp);
    let cfg = dir.path().join("sidecar.yaml");
    std::fs::write(
        &cfg,
        format!("clickhouse:\n  url: http://127.0.0.1:{http}\n  interval: 50ms\n  backoff_ms: [100, 200]\n  degraded_after: 2\n  batch_size: 97\n"),
    )
    .unwrap();
    let rdir = tempfile::tempdir().unwrap();
    let redis = Server::redis(rdir.path(), free_port());
    let redis_url = redis.redis_url();
    let env = [("TRADESTORE_CONFIG", cfg.to_str().unwrap()), ("TRADESTORE_REDIS__URL", redis_url.as_str())];
    let port = free_port();
    let mut s = Sidecar::start_on(dir.path(), port, &env).await;

    write_some(&s, "a", 300).await;
    wait_sync(&s, "caught up", |j, last| j["watermark"] == last && j["lag"] == 0).await;
    assert_eq!(ch.query("SELECT count() FROM trades FINAL").await.trim(), "300");

    // ClickHouse down: writes are still acknowledged; the sync degrades, then recovers.
    ch.kill();
    write_some(&s, "b", 100).await;
    wait_sync(&s, "degraded", |j, _| j["degraded"] == true && j["lag"].as_i64().unwrap() > 0).await;
    let m = client().get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("tradestore_sync_degraded 1"), "{m}");
    let ch = ClickHouse::start(chdir.path(), http, tcp);
    wait_sync(&s, "recovered", |j, last| j["degraded"] == false && j["watermark"] == last).await;

    // SIGKILL the sidecar while it is syncing a large backlog, then restart it.
    write_some(&s, "c", 2000).await;
    s.kill();
    let s = Sidecar::start_on(dir.path(), port, &env).await;
    wait_sync(&s, "caught up after the crash", |j, last| j["watermark"] == last && j["lag"] == 0).await;

    // The durable watermark (DuckDB's sync_state) is mirrored to Redis.
    let st: Value = client().get(s.url("/v1/status")).send().await.unwrap().json().await.unwrap();
    let synced = st["sync"]["watermark"].as_i64().unwrap();
    let mut rc = redis::Client::open(redis_url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mirrored: Option<i64> =
            redis::cmd("GET").arg("tradestore:sync:clickhouse:watermark").query_async(&mut rc).await.unwrap();
        if mirrored == Some(synced) {
            break;
        }
        assert!(Instant::now() < deadline, "Redis mirror {mirrored:?} never reached the sync watermark {synced}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut s = s;
    assert!(s.terminate(Duration::from_secs(30)).success());

    // Row for row: ClickHouse's final view equals the DuckDB table.
    let conn = open_db(dir.path());
    let mut stmt = conn
        .prepare("SELECT id, status, version, seq, quantity::VARCHAR, price::VARCHAR FROM trades ORDER BY id")
        .unwrap();
    let duck: Vec<String> = stmt
        .query_map([], |r| {
            Ok(format!(
                "{}\t{}\t{}\t{}\t{}\t{}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let text = ch
        .query("SELECT id, status, version, seq, quantity, price FROM trades FINAL ORDER BY id FORMAT TabSeparated")
        .await;
    let house: Vec<String> = text.lines().map(str::to_string).collect();
    assert_eq!(duck.len(), 2400);
    assert_eq!(house.len(), duck.len(), "no gap, no duplicate");
    for (d, h) in duck.iter().zip(&house) {
        assert_eq!(d, h);
    }
}

/// A restart while ClickHouse is down: the sync cannot deliver anything, but the status
/// and the Redis mirror must show the durable watermark (DuckDB's `sync_state`), not 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_durable_watermark_is_reported_after_a_restart_while_clickhouse_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let chdir = tempfile::tempdir().unwrap();
    let (http, tcp) = (free_port(), free_port());
    let mut ch = ClickHouse::start(chdir.path(), http, tcp);
    let rdir = tempfile::tempdir().unwrap();
    let redis = Server::redis(rdir.path(), free_port());
    let redis_url = redis.redis_url();
    let cfg = dir.path().join("sidecar.yaml");
    std::fs::write(
        &cfg,
        format!("clickhouse:\n  url: http://127.0.0.1:{http}\n  interval: 50ms\n  backoff_ms: [100]\n"),
    )
    .unwrap();
    let env = [("TRADESTORE_CONFIG", cfg.to_str().unwrap()), ("TRADESTORE_REDIS__URL", redis_url.as_str())];
    let mut s = Sidecar::start(dir.path(), &env).await;
    write_some(&s, "a", 120).await;
    wait_sync(&s, "caught up", |j, last| j["watermark"] == last && j["lag"] == 0).await;
    let st: Value = client().get(s.url("/v1/status")).send().await.unwrap().json().await.unwrap();
    let synced = st["sync"]["watermark"].as_i64().unwrap();
    assert!(synced > 0, "{st}");
    ch.kill();
    assert!(s.terminate(Duration::from_secs(30)).success());

    let s = Sidecar::start(dir.path(), &env).await;
    wait_sync(&s, "a failed delivery attempt", |j, _| j["consecutive_failures"].as_u64() >= Some(1)).await;
    // The journal records its watermark only after mirroring the sync's, so once it is
    // caught up the mirror has been written since the restart.
    let deadline = Instant::now() + Duration::from_secs(30);
    let st = loop {
        let st: Value = client().get(s.url("/v1/status")).send().await.unwrap().json().await.unwrap();
        if st["journal"]["watermark"] == st["last_seq"] {
            break st;
        }
        assert!(Instant::now() < deadline, "journal never caught up: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(st["sync"]["watermark"].as_i64(), Some(synced), "{st}");
    let mut rc = redis::Client::open(redis_url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let mirrored: Option<i64> =
        redis::cmd("GET").arg("tradestore:sync:clickhouse:watermark").query_async(&mut rc).await.unwrap();
    assert_eq!(mirrored, Some(synced), "the Redis mirror must keep the durable watermark");
}
