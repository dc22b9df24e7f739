//! Start-up wiring: recover or bootstrap the file, open and migrate it, load the hot
//! state, start the writer, the read pool and the background tasks. [`App`] is the
//! context every request handler receives.

mod status;
mod tasks;

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use croner::Cron;
use parking_lot::RwLock;
use tokio::sync::watch;
use tradestore_api::status::{CheckStatus, JournalStatus, RecoveryReport, SyncStatus};

use crate::config::{Config, Secrets};
use crate::durability::backup::{self, Backups};
use crate::durability::integrity;
use crate::durability::recovery;
use crate::error::{Error, Result};
use crate::followers::clickhouse::{self, ClickhouseSync};
use crate::followers::journal::{self, Journal};
use crate::store::applier;
use crate::store::change::Change;
use crate::store::log::{self, CommitLog};
use crate::store::overlay::Overlay;
use crate::store::reader::{Reader, load_hot_state};
use crate::store::writer::{Parts, Writer, WriterHandle};
use crate::store::{db, migrations};
use crate::telemetry::Shared;
use crate::telemetry::health::Health;
use crate::telemetry::metrics::Metrics;
pub(crate) use tasks::Tasks;

/// Shared context of a running sidecar.
pub(crate) struct App {
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
    /// Probe state, and why the process stops by itself.
    pub health: Arc<Health>,
    /// Schema version of the open file.
    pub schema_version: i64,
    /// Backup snapshots and their targets.
    pub backups: Arc<Backups>,
    /// Redis journal status, when the journal is configured.
    pub journal: Option<Shared<JournalStatus>>,
    /// ClickHouse sync status, when the sync is configured.
    pub sync: Option<Shared<SyncStatus>>,
    /// What start-up recovery did, if it ran.
    pub recovery: Option<RecoveryReport>,
    /// The last integrity check.
    pub integrity: Shared<CheckStatus>,
}

/// The database as start-up leaves it: recovered if it had to be, migrated, caught up
/// with the journal.
struct Opened {
    conn: duckdb::Connection,
    log: CommitLog,
    /// What the start-up replay of the log did.
    replay: Replay,
    schema_version: i64,
    recovery: Option<RecoveryReport>,
}

/// What the start-up replay of the commit log did: the changes it applied to DuckDB,
/// those it left to the writer as its backlog, and how long it took.
struct Replay {
    into_duckdb: u64,
    backlog: Vec<(u64, Change)>,
    took: std::time::Duration,
}

impl Replay {
    fn changes(&self) -> u64 {
        self.into_duckdb + self.backlog.len() as u64
    }
}

/// Milliseconds of the start's steps: opening (recovery, migrations, the log's replay),
/// the hot state, the writer (its id index and the backlog taken back).
struct Timeline {
    began: std::time::Instant,
    lap: std::time::Instant,
}

impl Timeline {
    fn start() -> Self {
        let now = std::time::Instant::now();
        Timeline { began: now, lap: now }
    }

    /// Milliseconds since the last lap.
    fn lap(&mut self) -> u64 {
        let ms = self.lap.elapsed().as_millis() as u64;
        self.lap = std::time::Instant::now();
        ms
    }

    fn total(&self) -> u64 {
        self.began.elapsed().as_millis() as u64
    }
}

/// The followers, built but not started (they start once the [`App`] exists).
struct Followers {
    sync: Option<ClickhouseSync>,
    journal: Option<Journal>,
}

