//! The Redis journal: a follower of the commit sequence.
//!
//! After commits, a background task reads the changed trades from DuckDB
//! (`WHERE seq > watermark ORDER BY seq`) and, in one `MULTI`/`EXEC`, appends them to
//! the stream `<prefix>:journal` (trimmed to the retention window with `MINID`),
//! stores the latest per-symbol state and last trade, and advances the watermark key
//! `<prefix>:journal:seq`. Redis is a cache and journal, never the source of truth:
//! writes never wait for it. When Redis is down the task reports itself degraded and
//! retries with exponential backoff; because it resumes from the watermark stored in
//! Redis itself, everything committed meanwhile is journaled when Redis returns (as
//! long as it is within the retention window).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::RedisConfig;
use crate::db;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::model::now_micros;
use crate::reader::Reader;

/// What `/v1/status` reports about the journal.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JournalStatus {
    /// A Redis URL is configured.
    pub enabled: bool,
    /// The last attempt succeeded.
    pub healthy: bool,
    /// Highest sequence journaled.
    pub watermark: i64,
    /// Committed changes not journaled yet.
    pub lag: i64,
    /// The last error, while degraded.
    pub last_error: Option<String>,
}

/// Shared journal status.
pub type SharedStatus = Arc<Mutex<JournalStatus>>;

/// The journal task's state.
pub struct Journal {
    cfg: RedisConfig,
    client: redis::Client,
    reader: Reader,
    metrics: Arc<Metrics>,
    status: SharedStatus,
}

impl Journal {
    /// Prepares the journal (no connection yet; the task connects and retries).
    pub fn new(cfg: RedisConfig, password: Option<String>, reader: Reader, metrics: Arc<Metrics>) -> Result<Self> {
        let url = cfg.url.clone().ok_or_else(|| Error::Config("redis.url is not set".into()))?;
        let client = redis_client(&url, password)?;
        let status = Arc::new(Mutex::new(JournalStatus { enabled: true, ..Default::default() }));
        Ok(Journal { cfg, client, reader, metrics, status })
    }

    /// The status handle, for `/v1/status`.
    pub fn status(&self) -> SharedStatus {
        self.status.clone()
    }

    /// Runs until `committed` closes: follows the commit sequence and journals it, and
    /// mirrors the ClickHouse sync watermark (when `synced` is given) to
    /// `<prefix>:sync:clickhouse:watermark`.
    pub async fn run(self, mut committed: watch::Receiver<i64>, mut synced: Option<watch::Receiver<i64>>) {
        let mut backoff = Duration::from_millis(100);
        let mut conn: Option<ConnectionManager> = None;
        let mut watermark: Option<i64> = None;
        let mut mirrored: Option<i64> = None;
        loop {
            let last = *committed.borrow_and_update();
            let step = async {
                let done = self.step(&mut conn, &mut watermark, last).await?;
                if let Some(rx) = synced.as_mut() {
                    let wm = *rx.borrow_and_update();
                    if mirrored != Some(wm) {
                        self.mirror_sync_watermark(conn.as_mut().expect("connected by step"), wm).await?;
                        mirrored = Some(wm);
                    }
                }
                Ok::<_, Error>(done)
            }
            .await;
            match step {
                Ok(done) => {
                    backoff = Duration::from_millis(100);
                    self.record(watermark.unwrap_or(0), last, None);
                    if done {
                        let tick = tokio::time::sleep(Duration::from_secs(1));
                        let sync_moved = async {
                            match synced.as_mut() {
                                Some(rx) => rx.changed().await.is_ok(),
                                None => std::future::pending().await,
                            }
                        };
                        tokio::select! {
                            changed = committed.changed() => if changed.is_err() { return },
                            _ = sync_moved => {}
                            _ = tick => {}
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "redis journal degraded");
                    self.metrics.journal_errors.inc();
                    self.record(watermark.unwrap_or(0), last, Some(e.to_string()));
                    conn = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.cfg.max_backoff);
                }
            }
        }
    }

