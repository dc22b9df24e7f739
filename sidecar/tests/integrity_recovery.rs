//! `integrity.on_failure: recover` end to end: damaged blocks in the live database
//! file are found by the periodic check, the sidecar stops by itself once the Redis
//! journal holds every committed change, quarantines the file, and the restart (what
//! the kubelet does) rebuilds it from the snapshot plus the journal with nothing lost.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

use common::servers::Server;
use common::{Sidecar, client, free_port, status, trade_for, wait_exit};
use serde_json::{Value, json};

async fn write_batch(s: &Sidecar, from: usize, n: usize) {
    let trades: Vec<Value> = (from..from + n).map(|i| trade_for(&format!("t{i}"))).collect();
    let r = client().post(s.url("/v1/trades/batch")).json(&json!({ "trades": trades })).send().await.unwrap();
    let code = r.status();
    assert_eq!(code, 201, "{}\nlog:\n{}", r.text().await.unwrap(), s.log());
}

/// File offset of a data block holding `column` of `trades` (the sidecar must be
/// stopped): DuckDB files have a 3 × 4 KiB header, then 256 KiB blocks that start with
/// an 8-byte checksum.
fn block_of(dir: &std::path::Path, column: &str) -> u64 {
    let conn = common::open_db(dir);
    let (block, offset): (i64, i64) = conn
        .query_row(
            "SELECT block_id, block_offset FROM pragma_storage_info('trades') \
             WHERE column_name = ? AND segment_type <> 'VALIDITY' AND block_id >= 0 ORDER BY row_group_id LIMIT 1",
            [column],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    3 * 4096 + block as u64 * 256 * 1024 + 8 + offset as u64
}

/// Flips 64 bytes at `at`.
fn damage(file: &std::path::Path, at: u64) {
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(file).unwrap();
    let mut b = [0u8; 64];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    b.iter_mut().for_each(|x| *x ^= 0x5a);
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&b).unwrap();
    f.sync_all().unwrap();
}