impl App {
    /// Opens and migrates the database, then starts the writer, the read pool and the
    /// background tasks (under `tasks`). Returns the context and the writer thread to
    /// join on shutdown.
    pub async fn start(
        cfg: Config,
        env: &HashMap<String, String>,
        tasks: &Tasks,
    ) -> Result<(Arc<App>, JoinHandle<()>)> {
        let token = cfg.api_token(env)?;
        let metrics = Arc::new(Metrics::new());
        let backups = Arc::new(Backups::new(&cfg.snapshots, metrics.clone())?);
        backups.refresh().await;
        let redis =
            cfg.redis.url.as_deref().map(|url| journal::stream::client(url, cfg.redis_password(env)?)).transpose()?;
        // Each step's time goes into the "store open" line: a start that grows slow
        // with the store (the index and the hot state are read whole) shows where.
        let mut timeline = Timeline::start();
        let Opened { conn, log, replay, schema_version, recovery } = open(&cfg, &backups, redis.as_ref()).await?;
        let opened_ms = timeline.lap();
        metrics.log_replayed.set(replay.changes() as i64);
        metrics.log_replay_seconds.set(replay.took.as_secs_f64());
        let (replayed, into_duckdb) = (replay.changes(), replay.into_duckdb);
        let state = Arc::new(RwLock::new(load_hot_state(&conn, cfg.writer.recent_trades)?));
        let hot_state_ms = timeline.lap();
        let health = Arc::new(Health::new(cfg.lifecycle.liveness_deadline));
        health.beat();
        // `committed` follows what DuckDB holds (the applier moves it), which is what
        // the followers read and what a list must wait for.
        let (committed_tx, committed) = watch::channel(state.read().last_seq());
        // The store holds what its log holds, DuckDB maybe not all of it yet.
        let last_seq = log.next_seq() as i64 - 1;
        let overlay = Arc::new(Overlay::default());
        let (pool, timeout) = (cfg.reader.pool_size, cfg.reader.acquire_timeout);
        let reader = Reader::new(conn.try_clone()?, pool, timeout, state.clone(), overlay.clone(), committed.clone())?;
        // Read before anything is delivered, so that status and the Redis mirror show the
        // durable watermark from the start, not 0 until ClickHouse answers.
        let durable_watermark = clickhouse::durable_watermark(&conn)?;
        let parts = Parts {
            log,
            backlog: replay.backlog,
            overlay,
            state,
            metrics: metrics.clone(),
            health: health.clone(),
            committed: committed_tx,
            retain: backups.watch_covered(),
        };
        let (writer, join) = Writer::spawn(conn, &cfg, parts)?;
        let writer_ms = timeline.lap();
        if replayed > 0 {
            let ms = (metrics.log_replay_seconds.get() * 1e3) as u64;
            tracing::info!(replayed, into_duckdb, ms, "commit log replayed");
        }
        let sync = match &cfg.clickhouse.url {
            None => None,
            Some(_) => Some(ClickhouseSync::new(
                cfg.clickhouse.clone(),
                cfg.clickhouse_password(env)?,
                reader.clone(),
                writer.clone(),
                metrics.clone(),
                durable_watermark,
            )?),
        };
        let journal = redis.map(|client| {
            let marker = journal::diverged_marker(&cfg.database_path());
            Journal::new(
                cfg.redis.clone(),
                client,
                reader.clone(),
                metrics.clone(),
                last_seq,
                marker,
                backups.watch_covered(),
            )
        });
        health.set_ready();
        tracing::info!(
            db = %cfg.database_path().display(),
            schema_version,
            auth = token.is_some(),
            opened_ms,
            hot_state_ms,
            writer_ms,
            ms = timeline.total(),
            "store open"
        );
        let schedule = cfg.snapshots.cron()?;
        let app = Arc::new(App {
            token,
            writer,
            reader,
            metrics,
            health,
            schema_version,
            backups,
            journal: journal.as_ref().map(Journal::status),
            sync: sync.as_ref().map(ClickhouseSync::status),
            recovery,
            integrity: Default::default(),
            cfg,
        });
        app.start_tasks(tasks, Followers { sync, journal }, committed, schedule);
        Ok((app, join))
    }

    /// Starts the followers of `committed`, the periodic integrity check and the
    /// snapshot schedule.
    fn start_tasks(
        &self,
        tasks: &Tasks,
        followers: Followers,
        committed: watch::Receiver<i64>,
        schedule: Option<Cron>,
    ) {
        let synced = followers.sync.as_ref().map(ClickhouseSync::watermark);
        if let Some(sync) = followers.sync {
            tasks.spawn(sync.run(committed.clone(), tasks.token()));
        }
        if let Some(journal) = followers.journal {
            tasks.spawn(journal.run(committed, synced, tasks.token()));
        }
        let interval = self.cfg.integrity.interval;
        if !interval.is_zero() {
            tasks.spawn(self.checker().run(interval, tasks.token()));
        }
        if let Some(schedule) = schedule {
            let (backups, reader) = (self.backups.clone(), self.reader.clone());
            tasks.spawn(backup::run_schedule(backups, reader, self.schema_version, schedule, tasks.token()));
        }
    }

