//! The commit log's append path on this disk: one durable group per append, against
//! the bare cost of a flush (`write` + `fdatasync` of the same bytes appended to a
//! growing file, which also changes the file's size each time).
//!
//! `cargo bench -p tradestore-sidecar --bench log`; `BENCH_SECONDS` (default 3) per phase.

#[path = "../tests/integration/common/mod.rs"]
#[allow(dead_code)] // a bench uses only part of the tests' harness
mod common;
mod measure;

use std::io::Write;
use std::time::Instant;

use measure::{Row, print_table, summarize};
use tradestore_sidecar::store::log::{CommitLog, Record};

/// A payload the size of a journaled trade.
const PAYLOAD: usize = 220;

fn appends(secs: f64, per_group: usize) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let mut log = CommitLog::open(dir.path(), 64 << 20, 0).unwrap().log;
    let (start, mut lat, mut n) = (Instant::now(), Vec::new(), 0);
    while start.elapsed().as_secs_f64() < secs {
        let first = log.next_seq();
        let group: Vec<Record> = (first..first + per_group as u64)
            .map(|seq| Record { seq, kind: 1, payload: vec![b'x'; PAYLOAD] })
            .collect();
        let t = Instant::now();
        log.append(&group).unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        n += per_group;
    }
    let what = format!("commit log: append + fdatasync, {per_group} records of {PAYLOAD} B per group");
    summarize(what, n, start.elapsed(), lat)
}

fn bare_flushes(secs: f64) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let mut file = std::fs::File::create(dir.path().join("append")).unwrap();
    let bytes = vec![b'x'; PAYLOAD + 56];
    let (start, mut lat) = (Instant::now(), Vec::new());
    while start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        file.write_all(&bytes).unwrap();
        file.sync_data().unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    summarize("bare write + fdatasync appending to a growing file".into(), lat.len(), start.elapsed(), lat)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probes benches with --list
    }
    let secs: f64 = std::env::var("BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3.0);
    let bare = bare_flushes(secs);
    let mut table = vec![];
    for per_group in [1, 16, 256] {
        let mut row = appends(secs, per_group);
        row.vs = Some((row.ops_per_sec / bare.ops_per_sec, "bare flushes"));
        table.push(row);
    }
    table.insert(0, bare);
    print_table(&table);
}