async fn assert_all_there(s: &Sidecar) {
    let st = status(s).await;
    assert_eq!(st["trade_rows"], 200_000, "{st}");
    for i in [0usize, 99_999, 100_000, 199_999] {
        let t: Value = client().get(s.url(&format!("/v1/trades/t{i}"))).send().await.unwrap().json().await.unwrap();
        assert_eq!(t["id"], format!("t{i}"), "{t}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(s).await["integrity"]["ok"] != true {
        assert!(Instant::now() < deadline, "integrity never passed after recovery: {}", status(s).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_file_is_quarantined_and_rebuilt_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let rdir = tempfile::tempdir().unwrap();
    let redis = Server::redis(rdir.path(), free_port());
    let url = redis.redis_url();
    let snaps = dir.path().join("snaps");
    let mut env = vec![
        ("TRADESTORE_REDIS__URL", url.as_str()),
        ("TRADESTORE_SNAPSHOTS__DIR", snaps.to_str().unwrap()),
        ("TRADESTORE_INTEGRITY__INTERVAL", "300ms"),
        ("TRADESTORE_INTEGRITY__ON_FAILURE", "recover"),
    ];
    let port = free_port();
    let mut s = Sidecar::start_on(dir.path(), port, &env).await;
    for b in 0..10 {
        write_batch(&s, b * 10_000, 10_000).await;
    }
    assert_eq!(client().post(s.url("/v1/snapshots")).send().await.unwrap().status(), 201);
    for b in 10..20 {
        write_batch(&s, b * 10_000, 10_000).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while status(&s).await["journal"]["watermark"] != 200_000 {
        assert!(Instant::now() < deadline, "journal did not catch up: {}", status(&s).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(s.terminate(Duration::from_secs(30)).success());
    let db = dir.path().join("data").join("trades.duckdb");

    // 1. Damage while running. A tiny buffer pool makes the periodic scan read blocks
    //    from disk again; the damaged block belongs to a column nothing else reads.
    let at = block_of(dir.path(), "created_at");
    env.push(("TRADESTORE_DUCKDB__MEMORY_LIMIT", "20MB"));
    env.push(("TRADESTORE_DUCKDB__THREADS", "1"));
    let mut s = Sidecar::start_on(dir.path(), port, &env).await;
    damage(&db, at);
    let exit = wait_exit(&mut s).await;
    assert!(!exit.success(), "stops non-zero so the container is restarted");
    let log = s.log();
    assert!(log.contains("INTEGRITY CHECK FAILED") && log.contains("restarting into recovery"), "{log}");
    assert!(db.with_extension("quarantine").exists(), "quarantine marker written");
    env.truncate(4);

    // The restart recovers: snapshot (100k) + journal (the other 100k), nothing lost.
    let mut s = Sidecar::start_on(dir.path(), port, &env).await;
    let st = status(&s).await;
    assert!(st["recovery"]["reason"].as_str().unwrap().starts_with("quarantined"), "{st}");
    assert_eq!(
        (st["recovery"]["snapshot_seq"].as_i64(), st["recovery"]["replayed"].as_i64()),
        (Some(100_000), Some(100_000)),
        "{st}"
    );
    assert!(!db.with_extension("quarantine").exists(), "marker removed after recovery");
    assert_all_there(&s).await;
    assert!(s.terminate(Duration::from_secs(30)).success());

    // 2. Damage found at start: the block scan fails, Redis's journal watermark covers
    //    the file's last sequence, so recovery runs before the store opens.
    let at = block_of(dir.path(), "price");
    damage(&db, at);
    let s = Sidecar::start_on(dir.path(), port, &env).await;
    let st = status(&s).await;
    assert!(st["recovery"]["reason"].as_str().unwrap().starts_with("integrity check at start"), "{st}");
    assert_all_there(&s).await;
    let aside = std::fs::read_dir(dir.path().join("data"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains("corrupt-"))
        .count();
    assert!(aside >= 2, "damaged files are kept aside, not deleted");
}

/// The sidecar stopped: it must be because DuckDB invalidated the database (a fatal
/// out-of-memory on the write path), never a quarantine. Starts it again.
async fn restart_after_invalidation(
    s: &mut Sidecar,
    dir: &std::path::Path,
    env: &[(&str, &str)],
    db: &std::path::Path,
) {
    let exit = wait_exit(s).await;
    assert!(!db.with_extension("quarantine").exists(), "quarantined ({exit}); log:\n{}", s.log());
    assert!(s.log().contains("database invalidated"), "stopped for another reason; log:\n{}", s.log());
    *s = Sidecar::start(dir, env).await;
}

/// An integrity check that runs out of memory has found nothing wrong with the data:
/// in `recover` mode it must be reported (inconclusive, metric, log) and must neither
/// quarantine the healthy file nor stop the process. With 20 MiB and 4 threads the
/// primary-key index of a growing store soon leaves too little for the parallel scans of
/// the block check (DuckDB 1.5.6: `Out of Memory Error: failed to pin block`); writes
/// and journal reads start to fail at about the same size, so a refused batch is
/// tolerated here: this test is about what the check does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integrity_check_out_of_memory_is_reported_not_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let rdir = tempfile::tempdir().unwrap();
    let redis = Server::redis(rdir.path(), free_port());
    let url = redis.redis_url();
    let env = [
        ("TRADESTORE_REDIS__URL", url.as_str()),
        ("TRADESTORE_INTEGRITY__INTERVAL", "300ms"),
        ("TRADESTORE_INTEGRITY__ON_FAILURE", "recover"),
        ("TRADESTORE_DUCKDB__MEMORY_LIMIT", "20MiB"),
        ("TRADESTORE_DUCKDB__THREADS", "4"),
    ];
    let db = dir.path().join("data").join("trades.duckdb");
    let mut s = Sidecar::start(dir.path(), &env).await;
    let mut written = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    let st = loop {
        // Out of memory on the write path can invalidate the database, which stops the
        // process by design (a restart reopens it), after a 503 or in the middle of a
        // request. That is not what this test is about, but it must not be a
        // quarantine: restart and go on.
        let Ok(r) = client().get(s.url("/v1/status")).send().await else {
            restart_after_invalidation(&mut s, dir.path(), &env, &db).await;
            continue;
        };
        let st: Value = r.json().await.unwrap();
        if st["integrity"]["error"].as_str().is_some_and(|e| e.contains("Out of Memory")) {
            break st;
        }
        assert!(written < 300_000 && Instant::now() < deadline, "the check never ran out of memory: {st}");
        let trades: Vec<Value> = (written..written + 1_000).map(|i| trade_for(&format!("t{i}"))).collect();
        match client().post(s.url("/v1/trades/batch")).json(&json!({ "trades": trades })).send().await {
            Ok(r) => assert!([201, 503].contains(&r.status().as_u16()), "{}", r.text().await.unwrap()),
            Err(_) => restart_after_invalidation(&mut s, dir.path(), &env, &db).await,
        }
        written += 1_000;
    };
    assert_eq!(st["integrity"]["state"], "inconclusive", "{st}");
    assert!(st["integrity"]["ok"].is_null(), "no verdict: {st}");
    // Several more checks run into the same wall; none may stop the store.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(s.child.try_wait().unwrap().is_none(), "the sidecar stopped; log:\n{}", s.log());
    assert!(!db.with_extension("quarantine").exists(), "a healthy file was quarantined");
    assert_eq!(client().get(s.url("/readyz")).send().await.unwrap().status(), 200, "readiness keeps the last verdict");
    let m = client().get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(!m.contains("tradestore_integrity_inconclusive_total 0"), "{m}");
    assert!(s.log().contains("integrity check inconclusive"), "warned");
    let t: Value = client().get(s.url("/v1/trades/t0")).send().await.unwrap().json().await.unwrap();
    assert_eq!(t["id"], "t0", "the store still answers: {t}");
    assert!(s.terminate(Duration::from_secs(30)).success());
}
