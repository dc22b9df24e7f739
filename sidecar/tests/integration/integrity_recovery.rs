//! `integrity.on_failure: recover` end to end: damaged blocks in the live database
//! file are found by the periodic check, the sidecar quarantines the file (at once: its
//! commit log reaches back to the snapshot) and stops by itself, and the restart (what
//! the kubelet does) rebuilds it from the snapshot plus the log with nothing lost.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

use crate::common::servers::Server;
use crate::common::{self, Sidecar, client, free_port, status, trade_for, wait_exit};
use serde_json::{Value, json};

/// Trades the damage test writes, the snapshot taken halfway.
const TRADES: usize = 300_000;

/// Trade `i`'s id: long and random-looking. The periodic check scans while running,
/// and reads a block from the file again only once it left DuckDB's buffer pool; the
/// trades must outgrow the pool (DuckDB compresses short ids `t0`, `t1`, … to almost
/// nothing).
fn id(i: usize) -> String {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let n = i as u64;
    let id = format!(
        "t{i}-{:016x}{:016x}{:016x}{:016x}",
        mix(n),
        mix(n + (1 << 40)),
        mix(n + (2 << 40)),
        mix(n + (3 << 40))
    );
    id[..64].to_string()
}

async fn write_batch(s: &Sidecar, from: usize, n: usize) {
    let trades: Vec<Value> = (from..from + n).map(|i| trade_for(&id(i))).collect();
    let r = client().post(s.url("/v1/trades/batch")).json(&json!({ "trades": trades })).send().await.unwrap();
    let code = r.status();
    assert_eq!(code, 201, "{}\nlog:\n{}", r.text().await.unwrap(), s.log());
}

