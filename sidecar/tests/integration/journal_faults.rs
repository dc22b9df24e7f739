//! The Redis journal and start-up recovery on bad days, against real `redis-server`
//! processes: Redis restarted empty, stopped with SIGSTOP, flushed while the store was
//! down, and a store whose WAL lost its tail. Recovery must prove it is complete or
//! refuse; a sequence number must never be given to two changes.

use std::time::Duration;

use crate::common::servers::{Server, journal_seqs, redis_conn, redis_int};
use crate::common::{self, Sidecar, client, free_port, lose_commit_log, status, wait_exit, wait_status, write_trades};
use serde_json::Value;

fn ids(prefix: &str, range: std::ops::Range<usize>) -> impl Iterator<Item = String> {
    range.map(move |i| format!("{prefix}{i}"))
}

fn db_path(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("data").join("trades.duckdb")
}

/// The volume is gone: the database, its WAL and the commit log.
fn lose_database(dir: &std::path::Path) {
    std::fs::remove_file(db_path(dir)).unwrap();
    let _ = std::fs::remove_file(dir.join("data").join("trades.duckdb.wal"));
    lose_commit_log(dir);
}

async fn journaled(s: &Sidecar, seq: i64) -> Value {
    wait_status(s, &format!("journal at {seq}"), |st| st["journal"]["watermark"] == seq && st["journal"]["lag"] == 0)
        .await
}

