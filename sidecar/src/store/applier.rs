//! Brings DuckDB up to date with the commit log, many changes per transaction.
//!
//! The changes are durable already (they are in the log); DuckDB is where they are
//! queried. One transaction takes a run of consecutive changes: new trades go in
//! through the Appender (DuckDB's bulk path), changed ones are updated once each in
//! their final state, the versions they superseded are appended to `trade_history`,
//! and `log_state.applied_seq` moves to the last change — all or nothing, so a crash
//! anywhere leaves DuckDB at a change boundary the log replays from.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError, channel};
use std::time::{Duration, Instant};

use duckdb::{Connection, params, params_from_iter};
use tokio::sync::{oneshot, watch};

use crate::config::{Config, SATURATED_GROUP};
use crate::error::{Error, Result};
use crate::store::change::{Change, Kind};
use crate::store::db;
use crate::store::log::CommitLog;
use crate::store::model::{Trade, now_micros};
use crate::store::overlay::Overlay;
use crate::telemetry::health::Health;
use crate::telemetry::metrics::Metrics;

/// Most changes one DuckDB transaction takes: large enough that the per-transaction
/// cost (a few ms of CPU here: `benches/apply.rs`) vanishes, small enough that one transaction stays well under a second.
const MAX_RUN: usize = 50_000;

/// Most changes one start-up replay transaction takes: past DuckDB's row group
/// (122,880 rows), so DuckDB writes the appended rows to the file directly instead of
/// through its WAL (measured: ~15% less CPU a change than runs of 50,000).
const MAX_REPLAY_RUN: usize = 131_072;

/// What the writer hands the applier.
pub(crate) enum Job {
    /// Acknowledged changes, in `seq` order, and when they were acknowledged.
    Changes { changes: Vec<(u64, Change)>, acked: Instant },
    /// A follower's watermark: applied with the next transaction, answered after it
    /// (the follower takes the answer as "durable").
    Watermark { sink: String, seq: i64, reply: oneshot::Sender<Result<Vec<Arc<Trade>>>> },
}

/// How far DuckDB is behind the log, shared by the applier (who moves it) and the
/// writer (back-pressure, and which segments it may delete).
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// The last `seq` DuckDB holds.
    applied: AtomicI64,
    /// The last `seq` a checkpoint folded into the database file itself: DuckDB's own
    /// WAL may lose it no more, so the log need not keep it (docs/durability.md).
    checkpointed: AtomicI64,
}

impl Progress {
    pub(crate) fn applied(&self) -> i64 {
        self.applied.load(Ordering::SeqCst)
    }

    pub(crate) fn checkpointed(&self) -> i64 {
        self.checkpointed.load(Ordering::SeqCst)
    }

    fn checkpoint_done(&self) {
        self.checkpointed.store(self.applied(), Ordering::SeqCst);
    }
}

/// The last log `seq` DuckDB holds.
pub fn applied_seq(conn: &Connection) -> Result<u64> {
    let seq: i64 = conn.prepare_cached("SELECT applied_seq FROM log_state")?.query_row([], |r| r.get(0))?;
    Ok(seq as u64)
}

/// Applies `changes` (log `seq`, change; consecutive, starting right after
/// [`applied_seq`]) and follower `watermarks` in one transaction.
pub fn apply(conn: &Connection, changes: &[(u64, Change)], watermarks: &[(String, i64)]) -> Result<()> {
    apply_after(conn, changes, watermarks, None)
}

/// [`apply`], told DuckDB's applied `seq` when the caller knows it for certain (the
/// applier, after its own last commit succeeded): a statement less per transaction.
/// `None` asks DuckDB, as any retry must — a failed commit may have committed.
fn apply_after(
    conn: &Connection,
    changes: &[(u64, Change)],
    watermarks: &[(String, i64)],
    known: Option<u64>,
) -> Result<()> {
    if changes.is_empty() && watermarks.is_empty() {
        return Ok(());
    }
    let attempt = in_transaction(conn, known, |applied| write(conn, not_yet_applied(changes, applied), watermarks));
    match attempt {
        // Under memory pressure DuckDB 1.5.6 can fail a COMMIT that touched several
        // tables after part of it became durable (measured: trades rows in, the
        // `log_state` update not), and can keep the keys of a rolled-back append in
        // its index. Both surface as a duplicate key; the log's images can set the
        // rows right whatever DuckDB kept.
        Err(e) if is_constraint(&e) => {
            tracing::warn!(error = %e, "DuckDB holds part of a run it did not record as applied; replacing those rows");
            in_transaction(conn, None, |applied| repair(conn, not_yet_applied(changes, applied), watermarks))
        }
        outcome => outcome,
    }
}

/// Runs `f` (given DuckDB's applied `seq`: `known`, or read in the transaction) in one
/// transaction: committed when it succeeds, rolled back otherwise.
/// BEGIN and COMMIT are prepared once: parsing and planning them every time cost
/// ~0.3 ms of CPU a transaction here, of ~4 ms that a small one costs in all.
fn in_transaction(conn: &Connection, known: Option<u64>, f: impl FnOnce(u64) -> Result<()>) -> Result<()> {
    conn.prepare_cached("BEGIN TRANSACTION")?.execute([])?;
    let applied = known.map_or_else(|| applied_seq(conn), Ok);
    let outcome = applied.and_then(f).and_then(|()| Ok(conn.prepare_cached("COMMIT")?.execute([]).map(drop)?));
    if outcome.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    outcome
}