/// File offset of a data block holding only `column` of `trades` (the sidecar must be
/// stopped): DuckDB files have a 3 × 4 KiB header, then 256 KiB blocks that start with
/// an 8-byte checksum. Only that column: DuckDB packs small segments of several
/// columns into one block, and a block read for another column (the writer reads
/// `status` at start) stays cached and hides the damage from a scan.
fn block_of(dir: &std::path::Path, column: &str) -> u64 {
    let conn = common::open_db(dir);
    let (block, offset): (i64, i64) = conn
        .query_row(
            "SELECT block_id, min(block_offset) FROM pragma_storage_info('trades') WHERE block_id >= 0 \
             GROUP BY block_id HAVING bool_and(column_name = ?) ORDER BY block_id LIMIT 1",
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
    assert_eq!(st["trade_rows"], TRADES, "{st}");
    for i in [0, TRADES / 2 - 1, TRADES / 2, TRADES - 1] {
        let t: Value =
            client().get(s.url(&format!("/v1/trades/{}", id(i)))).send().await.unwrap().json().await.unwrap();
        assert_eq!(t["id"], id(i), "{t}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(s).await["integrity"]["ok"] != true {
        assert!(Instant::now() < deadline, "integrity never passed after recovery: {}", status(s).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_file_is_quarantined_and_rebuilt_without_loss() {
    // No Redis: the snapshot and the volume's commit log are all recovery needs. (The
    // schedule, yearly, never fires here; the test takes its snapshot itself.)
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("snaps");
    let mut env = vec![
        ("TRADESTORE_SNAPSHOTS__DIR", snaps.to_str().unwrap()),
        ("TRADESTORE_SNAPSHOTS__SCHEDULE", "0 0 1 1 *"),
        ("TRADESTORE_INTEGRITY__INTERVAL", "300ms"),
        ("TRADESTORE_INTEGRITY__ON_FAILURE", "recover"),
    ];
    let port = free_port();
    let mut s = Sidecar::start_on(dir.path(), port, &env).await;
    for from in (0..TRADES / 2).step_by(10_000) {
        write_batch(&s, from, 10_000).await;
    }
    assert_eq!(client().post(s.url("/v1/snapshots")).send().await.unwrap().status(), 201);
    for from in (TRADES / 2..TRADES).step_by(10_000) {
        write_batch(&s, from, 10_000).await;
    }
    assert!(s.terminate(Duration::from_secs(30)).success());
    let db = dir.path().join("data").join("trades.duckdb");

    // 1. Damage while running. A buffer pool smaller than the data makes the periodic
    //    scan read blocks from disk again (see `id`): the smallest the config allows,
    //    since the trades alone must outgrow it (new trades have no history rows since
    //    session 12, and at 20 MB the damaged block stayed cached in one CI run).
    let at = block_of(dir.path(), "price");
    env.push(("TRADESTORE_DUCKDB__MEMORY_LIMIT", "16MiB"));
    env.push(("TRADESTORE_DUCKDB__THREADS", "1"));
    let mut s = Sidecar::start_on(dir.path(), port, &env).await;
    damage(&db, at);
    let exit = wait_exit(&mut s).await;
    assert!(!exit.success(), "stops non-zero so the container is restarted");
    let log = s.log();
    assert!(log.contains("INTEGRITY CHECK FAILED") && log.contains("restarting into recovery"), "{log}");
    assert!(db.with_extension("quarantine").exists(), "quarantine marker written");
    env.truncate(4);

    // The restart recovers: snapshot (half) + the local commit log (the other half;
    // the journal is not needed), nothing lost.
    let mut s = Sidecar::start_on(dir.path(), port, &env).await;
    let st = status(&s).await;
    let rec = &st["recovery"];
    assert!(rec["reason"].as_str().unwrap().starts_with("quarantined"), "{st}");
    let half = Some(TRADES as i64 / 2);
    let counts = (rec["snapshot_seq"].as_i64(), rec["replayed"].as_i64(), rec["log_replayed"].as_i64());
    assert_eq!(counts, (half, Some(0), half), "{st}");
    assert!(!db.with_extension("quarantine").exists(), "marker removed after recovery");
    assert_all_there(&s).await;
    assert!(s.terminate(Duration::from_secs(30)).success());

    // 2. Damage found at start: the block scan fails, the local log reaches from the
    //    snapshot past the file's last sequence, so recovery runs before the store opens.
    let at = block_of(dir.path(), "quantity");
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

/// The sidecar stopped: it must be because DuckDB invalidated the database or failed
/// applying the commit log (out of memory on the write path), never a quarantine.
/// Starts it again.
async fn restart_after_invalidation(
    s: &mut Sidecar,
    dir: &std::path::Path,
    env: &[(&str, &str)],
    db: &std::path::Path,
) {
    let exit = wait_exit(s).await;
    assert!(!db.with_extension("quarantine").exists(), "quarantined ({exit}); log:\n{}", s.log());
    let log = s.log();
    let invalidated = log.contains("database invalidated") || log.contains("restart replays it");
    assert!(invalidated, "stopped for another reason; log:\n{log}");
    *s = Sidecar::start(dir, env).await;
}

/// An integrity check that runs out of memory has found nothing wrong with the data:
/// in `recover` mode it must be reported (inconclusive, metric, log) and must neither
/// quarantine the healthy file nor stop the process. With 20 MiB and 4 threads the
/// primary-key index of a growing store soon leaves too little for the parallel scans of
/// the block check (DuckDB 1.5.6: `Out of Memory Error: failed to pin block`); writes
/// and journal reads start to fail at about the same size, so a refused batch is
/// tolerated here: this test is about what the check does.
// Not run in CI since the commit log (issue 12): with writes as fast as the log
// makes them, the store outgrows a 16–20 MiB buffer pool before the check does, and
// DuckDB 1.5.6 then fails at random places (applies, start-up replays, once an
// internal "index 1 within vector of size 0" that invalidated the database), so the
// test fails for reasons that are not what it checks. Run by hand with --ignored;
// docs/testing.md lists it.
#[ignore = "DuckDB runs out of memory elsewhere first since the commit log; see the comment"]
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
        ("TRADESTORE_DUCKDB__MEMORY_LIMIT", "16MiB"),
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
