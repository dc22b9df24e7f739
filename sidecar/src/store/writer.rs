//! The single writer: takes requests from a bounded queue, decides each exactly
//! against the current state (duplicates, stale versions, cancelled trades), writes
//! the changes the requests waiting at that moment make as one group to the commit
//! log, and acknowledges each once the group is flushed (group commit). Then it
//! updates the hot state and the overlay, answers, and hands the changes to the
//! applier, which brings DuckDB up to date in large transactions.
//!
//! Deciding needs the current row of every trade a request touches: an insert asks
//! the id index ([`crate::store::index`]) and reads the row only when the id may exist; a
//! patch or cancel reads it from the overlay (acknowledged, not yet applied) or from
//! DuckDB, in one query per group.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use duckdb::arrow::array::{Array, BooleanArray, Int64Array, StringArray};
use duckdb::{Connection, params_from_iter};
use parking_lot::RwLock;
use tokio::sync::{oneshot, watch};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::applier::{Applier, Job, Progress};
use crate::store::change::{Change, Kind};
use crate::store::db;
use crate::store::index::{IdIndex, Known};
use crate::store::log::{CommitLog, LogError};
use crate::store::model::{NewTrade, Status, Trade, TradePatch, now_micros};
use crate::store::overlay::Overlay;
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

impl WriteOp {
    /// How many changes (log records) this request can make at most.
    fn changes(&self) -> usize {
        match self {
            WriteOp::Insert(trades) => trades.len(),
            WriteOp::Update { .. } | WriteOp::Cancel { .. } | WriteOp::SetWatermark { .. } => 1,
        }
    }
}

type Reply = oneshot::Sender<Result<Vec<Arc<Trade>>>>;

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
    pub async fn submit(&self, op: WriteOp, timeout: Duration) -> Result<Vec<Arc<Trade>>> {
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
    /// A read connection: rows of trades a request changes, when not in the overlay.
    lookup: Connection,
    log: CommitLog,
    index: IdIndex,
    overlay: Arc<Overlay>,
    state: Arc<RwLock<HotState>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    next_seq: i64,
    max_batch: usize,
    /// Most changes one group (one log flush) holds, and most one request makes.
    group_limit: usize,
    max_request_changes: usize,
    /// Most acknowledged changes DuckDB may lag behind before the writer waits.
    max_backlog: i64,
    applier: Option<Sender<Job>>,
    applier_join: Option<std::thread::JoinHandle<()>>,
    /// How far the applier got (applied, checkpointed).
    progress: Arc<Progress>,
    /// The newest snapshot's `seq`: the log keeps what comes after it, so that
    /// snapshot + log can rebuild the database file.
    retain: watch::Receiver<Option<i64>>,
}

/// What the writer is started with besides its connection and settings.
pub(crate) struct Parts {
    /// The commit log, open and replayed into the connection up to `backlog`.
    pub log: CommitLog,
    /// The log's newest changes DuckDB lacks, as the start-up replay left them
    /// ([`applier::replay`](crate::store::applier::replay)): acknowledged before the
    /// restart, taken back as such.
    pub backlog: Vec<(u64, Change)>,
    /// Acknowledged changes DuckDB does not hold yet, shared with the reader.
    pub overlay: Arc<Overlay>,
    /// The hot state, shared with the reader.
    pub state: Arc<RwLock<HotState>>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// Told the last applied `seq` after every DuckDB transaction (followers read
    /// DuckDB and wait on it); it closes when the writer stops.
    pub committed: watch::Sender<i64>,
    /// The newest snapshot's `seq`, when there is one (see [`Writer::trim_log`]).
    pub retain: watch::Receiver<Option<i64>>,
}

/// The outcome of planning one request against the batch's view of the table.
struct Planned {
    result: Result<Vec<Arc<Trade>>>,
    /// Its changes, in sequence order.
    changes: Vec<Change>,
    /// A follower's watermark to record (sink, seq): answered once it is in DuckDB.
    watermark: Option<(String, i64)>,
}

