//! The Redis journal: a follower of the commit sequence.
//!
//! After commits, a background task reads the changed trades from DuckDB
//! (`WHERE seq > watermark ORDER BY seq`) and appends them to Redis in one atomic,
//! conditional step ([`stream`] describes the keys). Redis is a cache and journal,
//! never the source of truth: writes never wait for it. When Redis is down or stops
//! answering, the task reports itself degraded and retries with exponential backoff.
//!
//! Where it resumes is decided by Redis's own `journal:seq`, never by memory alone:
//! - Redis holds the journal: continue after `journal:seq` (nothing lost, nothing
//!   appended twice, also after a batch whose reply timed out).
//! - Redis holds no journal (restarted empty, flushed, a new server): start it again
//!   from the newest snapshot's `seq` (or the retention window, if older), so recovery
//!   can again prove it is complete.
//! - Redis's journal is ahead of the store: the store lost changes the journal holds
//!   and started without replaying them (Redis was unreachable at start), so it may
//!   have given their sequence numbers to new changes. The task never appends over
//!   them: it reports `diverged` and leaves a marker file next to the database (see
//!   [`diverged_marker`]) that keeps it, and start-up catch-up, from touching the
//!   journal until a person has reconciled the two (docs/durability.md).
//!
//! Each entry holds a trade as changed by commit `seq`. A trade changed again before
//! the task read it is sent once, in its newer state (the stream then has no entry at
//! the older `seq`); every trade's newest state always arrives.

pub mod stream;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tradestore_api::status::{JournalState, JournalStatus};

use crate::config::RedisConfig;
use crate::error::{Error, Result};
use crate::store::db;
use crate::store::model::{Trade, now_micros};
use crate::store::reader::Reader;
use crate::telemetry::Shared;
use crate::telemetry::metrics::Metrics;
use stream::{Append, Appended, Keys};

/// Where the next append goes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Position {
    /// After this `journal:seq`, which Redis holds.
    After(i64),
    /// Redis holds no usable journal (its `journal:seq`, if any): start it afresh.
    Restart(Option<i64>),
}

/// The journal task's state.
pub struct Journal {
    cfg: RedisConfig,
    client: redis::Client,
    keys: Keys,
    reader: Reader,
    metrics: Arc<Metrics>,
    status: Shared<JournalStatus>,
    /// The store's last sequence when this process started: a journal above it at
    /// first contact means the store lost changes.
    store_seq_at_start: i64,
    /// Written on divergence; while it exists, nothing is appended.
    marker: PathBuf,
    /// The sequence the newest snapshot covers: the journal keeps everything above it.
    snapshot: watch::Receiver<Option<i64>>,
}

/// Journal rounds and their timing, per connection.
struct Round {
    conn: Option<ConnectionManager>,
    position: Option<Position>,
    contacted: bool,
    /// `(when, watermark)` of recent appends, to trim by age.
    appended: VecDeque<(i64, i64)>,
    /// Highest sequence journaled before the retention window.
    expired: i64,
}

impl Journal {
    /// Prepares the journal on `client` (no connection yet; the task connects and retries).
    pub fn new(
        cfg: RedisConfig,
        client: redis::Client,
        reader: Reader,
        metrics: Arc<Metrics>,
        store_seq_at_start: i64,
        marker: PathBuf,
        snapshot: watch::Receiver<Option<i64>>,
    ) -> Self {
        let status = Arc::new(parking_lot::Mutex::new(JournalStatus { enabled: true, ..Default::default() }));
        let keys = Keys::new(&cfg.key_prefix);
        Journal { cfg, client, keys, reader, metrics, status, store_seq_at_start, marker, snapshot }
    }

    /// The status handle, for `/v1/status`.
    pub fn status(&self) -> Shared<JournalStatus> {
        self.status.clone()
    }

    /// Runs until `committed` closes (the writer stopped) and everything is journaled,
    /// or until `stop` is cancelled: follows the commit sequence and journals it, and
    /// mirrors the ClickHouse sync watermark (when `synced` is given) to
    /// `<prefix>:sync:clickhouse:watermark`. Cancelled at any point: an append is one
    /// atomic script, so Redis holds it whole or not at all.
    pub async fn run(
        self,
        committed: watch::Receiver<i64>,
        synced: Option<watch::Receiver<i64>>,
        stop: CancellationToken,
    ) {
        stop.run_until_cancelled(self.follow(committed, synced)).await;
    }

