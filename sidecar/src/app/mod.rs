//! Start-up wiring: open the file, migrate, load the hot state, start the writer
//! and the read pool. [`App`] is the context every request handler receives.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use serde::Serialize;

use crate::config::Config;
use crate::durability::backup::{self, BackupStatus, Backups};
use crate::durability::snapshot::Manifest;
use crate::durability::{integrity, recovery};
use crate::error::Result;
use crate::followers::clickhouse::{self as sync, Sync, SyncStatus};
use crate::followers::journal::{self, Journal, JournalStatus};
use crate::store::reader::{Reader, load_symbol_states};
use crate::store::state::HotState;
use crate::store::writer::{Writer, WriterHandle};
use crate::store::{db, migrations};
use crate::telemetry::health::Health;
use crate::telemetry::metrics::Metrics;

/// Shared context of a running sidecar.
pub struct App {
    /// Effective configuration.
    pub cfg: Config,
    /// The API token, when mutating routes are protected.
    pub token: Option<String>,
    /// Queue to the single writer.
    pub writer: WriterHandle,
    /// Read pool and hot state.
    pub reader: Reader,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Probe state.
    pub health: Arc<Health>,
    /// Schema version of the open file.
    pub schema_version: i64,
    /// Backup snapshots and their targets.
    pub backups: Backups,
    /// Redis journal status, when the journal is configured.
    pub journal: Option<journal::SharedStatus>,
    /// ClickHouse sync status, when the sync is configured.
    pub sync: Option<sync::SharedStatus>,
    /// What start-up recovery did, if it ran.
    pub recovery: Option<recovery::Report>,
    /// The last integrity check.
    pub integrity: integrity::SharedStatus,
    /// Set when the process should stop by itself (see [`StopReason`]).
    stop: tokio::sync::watch::Sender<Option<StopReason>>,
}

/// Why the sidecar stops without a signal.
#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    /// An integrity check failed and `integrity.on_failure` is `recover`: stop cleanly,
    /// quarantine the file once the journal holds everything, restart into recovery.
    Recover(String),
    /// DuckDB invalidated the database (e.g. a checkpoint failed on a full disk): every
    /// later statement fails, so stop (non-zero) and let the restart reopen the file
    /// and replay the WAL, which holds every acknowledged commit.
    Fatal(String),
}

/// The `/v1/status` document.
#[derive(Debug, Serialize)]
pub struct StatusDoc {
    /// Schema version.
    pub schema_version: i64,
    /// Sequence of the last committed change.
    pub last_seq: i64,
    /// Rows in the trades table.
    pub trade_rows: i64,
    /// WAL size in bytes.
    pub wal_bytes: u64,
    /// Unix time of the last checkpoint, the sidecar's or DuckDB's own (0 = none since start).
    pub last_checkpoint_unix: i64,
    /// Writes waiting for the writer.
    pub queue_depth: i64,
    /// Readiness, with the reason when not ready.
    pub ready: bool,
    /// Why not ready, if so.
    pub not_ready_reason: Option<String>,
    /// The Redis journal (`enabled: false` when not configured).
    pub journal: JournalStatus,
    /// The ClickHouse sync (`enabled: false` when not configured).
    pub sync: SyncStatus,
    /// The newest complete snapshot (in the bucket when one is configured).
    pub last_snapshot: Option<Manifest>,
    /// Backup target, schedule and last failure.
    pub backup: BackupStatus,
    /// What start-up recovery did, if it ran.
    pub recovery: Option<recovery::Report>,
    /// The last integrity check.
    pub integrity: integrity::CheckStatus,
}