fn is_constraint(e: &Error) -> bool {
    matches!(e, Error::Db(db) if db.to_string().contains("violates primary key constraint"))
}

/// The changes DuckDB does not hold yet: a retry after an error whose transaction did
/// commit after all must not apply them twice, so it goes by what DuckDB says.
fn not_yet_applied(changes: &[(u64, Change)], applied: u64) -> &[(u64, Change)] {
    &changes[changes.partition_point(|(seq, _)| *seq <= applied)..]
}

/// Applies `changes` whatever part of them DuckDB kept: every trade they touch is
/// set to its final state (updated when the table has it, appended when not; a
/// delete and re-append of one key in one transaction trips DuckDB's index), and the
/// superseded versions the history lacks are appended.
fn repair(conn: &Connection, changes: &[(u64, Change)], watermarks: &[(String, i64)]) -> Result<()> {
    let (new, changed) = final_rows(changes);
    let touched: Vec<&Trade> = new.into_iter().chain(changed).collect();
    let in_trades: HashSet<String> = held(conn, "trades", &touched)?.into_iter().map(|(id, _)| id).collect();
    let (there, missing): (Vec<&Trade>, Vec<&Trade>) = touched.into_iter().partition(|t| in_trades.contains(&t.id));
    update(conn, &there)?;
    db::append(conn, "trades", &missing)?;
    let versions = history_images(changes);
    let in_history = held(conn, "trade_history", &versions)?;
    let lacking: Vec<&Trade> =
        versions.into_iter().filter(|t| !in_history.contains(&(t.id.clone(), t.version))).collect();
    db::append(conn, "trade_history", &lacking)?;
    record(conn, changes, watermarks)
}

/// The (id, version) rows `table` holds for the ids of `trades`.
fn held(conn: &Connection, table: &str, trades: &[&Trade]) -> Result<HashSet<(String, i64)>> {
    let mut found = HashSet::new();
    for chunk in trades.chunks(1_000) {
        let marks = vec!["?"; chunk.len()].join(",");
        let mut stmt = conn.prepare(&format!("SELECT id, version FROM {table} WHERE id IN ({marks})"))?;
        let rows = stmt.query_map(params_from_iter(chunk.iter().map(|t| &t.id)), |r| Ok((r.get(0)?, r.get(1)?)))?;
        for row in rows {
            found.insert(row?);
        }
    }
    Ok(found)
}

fn write(conn: &Connection, changes: &[(u64, Change)], watermarks: &[(String, i64)]) -> Result<()> {
    let (new, changed) = final_rows(changes);
    db::append(conn, "trades", &new)?;
    update(conn, &changed)?;
    db::append(conn, "trade_history", &history_images(changes))?;
    record(conn, changes, watermarks)
}

/// What `changes` add to `trade_history`: the versions they replaced (a new trade
/// replaced none: an insert-only run writes no history, and the current versions are
/// `trades`), see [`Change::history_image`].
fn history_images(changes: &[(u64, Change)]) -> Vec<&Trade> {
    changes.iter().filter_map(|(_, c)| c.history_image()).collect()
}

/// What every apply records besides the trades and their history: the followers'
/// watermarks, and how far DuckDB now is.
fn record(conn: &Connection, changes: &[(u64, Change)], watermarks: &[(String, i64)]) -> Result<()> {
    for (sink, seq) in watermarks {
        conn.execute(
            "INSERT INTO sync_state VALUES (?, ?, now()::TIMESTAMP) ON CONFLICT (sink) DO UPDATE \
             SET watermark = greatest(watermark, excluded.watermark), updated_at = excluded.updated_at",
            params![sink, seq],
        )?;
    }
    if let Some(&(last, _)) = changes.last() {
        conn.prepare_cached("UPDATE log_state SET applied_seq = ?, updated_at = now()::TIMESTAMP")?
            .execute(params![last as i64])?;
    }
    Ok(())
}

/// Each trade the changes touch, once, in its final state: those the changes create
/// (first seen as an insert), in log order, and those already in the table, in the
/// order they were first changed. Only a trade an update or cancel touches can appear
/// twice in a run, so only those are hashed: a run of new trades hashes nothing.
fn final_rows(changes: &[(u64, Change)]) -> (Vec<&Trade>, Vec<&Trade>) {
    let is_insert = |c: &&(u64, Change)| c.1.kind == Kind::Insert;
    let mut last: HashMap<&str, &Trade> = HashMap::new();
    for (_, c) in changes.iter().filter(|c| !is_insert(c)) {
        last.insert(&c.trade().id, c.trade());
    }
    let mut final_image = |t: &Trade| if last.is_empty() { None } else { last.remove(t.id.as_str()) };
    let new = changes.iter().filter(is_insert).map(|(_, c)| final_image(c.trade()).unwrap_or(c.trade())).collect();
    let changed = changes.iter().filter(|c| !is_insert(c)).filter_map(|(_, c)| final_image(c.trade())).collect();
    (new, changed)
}

