//! The sidecar against what users would pick instead, in one run on one machine:
//! PostgreSQL (pgbench over TCP loopback like wrk, one prepared single-row INSERT per
//! transaction, `fsync=on`, `synchronous_commit=on`; over a Unix socket too) and raw
//! DuckDB, the sidecar driven by the bench's own HTTP client ([`http_load`]) with one
//! trade per request — at the same client counts, client and server sharing the
//! machine. wrk drives it once more at 64 clients as a cross-check, and both
//! generators' ceilings on a trivial route show they are not what limits.
//!
//! `scripts/bench.sh` installs PostgreSQL and wrk from Debian and runs this.
//! `BENCH_SECONDS` (default 10) per phase (`BENCH_LAG_SECONDS` for the apply-lag
//! phase alone: one long enough to hold DuckDB's checkpoints); `BENCH_ROUNDS` (default
//! one) runs each client count's pair that many times, alternating, and shows the round
//! with the median ratio and the range of all; `BENCH_SIDECAR_X` sets the sidecar's
//! `TRADESTORE_X` (to compare settings); `BENCH_SMOKE=1` runs 1 s phases at 1 and 16
//! clients and checks correctness only: no request failed, and the store holds every
//! acknowledged trade and at most the requests in flight when a phase ended besides
//! (CI runs this; figures from it mean nothing). A second table holds the write path
//! past single trades ([`write_path`]): batches against the raw Appender, the apply
//! lag at half the best rate, the replay after a SIGKILL with a full backlog, and the
//! id index's memory per trade.

#[path = "../../tests/integration/common/mod.rs"]
#[allow(dead_code)] // a bench uses only part of the tests' harness
mod common;
mod http_load;
mod load;
#[path = "../measure/mod.rs"]
mod measure;
mod postgres;
mod write_path;
mod wrk;

use std::fmt::Write;

use common::{Sidecar, TOKEN, client};
use load::{Measured, Threads};
use measure::raw::{Money, appender_phase, column_batch_phase, insert_phase, raw_db};
use measure::rss_mib;
use postgres::Transport::{Tcp, Unix};

struct Step {
    clients: usize,
    sidecar: Measured,
    /// The sidecar's CPU per trade by thread role.
    threads: Threads,
    /// The commit log's flushes and the writer's busy share.
    log: write_path::LogLoad,
    postgres: Measured,
    /// PostgreSQL over its Unix socket (shown, not the ratio's base).
    postgres_unix: Measured,
    /// Every round's sidecar ÷ PostgreSQL, lowest first (`BENCH_ROUNDS`).
    ratios: Vec<f64>,
}

impl Step {
    fn ratio(&self) -> f64 {
        self.sidecar.ops_per_sec() / self.postgres.ops_per_sec()
    }

    /// The round whose ratio is the median, carrying every round's ratio: one round's
    /// figures stay together (its latencies and CPU belong to its throughput).
    fn median_round(mut rounds: Vec<Step>) -> Step {
        rounds.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
        let ratios = rounds.iter().map(Step::ratio).collect();
        let mut median = rounds.swap_remove(rounds.len() / 2);
        median.ratios = ratios;
        median
    }

    /// The rounds' ratios, when there was more than one.
    fn spread(&self) -> String {
        match self.ratios.as_slice() {
            [] | [_] => String::new(),
            r => format!(" ({:.2}–{:.2}× over {} rounds)", r[0], r[r.len() - 1], r.len()),
        }
    }
}

fn ms(us: f64) -> String {
    format!("{:.2}", us / 1000.0)
}

fn table(steps: &[Step]) -> String {
    let mut t = String::from(
        "| clients | sidecar trades/s | p50 ms | p99 ms | p99.9 ms | CPU µs/trade | client µs/trade | PostgreSQL tx/s | \
         p50 ms | p99 ms | p99.9 ms | CPU µs/tx | pgbench µs/tx | sidecar ÷ PostgreSQL | PostgreSQL over a Unix socket tx/s |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in steps {
        let (a, b) = (&s.sidecar, &s.postgres);
        writeln!(
            t,
            "| {} | {:.0} | {} | {} | {} | {:.0} | {:.1} | {:.0} | {} | {} | {} | {:.0} | {:.1} | {:.2}×{} | {:.0} |",
            s.clients,
            a.ops_per_sec(),
            ms(a.p50_us),
            ms(a.p99_us),
            ms(a.p999_us),
            a.cpu_us_per_op,
            a.generator_cpu_us_per_op,
            b.ops_per_sec(),
            ms(b.p50_us),
            ms(b.p99_us),
            ms(b.p999_us),
            b.cpu_us_per_op,
            b.generator_cpu_us_per_op,
            s.ratio(),
            s.spread(),
            s.postgres_unix.ops_per_sec()
        )
        .unwrap();
    }
    t
}

