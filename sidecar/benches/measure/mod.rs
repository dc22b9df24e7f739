//! What every bench measures with: concurrent load loops, latency percentiles, and
//! a printed markdown table (shared so the benches cannot drift apart in how they count).
#![allow(dead_code)] // each bench uses a different part

pub mod raw;

/// Rows a second the batch phases (the sidecar's batch endpoint, the raw Appender in
/// column batches) have input made for before their clock starts: above the Appender's
/// ceiling here (330–370k rows/s), so neither side runs dry, and neither pays for
/// making its input while it is measured.
pub const MADE_ROWS_PER_SEC: f64 = 600_000.0;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct Row {
    pub what: String,
    pub ops_per_sec: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub vs: Option<(f64, &'static str)>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn summarize(what: String, ops: usize, elapsed: Duration, mut lat: Vec<f64>) -> Row {
    lat.sort_by(f64::total_cmp);
    let (p50, p99) =
        if lat.is_empty() { (None, None) } else { (Some(percentile(&lat, 0.5)), Some(percentile(&lat, 0.99))) };
    Row { what, ops_per_sec: ops as f64 / elapsed.as_secs_f64(), p50_us: p50, p99_us: p99, vs: None }
}

/// Runs `clients` concurrent loops of `op` for `secs`, counting `weight` operations per call.
pub async fn load<F, Fut>(clients: usize, secs: f64, weight: usize, op: F) -> (usize, Duration, Vec<f64>)
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = reqwest::Response> + Send,
{
    let op = Arc::new(op);
    let lat = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (op, lat) = (op.clone(), lat.clone());
            tokio::spawn(async move {
                let mut mine = Vec::new();
                let mut n = 0;
                while Instant::now() < end {
                    let t = Instant::now();
                    let r = op(c, n).await;
                    assert!(r.status().is_success(), "{} {}", r.status(), r.text().await.unwrap_or_default());
                    mine.push(t.elapsed().as_secs_f64() * 1e6);
                    n += 1;
                }
                lat.lock().unwrap().extend(mine);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed();
    let lat = Arc::try_unwrap(lat).unwrap().into_inner().unwrap();
    (lat.len() * weight, elapsed, lat)
}

/// Prints `table` as markdown.
pub fn print_table(table: &[Row]) {
    println!("\n| scenario | ops/s | p50 µs | p99 µs | ratio |");
    println!("|---|---:|---:|---:|---|");
    for r in table {
        let f = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.0}"));
        let vs = r.vs.map_or(String::new(), |(x, what)| format!("{x:.2}× {what}"));
        println!("| {} | {:.0} | {} | {} | {} |", r.what, r.ops_per_sec, f(r.p50_us), f(r.p99_us), vs);
    }
}

/// The resident memory of process `pid`, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