fn update(conn: &Connection, rows: &[&Trade]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    // Same column order as the table (and as the appender): $1 is the id.
    let mut stmt = conn.prepare_cached(
        "UPDATE trades SET symbol = $2, side = $3, quantity = $4, price = $5, status = $6, ts = $7, \
         version = $8, seq = $9, created_at = $10, updated_at = $11 WHERE id = $1",
    )?;
    for t in rows {
        let n = stmt.execute(params_from_iter(db::row_values(t)))?;
        if n != 1 {
            return Err(crate::error::Error::Internal(format!(
                "applying seq {}: trade {} is not in the table to update",
                t.seq, t.id
            )));
        }
    }
    Ok(())
}

/// Deletes the superseded versions written before `cutoff` (µs since the epoch); a
/// trade's current version is its `trades` row and stays.
fn trim_history(conn: &Connection, cutoff: i64) -> Result<usize> {
    Ok(conn.execute("DELETE FROM trade_history WHERE updated_at < make_timestamp(?)", params![cutoff])?)
}

/// What the start-up replay of the log did: the changes it applied to DuckDB, and the
/// newest ones it left for the writer to take back as its backlog.
pub struct Replayed {
    pub applied: u64,
    pub backlog: Vec<(u64, Change)>,
}

/// Replays the log records DuckDB lacks (after [`applied_seq`]) at start, before
/// anything is served. The newest are not applied here but returned: the writer takes
/// them back as acknowledged and not yet applied, as they were before the restart, so
/// the store serves while the applier moves them into DuckDB. At most one applier
/// transaction's worth ([`MAX_RUN`]) and half of `max_backlog` are taken back: so the
/// first transaction after a start stays that size, writes after it have room before
/// the back-pressure, and every start brings DuckDB forward by the rest — a store
/// killed again and again before its applier commits still moves on (measured in the
/// crash suite: with the whole backlog taken back, the writes of its later rounds
/// waited on a full backlog). The rest goes into DuckDB first, in runs of
/// [`MAX_REPLAY_RUN`].
pub fn replay(conn: &Connection, log: &CommitLog, max_backlog: u64) -> Result<Replayed> {
    let keep = (max_backlog / 2).min(MAX_RUN as u64);
    let into_db = (log.next_seq() - 1).saturating_sub(keep);
    let mut reader = log.read_from(applied_seq(conn)? + 1);
    let (mut run, mut backlog, mut applied) = (Vec::new(), Vec::new(), 0);
    loop {
        let records = reader.next_records().map_err(|e| Error::Internal(e.to_string()))?;
        let done = records.is_empty();
        for r in &records {
            let change = (r.seq, Change::from_record(r).map_err(Error::Internal)?);
            if r.seq <= into_db { run.push(change) } else { backlog.push(change) }
        }
        if done || run.len() >= MAX_REPLAY_RUN {
            apply(conn, &run, &[])?;
            applied += run.len() as u64;
            run.clear();
        }
        if done {
            break;
        }
    }
    // An update read from an older build's record has no before-image, and the hot
    // state cannot take it back without one: such a backlog goes into DuckDB now.
    if backlog.iter().any(|(_, c)| c.after_only && c.kind != Kind::Insert) {
        apply(conn, &backlog, &[])?;
        applied += std::mem::take(&mut backlog).len() as u64;
    }
    Ok(Replayed { applied, backlog })
}

/// The applier's side of the channel; lives on its own thread.
pub(crate) struct Applier {
    conn: Connection,
    db_path: PathBuf,
    overlay: Arc<Overlay>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    progress: Arc<Progress>,
    /// Followers wait on it: they read DuckDB, so they follow what is applied.
    committed: watch::Sender<i64>,
    checkpoint_every_commits: u64,
    max_wal_bytes: u64,
    /// `duckdb.idle_checkpoint_after` (zero: never).
    idle_checkpoint_after: Duration,
    commits_since_checkpoint: u64,
    /// WAL size seen after the last commit (or checkpoint), to notice DuckDB's own checkpoints.
    wal_seen: u64,
    /// A commit changed rows since `wal_seen` was taken.
    wrote_since_wal_seen: bool,
    /// `history.retention` (zero: keep everything), and when it was last applied.
    history_retention: Duration,
    history_trimmed: Instant,
    /// How long a transaction gathers changes.
    gathering: Gathering,
}

/// How long a transaction gathers: `writer.apply_delay`, and up to
/// `writer.apply_delay_saturated` while what it gathered says the log is saturated
/// (see [`Gathered::saturated`]).
#[derive(Clone, Copy)]
struct Gathering {
    delay: Duration,
    saturated: Duration,
}

/// Why the applier checkpoints (`duckdb.*` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// Nothing came to apply for `idle_checkpoint_after`.
    Idle,
    /// `checkpoint_every_commits` transactions since the last one.
    Commits,
    /// The WAL outgrew `max_wal_bytes`.
    WalSize,
}

/// How often a gathering applier looks whether a read waits for it.
const HURRY_POLL: Duration = Duration::from_millis(1);

/// How often the history is trimmed to its retention.
const TRIM_EVERY: Duration = Duration::from_secs(60);

