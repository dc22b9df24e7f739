//! What the applier's DuckDB transactions cost: CPU and wall time of one
//! [`applier::apply`] (new trades appended to `trades`, the applied `seq` recorded, one
//! transaction; new trades supersede nothing, so `trade_history` is not written) by changes per transaction and DuckDB threads.
//! The fixed part is what `writer.apply_delay` amortises and what `duckdb.threads`
//! changes.
//!
//! `cargo bench -p tradestore-sidecar --bench apply`; `BENCH_CHANGES` (default
//! 30,000) changes per row of the table.

#[path = "../tests/integration/common/mod.rs"]
#[allow(dead_code)] // a bench uses only part of the tests' harness
mod common;
mod measure;

use std::time::Instant;

use duckdb::Connection;
use measure::raw::new_trade;
use tradestore_sidecar::store::applier;
use tradestore_sidecar::store::change::Change;
use tradestore_sidecar::store::migrations;

/// CPU seconds this process has used (every thread, DuckDB's included).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

fn insert(seq: u64) -> (u64, Change) {
    (seq, Change::insert(new_trade(format!("apply-{seq:012}"), seq as i64)))
}

/// (CPU µs, wall µs) per transaction of `per_tx` changes on a fresh store.
fn transactions(threads: i64, per_tx: usize, changes: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let flags = duckdb::Config::default().threads(threads).unwrap();
    let conn = Connection::open_with_flags(dir.path().join("apply.duckdb"), flags).unwrap();
    migrations::up(&conn, migrations::embedded(), None).unwrap();
    let runs = changes.div_ceil(per_tx);
    let (cpu, wall) = (cpu_seconds(), Instant::now());
    for run in 0..runs {
        let first = (run * per_tx) as u64 + 1;
        let batch: Vec<_> = (first..first + per_tx as u64).map(insert).collect();
        applier::apply(&conn, &batch, &[]).unwrap();
    }
    let per = |secs: f64| secs * 1e6 / runs as f64;
    (per(cpu_seconds() - cpu), per(wall.elapsed().as_secs_f64()))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probes benches with --list
    }
    let changes: usize = std::env::var("BENCH_CHANGES").ok().and_then(|v| v.parse().ok()).unwrap_or(30_000);
    println!(
        "| changes a transaction | DuckDB threads | CPU µs a transaction | CPU µs a change | wall µs a transaction |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for per_tx in [1, 30, 300, 3_000] {
        for threads in [1, 2] {
            // A single change a transaction would take minutes at 30,000: 500 show its cost.
            let n = changes.min(per_tx * 500);
            let (cpu, wall) = transactions(threads, per_tx, n);
            println!("| {per_tx} | {threads} | {cpu:.0} | {:.2} | {wall:.0} |", cpu / per_tx as f64);
        }
    }
}