impl Writer {
    /// Starts the writer thread and, behind it, the applier on `conn` (the write
    /// connection); `log` is open and already replayed into `conn`. `committed` is told
    /// the last applied sequence after every DuckDB transaction (followers such as the
    /// journal read DuckDB and wait on it); it closes when the writer stops.
    pub fn spawn(conn: Connection, cfg: &Config, parts: Parts) -> Result<(WriterHandle, std::thread::JoinHandle<()>)> {
        let Parts { log, backlog, overlay, state, metrics, health, committed, retain } = parts;
        let rows: i64 = conn.query_row("SELECT count(*) FROM trades", [], |r| r.get(0))?;
        let index = load_index(&conn, rows as usize)?;
        metrics.index_bytes.set(index.heap_bytes() as i64);
        metrics.hot_state_bytes.set(state.read().heap_bytes() as i64);
        metrics.trade_rows.set(rows);
        metrics.last_seq.set(log.next_seq() as i64 - 1);
        metrics.log_segments.set(log.segment_count() as i64);
        let lookup = conn.try_clone()?;
        let (applier, progress, applier_join) =
            Applier::spawn(conn, cfg, overlay.clone(), metrics.clone(), health.clone(), committed)?;
        let (tx, rx) = sync_channel(cfg.queue_capacity());
        let mut writer = Writer {
            lookup,
            next_seq: log.next_seq() as i64,
            log,
            index,
            overlay,
            state,
            metrics: metrics.clone(),
            health,
            max_batch: cfg.writer.max_batch_requests,
            group_limit: cfg.commit_log.group_limit(),
            max_request_changes: cfg.http.max_batch_trades,
            max_backlog: cfg.writer.max_apply_backlog as i64,
            applier: Some(applier),
            applier_join: Some(applier_join),
            progress,
            retain,
        };
        writer.take_back(backlog);
        let join = std::thread::Builder::new().name("writer".into()).spawn(move || writer.run(rx))?;
        Ok((WriterHandle { tx, closed: Arc::new(AtomicBool::new(false)), metrics }, join))
    }