impl Applier {
    /// Starts the applier thread on `conn`; returns the channel to it, the applied
    /// `seq` it keeps, and its join handle.
    pub(crate) fn spawn(
        conn: Connection,
        cfg: &Config,
        overlay: Arc<Overlay>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        committed: watch::Sender<i64>,
    ) -> Result<(Sender<Job>, Arc<Progress>, std::thread::JoinHandle<()>)> {
        // Nothing counts as checkpointed until this process checkpointed: what the
        // last one applied may still sit in DuckDB's WAL.
        let progress = Arc::new(Progress { applied: AtomicI64::new(applied_seq(&conn)? as i64), ..Default::default() });
        metrics.applied_seq.set(progress.applied());
        let (tx, rx) = channel();
        let applier = Applier {
            conn,
            db_path: cfg.database_path(),
            overlay,
            metrics,
            health,
            progress: progress.clone(),
            committed,
            checkpoint_every_commits: cfg.duckdb.checkpoint_every_commits,
            max_wal_bytes: cfg.duckdb.max_wal_bytes,
            idle_checkpoint_after: cfg.duckdb.idle_checkpoint_after,
            commits_since_checkpoint: 0,
            wal_seen: db::wal_size(&cfg.database_path()),
            wrote_since_wal_seen: false,
            history_retention: cfg.history.retention,
            history_trimmed: Instant::now() - TRIM_EVERY,
            gathering: Gathering {
                delay: cfg.writer.apply_delay,
                saturated: cfg.writer.apply_delay_saturated.max(cfg.writer.apply_delay),
            },
        };
        applier.metrics.apply_delay.set(cfg.writer.apply_delay.as_secs_f64());
        let join = std::thread::Builder::new().name("applier".into()).spawn(move || applier.run(rx))?;
        Ok((tx, progress, join))
    }

    /// Applies until the writer hangs up, then checkpoints once more.
    fn run(mut self, rx: Receiver<Job>) {
        while let Some(first) = self.next_job(&rx) {
            let applied = self.progress.applied();
            let gathered = gather(first, &rx, self.gathering, || self.overlay.awaited_beyond(applied));
            let gathered_for = if gathered.longer { self.gathering.saturated } else { self.gathering.delay };
            self.metrics.apply_delay.set(gathered_for.as_secs_f64());
            if !self.apply_jobs(gathered.jobs) {
                return; // fatal: the process is stopping
            }
            self.maybe_trim_history();
            self.maybe_checkpoint();
        }
        match db::checkpoint(&self.conn, true) {
            Ok(()) => tracing::info!("final checkpoint done"),
            Err(e) => tracing::error!(error = %e, "final checkpoint failed; the WAL will be replayed on start"),
        }
    }

    /// The next job. One that does not come within `idle_checkpoint_after` finds the
    /// applier checkpointing meanwhile, once, if DuckDB's WAL holds anything: the
    /// checkpoint stops applying while it runs (docs/benchmarks.md, session 10), so in a
    /// lull it costs no one anything, and DuckDB's own at a commit of the next burst
    /// comes that much later. None once the writer hung up.
    fn next_job(&mut self, rx: &Receiver<Job>) -> Option<Job> {
        if let Ok(job) = rx.try_recv() {
            return Some(job);
        }
        if !self.idle_checkpoint_after.is_zero() {
            match rx.recv_timeout(self.idle_checkpoint_after) {
                Ok(job) => return Some(job),
                Err(RecvTimeoutError::Disconnected) => return None,
                Err(RecvTimeoutError::Timeout) => {
                    let wal = db::wal_size(&self.db_path);
                    if wal > 0 {
                        self.checkpoint(wal, Why::Idle);
                    }
                }
            }
        }
        rx.recv().ok()
    }

    /// Applies one run, retrying while it fails (readiness says so and the writer
    /// acknowledges nothing meanwhile); false when DuckDB invalidated the database.
    fn apply_jobs(&mut self, jobs: Vec<Job>) -> bool {
        let (mut changes, mut acked) = (Vec::new(), Vec::new());
        let (mut watermarks, mut replies) = (Vec::new(), Vec::new());
        for job in jobs {
            match job {
                Job::Changes { changes: c, acked: at, .. } => {
                    changes.extend(c);
                    acked.push(at);
                }
                Job::Watermark { sink, seq, reply } => {
                    watermarks.push((sink, seq));
                    replies.push(reply);
                }
            }
        }
        let start = Instant::now();
        let mut known = Some(self.progress.applied() as u64);
        loop {
            match apply_after(&self.conn, &changes, &watermarks, known.take()) {
                Ok(()) => break,
                Err(e) if db::classify(&e) == db::Failure::Transient => {
                    tracing::warn!(error = %e, changes = changes.len(), "applying the commit log failed; retrying");
                    self.health.set_apply(Some(e.to_string()));
                    std::thread::sleep(Duration::from_secs(1));
                }
                // Invalidated, or refusing changes the writer already decided (a
                // duplicate key after an aborted append, seen under memory pressure):
                // this instance no longer agrees with its file. A restart reopens it
                // and replays the log from what DuckDB holds durably.
                Err(e) => {
                    tracing::error!(error = %e, "DuckDB failed applying the commit log; stopping so the restart replays it");
                    self.health.set_fatal(e.to_string());
                    return false;
                }
            }
        }
        self.health.set_apply(None);
        self.after_apply(&changes, start);
        for at in acked {
            self.metrics.apply_lag.observe(at.elapsed().as_secs_f64());
        }
        for reply in replies {
            let _ = reply.send(Ok(vec![]));
        }
        true
    }

