//! Incremental sync to ClickHouse: a follower of the commit sequence.
//!
//! Every `clickhouse.interval` (sooner is pointless, later only adds lag) the task
//! reads the trades changed since its watermark (`WHERE seq > watermark ORDER BY seq`),
//! inserts them as rows of a `ReplacingMergeTree(seq)` table keyed by id, and then
//! records the new watermark durably in DuckDB (`sync_state`, through the writer).
//! Delivery is at-least-once: a crash between the insert and the watermark re-sends
//! the batch, and ClickHouse keeps only the highest `seq` per id, so `SELECT … FINAL`
//! converges to exactly the DuckDB state. Cancelled trades travel as rows with
//! `status = 'cancelled'` (tombstones).
//!
//! Failures retry on the backoff schedule (seed: 5, 15, 30, 60 s, then 60 s forever);
//! after `degraded_after` consecutive failures the sync reports itself degraded
//! (status, metric, log) and keeps retrying at the slowest pace.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tradestore_api::status::SyncStatus;

use crate::config::ClickhouseConfig;
use crate::error::{Error, Result};
use crate::store::model::Trade;
use crate::store::reader::Reader;
use crate::store::writer::{WriteOp, WriterHandle};
use crate::telemetry::Shared;
use crate::telemetry::metrics::Metrics;

/// Sink name in `sync_state`.
pub const SINK: &str = "clickhouse";

/// One row of the ClickHouse table (times as epoch microseconds: ClickHouse 18.16
/// has no DateTime64).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, clickhouse::Row)]
pub struct ChRow {
    /// Trade id.
    pub id: String,
    /// Symbol.
    pub symbol: String,
    /// `buy` / `sell`.
    pub side: String,
    /// Quantity, as the scaled integer of `Decimal(18,8)` (RowBinary's Decimal64 is an
    /// `Int64` of units of 10^-8: exact, no float on the way).
    pub quantity: i64,
    /// Price, the same way.
    pub price: i64,
    /// `pending` / `filled` / `cancelled`.
    pub status: String,
    /// Trade time, epoch µs.
    pub ts_us: i64,
    /// Version.
    pub version: i64,
    /// Commit sequence of this state (the ReplacingMergeTree version).
    pub seq: i64,
    /// Creation time, epoch µs.
    pub created_at_us: i64,
    /// Last change, epoch µs.
    pub updated_at_us: i64,
}

impl From<&Trade> for ChRow {
    fn from(t: &Trade) -> Self {
        ChRow {
            id: t.id.clone(),
            symbol: t.symbol.clone(),
            side: t.side.as_str().into(),
            quantity: t.quantity.units(),
            price: t.price.units(),
            status: t.status.as_str().into(),
            ts_us: t.ts,
            version: t.version,
            seq: t.seq,
            created_at_us: t.created_at,
            updated_at_us: t.updated_at,
        }
    }
}

/// DDL of the target table; valid on ClickHouse 18.16 and current releases.
pub fn create_table_sql(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (id String, symbol String, side String, quantity Decimal(18,8), \
         price Decimal(18,8), status String, ts_us Int64, version Int64, seq Int64, created_at_us Int64, \
         updated_at_us Int64) ENGINE = ReplacingMergeTree(seq) ORDER BY id"
    )
}

/// The sync task's state.
pub struct ClickhouseSync {
    cfg: ClickhouseConfig,
    client: clickhouse::Client,
    reader: Reader,
    writer: WriterHandle,
    metrics: Arc<Metrics>,
    status: Shared<SyncStatus>,
    synced: watch::Sender<i64>,
}

impl ClickhouseSync {
    /// Prepares the sync (connections are made by the task), resuming from `watermark`,
    /// the durable one ([`durable_watermark`]).
    pub fn new(
        cfg: ClickhouseConfig,
        password: Option<String>,
        reader: Reader,
        writer: WriterHandle,
        metrics: Arc<Metrics>,
        watermark: i64,
    ) -> Result<Self> {
        let url = cfg.url.clone().ok_or_else(|| Error::Config("clickhouse.url is not set".into()))?;
        let mut client = clickhouse::Client::default()
            .with_url(url)
            .with_database(cfg.database.clone())
            .with_user(cfg.user.clone())
            .with_validation(cfg.validation);
        if let Some(p) = password {
            client = client.with_password(p);
        }
        let status = Arc::new(parking_lot::Mutex::new(SyncStatus { enabled: true, watermark, ..Default::default() }));
        metrics.sync_watermark.set(watermark);
        let synced = watch::channel(watermark).0;
        Ok(ClickhouseSync { cfg, client, reader, writer, metrics, status, synced })
    }

    /// The durable watermark as it advances (the journal mirrors it to Redis).
    pub fn watermark(&self) -> watch::Receiver<i64> {
        self.synced.subscribe()
    }

    /// The status handle, for `/v1/status`.
    pub fn status(&self) -> Shared<SyncStatus> {
        self.status.clone()
    }

    /// Runs until `committed` closes (the writer stopped), or until `stop` is
    /// cancelled, at any point: delivery is at-least-once, so a batch cut short is
    /// sent again by the next start.
    pub async fn run(self, committed: watch::Receiver<i64>, stop: CancellationToken) {
        stop.run_until_cancelled(self.follow(committed)).await;
    }