    fn record(&self, watermark: i64, last: i64, error: Option<String>) {
        let healthy = error.is_none();
        self.metrics.journal_healthy.set(i64::from(healthy));
        self.metrics.journal_watermark.set(watermark);
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        s.healthy = healthy;
        s.watermark = watermark;
        s.lag = (last - watermark).max(0);
        s.last_error = error;
    }

    async fn mirror_sync_watermark(&self, c: &mut ConnectionManager, wm: i64) -> Result<()> {
        redis_err(redis::cmd("SET").arg(self.key("sync:clickhouse:watermark")).arg(wm).query_async::<()>(c).await)
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.cfg.key_prefix)
    }

    /// One round: connect if needed, find the watermark, journal one batch.
    /// Returns true when caught up.
    async fn step(&self, conn: &mut Option<ConnectionManager>, watermark: &mut Option<i64>, last: i64) -> Result<bool> {
        if conn.is_none() {
            *conn = Some(redis_err(self.client.get_connection_manager().await)?);
        }
        let c = conn.as_mut().expect("connected above");
        let wm = match *watermark {
            Some(w) => w,
            None => {
                let w = self.resume_point(c, last).await?;
                *watermark = Some(w);
                w
            }
        };
        if wm >= last {
            return Ok(true);
        }
        let trades = self.reader.changes_after(wm, self.cfg.batch_size).await?;
        let Some(top) = trades.last().map(|t| t.seq) else { return Ok(true) };
        let min_id = format!("{}-0", (now_micros() / 1000 - self.cfg.retention.as_millis() as i64).max(0));
        let mut pipe = redis::pipe();
        pipe.atomic();
        for t in &trades {
            let json = serde_json::to_string(t).expect("trade serializes");
            pipe.cmd("XADD")
                .arg(self.key("journal"))
                .arg("MINID")
                .arg("~")
                .arg(&min_id)
                .arg("*")
                .arg("seq")
                .arg(t.seq)
                .arg("trade")
                .arg(json)
                .ignore();
        }
        let newest = trades.last().expect("non-empty batch");
        pipe.cmd("SET").arg(self.key("last_trade")).arg(serde_json::to_string(newest).expect("serializes")).ignore();
        for s in self.reader.symbol_states(trades.iter().map(|t| t.symbol.as_str())) {
            let key = self.key(&format!("state:{}", s.symbol));
            pipe.cmd("SET").arg(key).arg(serde_json::to_string(&s).expect("state serializes")).ignore();
        }
        pipe.cmd("SET").arg(self.key("journal:seq")).arg(top).ignore();
        redis_err(pipe.query_async::<()>(c).await)?;
        *watermark = Some(top);
        Ok(top >= last)
    }

    /// Where to resume: the watermark kept in Redis, or — when Redis lost it — the
    /// start of the retention window.
    async fn resume_point(&self, c: &mut ConnectionManager, last: i64) -> Result<i64> {
        let stored: Option<i64> = redis_err(redis::cmd("GET").arg(self.key("journal:seq")).query_async(c).await)?;
        if let Some(w) = stored {
            if w > last {
                tracing::warn!(
                    journal = w,
                    store = last,
                    "the journal is ahead of the store (restored from an older snapshot?)"
                );
            }
            return Ok(w);
        }
        let since = now_micros() - self.cfg.retention.as_micros() as i64;
        self.reader
            .with_conn(move |conn| {
                Ok(conn.query_row(
                    "SELECT coalesce(max(seq), 0) FROM trades WHERE updated_at < ?",
                    [db::timestamp(since)],
                    |r| r.get(0),
                )?)
            })
            .await
    }
}

/// A Redis client for `url`, with the password (kept out of the URL and the config).
pub fn redis_client(url: &str, password: Option<String>) -> Result<redis::Client> {
    let mut info: redis::ConnectionInfo = url.parse().map_err(|e| Error::Config(format!("redis.url {url:?}: {e}")))?;
    if let Some(p) = password {
        let settings = info.redis_settings().clone().set_password(p);
        info = info.set_redis_settings(settings);
    }
    redis::Client::open(info).map_err(|e| Error::Config(format!("redis.url: {e}")))
}

fn redis_err<T>(r: redis::RedisResult<T>) -> Result<T> {
    r.map_err(|e| Error::Unavailable(format!("redis: {e}")))
}
