//! The single writer: owns the read-write connection, takes requests from a bounded
//! queue, folds the requests waiting at that moment into one transaction (group
//! commit), and acknowledges each only after COMMIT returned, i.e. after DuckDB
//! wrote and fsynced the WAL. Then it updates the hot state and answers.
//!
//! A group whose transaction fails (a duplicate id only the primary key caught, a
//! storage error) is rolled back and replayed one request per transaction, each
//! request with its own existence checks, so one bad request never fails others.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use duckdb::{Connection, params_from_iter};
use parking_lot::RwLock;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::db;
use crate::store::model::{NewTrade, Status, Trade, TradePatch, now_micros};
use crate::store::state::HotState;
use crate::telemetry::health::Health;
use crate::telemetry::metrics::Metrics;

/// A validated change request.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Insert these trades atomically: all or none.
    Insert(Vec<NewTrade>),
    /// Change one trade if it still has `patch.expected_version`.
    Update {
        /// Trade id.
        id: String,
        /// The change.
        patch: TradePatch,
    },
    /// Record that sink `sink` has received every change up to `seq` (a follower's
    /// durable watermark; never moves backwards).
    SetWatermark {
        /// Sink name, e.g. `clickhouse`.
        sink: String,
        /// Highest delivered sequence.
        seq: i64,
    },
    /// Cancel one trade (optionally only at an expected version).
    Cancel {
        /// Trade id.
        id: String,
        /// Refuse unless the trade has this version.
        expected_version: Option<i64>,
    },
}

type Reply = oneshot::Sender<Result<Vec<Trade>>>;

struct Request {
    op: WriteOp,
    reply: Reply,
}

enum Msg {
    Write(Request),
    Shutdown(oneshot::Sender<()>),
}

/// The handle request handlers use to reach the writer.
#[derive(Clone)]
pub struct WriterHandle {
    tx: SyncSender<Msg>,
    closed: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl WriterHandle {
    /// Queues a write and waits for its durable commit (or `timeout`).
    /// A full queue is refused at once with [`Error::Unavailable`].
    pub async fn submit(&self, op: WriteOp, timeout: Duration) -> Result<Vec<Trade>> {
        if self.closed.load(Ordering::SeqCst) {
            self.metrics.writes_rejected.with_label_values(&["shutting_down"]).inc();
            return Err(Error::Unavailable("shutting down; not accepting writes".into()));
        }
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Msg::Write(Request { op, reply })) {
            Ok(()) => self.metrics.queue_depth.inc(),
            Err(TrySendError::Full(_)) => {
                self.metrics.writes_rejected.with_label_values(&["queue_full"]).inc();
                return Err(Error::Unavailable("write queue is full".into()));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(Error::Unavailable("writer stopped".into()));
            }
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Unavailable("writer stopped before committing".into())),
            Err(_) => Err(Error::Unavailable(format!(
                "commit not confirmed within {timeout:?}; it may still commit, re-read before retrying"
            ))),
        }
    }

    /// Refuses new writes from now on.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Closes the queue, lets the writer commit everything queued before this call,
    /// run a final CHECKPOINT and stop. Resolves when it has.
    pub async fn shutdown(&self) {
        self.close();
        let (done, rx) = oneshot::channel();
        // A blocking send: the queue may be full of work that must finish first.
        let tx = self.tx.clone();
        let sent = tokio::task::spawn_blocking(move || tx.send(Msg::Shutdown(done)).is_ok()).await;
        if matches!(sent, Ok(true)) {
            let _ = rx.await;
        }
    }
}

/// The writer's own state; lives on a dedicated thread.
pub struct Writer {
    conn: Connection,
    db_path: PathBuf,
    state: Arc<RwLock<HotState>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    next_seq: i64,
    max_batch: usize,
    checkpoint_every_commits: u64,
    max_wal_bytes: u64,
    commits_since_checkpoint: u64,
    /// WAL size seen after the last commit (or checkpoint), to notice DuckDB's own checkpoints.
    wal_seen: u64,
    /// A commit changed rows since `wal_seen` was taken.
    wrote_since_wal_seen: bool,
    committed: tokio::sync::watch::Sender<i64>,
}