    fn after_apply(&mut self, changes: &[(u64, Change)], start: Instant) {
        let Some(&(last, _)) = changes.last() else { return };
        self.metrics.apply_duration.observe(start.elapsed().as_secs_f64());
        self.metrics.commits.inc();
        self.commits_since_checkpoint += 1;
        self.wrote_since_wal_seen = true;
        self.overlay.applied(changes.iter().map(|(_, c)| c.trade()), last as i64);
        self.progress.applied.store(last as i64, Ordering::SeqCst);
        self.metrics.applied_seq.set(last as i64);
        // The writer sets it only before a group: without this an idle store would
        // keep showing the backlog of its last burst.
        self.metrics.apply_backlog.set((self.metrics.last_seq.get() - last as i64).max(0));
        self.committed.send_replace(last as i64);
    }

    /// Notices a checkpoint DuckDB ran by itself: at a commit that takes the WAL past
    /// `checkpoint_threshold` it folds the WAL into the file and empties it, on this
    /// connection, before COMMIT returns. Commits only ever grow the WAL, so a WAL
    /// smaller than after the previous commit — or empty after one that changed rows —
    /// means DuckDB checkpointed. DuckDB exposes no checkpoint time or counter itself.
    fn note_duckdb_checkpoint(&mut self, wal: u64) {
        let checkpointed = wal < self.wal_seen || (wal == 0 && self.wrote_since_wal_seen);
        (self.wal_seen, self.wrote_since_wal_seen) = (wal, false);
        if checkpointed {
            self.progress.checkpoint_done();
            self.metrics.auto_checkpoints.inc();
            self.metrics.last_checkpoint.set(chrono::Utc::now().timestamp());
            tracing::debug!(wal_bytes = wal, "DuckDB checkpointed by itself");
        }
    }

    /// Deletes history versions older than the retention, once a [`TRIM_EVERY`]. A
    /// failure is only logged: the versions stay until the next try.
    fn maybe_trim_history(&mut self) {
        if self.history_retention.is_zero() || self.history_trimmed.elapsed() < TRIM_EVERY {
            return;
        }
        self.history_trimmed = Instant::now();
        match trim_history(&self.conn, now_micros() - self.history_retention.as_micros() as i64) {
            Ok(0) => {}
            Ok(removed) => tracing::debug!(removed, "history: removed versions past the retention"),
            Err(e) => tracing::warn!(error = %e, "history: trimming to the retention failed; will retry"),
        }
    }

    fn maybe_checkpoint(&mut self) {
        let wal = db::wal_size(&self.db_path);
        self.metrics.wal_bytes.set(wal as i64);
        self.note_duckdb_checkpoint(wal);
        let by_count =
            self.checkpoint_every_commits > 0 && self.commits_since_checkpoint >= self.checkpoint_every_commits;
        if by_count || wal > self.max_wal_bytes {
            self.checkpoint(wal, if by_count { Why::Commits } else { Why::WalSize });
        }
    }

    /// Runs `CHECKPOINT` (the WAL is `wal` bytes). Only one in a lull compacts: the
    /// others come between transactions under load, and the next one waits for them.
    fn checkpoint(&mut self, wal: u64, why: Why) {
        let start = Instant::now();
        match db::checkpoint(&self.conn, why == Why::Idle) {
            Ok(()) => {
                self.progress.checkpoint_done();
                self.commits_since_checkpoint = 0;
                self.metrics.checkpoints.inc();
                self.metrics.last_checkpoint.set(chrono::Utc::now().timestamp());
                self.wal_seen = db::wal_size(&self.db_path);
                self.metrics.wal_bytes.set(self.wal_seen as i64);
                tracing::debug!(elapsed_ms = start.elapsed().as_millis() as u64, wal_before = wal, ?why, "checkpoint");
            }
            Err(e) => match Error::from(e) {
                // A checkpoint that failed on a full disk invalidates the database.
                e if db::classify(&e) == db::Failure::Fatal => {
                    tracing::error!(error = %e, "database invalidated by a failed checkpoint; stopping so the restart reopens it");
                    self.health.set_fatal(e.to_string());
                }
                e => tracing::warn!(error = %e, "checkpoint failed; will retry after the next apply"),
            },
        }
    }
}