    async fn follow(self, mut committed: watch::Receiver<i64>) {
        let mut watermark = *self.synced.borrow();
        let mut table_ready = false;
        let mut failures: u32 = 0;
        // The lag is known before the first round, which may wait for ClickHouse.
        self.record(watermark, *committed.borrow(), 0, None);
        loop {
            let last = *committed.borrow_and_update();
            match self.step(&mut watermark, &mut table_ready, last).await {
                Ok(caught_up) => {
                    if failures >= self.cfg.degraded_after {
                        tracing::info!("clickhouse sync recovered");
                    }
                    failures = 0;
                    self.record(watermark, last, 0, None);
                    if caught_up {
                        tokio::select! {
                            changed = committed.changed() => if changed.is_err() { return },
                            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        }
                    }
                    tokio::time::sleep(self.cfg.interval).await;
                }
                Err(e) => {
                    failures += 1;
                    self.metrics.sync_errors.inc();
                    let pause = backoff(&self.cfg.backoff(), failures);
                    if failures >= self.cfg.degraded_after {
                        tracing::error!(error = %e, failures, retry_in = ?pause, "clickhouse sync degraded");
                    } else {
                        tracing::warn!(error = %e, failures, retry_in = ?pause, "clickhouse sync failed");
                    }
                    self.record(watermark, last, failures, Some(e.to_string()));
                    table_ready = false;
                    tokio::time::sleep(pause).await;
                    if committed.has_changed().is_err() {
                        return;
                    }
                }
            }
        }
    }

    fn record(&self, watermark: i64, last: i64, failures: u32, error: Option<String>) {
        let degraded = failures >= self.cfg.degraded_after;
        self.metrics.sync_watermark.set(watermark);
        self.metrics.sync_lag.set((last - watermark).max(0));
        self.metrics.sync_degraded.set(i64::from(degraded));
        let mut s = self.status.lock();
        s.degraded = degraded;
        s.watermark = watermark;
        s.lag = (last - watermark).max(0);
        s.consecutive_failures = failures;
        s.last_error = error;
    }

    /// Refuses a table whose money columns are not `Decimal(18,8)` (one created by a
    /// sidecar that stored floats): exact integers written into `Float64` columns would
    /// read as garbage, so the sync stops and says how to migrate instead.
    async fn check_money_columns(&self) -> Result<()> {
        let types: Vec<(String, String)> = ch(self
            .client
            .query("SELECT name, type FROM system.columns WHERE database = ? AND table = ? AND name IN ('quantity', 'price')")
            .bind(&self.cfg.database)
            .bind(&self.cfg.table)
            .fetch_all()
            .await)?;
        match types.iter().find(|(_, t)| t != "Decimal(18, 8)") {
            None => Ok(()),
            Some((column, t)) => Err(Error::Config(format!(
                "clickhouse table {}.{} has {column} {t}, not Decimal(18, 8): migrate it (ALTER TABLE … MODIFY COLUMN \
                 {column} Decimal(18,8)) or set clickhouse.table to a new table",
                self.cfg.database, self.cfg.table
            ))),
        }
    }

    /// One round: make sure the table exists, ship one batch, record the watermark.
    /// Returns true when caught up.
    async fn step(&self, watermark: &mut i64, table_ready: &mut bool, last: i64) -> Result<bool> {
        if !*table_ready {
            ch(self.client.query(&create_table_sql(&self.cfg.table)).execute().await)?;
            self.check_money_columns().await?;
            *table_ready = true;
        }
        let wm = *watermark;
        if wm >= last {
            return Ok(true);
        }
        let trades = self.reader.changes_after(wm, self.cfg.batch_size).await?;
        let Some(top) = trades.last().map(|t| t.seq) else { return Ok(true) };
        let mut insert = ch(self.client.insert::<ChRow>(&self.cfg.table).await)?;
        for t in &trades {
            ch(insert.write(&ChRow::from(t)).await)?;
        }
        ch(insert.end().await)?;
        self.writer.submit(WriteOp::SetWatermark { sink: SINK.into(), seq: top }, Duration::from_secs(10)).await?;
        self.synced.send_replace(top);
        *watermark = top;
        Ok(top >= last)
    }
}

/// The watermark recorded in DuckDB's `sync_state`: every change up to it has been
/// delivered to ClickHouse (0 before the first delivery).
pub fn durable_watermark(conn: &duckdb::Connection) -> Result<i64> {
    let sql = "SELECT coalesce(max(watermark), 0) FROM sync_state WHERE sink = ?";
    Ok(conn.query_row(sql, [SINK], |r| r.get(0))?)
}

/// The pause after the `failures`-th consecutive failure: the schedule's entry, or its
/// last (slowest) entry once the schedule is exhausted.
pub fn backoff(schedule: &[Duration], failures: u32) -> Duration {
    let i = (failures.max(1) as usize - 1).min(schedule.len().saturating_sub(1));
    schedule.get(i).copied().unwrap_or(Duration::from_secs(60))
}

fn ch<T>(r: clickhouse::error::Result<T>) -> Result<T> {
    r.map_err(|e| Error::dependency("clickhouse", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_follows_the_schedule_then_stays_at_the_slowest() {
        let s: Vec<Duration> = [5, 15, 30, 60].map(Duration::from_secs).to_vec();
        let got: Vec<u64> = (1..=7).map(|f| backoff(&s, f).as_secs()).collect();
        assert_eq!(got, [5, 15, 30, 60, 60, 60, 60]);
        assert_eq!(backoff(&[], 3), Duration::from_secs(60));
    }
}
