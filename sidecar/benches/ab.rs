//! A/B of sidecar builds on the write path and hot reads, in one run on one machine.
//!
//! ```sh
//! BENCH_AB="before=/path/to/old/sidecar,other=/path/to/another" \
//!   cargo bench -p tradestore-sidecar --bench ab
//! ```
//! This build is always measured too, as the last column. Every build gets a fresh
//! store per round and the builds take turns round by round (`BENCH_ROUNDS`, default
//! 3), so drift of a shared machine hits all of them alike; the table shows each
//! build's median round. Trades are sent with JSON-number amounts, which builds
//! from before exact money (issue 10) and after it both accept.

#[path = "../tests/integration/common/mod.rs"]
#[allow(dead_code)] // a bench uses only part of the tests' harness
mod common;
mod measure;

use std::path::{Path, PathBuf};

use common::{Sidecar, client, free_port};
use measure::{Row, load, print_table, summarize};
use serde_json::{Value, json};

const CLIENTS: [usize; 3] = [1, 16, 64];
/// The phases of a round: a write phase per client count, then hot reads.
const PHASES: usize = CLIENTS.len() + 1;

/// A trade any build accepts: amounts as JSON numbers with at most 8 decimals (parsed
/// from their decimal text, so the shortest float printing gives that text back).
fn trade(id: &str) -> Value {
    let h = id.bytes().fold(7u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64));
    let number = |text: String| text.parse::<f64>().unwrap();
    json!({
        "id": id,
        "symbol": format!("SYM{}", h % 5),
        "side": if h % 2 == 0 { "buy" } else { "sell" },
        "quantity": number(format!("{}.{:05}", h % 1000 + 1, h % 7)),
        "price": number(format!("{}.{:02}", 100 + h % 5000 / 100, h % 100)),
    })
}

/// The builds to compare, by name, from `BENCH_AB`, then this one.
fn builds() -> Vec<(String, PathBuf)> {
    let mut builds: Vec<(String, PathBuf)> = std::env::var("BENCH_AB")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (name, path) = s.split_once('=').expect("BENCH_AB entries are name=path");
            (name.to_string(), PathBuf::from(path))
        })
        .collect();
    builds.push(("this build".into(), PathBuf::from(common::binary())));
    builds
}

/// One round for one build: a fresh store, then each client count in turn.
async fn round(bin: &Path, secs: f64) -> Vec<Row> {
    let dir = tempfile::tempdir().unwrap();
    let s = Sidecar::start_of(bin, dir.path(), free_port(), &[]).await;
    let c = client();
    let mut rows = Vec::new();
    for clients in CLIENTS {
        let (c2, url) = (c.clone(), s.url("/v1/trades"));
        let (ops, el, lat) = load(clients, secs, 1, move |w, n| {
            let (c, url) = (c2.clone(), url.clone());
            async move { c.post(url).json(&trade(&format!("ab{clients}-{w}-{n}"))).send().await.unwrap() }
        })
        .await;
        rows.push(summarize(format!("POST /v1/trades, {clients} clients"), ops, el, lat));
    }
    let (c2, url) = (c.clone(), s.url("/v1/state/SYM1"));
    let (ops, el, lat) = load(4, secs, 1, move |_, _| {
        let (c, url) = (c2.clone(), url.clone());
        async move { c.get(url).send().await.unwrap() }
    })
    .await;
    rows.push(summarize("GET /v1/state/{symbol} (hot), 4 clients".into(), ops, el, lat));
    rows
}

fn median_by_ops(mut rounds: Vec<Row>) -> Row {
    rounds.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
    rounds.swap_remove(rounds.len() / 2)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probes benches with --list
    }
    let secs: f64 = std::env::var("BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3.0);
    let n_rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let builds = builds();
    // runs[build][phase] = that build's rounds of that phase
    let mut runs: Vec<Vec<Vec<Row>>> = builds.iter().map(|_| (0..PHASES).map(|_| Vec::new()).collect()).collect();
    for _ in 0..n_rounds {
        for (b, (_, bin)) in builds.iter().enumerate() {
            for (k, row) in round(bin, secs).await.into_iter().enumerate() {
                runs[b][k].push(row);
            }
        }
    }
    let baseline: Vec<f64> = runs[0].iter().map(|r| median_by_ops(r.clone()).ops_per_sec).collect();
    let mut table = Vec::new();
    for k in 0..PHASES {
        for (b, (name, _)) in builds.iter().enumerate() {
            let mut row = median_by_ops(std::mem::take(&mut runs[b][k]));
            row.what = format!("{name}: {}", row.what);
            row.vs = (b > 0).then(|| (row.ops_per_sec / baseline[k], "first build"));
            table.push(row);
        }
    }
    print_table(&table);
    println!("\n{n_rounds} rounds of {secs} s per phase; each row is the build's median round.");
}