/// The jobs one transaction takes: `first` and whatever arrives within
/// `gathering.delay` of it — or within `gathering.saturated` while what it took says
/// the log is saturated — up to [`MAX_RUN`] changes, or until `hurry` says a read
/// waits for DuckDB (a list must not pay the gathering). Behind a backlog the channel
/// holds plenty and nothing waits; a hang-up ends the wait with what came.
///
/// It sleeps between looks instead of waiting on the channel: the writer sends a job
/// per group, thousands a second, and a receiver waiting on the channel is woken by
/// each of them — a context switch on both sides per group, which on two CPUs is CPU
/// the requests need (docs/benchmarks.md, session 15).
fn gather(first: Job, rx: &Receiver<Job>, gathering: Gathering, hurry: impl Fn() -> bool) -> Gathered {
    let start = Instant::now();
    let mut gathered = Gathered::default();
    gathered.push(first);
    while gathered.len < MAX_RUN {
        match rx.try_recv() {
            Ok(job) => {
                gathered.push(job);
                continue;
            }
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {}
        }
        // Saturation is judged on what this transaction took so far, not on the one
        // before: a burst that ended does not hold the next transaction back.
        let until = start + if gathered.saturated() { gathering.saturated } else { gathering.delay };
        // Past the deadline, or in a hurry, what was queued has just been taken.
        let now = Instant::now();
        let wait = if hurry() { Duration::ZERO } else { until.saturating_duration_since(now) };
        if wait.is_zero() {
            break;
        }
        gathered.longer |= now >= start + gathering.delay;
        std::thread::sleep(wait.min(HURRY_POLL));
    }
    gathered
}

/// What one transaction gathered.
#[derive(Default)]
struct Gathered {
    jobs: Vec<Job>,
    /// Changes, watermarks counting one each.
    len: usize,
    /// Log groups among `jobs`, and the changes they hold.
    groups: usize,
    changes: usize,
    /// It gathered past `writer.apply_delay`: the log was saturated.
    longer: bool,
}

impl Gathered {
    fn push(&mut self, job: Job) {
        self.len += job_len(&job);
        if let Job::Changes { changes, .. } = &job {
            (self.groups, self.changes) = (self.groups + 1, self.changes + changes.len());
        }
        self.jobs.push(job);
    }

    /// Whether the log's groups say it is saturated: on average [`SATURATED_GROUP`]
    /// changes or more a group, so requests queue behind the log's flush. One group
    /// alone says nothing (a lone batch, or the first after a lull). A moderate rate
    /// arriving in bursts makes large groups now and then too; judged on the groups
    /// gathered so far, such a burst lengthens a transaction by a few ms, not by
    /// `writer.apply_delay_saturated` (docs/benchmarks.md, session 18).
    fn saturated(&self) -> bool {
        self.groups > 1 && self.changes >= SATURATED_GROUP * self.groups
    }
}