/// Where the sidecar's CPU went per trade, by thread: steadier than throughput on a
/// shared machine, since it does not count what other processes take. Beside it the
/// commit log's flushes: how long one took under that load, and how many requests it
/// answered — a client waits for about one and a half flushes, so they bound what
/// few clients can do — and how busy the writer, the one serial stage, was.
fn thread_table(steps: &[Step]) -> String {
    let mut t = String::from(
        "| clients | applier µs/trade | writer µs/trade | HTTP workers µs/trade | other µs/trade | log flush µs (mean) | requests a flush | writer busy |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in steps {
        let (th, log) = (&s.threads, &s.log);
        writeln!(
            t,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.1} | {:.0}% |",
            s.clients,
            th.applier,
            th.writer,
            th.http,
            th.other,
            log.flush_us,
            log.per_flush,
            log.writer_busy * 100.0
        )
        .unwrap();
    }
    t
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // `cargo test --benches` probes benches with --list
    }
    if args.get(1).is_some_and(|a| a == http_load::ARG) {
        return http_load::main(&args[2..]);
    }
    tokio::runtime::Runtime::new().unwrap().block_on(bench());
}

fn env_f64(name: &str) -> Option<f64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

async fn bench() {
    let smoke = std::env::var("BENCH_SMOKE").is_ok_and(|v| v == "1");
    let secs: f64 = if smoke { 1.0 } else { env_f64("BENCH_SECONDS").unwrap_or(10.0) };
    let lag_secs: f64 = if smoke { 1.0 } else { env_f64("BENCH_LAG_SECONDS").unwrap_or(secs) };
    let counts: &[usize] = if smoke { &[1, 16] } else { &[1, 16, 64, 256] };

    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1).max(1);

    let pg = postgres::Postgres::start();
    let pg_unix: Vec<Measured> = counts.iter().map(|&c| pg.pgbench(c, secs, Unix)).collect();
    let dir = tempfile::tempdir().unwrap();
    // Settings to compare: BENCH_SIDECAR_WRITER__APPLY_DELAY=0s sets TRADESTORE_WRITER__APPLY_DELAY.
    let settings: Vec<(String, String)> = std::env::vars()
        .filter_map(|(k, v)| Some((format!("TRADESTORE_{}", k.strip_prefix("BENCH_SIDECAR_")?), v)))
        .collect();
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let s = Sidecar::start(dir.path(), &settings).await;
    let (mut acknowledged, mut failed) = (0, 0);
    // Each client count's peers back to back, round after round: the machine's speed
    // drifts by tens of percent over minutes, and a ratio of runs minutes apart
    // measures the drift as much as the stores.
    let mut rounds_at: Vec<Vec<Step>> = counts.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (&clients, (at, postgres_unix)) in counts.iter().zip(rounds_at.iter_mut().zip(&pg_unix)) {
            let postgres = pg.pgbench(clients, secs, Tcp);
            let (before, flushes) = (Threads::of(s.child.id()), write_path::Flushes::of(&s).await);
            // The phase names the trades' ids: a round of its own, or its ids would be taken.
            let phase = format!("c{clients}r{round}");
            let run = http_load::run(&s.url("/v1/trades"), TOKEN, clients, secs, true, &phase);
            let threads = Threads::of(s.child.id()).per_op_since(&before, run.acknowledged);
            let log = write_path::Flushes::of(&s).await.since(&flushes);
            (acknowledged, failed) = (acknowledged + run.acknowledged, failed + run.failed);
            let postgres_unix = postgres_unix.clone();
            at.push(Step { clients, sidecar: run.measured, threads, log, postgres, postgres_unix, ratios: vec![] });
        }
    }
    let pg_rows: u64 = pg.sql("SELECT count(*) FROM trades").trim().parse().unwrap();
    drop(pg);
    let steps: Vec<Step> = rounds_at.into_iter().map(Step::median_round).collect();
    let busiest = *counts.last().unwrap();
    let ceiling = http_load::run(&s.url("/healthz"), TOKEN, busiest, secs.min(3.0), false, "probe").measured;
    let wrk_ceiling = wrk::run(&s.url("/healthz"), TOKEN, busiest, secs.min(3.0), false, "probe").measured;
    let check = *counts.iter().rfind(|&&c| c <= 64).unwrap();
    let by_wrk = wrk::run(&s.url("/v1/trades"), TOKEN, check, secs, true, "wrk");
    (acknowledged, failed) = (acknowledged + by_wrk.acknowledged, failed + by_wrk.failed);
    let batches = write_path::batches(&s, 4, secs, "batch").await;
    let best = steps.iter().map(|s| s.sidecar.ops_per_sec()).fold(0.0, f64::max);
    let lag = write_path::apply_lag(&s, best / 2.0, lag_secs).await;
    acknowledged += batches.acknowledged + lag.sent;
    let status: serde_json::Value = client().get(s.url("/v1/status")).send().await.unwrap().json().await.unwrap();
    let rows = status["trade_rows"].as_u64().unwrap();
    let index_bytes = write_path::metric(&s, "writer_index_bytes").await;
    let hot_state_bytes = write_path::metric(&s, "hot_state_bytes").await;
    let rss = rss_mib(s.child.id());
    drop(s);
    let killed = tempfile::tempdir().unwrap();
    let restart = write_path::kill_with_full_backlog(killed.path(), if smoke { 20_000 } else { 400_000 }).await;

    let raw = raw_db(dir.path(), "raw", None);
    let raw_single = insert_phase(&raw, secs.min(3.0), Money::Decimal);
    let n: i64 = raw.query_row("SELECT count(*) FROM trades", [], |r| r.get(0)).unwrap();
    let appender = appender_phase(&raw, secs.min(3.0), Money::Decimal, n as usize);
    let n: i64 = raw.query_row("SELECT count(*) FROM trades", [], |r| r.get(0)).unwrap();
    let columns = column_batch_phase(&raw, secs.min(3.0), n as usize);

    println!("\n{}", table(&steps));
    println!("{}", thread_table(&steps));
    let show = |m: &Measured| {
        format!(
            "{:.0}/s, p50 {} ms, the generator's CPU {:.1} µs a request",
            m.ops_per_sec(),
            ms(m.p50_us),
            m.generator_cpu_us_per_op
        )
    };
    println!(
        "the load generators' ceilings (GET /healthz, {busiest} connections): the bench's client {}; wrk {}",
        show(&ceiling),
        show(&wrk_ceiling)
    );
    println!("wrk as the client instead ({check} connections, one trade a request): {}", show(&by_wrk.measured));
    println!(
        "raw DuckDB, same machine: INSERT+COMMIT per trade {:.0}/s (p50 {} ms), Appender in 10k-row commits {:.0}/s \
         row by row, {:.0}/s in column batches",
        raw_single.ops_per_sec,
        ms(raw_single.p50_us.unwrap_or(f64::NAN)),
        appender.ops_per_sec,
        columns.ops_per_sec
    );
    println!("sidecar RSS at the end: {rss:.0} MiB with {rows} trades; PostgreSQL table: {pg_rows} rows");
    let per_trade = index_bytes / rows as f64;
    println!(
        "\n| write path | measured | target |\n|---|---:|---|\n\
         | batch endpoint ({} trades per request, 4 clients) | {:.0} trades/s = {:.2}× the raw Appender in column batches ({:.0} rows/s); {} batches refused (503) | ≥ 0.70× |\n\
         | apply lag at half the best single-trade rate ({:.0} trades/s) | p50 ≤ {} ms, p99 ≤ {} ms (histogram buckets), {:.1}% of the groups past 50 ms; {} DuckDB checkpoints meanwhile | p99 ≤ 50 ms |\n\
         | start-up replay after SIGKILL with {} changes not yet in DuckDB | {:.0} changes in {:.3} s = {:.0} changes/s | ≥ 200,000/s |\n\
         | SIGKILL with that backlog → ready (→ DuckDB holds it all again) | {:.2} s ({:.2} s) | ≤ 2 s |\n\
         | id index (the writer's view of every trade) | {per_trade:.1} bytes/trade = {:.1} MiB per million trades | ≤ 48 bytes/trade |\n\
         | hot state (symbol aggregates, the recent-trades window) | {:.1} MiB, whatever the trade count | in the table |",
        write_path::BATCH,
        batches.trades_per_sec,
        batches.trades_per_sec / columns.ops_per_sec,
        columns.ops_per_sec,
        batches.refused,
        lag.rate,
        lag.p50_ms,
        lag.p99_ms,
        lag.over_50ms * 100.0,
        lag.checkpoints,
        restart.backlog,
        restart.replayed,
        restart.replay_secs,
        restart.replayed / restart.replay_secs,
        restart.ready.as_secs_f64(),
        restart.caught_up.as_secs_f64(),
        per_trade * 1e6 / (1024.0 * 1024.0),
        hot_state_bytes / (1024.0 * 1024.0),
    );
    println!("{secs} s per phase; CPU = the machine's busy time during a phase minus the load generator's");
    assert_eq!(failed, 0, "requests failed: the figures are not valid");
    // A request in flight when wrk stops is stored but never acknowledged: at most one
    // per connection (the bench's client finishes the request under way).
    let in_flight = check as u64;
    assert!(
        (acknowledged..=acknowledged + in_flight).contains(&rows),
        "{rows} trades stored, {acknowledged} acknowledged (+ at most {in_flight} in flight at the phase ends)"
    );
}
