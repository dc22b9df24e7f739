//! Crash safety: clients write while the sidecar is SIGKILLed at random moments.
//! After every restart each acknowledged trade (and acknowledged cancel) must be
//! there, and nothing half-written: every row is exactly what a client sent, and
//! every batch is all there or not at all.
//!
//! `TRADESTORE_CRASH_KILLS` sets the number of kills (default 50, as CI runs it; the long run in
//! docs/testing.md uses 1,000). `TRADESTORE_CRASH_SEED` replays a run.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{Sidecar, client, free_port, open_db, trade_for};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tradestore_sidecar::store::money::Amount;

#[derive(Default)]
struct Ledger {
    /// Acknowledged inserts.
    acked: HashSet<String>,
    /// Acknowledged cancels.
    cancelled: HashSet<String>,
    /// Every batch ever attempted: id prefix → size.
    batches: BTreeMap<String, usize>,
}

async fn client_loop(base: String, worker: usize, round: usize, seed: u64, ledger: Arc<Mutex<Ledger>>) {
    let c = client();
    let mut rng = StdRng::seed_from_u64(seed);
    for n in 0.. {
        let action = rng.random_range(0..10);
        let result = if action < 5 {
            let id = format!("s-{round}-{worker}-{n}");
            let r = c.post(format!("{base}/v1/trades")).json(&trade_for(&id)).send().await;
            match r {
                Ok(r) if r.status() == 201 => {
                    ledger.lock().unwrap().acked.insert(id);
                    Ok(())
                }
                Ok(r) => Err(format!("status {}", r.status())),
                Err(e) => Err(e.to_string()),
            }
        } else if action < 9 {
            let size = rng.random_range(2..=25);
            let prefix = format!("b-{round}-{worker}-{n}");
            ledger.lock().unwrap().batches.insert(prefix.clone(), size);
            let trades: Vec<_> = (0..size).map(|k| trade_for(&format!("{prefix}-{k}"))).collect();
            match c.post(format!("{base}/v1/trades/batch")).json(&json!({ "trades": trades })).send().await {
                Ok(r) if r.status() == 201 => {
                    let mut l = ledger.lock().unwrap();
                    l.acked.extend((0..size).map(|k| format!("{prefix}-{k}")));
                    Ok(())
                }
                Ok(r) => Err(format!("status {}", r.status())),
                Err(e) => Err(e.to_string()),
            }
        } else {
            let victim = {
                let l = ledger.lock().unwrap();
                l.acked.iter().find(|id| id.starts_with("s-") && !l.cancelled.contains(*id)).cloned()
            };
            let Some(id) = victim else { continue };
            match c.delete(format!("{base}/v1/trades/{id}")).send().await {
                Ok(r) if r.status() == 200 => {
                    ledger.lock().unwrap().cancelled.insert(id);
                    Ok(())
                }
                Ok(r) => Err(format!("status {}", r.status())),
                Err(e) => Err(e.to_string()),
            }
        };
        if result.is_err() {
            // The process is gone (or going): stop this client.
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_moments_loses_no_acknowledged_trade() {
    let kills: usize = std::env::var("TRADESTORE_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let seed: u64 =
        std::env::var("TRADESTORE_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(rand::random);
    println!("crash test: {kills} kills, seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    // Small checkpoint thresholds so kills also land during checkpoints.
    let env = [
        ("TRADESTORE_DUCKDB__CHECKPOINT_EVERY_COMMITS", "50"),
        ("TRADESTORE_DUCKDB__CHECKPOINT_THRESHOLD_BYTES", "262144"),
        ("TRADESTORE_DUCKDB__MAX_WAL_BYTES", "1048576"),
    ];
    let began = std::time::Instant::now();
    for round in 0..kills {
        let starting = std::time::Instant::now();
        let mut s = Sidecar::start_on(dir.path(), port, &env).await;
        if round % 50 == 0 {
            // The long mode's pace: a start that slows from round to round shows here.
            let acked = ledger.lock().unwrap().acked.len();
            println!(
                "crash test: round {round} at {:.0} s, ready after {} ms, {acked} acknowledged",
                began.elapsed().as_secs_f64(),
                starting.elapsed().as_millis()
            );
        }
        // Every acknowledged trade survived the previous kill.
        let status: serde_json::Value = client().get(s.url("/v1/status")).send().await.unwrap().json().await.unwrap();
        let acked = ledger.lock().unwrap().acked.len() as i64;
        assert!(status["trade_rows"].as_i64().unwrap() >= acked, "round {round}: {status} < {acked} acked");
        let workers: Vec<_> =
            (0..4).map(|w| tokio::spawn(client_loop(s.base.clone(), w, round, rng.random(), ledger.clone()))).collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(30..400))).await;
        s.kill();
        for w in workers {
            w.await.unwrap();
        }
    }
    // A clean start and stop, then inspect the file itself.
    let mut s = Sidecar::start_on(dir.path(), port, &env).await;
    let status = s.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}; log:\n{}", s.log());
    let conn = open_db(dir.path());
    let mut stmt =
        conn.prepare("SELECT id, symbol, side, quantity::VARCHAR, price::VARCHAR, status FROM trades").unwrap();
    let rows: Vec<(String, String, String, String, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let stored: HashSet<String> = rows.iter().map(|r| r.0.clone()).collect();
    let l = ledger.lock().unwrap();
    let missing: Vec<_> = l.acked.difference(&stored).collect();
    assert!(missing.is_empty(), "acknowledged but missing: {missing:?}");
    for (id, symbol, side, q, p, status) in &rows {
        let want = trade_for(id);
        assert_eq!(
            (symbol.as_str(), side.as_str()),
            (want["symbol"].as_str().unwrap(), want["side"].as_str().unwrap()),
            "{id}"
        );
        let exact = |text: &str| Amount::parse(text).unwrap().to_string();
        assert_eq!(
            (exact(q), exact(p)),
            (want["quantity"].to_string().replace('"', ""), want["price"].to_string().replace('"', "")),
            "{id}"
        );
        if l.cancelled.contains(id) {
            assert_eq!(status, "cancelled", "acknowledged cancel of {id} lost");
        }
    }
    for (prefix, size) in &l.batches {
        let present = (0..*size).filter(|k| stored.contains(&format!("{prefix}-{k}"))).count();
        assert!(present == 0 || present == *size, "batch {prefix} half-written: {present}/{size}");
    }
    let dup_seq: i64 = conn.query_row("SELECT count(*) - count(DISTINCT seq) FROM trades", [], |r| r.get(0)).unwrap();
    assert_eq!(dup_seq, 0, "commit sequence numbers are unique");
    // Every trade's versions: the current one in `trades`, each it superseded once in
    // the history (applied from the before-images the log carries, across every kill).
    let broken: i64 = conn
        .query_row(
            "SELECT count(*) FROM (SELECT t.version, count(h.version) AS kept, count(DISTINCT h.version) AS once, \
             coalesce(max(h.version), 0) AS top FROM trades t LEFT JOIN trade_history h ON h.id = t.id \
             GROUP BY t.id, t.version) WHERE kept <> version - 1 OR once <> kept OR top <> version - 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(broken, 0, "trades whose history is not exactly their superseded versions");
    let stray: i64 = conn
        .query_row("SELECT count(*) FROM trade_history WHERE id NOT IN (SELECT id FROM trades)", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stray, 0, "history of trades that do not exist");
    println!(
        "crash test: {} rows, {} acknowledged, {} batches, {} cancels",
        rows.len(),
        l.acked.len(),
        l.batches.len(),
        l.cancelled.len()
    );
    assert!(l.acked.len() > kills, "the clients got real work done");
}