fn job_len(job: &Job) -> usize {
    match job {
        Job::Changes { changes, .. } => changes.len(),
        Job::Watermark { .. } => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::change::tests::trade;
    use crate::store::model::Status;
    use std::sync::atomic::AtomicBool;

    fn changes(seq: u64) -> Job {
        let changes = vec![(seq, Change::insert(trade("a", 1, seq as i64, Status::Filled)))];
        Job::Changes { changes, acked: Instant::now() }
    }

    fn seqs(jobs: &[Job]) -> Vec<u64> {
        jobs.iter()
            .flat_map(|j| match j {
                Job::Changes { changes, .. } => changes.iter().map(|(s, _)| *s).collect(),
                Job::Watermark { .. } => vec![],
            })
            .collect()
    }

    #[test]
    fn a_transaction_gathers_what_arrives_within_the_delay() {
        let (tx, rx) = channel();
        tx.send(changes(2)).unwrap();
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(changes(3)).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            tx.send(changes(4)).unwrap();
        });
        assert_eq!(
            seqs(&gather(changes(1), &rx, for_(Duration::from_millis(150)), || false).jobs),
            [1, 2, 3],
            "waits for 3, not 4"
        );
        late.join().unwrap();
        assert_eq!(
            seqs(&gather(changes(5), &rx, for_(Duration::ZERO), || false).jobs),
            [5, 4],
            "no delay: what is queued, at once"
        );
    }

    /// A gathering of `delay`, never longer.
    fn for_(delay: Duration) -> Gathering {
        Gathering { delay, saturated: delay }
    }

    fn group(seq: u64, n: usize) -> Job {
        let changes = (0..n as u64).map(|k| (seq + k, Change::insert(trade("a", 1, (seq + k) as i64, Status::Filled))));
        Job::Changes { changes: changes.collect(), acked: Instant::now() }
    }

    fn gathered(jobs: impl IntoIterator<Item = Job>) -> Gathered {
        let mut gathered = Gathered::default();
        jobs.into_iter().for_each(|job| gathered.push(job));
        gathered
    }

    #[test]
    fn the_log_counts_as_saturated_when_its_groups_average_eight_changes() {
        let groups = |sizes: &[usize]| gathered(sizes.iter().map(|&n| group(1, n)));
        assert!(!groups(&[1, 1, 2, 1]).saturated(), "a few requests a flush");
        assert!(!groups(&[7, 8, 8, 8]).saturated(), "just under eight on average");
        assert!(groups(&[8, 8]).saturated());
        assert!(groups(&[12, 4, 9, 7]).saturated(), "eight on average");
        assert!(!groups(&[1000]).saturated(), "one group alone says nothing: a lone batch");
        assert!(groups(&[1000, 1000]).saturated(), "batches back to back");
        let (reply, _) = tokio::sync::oneshot::channel();
        let watermark = Job::Watermark { sink: "s".into(), seq: 1, reply };
        assert!(!gathered([group(1, 1), group(2, 1), watermark]).saturated(), "a watermark is not a group");
    }

    /// Sends groups of `sizes` changes, one every `every`, then keeps the channel open
    /// (a hang-up would end the gathering) until `hold` has passed.
    fn feed(sizes: Vec<usize>, every: Duration, hold: Duration) -> (Receiver<Job>, std::thread::JoinHandle<()>) {
        let (tx, rx) = channel();
        let feeder = std::thread::spawn(move || {
            let start = Instant::now();
            for (k, n) in sizes.into_iter().enumerate() {
                tx.send(group(100 * k as u64 + 2, n)).unwrap();
                std::thread::sleep(every);
            }
            std::thread::sleep(hold.saturating_sub(start.elapsed()));
        });
        (rx, feeder)
    }

    #[test]
    fn a_saturated_log_gathers_longer_while_its_groups_stay_large() {
        let gathering = Gathering { delay: Duration::from_millis(20), saturated: Duration::from_millis(200) };
        let timed = |sizes: Vec<usize>| {
            let (rx, feeder) = feed(sizes, Duration::from_millis(5), Duration::from_millis(300));
            let start = Instant::now();
            let gathered = gather(group(1, 8), &rx, gathering, || false);
            let took = start.elapsed();
            feeder.join().unwrap();
            (gathered, took)
        };
        let (large, took) = timed(vec![12; 60]);
        assert!(large.longer && took >= Duration::from_millis(190), "large groups all along: {took:?}");
        let (small, took) = timed(vec![2; 60]);
        assert!(!small.longer && took < Duration::from_millis(150), "small groups: the usual gathering, {took:?}");
        // A burst of large groups, then the usual small ones: the gathering goes on
        // only while the groups taken so far still average eight changes.
        let (burst, took) = timed([vec![16; 6], vec![1; 54]].concat());
        assert!(burst.longer && took < Duration::from_millis(150), "a burst that ended: {took:?}");
    }

    #[test]
    fn a_hang_up_ends_the_wait() {
        let (tx, rx) = channel::<Job>();
        drop(tx);
        let start = Instant::now();
        assert_eq!(seqs(&gather(changes(1), &rx, for_(Duration::from_secs(30)), || false).jobs), [1]);
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_waiting_read_ends_the_gathering() {
        let (tx, rx) = channel();
        tx.send(changes(2)).unwrap();
        let waiting = Arc::new(AtomicBool::new(false));
        let late = std::thread::spawn({
            let waiting = waiting.clone();
            move || {
                std::thread::sleep(Duration::from_millis(20));
                tx.send(changes(3)).unwrap();
                std::thread::sleep(Duration::from_millis(40));
                waiting.store(true, Ordering::SeqCst);
                tx // kept open: only the read may end the wait
            }
        });
        let start = Instant::now();
        let jobs = gather(changes(1), &rx, for_(Duration::from_secs(30)), || waiting.load(Ordering::SeqCst)).jobs;
        assert_eq!(seqs(&jobs), [1, 2, 3]);
        assert!(start.elapsed() < Duration::from_secs(5), "waited out the delay: {:?}", start.elapsed());
        drop(late.join().unwrap());
    }

    fn store() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("t.duckdb")).unwrap();
        crate::store::migrations::up(&conn, crate::store::migrations::embedded(), None).unwrap();
        (dir, conn)
    }

    fn rows(conn: &Connection, table: &str) -> Vec<Trade> {
        let sql = format!("SELECT {} FROM {table} ORDER BY id, version", db::TRADE_COLUMNS);
        let mut stmt = conn.prepare(&sql).unwrap();
        stmt.query_map([], db::trade_from_row).unwrap().map(|r| r.unwrap()).collect()
    }

    /// (id, version) of every row of `trade_history`.
    fn history(conn: &Connection) -> Vec<(String, i64)> {
        rows(conn, "trade_history").into_iter().map(|t| (t.id, t.version)).collect()
    }

    #[test]
    fn runs_of_changes_leave_the_final_rows_every_superseded_version_and_the_applied_seq() {
        let (_d, conn) = store();
        assert_eq!(applied_seq(&conn).unwrap(), 0);
        let (a1, b1) = (trade("a", 1, 1, Status::Filled), trade("b", 1, 2, Status::Pending));
        let a2 = trade("a", 2, 3, Status::Pending);
        let first =
            vec![(1, Change::insert(a1.clone())), (2, Change::insert(b1.clone())), (3, Change::modify(a1, a2.clone()))];
        apply(&conn, &first, &[]).unwrap();
        let second = vec![
            (4, Change::modify(b1, trade("b", 2, 4, Status::Cancelled))),
            (5, Change::modify(a2, trade("a", 3, 5, Status::Filled))),
            (6, Change::insert(trade("c", 1, 6, Status::Filled))),
        ];
        apply(&conn, &second, &[("clickhouse".into(), 3)]).unwrap();
        assert_eq!(applied_seq(&conn).unwrap(), 6);
        assert_eq!(
            rows(&conn, "trades"),
            vec![
                trade("a", 3, 5, Status::Filled),
                trade("b", 2, 4, Status::Cancelled),
                trade("c", 1, 6, Status::Filled)
            ]
        );
        assert_eq!(history(&conn), [("a", 1), ("a", 2), ("b", 1)].map(|(id, v)| (id.to_string(), v)));
        let wm: i64 =
            conn.query_row("SELECT watermark FROM sync_state WHERE sink = 'clickhouse'", [], |r| r.get(0)).unwrap();
        assert_eq!(wm, 3);
    }

    #[test]
    fn a_failing_run_changes_nothing_not_even_the_applied_seq() {
        let (_d, conn) = store();
        apply(&conn, &[(1, Change::insert(trade("a", 1, 1, Status::Filled)))], &[]).unwrap();
        // An update of a trade that is not there: the log and the table disagree.
        let bad = vec![
            (2, Change::insert(trade("b", 1, 2, Status::Filled))),
            (3, Change::modify(trade("zz", 1, 1, Status::Filled), trade("zz", 2, 3, Status::Filled))),
        ];
        let err = apply(&conn, &bad, &[]).unwrap_err().to_string();
        assert!(err.contains("trade zz is not in the table"), "{err}");
        assert_eq!(applied_seq(&conn).unwrap(), 1);
        assert_eq!(rows(&conn, "trades"), vec![trade("a", 1, 1, Status::Filled)]);
        assert_eq!(history(&conn), [], "nothing superseded");
    }

    #[test]
    fn a_run_duckdb_kept_part_of_without_recording_it_is_replaced_exactly() {
        let (_d, conn) = store();
        let (a1, b1) = (trade("a", 1, 1, Status::Filled), trade("b", 1, 2, Status::Filled));
        apply(&conn, &[(1, Change::insert(a1.clone())), (2, Change::insert(b1.clone()))], &[]).unwrap();
        // What a COMMIT that failed late left (DuckDB 1.5.6 under memory pressure):
        // rows of the next run are in, `log_state` still says 2.
        let c = trade("c", 1, 3, Status::Filled);
        db::append(&conn, "trades", &[&c]).unwrap();
        conn.execute_batch("UPDATE trades SET version = 2, seq = 4 WHERE id = 'a'").unwrap();
        db::append(&conn, "trade_history", &[&a1]).unwrap();
        let run = vec![
            (3, Change::insert(c.clone())),
            (4, Change::modify(a1, trade("a", 2, 4, Status::Pending))),
            (5, Change::modify(b1, trade("b", 2, 5, Status::Pending))),
            (6, Change::insert(trade("d", 1, 6, Status::Filled))),
        ];
        apply(&conn, &run, &[]).unwrap();
        assert_eq!(applied_seq(&conn).unwrap(), 6);
        assert_eq!(
            rows(&conn, "trades"),
            vec![
                trade("a", 2, 4, Status::Pending),
                trade("b", 2, 5, Status::Pending),
                c,
                trade("d", 1, 6, Status::Filled)
            ]
        );
        assert_eq!(history(&conn), [("a", 1), ("b", 1)].map(|(id, v)| (id.to_string(), v)), "a1 once, b1 added");
    }

    #[test]
    fn records_of_an_older_log_add_their_own_images_to_the_history() {
        let (_d, conn) = store();
        let older = |kind, t: &Trade| Change { kind, before: None, after: Arc::new(t.clone()), after_only: true };
        // What an older build left applied: every version in the history, the current one too.
        let a1 = trade("a", 1, 1, Status::Filled);
        apply(&conn, &[(1, older(Kind::Insert, &a1))], &[]).unwrap();
        // ... and a log tail it did not apply: a change of `a`, and a trade created and
        // changed within one run.
        let (a2, b1, b2) =
            (trade("a", 2, 2, Status::Pending), trade("b", 1, 3, Status::Filled), trade("b", 2, 4, Status::Cancelled));
        let tail = [(2, older(Kind::Update, &a2)), (3, older(Kind::Insert, &b1)), (4, older(Kind::Cancel, &b2))];
        apply(&conn, &tail, &[]).unwrap();
        assert_eq!(rows(&conn, "trades"), vec![a2.clone(), b2.clone()]);
        assert_eq!(rows(&conn, "trade_history"), vec![a1, a2, b1, b2], "every version, as older builds kept them");
    }

    #[test]
    fn history_keeps_the_versions_written_within_its_retention() {
        let (_d, conn) = store();
        let old = Trade { updated_at: 1_000_000, ..trade("a", 1, 1, Status::Filled) };
        let mid = Trade { updated_at: 3_000_000, ..trade("a", 2, 2, Status::Pending) };
        let new = Trade { updated_at: 4_000_000, ..trade("a", 3, 3, Status::Filled) };
        let run = [
            (1, Change::insert(old.clone())),
            (2, Change::modify(old, mid.clone())),
            (3, Change::modify(mid.clone(), new.clone())),
        ];
        apply(&conn, &run, &[]).unwrap();
        assert_eq!(trim_history(&conn, 2_000_000).unwrap(), 1);
        assert_eq!(rows(&conn, "trade_history"), vec![mid]);
        assert_eq!(trim_history(&conn, 5_000_000).unwrap(), 1);
        assert_eq!(rows(&conn, "trades"), vec![new], "the current version stays whatever its age");
    }
}