    /// The integrity check, with the handles it reads and reports to.
    fn checker(&self) -> integrity::Checker {
        integrity::Checker {
            reader: self.reader.clone(),
            snapshots: self.backups.local(),
            health: self.health.clone(),
            metrics: self.metrics.clone(),
            on_failure: self.cfg.integrity.on_failure,
            status: self.integrity.clone(),
        }
    }
}

/// Brings the database file to where the writer can start: bootstraps it from a
/// snapshot or recovers it when it must, migrates it, and replays what the journal
/// holds beyond it.
async fn open(cfg: &Config, backups: &Backups, redis: Option<&redis::Client>) -> Result<Opened> {
    refuse_a_log_left_behind(cfg)?;
    let path = cfg.database_path();
    let rebuilt = match &cfg.snapshots.bootstrap_from {
        Some(from) if !path.exists() => {
            tracing::info!(from, "no database file; bootstrapping from snapshot");
            backups.restore(from, &path).await?;
            None
        }
        _ => recovery::run(cfg, backups, redis).await?,
    };
    let conn = db::open(&path, &cfg.duckdb)?;
    let applied = migrations::up(&conn, migrations::embedded(), None)?;
    let schema_version = migrations::status(&conn, migrations::embedded())?.current;
    if !applied.is_empty() {
        tracing::info!(?applied, schema_version, "applied migrations");
    }
    // Before the writer hands out sequence numbers: a store below its journal
    // must take the journal's changes first, or it would reuse their numbers.
    let caught_up = recovery::catch_up(&conn, cfg, redis)?;
    let (log, replay) = open_commit_log(&conn, cfg)?;
    let recovery = rebuilt
        .or(caught_up)
        .map(|report| Ok::<_, Error>(recovery::finish(report, replay.changes(), log.next_seq() as i64 - 1)))
        .transpose()?;
    Ok(Opened { conn, log, replay, schema_version, recovery })
}

/// A store told to keep its log elsewhere (`commit_log.dir`, e.g. a volume of its own)
/// while segments remain at the default place would start without the changes they
/// hold: refused, with what to do.
fn refuse_a_log_left_behind(cfg: &Config) -> Result<()> {
    let (dir, default) = (cfg.commit_log_dir(), cfg.data_dir.join("log"));
    if dir == default || !log::has_segments(&default)? {
        return Ok(());
    }
    Err(Error::Config(format!(
        "commit_log.dir is {} but {} still holds commit-log segments, which this start would skip: move them into \
         commit_log.dir (or unset it), then start again",
        dir.display(),
        default.display()
    )))
}

/// Opens the commit log and takes back what DuckDB lacks of it. Journal-based recovery
/// and catch-up write DuckDB directly, so `log_state.applied_seq` first moves up to
/// the newest `seq` the table holds (a no-op otherwise: the applier keeps them equal);
/// the log then replays what DuckDB lacks, or starts after it when it holds nothing
/// newer (a log lost with its volume, or a store older than the log). Up to a
/// backlog's worth of the newest changes is left to the writer (see
/// [`applier::replay`]).
fn open_commit_log(conn: &duckdb::Connection, cfg: &Config) -> Result<(CommitLog, Replay)> {
    conn.execute_batch(
        "UPDATE log_state SET applied_seq = greatest(applied_seq, (SELECT coalesce(max(seq), 0) FROM trades))",
    )?;
    let applied = applier::applied_seq(conn)?;
    let opened = CommitLog::open(&cfg.commit_log_dir(), cfg.commit_log.segment_bytes, applied)
        .map_err(|e| crate::error::Error::Internal(e.to_string()))?;
    if let Some(t) = &opened.torn {
        tracing::warn!(segment = %t.segment.display(), offset = t.offset, reason = %t.reason, "commit log: cut off a torn end");
    }
    let start = std::time::Instant::now();
    let replayed = applier::replay(conn, &opened.log, cfg.writer.max_apply_backlog as u64)?;
    let replay = Replay { into_duckdb: replayed.applied, backlog: replayed.backlog, took: start.elapsed() };
    Ok((opened.log, replay))
}