/// The outcome of planning one request against the batch's view of the table.
struct Planned {
    result: Result<Vec<Trade>>,
    /// (row before, row after) per change, in sequence order.
    changes: Vec<(Option<Trade>, Trade)>,
}

impl Writer {
    /// Starts the writer thread on `conn` and returns its handle and join handle.
    /// `committed` is told the last committed sequence after every commit (followers
    /// such as the journal wait on it); it closes when the writer stops.
    pub fn spawn(
        conn: Connection,
        cfg: &Config,
        state: Arc<RwLock<HotState>>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        committed: tokio::sync::watch::Sender<i64>,
    ) -> Result<(WriterHandle, std::thread::JoinHandle<()>)> {
        let last_seq: i64 = conn.query_row("SELECT coalesce(max(seq), 0) FROM trades", [], |r| r.get(0))?;
        let rows: i64 = conn.query_row("SELECT count(*) FROM trades", [], |r| r.get(0))?;
        metrics.trade_rows.set(rows);
        metrics.last_seq.set(last_seq);
        let (tx, rx) = sync_channel(cfg.queue_capacity());
        let writer = Writer {
            conn,
            db_path: cfg.database_path(),
            state,
            metrics: metrics.clone(),
            health,
            next_seq: last_seq + 1,
            max_batch: cfg.writer.max_batch_requests,
            checkpoint_every_commits: cfg.duckdb.checkpoint_every_commits,
            max_wal_bytes: cfg.duckdb.max_wal_bytes,
            commits_since_checkpoint: 0,
            wal_seen: db::wal_size(&cfg.database_path()),
            wrote_since_wal_seen: false,
            committed,
        };
        let join = std::thread::Builder::new().name("writer".into()).spawn(move || writer.run(rx))?;
        Ok((WriterHandle { tx, closed: Arc::new(AtomicBool::new(false)), metrics }, join))
    }

