//! The write path past single-trade requests: batches against the raw Appender
//! ceiling, the applier's lag under a paced load, and a SIGKILL with a full apply
//! backlog — how fast the commit log replays and how soon the store is ready again.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::time::MissedTickBehavior;

use crate::common::{Sidecar, TOKEN, client, free_port, trade_for};
use crate::measure::MADE_ROWS_PER_SEC;

/// Trades per batch request.
pub const BATCH: usize = 1_000;

/// What a batch load did: trades acknowledged per second, and the batches refused
/// with 503 (back-pressure: the apply backlog was full), which are retried.
pub struct Batches {
    pub trades_per_sec: f64,
    pub acknowledged: u64,
    pub refused: u64,
}

/// `clients` loops posting batches of [`BATCH`] trades tagged `phase`, for `secs` or
/// until their bodies run out: the bodies are made before the clock starts
/// ([`MADE_ROWS_PER_SEC`]), as wrk sends a body it holds, so the load generator spends
/// the CPUs it shares with the sidecar on sending, not on making JSON. A batch refused
/// for back-pressure (503) is sent again after 10 ms.
pub async fn batches(s: &Sidecar, clients: usize, secs: f64, phase: &str) -> Batches {
    let per_client = (MADE_ROWS_PER_SEC * secs / (clients * BATCH) as f64).ceil() as usize;
    let bodies: Vec<Vec<Vec<u8>>> = (0..clients)
        .map(|w| (0..per_client).map(|n| batch_body((0..BATCH).map(|k| format!("{phase}-{w}-{n}-{k}")))).collect())
        .collect();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|bodies| {
            let (c, url) = (client(), s.url("/v1/trades/batch"));
            tokio::spawn(async move {
                let (mut acked, mut refused) = (0, 0);
                for body in bodies.into_iter().take_while(|_| Instant::now() < end) {
                    while !post_batch(&c, &url, body.clone()).await {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    acked += BATCH as u64;
                }
                (acked, refused)
            })
        })
        .collect();
    let (mut acknowledged, mut refused) = (0, 0);
    for t in tasks {
        let (a, r) = t.await.unwrap();
        (acknowledged, refused) = (acknowledged + a, refused + r);
    }
    Batches { trades_per_sec: acknowledged as f64 / start.elapsed().as_secs_f64(), acknowledged, refused }
}

/// The body of a batch of the trades `ids` name ([`trade_for`]), serialized trade by
/// trade into one buffer: the load generator shares the CPUs with the sidecar, and
/// collecting `Value`s into a second `Value` for `reqwest`'s `.json` cost it a deep copy
/// of every batch.
fn batch_body(ids: impl Iterator<Item = String>) -> Vec<u8> {
    let mut body = Vec::with_capacity(BATCH * 128);
    body.extend_from_slice(b"{\"trades\":[");
    for (k, id) in ids.enumerate() {
        if k > 0 {
            body.push(b',');
        }
        serde_json::to_writer(&mut body, &trade_for(&id)).unwrap();
    }
    body.extend_from_slice(b"]}");
    body
}

/// True when the batch was stored (201), false when refused for back-pressure (503);
/// anything else fails the bench. The answer is read whole, so the connection is reused.
async fn post_batch(c: &reqwest::Client, url: &str, body: Vec<u8>) -> bool {
    let r = c.post(url).header("content-type", "application/json").body(body).send().await.unwrap();
    let code = r.status().as_u16();
    let text = r.bytes().await.unwrap();
    match code {
        201 => true,
        503 => false,
        _ => panic!("batch answered {code}: {}", String::from_utf8_lossy(&text)),
    }
}

/// The applier's lag (acknowledgement to DuckDB), by the upper bounds of the
/// `applier_lag_seconds` buckets its median and 99th percentile fall in, the share of
/// groups past the target's 50 ms, and the DuckDB checkpoints in the window: each
/// holds the applier up for as long as it writes (docs/benchmarks.md, session 10), so
/// they tell the tail's cause.
pub struct Lag {
    pub sent: u64,
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub over_50ms: f64,
    pub checkpoints: f64,
}

/// Trades posted one per request at `rate` per second for `secs` (16 paced loops);
/// the lag is what the histogram gained meanwhile.
pub async fn apply_lag(s: &Sidecar, rate: f64, secs: f64) -> Lag {
    const LOOPS: usize = 16;
    caught_up(s).await; // a backlog left by an earlier phase is not this lag
    let before = lag_buckets(s).await;
    let checkpoints_before = checkpoints(s).await;
    let start = Instant::now();
    let tasks: Vec<_> = (0..LOOPS)
        .map(|w| {
            let (c, url) = (client(), s.url("/v1/trades"));
            let period = Duration::from_secs_f64(LOOPS as f64 / rate);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                let mut sent = 0u64;
                while start.elapsed().as_secs_f64() < secs {
                    tick.tick().await;
                    let r = c.post(&url).json(&trade_for(&format!("lag-{w}-{sent}"))).send().await.unwrap();
                    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    let mut sent = 0;
    for t in tasks {
        sent += t.await.unwrap();
    }
    let achieved = sent as f64 / start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(200)).await; // the last transaction lands
    let gained: Vec<(f64, f64)> =
        lag_buckets(s).await.iter().zip(&before).map(|((le, now), (_, then))| (*le, now - then)).collect();
    Lag {
        sent,
        rate: achieved,
        p50_ms: quantile(&gained, 0.5) * 1e3,
        p99_ms: quantile(&gained, 0.99) * 1e3,
        over_50ms: share_above(&gained, 0.05),
        checkpoints: checkpoints(s).await - checkpoints_before,
    }
}

/// Checkpoints so far: DuckDB's own (at `checkpoint_threshold`) and the applier's.
async fn checkpoints(s: &Sidecar) -> f64 {
    metric(s, "duckdb_auto_checkpoints_total").await + metric(s, "duckdb_checkpoints_total").await
}

/// Waits until DuckDB holds every acknowledged change.
async fn caught_up(s: &Sidecar) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st: Value = client().get(s.url("/v1/status")).send().await.unwrap().json().await.unwrap();
        if st["commit_log"]["apply_backlog"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the applier did not catch up: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The cumulative `(le, count)` buckets of the applier lag histogram.
async fn lag_buckets(s: &Sidecar) -> Vec<(f64, f64)> {
    let text = metrics(s).await;
    text.lines()
        .filter_map(|l| l.strip_prefix("tradestore_applier_lag_seconds_bucket{le=\""))
        .filter_map(|l| {
            let (le, count) = l.split_once("\"} ")?;
            Some((le.parse().unwrap_or(f64::INFINITY), count.trim().parse().ok()?))
        })
        .collect()
}

/// The upper bound of the first cumulative bucket holding a `q` share of the total.
fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |b| b.1);
    buckets.iter().find(|(_, n)| *n >= q * total && total > 0.0).map_or(f64::NAN, |b| b.0)
}

/// The share of observations above `le` (a bucket bound) in cumulative buckets.
fn share_above(buckets: &[(f64, f64)], le: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |b| b.1);
    let within = buckets.iter().find(|(bound, _)| *bound == le).map_or(f64::NAN, |b| b.1);
    if total > 0.0 { 1.0 - within / total } else { 0.0 }
}