impl App {
    /// Opens and migrates the database, then starts the writer and the read pool.
    /// Returns the context and the writer thread to join on shutdown.
    pub async fn start(cfg: Config, env: &HashMap<String, String>) -> Result<(Arc<App>, JoinHandle<()>)> {
        let token = cfg.api_token(env)?;
        let path = cfg.database_path();
        let backups = Backups::new(&cfg.snapshots)?;
        backups.refresh().await;
        let redis =
            cfg.redis.url.as_deref().map(|url| journal::stream::client(url, cfg.redis_password(env)?)).transpose()?;
        let rebuilt = match &cfg.snapshots.bootstrap_from {
            Some(from) if !path.exists() => {
                tracing::info!(from, "no database file; bootstrapping from snapshot");
                backups.restore(from, &path).await?;
                None
            }
            _ => recovery::run(&cfg, &backups, redis.as_ref()).await?,
        };
        let conn = db::open(&path, &cfg.duckdb)?;
        let applied = migrations::up(&conn, migrations::embedded(), None)?;
        let schema_version = migrations::status(&conn, migrations::embedded())?.current;
        if !applied.is_empty() {
            tracing::info!(?applied, schema_version, "applied migrations");
        }
        // Before the writer hands out sequence numbers: a store below its journal
        // must take the journal's changes first, or it would reuse their numbers.
        let caught_up = recovery::catch_up(&conn, &cfg, redis.as_ref())?;
        let recovery = rebuilt.or(caught_up);
        let state = Arc::new(RwLock::new(load_hot_state(&conn, cfg.writer.recent_trades)?));
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::new(cfg.lifecycle.liveness_deadline));
        health.beat();
        let reader = Reader::new(conn.try_clone()?, cfg.reader.pool_size, cfg.reader.acquire_timeout, state.clone())?;
        let last_seq = state.read().unwrap_or_else(|e| e.into_inner()).last_seq();
        let (committed_tx, committed_rx) = tokio::sync::watch::channel(last_seq);
        let sync_rx = committed_rx.clone();
        // Read before anything is delivered, so that status and the Redis mirror show the
        // durable watermark from the start, not 0 until ClickHouse answers.
        let durable_watermark = sync::durable_watermark(&conn)?;
        let (writer, join) = Writer::spawn(conn, &cfg, state, metrics.clone(), health.clone(), committed_tx)?;
        let (sync, synced) = match &cfg.clickhouse.url {
            None => (None, None),
            Some(_) => {
                let password = cfg.clickhouse_password(env)?;
                let (r, w, m) = (reader.clone(), writer.clone(), metrics.clone());
                let s = Sync::new(cfg.clickhouse.clone(), password, r, w, m, durable_watermark)?;
                let (status, synced) = (s.status(), s.watermark());
                tokio::spawn(s.run(sync_rx));
                (Some(status), Some(synced))
            }
        };
        let journal = redis.map(|client| {
            let marker = journal::diverged_marker(&path);
            let j = Journal::new(
                cfg.redis.clone(),
                client,
                reader.clone(),
                metrics.clone(),
                last_seq,
                marker,
                backups.watch_last(),
            );
            let status = j.status();
            tokio::spawn(j.run(committed_rx, synced));
            status
        });
        health.set_ready();
        tracing::info!(db = %path.display(), schema_version, auth = token.is_some(), "store open");
        let interval = cfg.integrity.interval;
        let schedule = cfg.snapshots.schedule.as_deref().map(backup::parse_schedule).transpose()?;
        let app = Arc::new(App {
            cfg,
            token,
            writer,
            reader,
            metrics,
            health,
            schema_version,
            backups,
            journal,
            sync,
            recovery,
            integrity: Default::default(),
            stop: tokio::sync::watch::channel(None).0,
        });
        if !interval.is_zero() {
            tokio::spawn(integrity::run(app.clone(), interval));
        }
        if let Some(schedule) = schedule {
            tokio::spawn(backup::run_schedule(app.clone(), schedule));
        }
        Ok((app, join))
    }

    /// Takes a consistent snapshot on a read connection while writes continue, and
    /// ships it to the configured target.
    pub async fn take_snapshot(self: &Arc<Self>) -> Result<Manifest> {
        let taken = self.backups.take(&self.reader, self.schema_version).await;
        match &taken {
            Ok(_) => self.metrics.snapshots.inc(),
            Err(_) => self.metrics.snapshot_failures.inc(),
        }
        taken
    }

    /// Asks the process to stop by itself (the serve loop watches this).
    pub fn request_stop(&self, reason: StopReason) {
        self.stop.send_if_modified(|r| {
            let first = r.is_none();
            if first {
                *r = Some(reason);
            }
            first
        });
    }

    /// Resolves when [`App::request_stop`] was called or a fatal storage error was
    /// recorded, with the reason.
    pub async fn stop_requested(&self) -> StopReason {
        let mut rx = self.stop.subscribe();
        tokio::select! {
            reason = rx.wait_for(Option::is_some) => {
                reason.expect("the sender lives in App").clone().expect("waited for Some")
            }
            why = self.health.fatal() => StopReason::Fatal(why),
        }
    }

    /// The journal's status, its lag measured against the last commit now (so it keeps
    /// growing while Redis is down).
    fn journal_status(&self) -> JournalStatus {
        let Some(j) = &self.journal else { return JournalStatus::default() };
        let mut s = j.lock().unwrap_or_else(|e| e.into_inner()).clone();
        s.lag = (self.metrics.last_seq.get() - s.watermark).max(0);
        s
    }

    /// The current status document.
    pub fn status(&self) -> StatusDoc {
        let readiness = self.health.readiness();
        StatusDoc {
            schema_version: self.schema_version,
            last_seq: self.metrics.last_seq.get(),
            trade_rows: self.metrics.trade_rows.get(),
            wal_bytes: db::wal_size(&self.cfg.database_path()),
            last_checkpoint_unix: self.metrics.last_checkpoint.get(),
            queue_depth: self.metrics.queue_depth.get(),
            ready: readiness.is_ok(),
            not_ready_reason: readiness.err(),
            journal: self.journal_status(),
            sync: self.sync.as_ref().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone()).unwrap_or_default(),
            last_snapshot: self.backups.last(),
            backup: self.backups.status(),
            recovery: self.recovery.clone(),
            integrity: self.integrity.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}

/// Builds the hot state from the `trade_state` view and the latest changes.
fn load_hot_state(conn: &duckdb::Connection, recent: usize) -> Result<HotState> {
    let symbols = load_symbol_states(conn)?;
    let last_seq: i64 = conn.query_row("SELECT coalesce(max(seq), 0) FROM trades", [], |r| r.get(0))?;
    let mut state = HotState::new(symbols, last_seq, recent);
    let sql = format!(
        "SELECT {} FROM (SELECT * FROM trades ORDER BY seq DESC LIMIT {recent}) ORDER BY seq",
        db::TRADE_COLUMNS
    );
    let mut stmt = conn.prepare(&sql)?;
    for t in stmt.query_map([], db::trade_from_row)? {
        state.remember(t?);
    }
    Ok(state)
}