    fn run(mut self, rx: Receiver<Msg>) {
        let mut stop: Option<oneshot::Sender<()>> = None;
        let mut alone = true;
        while stop.is_none() {
            self.health.beat();
            let next = next_message(&rx, alone);
            let busy = Instant::now();
            let first = match next {
                Ok(Msg::Write(r)) => r,
                Ok(Msg::Shutdown(done)) => {
                    stop = Some(done);
                    break;
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.trim_log();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut changes = first.op.changes();
            let mut batch = vec![first];
            // A group must fit one log flush: stop while any next request still fits.
            while batch.len() < self.max_batch && changes + self.max_request_changes <= self.group_limit {
                match rx.try_recv() {
                    Ok(Msg::Write(r)) => {
                        changes += r.op.changes();
                        batch.push(r);
                    }
                    Ok(Msg::Shutdown(done)) => {
                        stop = Some(done);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.metrics.queue_depth.sub(batch.len() as i64);
            alone = batch.len() == 1;
            match self.wait_for_applier() {
                Ok(()) => self.commit_group(batch),
                Err(why) => refuse_all(batch.into_iter().map(|r| r.reply), &why),
            }
            self.trim_log();
            self.metrics.writer_busy.inc_by(busy.elapsed().as_secs_f64());
            self.health.beat();
        }
        // Anything that raced in behind the shutdown message is refused, not lost:
        // its client gets an error, never an acknowledgement.
        while let Ok(msg) = rx.try_recv() {
            if let Msg::Write(r) = msg {
                self.metrics.queue_depth.dec();
                let _ = r.reply.send(Err(Error::Unavailable("shutting down; not accepting writes".into())));
            }
        }
        // The applier takes what is queued, checkpoints once more and stops.
        drop(self.applier.take());
        if let Some(join) = self.applier_join.take() {
            let _ = join.join();
        }
        if let Some(done) = stop {
            let _ = done.send(());
        }
    }

    /// Waits while DuckDB lags more than `max_backlog` changes behind what was
    /// acknowledged, or while applying fails: the queue fills meanwhile, and a full
    /// queue answers 503 with Retry-After. The beat goes on: a slow applier is not a
    /// wedged writer.
    /// Refuses the group instead while applying fails (nothing more is acknowledged
    /// until DuckDB takes changes again) and once the applier stopped for good (the
    /// process is stopping).
    fn wait_for_applier(&self) -> std::result::Result<(), String> {
        loop {
            let backlog = self.next_seq - 1 - self.progress.applied();
            self.metrics.apply_backlog.set(backlog);
            if self.applier_join.as_ref().is_none_or(|j| j.is_finished()) {
                return Err("the store is stopping: DuckDB failed applying the commit log".into());
            }
            if let Some(why) = self.health.apply_failure() {
                return Err(format!("storage error: DuckDB cannot take the commit log's changes ({why}); retry"));
            }
            if backlog <= self.max_backlog {
                return Ok(());
            }
            self.health.beat();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Deletes the segments nothing needs any more: every change in them is in the
    /// database file itself (applied and checkpointed) and older than the newest
    /// snapshot. Without a snapshot, the checkpoint alone decides (a rebuild from a
    /// snapshot needs one first). A failed delete only keeps a file: logged, retried.
    fn trim_log(&mut self) {
        let snapshot = self.retain.borrow().unwrap_or(i64::MAX);
        let through = self.progress.checkpointed().min(snapshot);
        if through <= 0 {
            return;
        }
        match self.log.remove_through(through as u64) {
            Ok(0) => {}
            Ok(removed) => {
                self.metrics.log_segments.set(self.log.segment_count() as i64);
                tracing::debug!(removed, through, "commit log: removed segments");
            }
            Err(e) => tracing::warn!(error = %e, "commit log: removing old segments failed; will retry"),
        }
    }

    fn commit_group(&mut self, batch: Vec<Request>) {
        let first_seq = self.next_seq;
        let (ops, replies): (Vec<WriteOp>, Vec<Reply>) = batch.into_iter().map(|r| (r.op, r.reply)).unzip();
        let mut planned = match self.plan_group(ops) {
            Ok(planned) => planned,
            Err(e) => {
                self.next_seq = first_seq;
                refuse_all(replies, &self.storage_error(e).to_string());
                return;
            }
        };
        let records: Vec<_> =
            planned.iter().flat_map(|p| &p.changes).map(|c| c.to_record(c.trade().seq as u64)).collect();
        if !records.is_empty() {
            // The histogram is the log's own latency: planning (row lookups in DuckDB
            // included) comes before it and is not the flush.
            let start = Instant::now();
            if let Err(e) = self.log.append(&records) {
                self.next_seq = first_seq;
                let text = e.to_string();
                if !matches!(e, LogError::TooLarge { .. } | LogError::Rotate(_)) {
                    // After a failed write or flush nothing on disk can be trusted to
                    // match: stop, and let the restart read the log back.
                    tracing::error!(error = %text, "commit log write failed; stopping");
                    self.health.set_fatal(text.clone());
                }
                refuse_all(replies, &format!("storage error: {text}"));
                return;
            }
            self.metrics.commit_duration.observe(start.elapsed().as_secs_f64());
        }
        self.metrics.batch_requests.observe(replies.len() as f64);
        self.after_ack(planned.iter().flat_map(|p| &p.changes));
        let changes: Vec<(u64, Change)> =
            planned.iter_mut().flat_map(|p| p.changes.drain(..)).map(|c| (c.trade().seq as u64, c)).collect();
        if !changes.is_empty() {
            self.to_applier(Job::Changes { changes, acked: Instant::now() });
        }
        for (reply, p) in replies.into_iter().zip(planned) {
            match p.watermark {
                // Answered by the applier once the watermark is in DuckDB.
                Some((sink, seq)) => self.to_applier(Job::Watermark { sink, seq, reply }),
                None => {
                    let _ = reply.send(p.result);
                }
            }
        }
    }

    fn to_applier(&self, job: Job) {
        let _ = self.applier.as_ref().expect("the applier runs while the writer does").send(job);
    }

    /// Maps an error from planning (a failed row lookup) to the client's answer; a
    /// fatal one (DuckDB invalidated the database) also stops the process.
    fn storage_error(&self, e: Error) -> Error {
        let text = e.to_string();
        if db::classify(&e) == db::Failure::Fatal {
            tracing::error!(error = %text, "database invalidated; stopping so the restart reopens it");
            self.health.set_fatal(text.clone());
        } else {
            tracing::warn!(error = %text, "write failed");
        }
        match e {
            Error::Db(_) | Error::Io(_) => Error::Unavailable(format!("storage error: {text}")),
            other => other,
        }
    }

    /// Decides `ops` in order against the current state, each seeing the ones before.
    fn plan_group(&mut self, ops: Vec<WriteOp>) -> Result<Vec<Planned>> {
        let now = now_micros();
        let mut lookup: Vec<&str> = Vec::new();
        for op in &ops {
            match op {
                WriteOp::Update { id, .. } | WriteOp::Cancel { id, .. } => lookup.push(id),
                WriteOp::Insert(trades) => lookup.extend(
                    trades.iter().filter_map(|t| t.id.as_deref()).filter(|id| self.index.get(id) != Known::Absent),
                ),
                WriteOp::SetWatermark { .. } => {}
            }
        }
        // The group's view of the table: current rows overlaid with the group's changes
        // (the last request's changes need not be: no later request reads them).
        let mut view: HashMap<String, Trade> = self.load(&lookup)?;
        let last = ops.len() - 1;
        let mut planned = Vec::with_capacity(ops.len());
        for (i, op) in ops.into_iter().enumerate() {
            let p = self.plan(op, &view, now);
            if i < last {
                for change in &p.changes {
                    view.insert(change.trade().id.clone(), change.trade().clone());
                }
            }
            planned.push(p);
        }
        Ok(planned)
    }

    /// Decides one request against the batch's current view, assigning sequence numbers.
    fn plan(&mut self, op: WriteOp, view: &HashMap<String, Trade>, now: i64) -> Planned {
        let refuse = |e: Error| Planned { result: Err(e), changes: vec![], watermark: None };
        match op {
            WriteOp::Insert(trades) => {
                let mut changes = Vec::with_capacity(trades.len());
                let mut ids = HashSet::new();
                let several = trades.len() > 1;
                let seq0 = self.next_seq;
                for (i, mut t) in trades.into_iter().enumerate() {
                    let id = t.id.take().unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
                    if let Some(cur) = view.get(&id) {
                        self.next_seq = seq0;
                        return refuse(Error::Conflict {
                            reason: format!("trade {id} already exists"),
                            current: Some(Box::new(cur.clone())),
                        });
                    }
                    if several && !ids.insert(id.clone()) {
                        self.next_seq = seq0;
                        return refuse(Error::Invalid(crate::store::model::FieldError {
                            field: format!("trades[{i}].id"),
                            message: format!("id {id} appears twice in this batch"),
                        }));
                    }
                    let seq = self.take_seq();
                    changes.push(Change::insert(t.into_trade(id, seq, now)));
                }
                let result = changes.iter().map(|c| c.after.clone()).collect();
                Planned { result: Ok(result), changes, watermark: None }
            }
            WriteOp::Update { id, patch } => match view.get(&id) {
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
                Some(cur) if changes_nothing(&patch, cur) => unchanged(cur),
                Some(cur) => {
                    let after = patch.apply(cur, self.take_seq(), now);
                    changed(cur, after)
                }
            },
            WriteOp::SetWatermark { sink, seq } => {
                Planned { result: Ok(vec![]), changes: vec![], watermark: Some((sink, seq)) }
            }
            WriteOp::Cancel { id, expected_version } => match view.get(&id) {
                None => refuse(Error::NotFound(format!("trade {id}"))),
                Some(cur) if expected_version.is_some_and(|v| v != cur.version) => refuse(Error::Conflict {
                    reason: format!("trade {id} is at version {}, not {}", cur.version, expected_version.unwrap_or(0)),
                    current: Some(Box::new(cur.clone())),
                }),
                // Cancelling twice is idempotent: the trade is returned unchanged.
                Some(cur) if cur.status == Status::Cancelled => unchanged(cur),
                Some(cur) => {
                    let mut after = cur.clone();
                    after.status = Status::Cancelled;
                    after.version += 1;
                    after.seq = self.take_seq();
                    after.updated_at = now;
                    changed(cur, after)
                }
            },
        }
    }

    fn take_seq(&mut self) -> i64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// The current rows of `ids`: from the overlay when acknowledged but not yet
    /// applied, else from DuckDB (in chunks, one query each). The applier removes a
    /// row from the overlay only after committing it, so a miss there finds it in DuckDB.
    fn load(&self, ids: &[&str]) -> Result<HashMap<String, Trade>> {
        let mut out = HashMap::with_capacity(ids.len());
        let mut unique: Vec<&str> = ids.iter().copied().collect::<HashSet<_>>().into_iter().collect();
        unique.retain(|id| match self.overlay.get(id) {
            Some(t) => {
                out.insert(t.id.clone(), t);
                false
            }
            None => true,
        });
        for chunk in unique.chunks(512) {
            let placeholders = vec!["?"; chunk.len()].join(", ");
            let sql = format!("SELECT {} FROM trades WHERE id IN ({placeholders})", db::TRADE_COLUMNS);
            let mut stmt = self.lookup.prepare(&sql)?;
            let rows = stmt.query_map(params_from_iter(chunk.iter()), db::trade_from_row)?;
            for row in rows {
                let t = row?;
                out.insert(t.id.clone(), t);
            }
        }
        Ok(out)
    }

    /// The group is durable: record it in the index, the overlay and the hot state.
    fn after_ack<'a>(&mut self, changes: impl Iterator<Item = &'a Change> + Clone) {
        let mut state = self.state.write();
        let mut inserted = 0;
        for c in changes.clone() {
            let (after, new) = (c.trade(), c.kind == Kind::Insert);
            inserted += i64::from(new);
            self.index.record(&after.id, after.version, after.status == Status::Cancelled, new);
            state.apply(c.before.as_ref(), &c.after);
        }
        self.overlay.acknowledged(changes.map(|c| &c.after));
        self.metrics.trade_rows.add(inserted);
        self.metrics.last_seq.set(self.next_seq - 1);
        self.metrics.log_segments.set(self.log.segment_count() as i64);
        self.metrics.index_bytes.set(self.index.heap_bytes() as i64);
        self.metrics.hot_state_bytes.set(state.heap_bytes() as i64);
    }

    /// Takes back the changes acknowledged before a restart that DuckDB lacks, as they
    /// were then: in the index, the overlay and the hot state, and queued for the
    /// applier. Replaying them into DuckDB before serving cost 3–5 µs a change (the
    /// Appender's), this less than half of that, so the store is ready sooner and the
    /// applier catches up while it serves. Its time counts as the replay's.
    fn take_back(&mut self, backlog: Vec<(u64, Change)>) {
        if backlog.is_empty() {
            return;
        }
        let start = Instant::now();
        self.after_ack(backlog.iter().map(|(_, c)| c));
        self.to_applier(Job::Changes { changes: backlog, acked: Instant::now() });
        self.metrics.log_replay_seconds.add(start.elapsed().as_secs_f64());
    }
}

/// How long the idle writer polls its channel before it sleeps on it, after a group of one
/// request. With a single client the next request comes a round trip (~0.1 ms) after the
/// last reply, and a sleeping writer costs that request a futex wake-up on top; past this
/// it sleeps, so an idle store spins only 200 µs per 250 ms wait. After a larger group it
/// does not spin: several clients keep both CPUs busy, and polling took the CPU the HTTP
/// workers needed to bring the next requests (a fifth of the writer's samples at 64
/// clients, `perf`; docs/benchmarks.md, session 11). It polls with `sched_yield`, not a
/// busy loop: while an applier transaction holds the other CPU, the client's request and
/// its HTTP worker run on this one instead of waiting out the poll (1 client +10%,
/// session 13).
const SPIN: Duration = Duration::from_micros(200);

/// The next message: polled for [`SPIN`] when `spin` (the last group was one request),
/// then waited for up to 250 ms (the health beat and the log trimming run between waits).
fn next_message(rx: &Receiver<Msg>, spin: bool) -> std::result::Result<Msg, RecvTimeoutError> {
    let start = Instant::now();
    while spin && start.elapsed() < SPIN {
        match rx.try_recv() {
            Ok(msg) => return Ok(msg),
            Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
            Err(TryRecvError::Empty) => std::thread::yield_now(),
        }
    }
    rx.recv_timeout(Duration::from_millis(250))
}

/// Answers every request of a group with 503 and `why`: nothing of it was written.
fn refuse_all(replies: impl IntoIterator<Item = Reply>, why: &str) {
    for reply in replies {
        let _ = reply.send(Err(Error::Unavailable(why.to_string())));
    }
}

/// A request that leaves `cur` as it is: answered with it, nothing written.
fn unchanged(cur: &Trade) -> Planned {
    Planned { result: Ok(vec![Arc::new(cur.clone())]), changes: vec![], watermark: None }
}

/// A request that takes `cur` to `after`.
fn changed(cur: &Trade, after: Trade) -> Planned {
    let change = Change::modify(cur.clone(), after);
    Planned { result: Ok(vec![change.after.clone()]), changes: vec![change], watermark: None }
}

/// The id index from the table: every trade's version and whether it is cancelled.
/// Read column by column from DuckDB's Arrow batches, the ids in place: a store of
/// millions of trades spent most of its start-up here row by row (docs/benchmarks.md,
/// session 15).
fn load_index(conn: &Connection, rows: usize) -> Result<IdIndex> {
    let mut index = IdIndex::with_capacity(rows);
    let sql = format!("SELECT id, version, status = '{}' FROM trades", Status::Cancelled.as_str());
    let mut stmt = conn.prepare(&sql)?;
    for batch in stmt.query_arrow([])? {
        let column = |i: usize| batch.column(i).as_any();
        let unexpected = || Error::Internal("the id index query returned unexpected column types".into());
        let ids = column(0).downcast_ref::<StringArray>().ok_or_else(unexpected)?;
        let versions = column(1).downcast_ref::<Int64Array>().ok_or_else(unexpected)?;
        let cancelled = column(2).downcast_ref::<BooleanArray>().ok_or_else(unexpected)?;
        for i in 0..batch.num_rows() {
            index.record(ids.value(i), versions.value(i), cancelled.value(i), true);
        }
    }
    Ok(index)
}

/// True when applying `patch` to `current` leaves every field of the trade as it is.
fn changes_nothing(patch: &TradePatch, current: &Trade) -> bool {
    let patched = patch.apply(current, current.seq, current.updated_at);
    Trade { version: current.version, ..patched } == *current
}