async fn assert_trades_present(s: &Sidecar, ids: impl Iterator<Item = String>) {
    let c = client();
    for id in ids {
        let t: Value = c.get(s.url(&format!("/v1/trades/{id}"))).send().await.unwrap().json().await.unwrap();
        assert_eq!(t["id"], id, "{t}");
        assert_eq!(t["price"], common::trade_for(&id)["price"], "{t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_redis_is_journaled_again_from_the_snapshot_and_recovery_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let rport = free_port();
    let mut redis = Server::redis_ephemeral(rport);
    let snaps = dir.path().join("snaps");
    let env = [
        ("TRADESTORE_REDIS__URL", redis.redis_url()),
        ("TRADESTORE_REDIS__MAX_BACKOFF", "200ms".into()),
        ("TRADESTORE_SNAPSHOTS__DIR", snaps.to_str().unwrap().into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let port = free_port();
    let mut s = Sidecar::start_on(dir.path(), port, &env).await;
    write_trades(&s, ids("e", 0..40)).await;
    let snap: Value = client().post(s.url("/v1/snapshots")).send().await.unwrap().json().await.unwrap();
    assert_eq!(snap["seq"], 40);
    write_trades(&s, ids("e", 40..80)).await;
    journaled(&s, 80).await;

    // Redis dies and comes back with nothing.
    redis.kill();
    let _redis = Server::redis_ephemeral(rport);
    write_trades(&s, ids("e", 80..90)).await;
    journaled(&s, 90).await;
    // Everything younger than redis.retention (here: all of it) is journaled again.
    assert_eq!(journal_seqs(rport).await, (1..=90).collect::<Vec<_>>(), "the retention window journaled again");
    assert_eq!(redis_int(rport, "tradestore:journal:from").await, Some(0));

    // The volume is lost: the snapshot plus the rebuilt journal hold everything.
    s.kill();
    lose_database(dir.path());
    let s = Sidecar::start_on(dir.path(), port, &env).await;
    let st = status(&s).await;
    let rec = &st["recovery"];
    assert_eq!((rec["reason"].as_str(), rec["snapshot_seq"].as_i64()), (Some("missing"), Some(40)), "{st}");
    assert_eq!((rec["replayed"].as_i64(), rec["complete"].as_bool()), (Some(50), Some(true)), "{st}");
    assert_eq!(st["last_seq"], 90, "{st}");
    assert_trades_present(&s, ids("e", 0..90)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_neither_duplicates_entries_nor_freezes_the_lag() {
    let dir = tempfile::tempdir().unwrap();
    let rdir = tempfile::tempdir().unwrap();
    let redis = Server::redis(rdir.path(), free_port());
    let url = redis.redis_url();
    let env = [
        ("TRADESTORE_REDIS__URL", url.as_str()),
        ("TRADESTORE_REDIS__MAX_BACKOFF", "200ms"),
        ("TRADESTORE_REDIS__TIMEOUT", "300ms"),
    ];
    let s = Sidecar::start(dir.path(), &env).await;
    write_trades(&s, ids("p", 0..20)).await;
    journaled(&s, 20).await;

    // Frozen, not dead: connections stay open and replies never come. Batches sent
    // now time out, and Redis applies them when it resumes.
    redis.signal(libc::SIGSTOP);
    for round in 0..6 {
        write_trades(&s, ids(&format!("p{round}-"), 0..10)).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    wait_status(&s, "the journal degraded", |st| st["journal"]["state"] == "degraded").await;
    let st = wait_status(&s, "the lag to follow commits", |st| {
        st["journal"]["lag"] == st["last_seq"].as_i64().unwrap() - st["journal"]["watermark"].as_i64().unwrap()
            && st["last_seq"] == 80
    })
    .await;
    assert!(st["journal"]["lag"].as_i64().unwrap() >= 60, "the lag keeps growing while Redis is stopped: {st}");
    redis.signal(libc::SIGCONT);
    let st = journaled(&s, 80).await;
    assert_eq!(st["journal"]["state"], "healthy", "{st}");
    assert_eq!(journal_seqs(redis.port).await, (1..=80).collect::<Vec<_>>(), "every change once, none twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_refuses_to_come_up_short_unless_told_to_and_keeps_every_piece_of_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let rport = free_port();
    let _redis = Server::redis_ephemeral(rport);
    let snaps = dir.path().join("snaps");
    let url = format!("redis://127.0.0.1:{rport}/0");
    let mut env = vec![
        ("TRADESTORE_REDIS__URL", url.as_str()),
        ("TRADESTORE_SNAPSHOTS__DIR", snaps.to_str().unwrap()),
        ("TRADESTORE_RECOVERY__JOURNAL_WAIT", "1s"),
        ("TRADESTORE_DUCKDB__CHECKPOINT_EVERY_COMMITS", "0"),
    ];
    let port = free_port();
    let mut s = Sidecar::start_on(dir.path(), port, &env).await;
    write_trades(&s, ids("r", 0..30)).await;
    assert_eq!(client().post(s.url("/v1/snapshots")).send().await.unwrap().status(), 201);
    write_trades(&s, ids("r", 30..50)).await;
    journaled(&s, 50).await;

    // The store dies, Redis loses everything meanwhile, then the volume is gone: the
    // snapshot holds 30 of 50 changes and nothing proves what came after.
    s.kill();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut redis_conn(rport).await).await.unwrap();
    lose_database(dir.path());
    let mut refused = Sidecar::spawn_on(dir.path(), port, &env);
    assert!(!wait_exit(&mut refused).await.success(), "must not come up short");
    let log = refused.log();
    assert!(log.contains("recovery refused") && log.contains("Redis holds no journal"), "{log}");
    assert!(!db_path(dir.path()).exists(), "nothing half-recovered is left in place");

    // Accepting the loss is explicit, and the report says what it is.
    env.push(("TRADESTORE_RECOVERY__ACCEPT_DATA_LOSS", "true"));
    let mut s = Sidecar::start_on(dir.path(), port, &env).await;
    let st = status(&s).await;
    assert_eq!(st["recovery"]["complete"], false, "{st}");
    assert!(st["recovery"]["warning"].as_str().unwrap().contains("no journal"), "{st}");
    assert_eq!(st["last_seq"], 30, "{st}");
    env.pop();

    // Two damaged files in a row (each with its WAL): both are kept, neither overwritten.
    for round in 0..2 {
        write_trades(&s, ids(&format!("w{round}-"), 0..5)).await;
        let last = status(&s).await["last_seq"].as_i64().unwrap();
        journaled(&s, last).await;
        s.kill();
        assert!(dir.path().join("data").join("trades.duckdb.wal").exists(), "a WAL to keep");
        std::fs::write(db_path(dir.path()), vec![0x5a; 16384]).unwrap();
        s = Sidecar::start_on(dir.path(), port, &env).await;
        let st = status(&s).await;
        assert_eq!((st["last_seq"].as_i64(), st["recovery"]["complete"].as_bool()), (Some(last), Some(true)), "{st}");
    }
    let kept: Vec<String> = std::fs::read_dir(dir.path().join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("corrupt-"))
        .collect();
    assert_eq!(kept.iter().filter(|n| n.ends_with(".wal")).count(), 2, "{kept:?}");
    assert_eq!(kept.len(), 4, "{kept:?}");
}

/// A store whose disk lost the flushed tail of DuckDB's WAL: half of it is cut off.
/// Writes `n` trades, waits for the journal, SIGKILLs the store and cuts DuckDB's WAL
/// in half; `keep_log: false` also loses the commit log (kept on a volume that is gone).
async fn store_that_loses_its_wal_tail(dir: &std::path::Path, env: &[(&str, &str)], n: usize, keep_log: bool) -> u16 {
    let port = free_port();
    let mut s = Sidecar::start_on(dir, port, env).await;
    write_trades(&s, ids("t", 0..n)).await;
    if env.iter().any(|(k, _)| *k == "TRADESTORE_REDIS__URL") {
        journaled(&s, n as i64).await;
    }
    wait_status(&s, "DuckDB to hold everything", |st| st["applied_seq"] == st["last_seq"]).await;
    s.kill();
    let wal = dir.join("data").join("trades.duckdb.wal");
    let len = std::fs::metadata(&wal).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&wal).unwrap().set_len(len / 2).unwrap();
    if !keep_log {
        lose_commit_log(dir);
    }
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_lost_its_wal_tail_takes_it_back_from_the_commit_log_alone() {
    let dir = tempfile::tempdir().unwrap();
    let port = store_that_loses_its_wal_tail(dir.path(), &NO_CHECKPOINTS, 60, true).await;
    let s = Sidecar::start_on(dir.path(), port, &NO_CHECKPOINTS).await;
    let st = wait_status(&s, "DuckDB to hold the log's changes", |st| st["applied_seq"] == 60).await;
    assert_eq!(st["last_seq"].as_i64(), Some(60), "{st}\n{}", s.log());
    assert!(s.log().contains("commit log replayed"), "{}", s.log());
    assert_trades_present(&s, ids("t", 0..60)).await;
}

const NO_CHECKPOINTS: [(&str, &str); 3] = [
    ("TRADESTORE_DUCKDB__CHECKPOINT_EVERY_COMMITS", "0"),
    ("TRADESTORE_DUCKDB__CHECKPOINT_THRESHOLD_BYTES", "1073741824"),
    ("TRADESTORE_DUCKDB__MAX_WAL_BYTES", "1073741824"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_behind_its_journal_takes_the_journal_and_never_reuses_a_seq() {
    let dir = tempfile::tempdir().unwrap();
    let rdir = tempfile::tempdir().unwrap();
    let redis = Server::redis(rdir.path(), free_port());
    let url = redis.redis_url();
    let mut env = vec![("TRADESTORE_REDIS__URL", url.as_str())];
    env.extend(NO_CHECKPOINTS);
    let port = store_that_loses_its_wal_tail(dir.path(), &env, 60, false).await;

    let s = Sidecar::start_on(dir.path(), port, &env).await;
    let st = status(&s).await;
    assert_eq!(st["last_seq"], 60, "the journal's changes are back: {st}\n{}", s.log());
    assert_eq!(st["recovery"]["complete"], true, "{st}");
    assert_trades_present(&s, ids("t", 0..60)).await;
    write_trades(&s, ids("u", 0..5)).await;
    journaled(&s, 65).await;
    assert_eq!(journal_seqs(redis.port).await, (1..=65).collect::<Vec<_>>(), "no sequence number twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_behind_an_unreachable_journal_never_overwrites_it_later() {
    let dir = tempfile::tempdir().unwrap();
    let rdir = tempfile::tempdir().unwrap();
    let rport = free_port();
    let mut redis = Server::redis(rdir.path(), rport);
    let url = redis.redis_url();
    let mut env = vec![
        ("TRADESTORE_REDIS__URL", url.as_str()),
        ("TRADESTORE_REDIS__MAX_BACKOFF", "200ms"),
        ("TRADESTORE_RECOVERY__JOURNAL_WAIT", "500ms"),
    ];
    env.extend(NO_CHECKPOINTS);
    let port = store_that_loses_its_wal_tail(dir.path(), &env, 60, false).await;

    // Redis is down while the store starts: it cannot know it is behind, and writes on.
    redis.kill();
    let s = Sidecar::start_on(dir.path(), port, &env).await;
    let behind = status(&s).await["last_seq"].as_i64().unwrap();
    assert!(behind < 60, "half the WAL is gone: {behind}");
    write_trades(&s, ids("v", 0..5)).await;

    // Redis returns with the journal: the store's new changes took the journal's
    // numbers, so nothing is appended over them and the status says so.
    let _redis = Server::redis(rdir.path(), rport);
    let st = wait_status(&s, "divergence reported", |st| st["journal"]["state"] == "diverged").await;
    assert!(st["journal"]["last_error"].as_str().unwrap().contains("lost committed changes"), "{st}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(journal_seqs(rport).await, (1..=60).collect::<Vec<_>>(), "the journal is left as it was");
    assert!(dir.path().join("data").join("trades.journal-diverged").exists(), "the marker keeps it that way");
}