async fn metrics(s: &Sidecar) -> String {
    let r = client().get(s.url("/metrics")).bearer_auth(TOKEN).send().await.unwrap();
    r.text().await.unwrap()
}

/// One value of the sidecar's metrics (`tradestore_<name>`).
pub async fn metric(s: &Sidecar, name: &str) -> f64 {
    let text = metrics(s).await;
    let prefix = format!("tradestore_{name} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok()).unwrap_or(f64::NAN)
}

/// The commit log's flushes so far (`writer_commit_duration_seconds`: the write and
/// `fdatasync` of one group; `writer_batch_requests`: the requests it answered), and
/// the writer's busy time (`writer_busy_seconds_total`), read at `at`.
#[derive(Debug, Clone, Copy)]
pub struct Flushes {
    pub count: f64,
    pub seconds: f64,
    pub requests: f64,
    pub writer_busy: f64,
    pub at: Instant,
}

/// What the log did between two [`Flushes`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LogLoad {
    /// The mean flush (µs) and requests a flush.
    pub flush_us: f64,
    pub per_flush: f64,
    /// The writer's share of the time spent on groups, not waiting for requests.
    pub writer_busy: f64,
}

impl Flushes {
    pub async fn of(s: &Sidecar) -> Flushes {
        Flushes {
            count: metric(s, "writer_commit_duration_seconds_count").await,
            seconds: metric(s, "writer_commit_duration_seconds_sum").await,
            requests: metric(s, "writer_batch_requests_sum").await,
            writer_busy: metric(s, "writer_busy_seconds_total").await,
            at: Instant::now(),
        }
    }

    /// What the log did between `before` and `self`.
    pub fn since(&self, before: &Flushes) -> LogLoad {
        let n = (self.count - before.count).max(1.0);
        LogLoad {
            flush_us: (self.seconds - before.seconds) * 1e6 / n,
            per_flush: (self.requests - before.requests) / n,
            writer_busy: (self.writer_busy - before.writer_busy) / (self.at - before.at).as_secs_f64(),
        }
    }
}

/// What a SIGKILL with a full backlog cost: the changes DuckDB lacked at the kill,
/// the start-up replay of them, the time from the restart to ready, and to DuckDB
/// holding them all again (the applier takes most of them after ready).
pub struct Restart {
    pub backlog: i64,
    pub replayed: f64,
    pub replay_secs: f64,
    pub ready: Duration,
    pub caught_up: Duration,
}

/// A store in `dir` whose applier gathers for the longest delay allowed takes batches
/// until its backlog is full (a 503) or `limit` trades, is killed, and restarts.
/// Every acknowledged trade must be there after the restart.
pub async fn kill_with_full_backlog(dir: &Path, limit: u64) -> Restart {
    let port = free_port();
    let mut s = Sidecar::start_on(dir, port, &[("TRADESTORE_WRITER__APPLY_DELAY", "1s")]).await;
    let (c, url) = (client(), s.url("/v1/trades/batch"));
    let mut acked = 0;
    while acked < limit {
        if !post_batch(&c, &url, batch_body((0..BATCH).map(|k| format!("kill-{acked}-{k}")))).await {
            break; // the backlog is full
        }
        acked += BATCH as u64;
    }
    let st: Value = c.get(s.url("/v1/status")).send().await.unwrap().json().await.unwrap();
    let backlog = st["last_seq"].as_i64().unwrap() - st["applied_seq"].as_i64().unwrap();
    s.kill();
    let restarted = Instant::now();
    let s = Sidecar::start_on(dir, port, &[]).await;
    let ready = restarted.elapsed();
    let mut st: Value = c.get(s.url("/v1/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(st["last_seq"].as_u64(), Some(acked), "every acknowledged trade after the kill: {st}");
    while st["applied_seq"] != st["last_seq"] {
        tokio::time::sleep(Duration::from_millis(5)).await;
        st = c.get(s.url("/v1/status")).send().await.unwrap().json().await.unwrap();
    }
    let caught_up = restarted.elapsed();
    let (replayed, replay_secs) = (metric(&s, "log_replayed_changes").await, metric(&s, "log_replay_seconds").await);
    Restart { backlog, replayed, replay_secs, ready, caught_up }
}
