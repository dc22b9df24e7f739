//! What the applier's DuckDB transactions cost: CPU and wall time of one
//! [`applier::apply`] (new trades appended to `trades`, the applied `seq` recorded, one
//! transaction; new trades supersede nothing, so `trade_history` is not written) by changes per transaction and DuckDB threads.
//! The fixed part is what `writer.apply_delay` amortises and what `duckdb.threads`
//! changes.
//!
//! A second table: DuckDB's checkpoints under a load that updates every trade once (so
//! `trade_history` grows with `trades`), with the row-group merges DuckDB runs by
//! default and without them, as the sidecar runs its checkpoints under load
//! ([`db::checkpoint`]).
//!
//! `cargo bench -p tradestore-sidecar --bench apply`; `BENCH_CHANGES` (default
//! 30,000) changes per row of the first table; `BENCH_CHECKPOINTS` (default 8)
//! checkpoints of 100,000 changes each in the second.

#[path = "../tests/integration/common/mod.rs"]
#[allow(dead_code)] // a bench uses only part of the tests' harness
mod common;
mod measure;

use std::time::Instant;

use duckdb::Connection;
use measure::raw::new_trade;
use tradestore_sidecar::config::DuckdbConfig;
use tradestore_sidecar::store::change::Change;
use tradestore_sidecar::store::model::Trade;
use tradestore_sidecar::store::money::Amount;
use tradestore_sidecar::store::{applier, db, migrations};

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

/// Changes between two checkpoints in [`checkpoints`], and in one transaction.
const PER_CHECKPOINT: usize = 100_000;
const PER_TRANSACTION: usize = 2_000;

/// (CPU ms, wall ms) of each of `count` checkpoints on a fresh store, one every
/// [`PER_CHECKPOINT`] changes: half of them new trades, half updates of the trades
/// inserted before (each writes its before-image to `trade_history`).
fn checkpoints(compact: bool, count: usize) -> Vec<(f64, f64)> {
    let dir = tempfile::tempdir().unwrap();
    // Only the checkpoints measured: DuckDB's own would come at 16 MiB of WAL.
    let cfg = DuckdbConfig { threads: Some(1), checkpoint_threshold_bytes: 1 << 40, ..Default::default() };
    let conn = db::open(&dir.path().join("checkpoints.duckdb"), &cfg).unwrap();
    migrations::up(&conn, migrations::embedded(), None).unwrap();
    let mut seq = 0u64;
    let mut updated = 0u64; // trades up to this seq have been updated
    let mut change = |seq: u64| -> Change {
        if seq % 2 == 1 {
            return Change::insert(new_trade(format!("apply-{seq:012}"), seq as i64));
        }
        updated += 2;
        let before = new_trade(format!("apply-{:012}", updated - 1), (updated - 1) as i64);
        let after = Trade { version: 2, seq: seq as i64, price: Amount::parse("102.25").unwrap(), ..before.clone() };
        Change::modify(before, after)
    };
    (0..count)
        .map(|_| {
            for _ in 0..PER_CHECKPOINT / PER_TRANSACTION {
                let run: Vec<_> = (seq + 1..=seq + PER_TRANSACTION as u64).map(|s| (s, change(s))).collect();
                applier::apply(&conn, &run, &[]).unwrap();
                seq += PER_TRANSACTION as u64;
            }
            let (cpu, wall) = (cpu_seconds(), Instant::now());
            db::checkpoint(&conn, compact).unwrap();
            ((cpu_seconds() - cpu) * 1e3, wall.elapsed().as_secs_f64() * 1e3)
        })
        .collect()
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
    let count = std::env::var("BENCH_CHECKPOINTS").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    checkpoint_table(count);
}

/// The second table: every checkpoint, with and without the merges, then mean and worst.
fn checkpoint_table(count: usize) {
    let (off, on) = (checkpoints(false, count), checkpoints(true, count));
    println!();
    println!(
        "| checkpoint after | merges off (the sidecar under load): CPU ms, wall ms | merges on (DuckDB's default) |"
    );
    println!("|---:|---:|---:|");
    for (k, (a, b)) in off.iter().zip(&on).enumerate() {
        println!("| {} changes | {:.0}, {:.0} | {:.0}, {:.0} |", (k + 1) * PER_CHECKPOINT, a.0, a.1, b.0, b.1);
    }
    let mean = |v: &[(f64, f64)]| v.iter().map(|x| x.0).sum::<f64>() / v.len() as f64;
    let worst = |v: &[(f64, f64)]| v.iter().map(|x| x.1).fold(0.0, f64::max);
    println!("| mean CPU, worst wall | {:.0}, {:.0} | {:.0}, {:.0} |", mean(&off), worst(&off), mean(&on), worst(&on));
}