    async fn follow(self, mut committed: watch::Receiver<i64>, mut synced: Option<watch::Receiver<i64>>) {
        let mut backoff = Duration::from_millis(100);
        let mut round = Round { conn: None, position: None, contacted: false, appended: VecDeque::new(), expired: 0 };
        let mut mirrored: Option<i64> = None;
        loop {
            let last = *committed.borrow_and_update();
            let step = async {
                let done = self.step(&mut round, last).await?;
                if let Some(rx) = synced.as_mut() {
                    let wm = *rx.borrow_and_update();
                    if mirrored != Some(wm) {
                        self.mirror_sync_watermark(round.conn.as_mut().expect("connected by step"), wm).await?;
                        mirrored = Some(wm);
                    }
                }
                Ok::<_, Error>(done)
            }
            .await;
            match step {
                Ok(done) => {
                    backoff = Duration::from_millis(100);
                    self.record(&round, JournalState::Healthy, None);
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
                Err(Error::Conflict { reason, .. }) => {
                    tracing::error!(reason, "redis journal diverged from the store; not appending");
                    if let Err(e) = self.mark_diverged(&reason) {
                        tracing::error!(error = %e, marker = %self.marker.display(), "cannot write the divergence marker");
                    }
                    self.metrics.journal_errors.inc();
                    self.record(&round, JournalState::Diverged, Some(reason));
                    round.position = None;
                    tokio::time::sleep(self.cfg.max_backoff).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "redis journal degraded");
                    self.metrics.journal_errors.inc();
                    self.record(&round, JournalState::Degraded, Some(e.to_string()));
                    round.conn = None;
                    round.position = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.cfg.max_backoff);
                }
            }
        }
    }

    fn record(&self, round: &Round, state: JournalState, error: Option<String>) {
        let watermark = match round.position {
            Some(Position::After(w)) => w,
            _ => self.status.lock().watermark,
        };
        let healthy = state == JournalState::Healthy;
        self.metrics.journal_healthy.set(i64::from(healthy));
        self.metrics.journal_watermark.set(watermark);
        let mut s = self.status.lock();
        s.state = state;
        s.healthy = healthy;
        s.watermark = watermark;
        s.last_error = error;
    }

    async fn mirror_sync_watermark(&self, c: &mut ConnectionManager, wm: i64) -> Result<()> {
        stream::redis_err(
            redis::cmd("SET").arg(self.keys.key("sync:clickhouse:watermark")).arg(wm).query_async(c).await,
        )
    }

    async fn connect(&self) -> Result<ConnectionManager> {
        // A bounded wait for every reply: a stopped (SIGSTOP) or partitioned Redis
        // must turn into a retry, not a task that hangs with a frozen status.
        let timeout = self.cfg.timeout;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(0);
        stream::redis_err(self.client.get_connection_manager_with_config(config).await)
    }

    /// One round: connect if needed, find where Redis's journal ends, append one batch.
    /// Returns true when caught up. A diverged journal is an [`Error::Conflict`].
    async fn step(&self, round: &mut Round, last: i64) -> Result<bool> {
        if round.conn.is_none() {
            round.conn = Some(self.connect().await?);
        }
        let position = match round.position {
            Some(p) => p,
            None => self.locate(round, last).await?,
        };
        round.position = Some(position);
        round.contacted = true;
        let (expected, restart_from, after) = match position {
            Position::After(w) if w >= last => return Ok(true),
            Position::After(w) => (Some(w), None, w),
            Position::Restart(current) => {
                let from = self.restart_point(round).await?;
                tracing::warn!(from, store = last, "redis holds no usable journal; journaling again from seq {from}");
                (current, Some(from), from)
            }
        };
        let trades = self.reader.changes_after(after, self.cfg.batch_size).await?;
        let top = trades.last().map_or(after, |t| t.seq);
        let append = Append {
            expected,
            restart_from,
            trades: &trades,
            top,
            trim_below: self.trim_below(round),
            extra: self.extras(&trades),
        };
        match append.run(&self.keys, round.conn.as_mut().expect("connected above")).await? {
            Appended::Done => {
                round.position = Some(Position::After(top));
                round.appended.push_back((now_micros(), top));
                if let Some(from) = restart_from {
                    self.status.lock().from = from;
                }
                Ok(top >= last)
            }
            Appended::Conflict(current) => {
                tracing::warn!(expected = ?expected, redis = ?current, "redis journal moved under us; locating it again");
                round.position = None;
                Ok(false)
            }
        }
    }

    fn mark_diverged(&self, reason: &str) -> Result<()> {
        if !self.marker.exists() {
            std::fs::write(&self.marker, reason)?;
            std::fs::File::open(&self.marker)?.sync_all()?;
        }
        Ok(())
    }

    /// Decides where to append from Redis's own watermark.
    async fn locate(&self, round: &mut Round, last: i64) -> Result<Position> {
        if self.marker.exists() {
            let why = std::fs::read_to_string(&self.marker).unwrap_or_default();
            return Err(Error::Conflict {
                reason: format!(
                    "{} exists (reconcile the store with the journal, then remove it): {why}",
                    self.marker.display()
                ),
                current: None,
            });
        }
        let meta = stream::meta(&self.keys, round.conn.as_mut().expect("connected")).await?;
        // Before the first contact this process may not have written anything yet, so
        // a journal above the store's starting point holds changes the store lost.
        let bound = if round.contacted { last } else { self.store_seq_at_start };
        match meta {
            Some(m) if m.seq > bound => Err(Error::Conflict {
                reason: format!(
                    "Redis's journal ends at seq {}, beyond the store's {bound}: the store lost committed changes \
                     that only the journal holds; restart the sidecar to replay them (start-up recovery)",
                    m.seq
                ),
                current: None,
            }),
            Some(m) if m.from.is_some() => {
                self.status.lock().from = m.from.unwrap_or(0);
                Ok(Position::After(m.seq))
            }
            // A journal without `journal:from` (written by an older sidecar) cannot
            // prove it is complete: start it again.
            Some(m) => Ok(Position::Restart(Some(m.seq))),
            None => Ok(Position::Restart(None)),
        }
    }

    /// Where a restarted journal begins: the newest snapshot's sequence, or the start
    /// of the retention window when that is older.
    async fn restart_point(&self, round: &mut Round) -> Result<i64> {
        let since = now_micros() - self.cfg.retention.as_micros() as i64;
        let window: i64 = self
            .reader
            .with_conn(move |conn| {
                Ok(conn.query_row(
                    "SELECT coalesce(max(seq), 0) FROM trades WHERE updated_at < ?",
                    [db::timestamp(since)],
                    |r| r.get(0),
                )?)
            })
            .await?;
        round.expired = round.expired.max(window);
        Ok(self.snapshot_seq().map_or(window, |snap| window.min(snap)))
    }

    /// Entries below this sequence may go: older than the retention window and
    /// covered by the newest snapshot.
    fn trim_below(&self, round: &mut Round) -> i64 {
        let since = now_micros() - self.cfg.retention.as_micros() as i64;
        while let Some(&(at, top)) = round.appended.front() {
            if at >= since {
                break;
            }
            round.expired = round.expired.max(top);
            round.appended.pop_front();
        }
        let keep_above = round.expired.min(self.snapshot_seq().unwrap_or(i64::MAX));
        if keep_above > 0 { keep_above + 1 } else { 0 }
    }

    fn snapshot_seq(&self) -> Option<i64> {
        *self.snapshot.borrow()
    }

    /// The symbol states and the last trade, set alongside the entries.
    fn extras(&self, trades: &[Trade]) -> Vec<(String, String)> {
        let Some(newest) = trades.last() else { return Vec::new() };
        let mut extra = vec![("last_trade".to_string(), serde_json::to_string(newest).expect("serializes"))];
        for s in self.reader.symbol_states(trades.iter().map(|t| t.symbol.as_str())) {
            extra.push((format!("state:{}", s.symbol), serde_json::to_string(&s).expect("state serializes")));
        }
        extra
    }
}

/// The marker a diverged journal leaves next to `database`.
pub fn diverged_marker(database: &Path) -> PathBuf {
    database.with_extension("journal-diverged")
}