    fn run(mut self, rx: Receiver<Msg>) {
        let mut stop: Option<oneshot::Sender<()>> = None;
        while stop.is_none() {
            self.health.beat();
            let first = match rx.recv_timeout(Duration::from_millis(250)) {
                Ok(Msg::Write(r)) => r,
                Ok(Msg::Shutdown(done)) => {
                    stop = Some(done);
                    break;
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = vec![first];
            while batch.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(Msg::Write(r)) => batch.push(r),
                    Ok(Msg::Shutdown(done)) => {
                        stop = Some(done);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.metrics.queue_depth.sub(batch.len() as i64);
            self.commit_group(batch);
            self.health.beat();
            self.maybe_checkpoint();
        }
        // Anything that raced in behind the shutdown message is refused, not lost:
        // its client gets an error, never an acknowledgement.
        while let Ok(msg) = rx.try_recv() {
            if let Msg::Write(r) = msg {
                self.metrics.queue_depth.dec();
                let _ = r.reply.send(Err(Error::Unavailable("shutting down; not accepting writes".into())));
            }
        }
        match self.conn.execute_batch("CHECKPOINT") {
            Ok(()) => tracing::info!("final checkpoint done"),
            Err(e) => tracing::error!(error = %e, "final checkpoint failed; the WAL will be replayed on start"),
        }
        if let Some(done) = stop {
            let _ = done.send(());
        }
    }

    fn commit_group(&mut self, batch: Vec<Request>) {
        let start = Instant::now();
        let first_seq = self.next_seq;
        let ops: Vec<&WriteOp> = batch.iter().map(|r| &r.op).collect();
        match self.transaction(&ops, false) {
            Ok(planned) => {
                self.metrics.commit_duration.observe(start.elapsed().as_secs_f64());
                self.metrics.batch_requests.observe(batch.len() as f64);
                for (req, p) in batch.into_iter().zip(planned) {
                    let _ = req.reply.send(p.result);
                }
            }
            Err(e) => {
                self.next_seq = first_seq;
                if batch.len() > 1 {
                    tracing::debug!(error = %e, size = batch.len(), "group commit failed; retrying one by one");
                    self.metrics.batch_fallbacks.inc();
                }
                for req in batch {
                    let result = match self.transaction(&[&req.op], true) {
                        Ok(mut planned) => planned.remove(0).result,
                        Err(e) => Err(self.storage_error(e)),
                    };
                    let _ = req.reply.send(result);
                }
            }
        }
    }

    /// Maps an error from a failed transaction to the client's answer; a fatal one
    /// (DuckDB invalidated the database) also stops the process, see [`Writer::fatal`].
    fn storage_error(&self, e: Error) -> Error {
        let text = e.to_string();
        if db::classify(&e) == db::Failure::Fatal {
            self.fatal(&text);
        } else {
            tracing::warn!(error = %text, "write failed");
        }
        match e {
            Error::Db(_) | Error::Io(_) => Error::Unavailable(format!("storage error: {text}")),
            other => other,
        }
    }

    /// DuckDB invalidated the database: every later statement fails, whether or not
    /// space or memory comes back. Recorded as fatal, which fails liveness and stops
    /// the process; the restart reopens the file and replays the WAL (every
    /// acknowledged commit is in it).
    fn fatal(&self, text: &str) {
        tracing::error!(error = %text, "database invalidated; stopping so the restart reopens it");
        self.health.set_fatal(text.to_string());
    }

    /// Plans `ops` against the table, writes the final rows and commits; on any
    /// error rolls back and returns it. `careful` also checks insert ids up front
    /// (the one-by-one path); the group path relies on the primary key instead.
    fn transaction(&mut self, ops: &[&WriteOp], careful: bool) -> Result<Vec<Planned>> {
        self.conn.execute_batch("BEGIN TRANSACTION")?;
        let outcome = self.plan_and_write(ops, careful).and_then(|planned| {
            self.conn.execute_batch("COMMIT")?;
            Ok(planned)
        });
        match outcome {
            Ok(planned) => {
                self.after_commit(&planned);
                Ok(planned)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    fn plan_and_write(&mut self, ops: &[&WriteOp], careful: bool) -> Result<Vec<Planned>> {
        let now = now_micros();
        let mut lookup: Vec<&str> = Vec::new();
        for op in ops {
            match op {
                WriteOp::Update { id, .. } | WriteOp::Cancel { id, .. } => lookup.push(id),
                WriteOp::Insert(trades) if careful => {
                    lookup.extend(trades.iter().filter_map(|t| t.id.as_deref()));
                }
                WriteOp::Insert(_) | WriteOp::SetWatermark { .. } => {}
            }
        }
        let stored = self.load(&lookup)?;
        // The batch's view of the table: stored rows overlaid with this batch's changes.
        let mut view: HashMap<String, Trade> = stored.clone();
        let mut planned = Vec::with_capacity(ops.len());
        for op in ops {
            let p = self.plan(op, &view, now);
            for (_, after) in &p.changes {
                view.insert(after.id.clone(), after.clone());
            }
            planned.push(p);
        }
        for op in ops {
            if let WriteOp::SetWatermark { sink, seq } = op {
                self.conn.execute(
                    "INSERT INTO sync_state VALUES (?, ?, now()::TIMESTAMP) ON CONFLICT (sink) DO UPDATE \
                     SET watermark = greatest(watermark, excluded.watermark), updated_at = excluded.updated_at",
                    duckdb::params![sink, seq],
                )?;
            }
        }
        // Write each touched row once, in its final state.
        let mut finals: Vec<&Trade> = Vec::new();
        let mut seen = HashSet::new();
        for p in planned.iter().rev() {
            for (_, after) in p.changes.iter().rev() {
                if seen.insert(after.id.as_str()) {
                    finals.push(&view[&after.id]);
                }
            }
        }
        let (new_rows, changed_rows): (Vec<&Trade>, Vec<&Trade>) =
            finals.into_iter().partition(|t| !stored.contains_key(&t.id));
        if !new_rows.is_empty() {
            let mut app = self.conn.appender("trades")?;
            for t in &new_rows {
                app.append_row(db::row_values(t))?;
            }
            app.flush()?;
        }
        if !changed_rows.is_empty() {
            // Same column order as the table (and as the appender): $1 is the id.
            let mut stmt = self.conn.prepare_cached(
                "UPDATE trades SET symbol = $2, side = $3, quantity = $4, price = $5, status = $6, ts = $7, \
                 version = $8, seq = $9, created_at = $10, updated_at = $11 WHERE id = $1",
            )?;
            for t in changed_rows {
                stmt.execute(params_from_iter(db::row_values(t)))?;
            }
        }
        Ok(planned)
    }

    /// Decides one request against the batch's current view, assigning sequence numbers.
    fn plan(&mut self, op: &WriteOp, view: &HashMap<String, Trade>, now: i64) -> Planned {
        let refuse = |e: Error| Planned { result: Err(e), changes: vec![] };
        match op {
            WriteOp::Insert(trades) => {
                let mut changes = Vec::with_capacity(trades.len());
                let mut ids = HashSet::new();
                let seq0 = self.next_seq;
                for (i, t) in trades.iter().enumerate() {
                    let id = t.id.clone().unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
                    if let Some(cur) = view.get(&id) {
                        self.next_seq = seq0;
                        return refuse(Error::Conflict {
                            reason: format!("trade {id} already exists"),
                            current: Some(Box::new(cur.clone())),
                        });
                    }
                    if !ids.insert(id.clone()) {
                        self.next_seq = seq0;
                        return refuse(Error::Invalid(crate::store::model::FieldError {
                            field: format!("trades[{i}].id"),
                            message: format!("id {id} appears twice in this batch"),
                        }));
                    }
                    let seq = self.take_seq();
                    changes.push((None, t.clone().into_trade(id, seq, now)));
                }
                Planned { result: Ok(changes.iter().map(|(_, t)| t.clone()).collect()), changes }
            }
            WriteOp::Update { id, patch } => match view.get(id) {
                None => refuse(Error::NotFound(format!("trade {id}"))),
                Some(cur) if cur.status == Status::Cancelled => refuse(Error::Conflict {
                    reason: format!("trade {id} is cancelled"),
                    current: Some(Box::new(cur.clone())),
                }),
                Some(cur) if cur.version != patch.expected_version => refuse(Error::Conflict {
                    reason: format!("trade {id} is at version {}, not {}", cur.version, patch.expected_version),
                    current: Some(Box::new(cur.clone())),
                }),
                // Nothing would change: answer with the trade as it is (same version and
                // seq) instead of minting a version that differs only in its number.
                Some(cur) if changes_nothing(patch, cur) => Planned { result: Ok(vec![cur.clone()]), changes: vec![] },
                Some(cur) => {
                    let after = patch.apply(cur, self.take_seq(), now);
                    Planned { result: Ok(vec![after.clone()]), changes: vec![(Some(cur.clone()), after)] }
                }
            },
            WriteOp::SetWatermark { .. } => Planned { result: Ok(vec![]), changes: vec![] },
            WriteOp::Cancel { id, expected_version } => match view.get(id) {
                None => refuse(Error::NotFound(format!("trade {id}"))),
                Some(cur) if expected_version.is_some_and(|v| v != cur.version) => refuse(Error::Conflict {
                    reason: format!("trade {id} is at version {}, not {}", cur.version, expected_version.unwrap_or(0)),
                    current: Some(Box::new(cur.clone())),
                }),
                // Cancelling twice is idempotent: the trade is returned unchanged.
                Some(cur) if cur.status == Status::Cancelled => {
                    Planned { result: Ok(vec![cur.clone()]), changes: vec![] }
                }
                Some(cur) => {
                    let mut after = cur.clone();
                    after.status = Status::Cancelled;
                    after.version += 1;
                    after.seq = self.take_seq();
                    after.updated_at = now;
                    Planned { result: Ok(vec![after.clone()]), changes: vec![(Some(cur.clone()), after)] }
                }
            },
        }
    }

    fn take_seq(&mut self) -> i64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Loads the stored rows for `ids` (in chunks, one query each).
    fn load(&self, ids: &[&str]) -> Result<HashMap<String, Trade>> {
        let mut out = HashMap::with_capacity(ids.len());
        let unique: Vec<&str> = ids.iter().copied().collect::<HashSet<_>>().into_iter().collect();
        for chunk in unique.chunks(512) {
            let placeholders = vec!["?"; chunk.len()].join(", ");
            let sql = format!("SELECT {} FROM trades WHERE id IN ({placeholders})", db::TRADE_COLUMNS);
            let mut stmt = self.conn.prepare(&sql)?;
            let rows = stmt.query_map(params_from_iter(chunk.iter()), db::trade_from_row)?;
            for row in rows {
                let t = row?;
                out.insert(t.id.clone(), t);
            }
        }
        Ok(out)
    }

    fn after_commit(&mut self, planned: &[Planned]) {
        self.metrics.commits.inc();
        self.commits_since_checkpoint += 1;
        let mut state = self.state.write();
        let mut inserted = 0;
        self.wrote_since_wal_seen |= planned.iter().any(|p| !p.changes.is_empty());
        for p in planned {
            for (before, after) in &p.changes {
                if before.is_none() {
                    inserted += 1;
                }
                state.apply(before.as_ref(), after);
            }
        }
        self.metrics.trade_rows.add(inserted);
        self.metrics.last_seq.set(state.last_seq());
        self.committed.send_replace(state.last_seq());
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
            self.metrics.auto_checkpoints.inc();
            self.metrics.last_checkpoint.set(chrono::Utc::now().timestamp());
            tracing::debug!(wal_bytes = wal, "DuckDB checkpointed by itself");
        }
    }

    fn maybe_checkpoint(&mut self) {
        let wal = db::wal_size(&self.db_path);
        self.metrics.wal_bytes.set(wal as i64);
        self.note_duckdb_checkpoint(wal);
        let by_count =
            self.checkpoint_every_commits > 0 && self.commits_since_checkpoint >= self.checkpoint_every_commits;
        if !(by_count || wal > self.max_wal_bytes) {
            return;
        }
        let start = Instant::now();
        match self.conn.execute_batch("CHECKPOINT") {
            Ok(()) => {
                self.commits_since_checkpoint = 0;
                self.metrics.checkpoints.inc();
                self.metrics.last_checkpoint.set(chrono::Utc::now().timestamp());
                self.wal_seen = db::wal_size(&self.db_path);
                self.metrics.wal_bytes.set(self.wal_seen as i64);
                tracing::debug!(elapsed_ms = start.elapsed().as_millis() as u64, wal_before = wal, "checkpoint");
            }
            Err(e) => match Error::from(e) {
                // A checkpoint that failed on a full disk invalidates the database.
                e if db::classify(&e) == db::Failure::Fatal => self.fatal(&e.to_string()),
                e => tracing::warn!(error = %e, "checkpoint failed; will retry after the next commit"),
            },
        }
    }
}

/// True when applying `patch` to `current` leaves every field of the trade as it is.
fn changes_nothing(patch: &TradePatch, current: &Trade) -> bool {
    let patched = patch.apply(current, current.seq, current.updated_at);
    Trade { version: current.version, ..patched } == *current
}
