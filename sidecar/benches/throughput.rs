//! Throughput and latency of the sidecar against raw DuckDB, measured in the same run.
//!
//! `cargo bench -p tradestore-sidecar --bench throughput` prints a markdown table.
//! `BENCH_SECONDS` (default 5) sets each load phase's length; `BENCH_ROWS`
//! (default 200000) the rows preloaded before the read phases.

#[path = "../tests/integration/common/mod.rs"]
#[allow(dead_code)] // a bench uses only part of the tests' harness
mod common;
mod measure;

use std::time::{Duration, Instant};

use common::{Sidecar, client, trade_for};
use measure::raw::{Money, appender_phase, insert_phase, raw_db};
use measure::{load, print_table, rss_mib, summarize};
use serde_json::json;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probes benches with --list
    }
    let secs: f64 = std::env::var("BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5.0);
    let rows: usize = std::env::var("BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();
    let mut table = Vec::new();

    // Peers: raw DuckDB, one INSERT + COMMIT per transaction (one thread), and the
    // Appender in 10k-row transactions (the ceiling of any batching), each on the
    // exact-money schema the sidecar uses and on the previous DOUBLE one, so the cost
    // of decimals shows in the same run.
    let conn = raw_db(dir.path(), "raw", None);
    let raw_single = insert_phase(&conn, secs, Money::Decimal);
    let raw_tps = raw_single.ops_per_sec;
    let n = conn.query_row("SELECT count(*) FROM trades", [], |r| r.get::<_, i64>(0)).unwrap() as usize;
    table.push(raw_single);
    table.push(appender_phase(&conn, secs, Money::Decimal, n));
    let doubles = raw_db(dir.path(), "raw-double", Some(2));
    let mut row = insert_phase(&doubles, secs, Money::Double);
    row.vs = Some((raw_tps / row.ops_per_sec, "DOUBLE (decimal ÷ double)"));
    table.push(row);
    let ceiling = table[1].ops_per_sec;
    let mut row = appender_phase(&doubles, secs, Money::Double, 0);
    row.vs = Some((ceiling / row.ops_per_sec, "DOUBLE (decimal ÷ double)"));
    table.push(row);
    drop(doubles);
    let appended: usize = conn
        .query_row("SELECT count(*) FROM trades WHERE id LIKE 'app-%'", [], |r| r.get::<_, i64>(0))
        .unwrap() as usize;

    // The sidecar over HTTP.
    let sdir = tempfile::tempdir().unwrap();
    let s = Sidecar::start(sdir.path(), &[]).await;
    let c = client();
    for clients in [1, 16, 64] {
        let (c2, url) = (c.clone(), s.url("/v1/trades"));
        let (ops, el, lat) = load(clients, secs, 1, move |w, n| {
            let (c, url) = (c2.clone(), url.clone());
            async move { c.post(url).json(&trade_for(&format!("h{clients}-{w}-{n}"))).send().await.unwrap() }
        })
        .await;
        let mut row = summarize(format!("sidecar: POST /v1/trades, {clients} clients"), ops, el, lat);
        row.vs = Some((row.ops_per_sec / raw_tps, "raw INSERT+COMMIT"));
        table.push(row);
    }
    let (c2, url) = (c.clone(), s.url("/v1/trades/batch"));
    let (ops, el, lat) = load(8, secs, 100, move |w, n| {
        let (c, url) = (c2.clone(), url.clone());
        async move {
            let trades: Vec<_> = (0..100).map(|k| trade_for(&format!("hb-{w}-{n}-{k}"))).collect();
            c.post(url).json(&json!({ "trades": trades })).send().await.unwrap()
        }
    })
    .await;
    let mut row = summarize("sidecar: POST /v1/trades/batch (100 trades), 8 clients".into(), ops, el, lat);
    row.vs = Some((row.ops_per_sec / raw_tps, "raw INSERT+COMMIT"));
    table.push(row);

    // Preload both stores to `rows` trades for the read phases.
    let have: i64 =
        c.get(s.url("/v1/status")).send().await.unwrap().json::<serde_json::Value>().await.unwrap()["trade_rows"]
            .as_i64()
            .unwrap();
    let preload = rows.saturating_sub(have as usize).max(10_000);
    for chunk in (0..preload).collect::<Vec<_>>().chunks(10_000) {
        let trades: Vec<_> = chunk.iter().map(|i| trade_for(&format!("pre-{i}"))).collect();
        let r = c.post(s.url("/v1/trades/batch")).json(&json!({ "trades": trades })).send().await.unwrap();
        assert_eq!(r.status(), 201);
    }
    let raw_rows: i64 = conn.query_row("SELECT count(*) FROM trades", [], |r| r.get(0)).unwrap();
    let rows = have as usize + preload;
    let rss = rss_mib(s.child.id());

    // Reads: trade state and point lookups, sidecar vs raw DuckDB on the same file size.
    let mut stmt = conn.prepare("SELECT * FROM trade_state WHERE symbol = ?").unwrap();
    let start = Instant::now();
    let mut lat = Vec::new();
    while start.elapsed().as_secs_f64() < secs.min(2.0) {
        let t = Instant::now();
        let _: i64 = stmt.query_row(["SYM1"], |r| r.get(6)).unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let raw_state =
        summarize(format!("raw DuckDB: trade_state view, 1 symbol ({raw_rows} rows)"), lat.len(), start.elapsed(), lat);
    let raw_state_tps = raw_state.ops_per_sec;
    table.push(raw_state);
    let (c2, url) = (c.clone(), s.url("/v1/state/SYM1"));
    let (ops, el, lat) = load(4, secs, 1, move |_, _| {
        let (c, url) = (c2.clone(), url.clone());
        async move { c.get(url).send().await.unwrap() }
    })
    .await;
    let mut row = summarize(format!("sidecar: GET /v1/state/{{symbol}}, 4 clients ({rows} rows)"), ops, el, lat);
    row.vs = Some((row.ops_per_sec / raw_state_tps, "raw trade_state"));
    table.push(row);

    let mut stmt = conn.prepare("SELECT * FROM trades WHERE id = ?").unwrap();
    let start = Instant::now();
    let mut lat = Vec::new();
    let mut i = 0usize;
    while start.elapsed().as_secs_f64() < secs.min(2.0) {
        let t = Instant::now();
        let _: String = stmt.query_row([format!("app-{}", (i * 7919) % appended)], |r| r.get(0)).unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        i += 1;
    }
    let raw_get = summarize("raw DuckDB: point lookup by id".into(), lat.len(), start.elapsed(), lat);
    let raw_get_tps = raw_get.ops_per_sec;
    table.push(raw_get);
    let (c2, base) = (c.clone(), s.url("/v1/trades/pre-"));
    let (ops, el, lat) = load(4, secs, 1, move |w, n| {
        let (c, url) = (c2.clone(), format!("{base}{}", (w * 1_000_003 + n * 7919) % preload));
        async move { c.get(url).send().await.unwrap() }
    })
    .await;
    let mut row = summarize("sidecar: GET /v1/trades/{id} (cold, from DuckDB), 4 clients".into(), ops, el, lat);
    row.vs = Some((row.ops_per_sec / raw_get_tps, "raw point lookup"));
    table.push(row);

    // Integrity checks on the loaded store: how long one takes (against a raw DuckDB
    // full scan of a table of the same size), and what checks running back to back do
    // to a single writer's latency (against the same writer without checks, above).
    let mut s = s;
    s.terminate(Duration::from_secs(60));
    let s = Sidecar::start(sdir.path(), &[("TRADESTORE_INTEGRITY__INTERVAL", "1ms")]).await;
    let start = Instant::now();
    let mut scans = Vec::new();
    while start.elapsed().as_secs_f64() < secs.min(3.0) {
        let t = Instant::now();
        tradestore_sidecar::durability::integrity::scan_blocks(&conn).unwrap();
        scans.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let what = format!("raw DuckDB: the integrity block scan alone, every value hashed ({raw_rows} rows)");
    let raw_scan = summarize(what, scans.len(), start.elapsed(), scans);
    let raw_scan_ms = raw_scan.p50_us.unwrap_or(f64::NAN) / 1000.0;
    table.push(raw_scan);
    let (c2, url) = (c.clone(), s.url("/v1/trades"));
    let (ops, el, lat) = load(1, secs, 1, move |_, n| {
        let (c, url) = (c2.clone(), url.clone());
        async move { c.post(url).json(&trade_for(&format!("ic-{n}"))).send().await.unwrap() }
    })
    .await;
    let mut row = summarize("sidecar: POST /v1/trades, 1 client, integrity checks back to back".into(), ops, el, lat);
    row.vs = Some((row.ops_per_sec / table[2].ops_per_sec, "same without checks"));
    table.push(row);
    let st: serde_json::Value = c.get(s.url("/v1/status")).send().await.unwrap().json().await.unwrap();
    let check_ms = st["integrity"]["duration_ms"].as_f64().unwrap_or(f64::NAN);
    assert_eq!(st["integrity"]["ok"], true, "{st}");

    print_table(&table);
    println!("\nsidecar RSS after {rows} rows: {rss:.0} MiB");
    println!(
        "integrity check on {rows} rows: {check_ms:.0} ms (raw DuckDB block scan of {raw_rows} rows: {raw_scan_ms:.0} ms, \
         ratio {:.1}×)",
        check_ms / raw_scan_ms
    );
}
