//! The read path: a pool of connections to the same database instance the writer
//! uses (DuckDB lets only one process open the file), so reads never queue behind
//! writes. Hot reads (trade state, recently changed trades) are answered from the
//! writer's in-memory state and never touch DuckDB.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use duckdb::{Connection, params_from_iter};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::store::model::{Status, Trade};
use crate::store::money::{Sum8, Sum16};
use crate::store::overlay::Overlay;
use crate::store::state::{HotState, SymbolState};
use crate::store::{applier, db};

/// Hands out clones of one base connection (same database instance).
struct CloneManager {
    base: Mutex<Connection>,
}

impl r2d2::ManageConnection for CloneManager {
    type Connection = Connection;
    type Error = duckdb::Error;

    fn connect(&self) -> Result<Connection, duckdb::Error> {
        self.base.lock().try_clone()
    }

    fn is_valid(&self, conn: &mut Connection) -> Result<(), duckdb::Error> {
        conn.execute_batch("SELECT 1")
    }

    fn has_broken(&self, _: &mut Connection) -> bool {
        false
    }
}

/// A list query: trades of one symbol in a time range, oldest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListQuery {
    /// Symbol to list.
    pub symbol: String,
    /// Inclusive lower bound of `ts` (epoch µs).
    pub from: Option<i64>,
    /// Exclusive upper bound of `ts` (epoch µs).
    pub to: Option<i64>,
    /// Continue after this `(ts, id)` position.
    pub after: Option<(i64, String)>,
    /// Page size.
    pub limit: usize,
    /// Include cancelled trades.
    pub include_cancelled: bool,
}

/// One page of trades.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Page {
    /// The trades.
    pub trades: Vec<Trade>,
    /// Cursor for the next page, when there may be one.
    pub next: Option<String>,
}

/// The read side.
#[derive(Clone)]
pub(crate) struct Reader {
    pool: r2d2::Pool<CloneManager>,
    state: Arc<RwLock<HotState>>,
    overlay: Arc<Overlay>,
    /// The last `seq` DuckDB holds (the applier's).
    applied: watch::Receiver<i64>,
}

/// Longest a list waits for DuckDB to take in what was acknowledged before it.
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);

/// Most acknowledged-not-applied trades a list merges over DuckDB's rows; behind a
/// larger backlog it waits for DuckDB. The overlay is copied (a pointer a trade)
/// under its read lock, which holds the writer's next acknowledgement off meanwhile.
const MAX_MERGED: usize = 8192;

impl Reader {
    /// Builds a pool of `size` connections cloned from `base`.
    pub(crate) fn new(
        base: Connection,
        size: u32,
        acquire_timeout: Duration,
        state: Arc<RwLock<HotState>>,
        overlay: Arc<Overlay>,
        applied: watch::Receiver<i64>,
    ) -> Result<Self> {
        let pool = r2d2::Pool::builder()
            .max_size(size)
            .min_idle(Some(1))
            .connection_timeout(acquire_timeout)
            .test_on_check_out(false)
            .build(CloneManager { base: Mutex::new(base) })
            .map_err(|e| Error::Internal(format!("read pool: {e}")))?;
        Ok(Reader { pool, state, overlay, applied })
    }

    /// Runs `f` on a pooled read connection off the async runtime.
    pub(crate) async fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.get().map_err(|e| Error::dependency("no free read connection", e))?;
            let result = f(&conn);
            if result.is_err() {
                // An error inside a transaction (out of memory in a snapshot's copy, say)
                // leaves it aborted; the connection goes back to the pool, and every
                // later query on it would fail with "Current transaction is aborted".
                let _ = conn.execute_batch("ROLLBACK");
            }
            result
        })
        .await
        .map_err(|e| Error::Internal(format!("read task failed: {e}")))?
    }

    /// One trade by id: acknowledged but not yet applied (the overlay), recently
    /// changed (the hot window), else from DuckDB.
    pub(crate) async fn trade(&self, id: &str) -> Result<Trade> {
        if let Some(t) = self.overlay.get(id) {
            return Ok(t);
        }
        if let Some(t) = self.state.read().recent_trade(id) {
            return Ok(t);
        }
        let id = id.to_string();
        self.with_conn(move |conn| {
            let sql = format!("SELECT {} FROM trades WHERE id = ?", db::TRADE_COLUMNS);
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query_map([&id], db::trade_from_row)?;
            match rows.next() {
                Some(t) => Ok(t?),
                None => Err(Error::NotFound(format!("trade {id}"))),
            }
        })
        .await
    }

    /// Every version of trade `id` the store holds, oldest first, with every change
    /// acknowledged before the call: the superseded ones the history keeps, and the
    /// current one (`UNION` drops the copy of it that histories written by older builds
    /// hold). The history has no index (it is append-only and bounded by
    /// `history.retention`): a scan of it, for an audit, not a hot path.
    ///
    /// It waits for DuckDB only when this trade has a change DuckDB does not hold yet
    /// (the overlay has its image), and only for that change: otherwise DuckDB holds
    /// every version of it already, and a history read need not wait out the applier's
    /// gathering or a checkpoint for other trades' changes.
    pub(crate) async fn history(&self, id: &str) -> Result<Vec<Trade>> {
        if let Some(pending) = self.overlay.get(id) {
            self.applied_through(self.overlay.await_seq(pending.seq)).await?;
        }
        let id = id.to_string();
        self.with_conn(move |conn| {
            let cols = db::TRADE_COLUMNS;
            let sql = format!(
                "SELECT {cols} FROM trade_history WHERE id = $1 UNION SELECT {cols} FROM trades WHERE id = $1 \
                 ORDER BY version"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let versions = stmt.query_map([&id], db::trade_from_row)?.collect::<duckdb::Result<Vec<_>>>()?;
            if versions.is_empty() {
                return Err(Error::NotFound(format!("trade {id}")));
            }
            Ok(versions)
        })
        .await
    }

    /// The current state of every trade changed after sequence `seq`, oldest change
    /// first, at most `limit` (what the journal and the sync follow).
    pub(crate) async fn changes_after(&self, seq: i64, limit: usize) -> Result<Vec<Trade>> {
        self.with_conn(move |conn| {
            let sql = format!("SELECT {} FROM trades WHERE seq > ? ORDER BY seq LIMIT {limit}", db::TRADE_COLUMNS);
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map([seq], db::trade_from_row)?;
            Ok(rows.collect::<duckdb::Result<Vec<Trade>>>()?)
        })
        .await
    }

    /// Waits until DuckDB holds every change acknowledged before this call, so a query
    /// shows what clients were told is stored (the apply lag: milliseconds).
    pub(crate) async fn caught_up(&self) -> Result<()> {
        self.applied_through(self.overlay.await_acked()).await
    }

    /// Waits until DuckDB holds every change up to `target`.
    async fn applied_through(&self, target: i64) -> Result<()> {
        let mut applied = self.applied.clone();
        match tokio::time::timeout(CATCH_UP_WAIT, applied.wait_for(|a| *a >= target)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::Unavailable("the store is stopping".into())),
            Err(_) => Err(Error::Unavailable(format!(
                "DuckDB is behind the commit log (at seq {}, acknowledged {target}); retry",
                *self.applied.borrow()
            ))),
        }
    }

    /// A page of trades for one symbol, ordered by (ts, id), with every change
    /// acknowledged before the call: DuckDB's rows with the overlay's newer images over
    /// them ([`list_page`]), so a list does not wait for the applier — unless the overlay
    /// holds more than [`MAX_MERGED`] trades, when it waits for DuckDB instead.
    pub(crate) async fn list(&self, q: ListQuery) -> Result<Page> {
        let pending = match self.overlay.pending(MAX_MERGED) {
            Some(pending) => pending,
            None => {
                self.caught_up().await?;
                Vec::new()
            }
        };
        self.with_conn(move |conn| list_page(conn, &q, &pending)).await
    }

    /// Trade state of one symbol (hot, from memory).
    pub(crate) fn symbol_state(&self, symbol: &str) -> Option<SymbolState> {
        self.state.read().symbol(symbol)
    }

    /// Trade state of the given symbols that have filled trades (hot, from memory).
    pub(crate) fn symbol_states<'a>(&self, symbols: impl Iterator<Item = &'a str>) -> Vec<SymbolState> {
        let s = self.state.read();
        let wanted: std::collections::BTreeSet<&str> = symbols.collect();
        wanted.into_iter().filter_map(|sym| s.symbol(sym)).collect()
    }

    /// Runs `f` with the hot state read-locked (the writer cannot apply a commit meanwhile).
    pub(crate) fn with_state<T>(&self, f: impl FnOnce(&HotState) -> T) -> T {
        f(&self.state.read())
    }

    /// Trade state of all symbols and the last committed sequence (hot, from memory).
    pub(crate) fn all_state(&self) -> (Vec<SymbolState>, i64) {
        let s = self.state.read();
        (s.all_symbols(), s.last_seq())
    }
}

impl ListQuery {
    /// Whether `t` belongs in this list (the SQL of [`list_rows`], in Rust).
    fn matches(&self, t: &Trade) -> bool {
        t.symbol == self.symbol
            && (self.include_cancelled || t.status != Status::Cancelled)
            && self.from.is_none_or(|from| t.ts >= from)
            && self.to.is_none_or(|to| t.ts < to)
            && self.after.as_ref().is_none_or(|(ts, id)| (t.ts, t.id.as_str()) > (*ts, id.as_str()))
    }
}

/// A page of `q`: DuckDB's rows, in one read transaction with the `seq` it has
/// applied, and over them the images of `pending` (the overlay, taken before) that
/// DuckDB does not hold yet. Such an image replaces its trade's row wherever that row
/// was listed — an update may change the symbol, the status and `ts` — so the page
/// is the store as of the newer of the two: the overlay holds every trade changed
/// after what DuckDB applied, at its latest acknowledged version.
///
/// Rows replaced leave the page short: it reads DuckDB again for twice as many until
/// the page is full or DuckDB has no more.
fn list_page(conn: &Connection, q: &ListQuery, pending: &[Arc<Trade>]) -> Result<Page> {
    let mut fetch = q.limit + 1 + pending.iter().filter(|t| t.symbol == q.symbol).count();
    loop {
        let tx = conn.unchecked_transaction()?;
        let applied = applier::applied_seq(&tx)? as i64;
        let rows = list_rows(&tx, q, fetch)?;
        tx.commit()?;
        let newer: HashMap<&str, &Arc<Trade>> =
            pending.iter().filter(|t| t.seq > applied).map(|t| (t.id.as_str(), t)).collect();
        let read_all = rows.len() < fetch;
        let mut trades: Vec<Trade> = rows.into_iter().filter(|t| !newer.contains_key(t.id.as_str())).collect();
        if !read_all && trades.len() <= q.limit {
            fetch *= 2;
            continue;
        }
        trades.extend(newer.values().filter(|t| q.matches(t)).map(|t| Trade::clone(t)));
        trades.sort_unstable_by(|a, b| (a.ts, &a.id).cmp(&(b.ts, &b.id)));
        let next = if trades.len() > q.limit {
            trades.truncate(q.limit);
            trades.last().map(|t| encode_cursor(t.ts, &t.id))
        } else {
            None
        };
        return Ok(Page { trades, next });
    }
}

/// The first `fetch` rows of `q` in DuckDB, ordered by (ts, id).
fn list_rows(conn: &Connection, q: &ListQuery, fetch: usize) -> Result<Vec<Trade>> {
    let mut sql = format!("SELECT {} FROM trades WHERE symbol = ?", db::TRADE_COLUMNS);
    let mut args: Vec<duckdb::types::Value> = vec![q.symbol.clone().into()];
    if !q.include_cancelled {
        sql.push_str(" AND status <> 'cancelled'");
    }
    if let Some(from) = q.from {
        sql.push_str(" AND ts >= ?");
        args.push(db::timestamp(from));
    }
    if let Some(to) = q.to {
        sql.push_str(" AND ts < ?");
        args.push(db::timestamp(to));
    }
    if let Some((ts, id)) = &q.after {
        sql.push_str(" AND (ts > ? OR (ts = ? AND id > ?))");
        args.extend([db::timestamp(*ts), db::timestamp(*ts), id.clone().into()]);
    }
    sql.push_str(&format!(" ORDER BY ts, id LIMIT {fetch}"));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(args.iter()), db::trade_from_row)?;
    Ok(rows.collect::<duckdb::Result<Vec<_>>>()?)
}

/// Builds the hot state from the `trade_state` view and the latest changes.
pub(crate) fn load_hot_state(conn: &Connection, recent: usize) -> Result<HotState> {
    let symbols = load_symbol_states(conn)?;
    let last_seq: i64 = conn.query_row("SELECT coalesce(max(seq), 0) FROM trades", [], |r| r.get(0))?;
    let mut state = HotState::new(symbols, last_seq, recent);
    let sql = format!(
        "SELECT {} FROM (SELECT * FROM trades ORDER BY seq DESC LIMIT {recent}) ORDER BY seq",
        db::TRADE_COLUMNS
    );
    let mut stmt = conn.prepare(&sql)?;
    for t in stmt.query_map([], db::trade_from_row)? {
        state.remember(Arc::new(t?));
    }
    Ok(state)
}

/// Reads the `trade_state` view. The sums travel as text: DuckDB's `DECIMAL(38,…)`
/// results are wider than any Rust decimal type but parse exactly into [`Sum8`]/[`Sum16`].
pub fn load_symbol_states(conn: &Connection) -> Result<Vec<SymbolState>> {
    let mut stmt = conn.prepare(
        "SELECT symbol, buy_quantity::VARCHAR, sell_quantity::VARCHAR, buy_notional::VARCHAR, \
         sell_notional::VARCHAR, trade_count FROM trade_state ORDER BY symbol",
    )?;
    let rows = stmt.query_map([], |r| {
        let mut s = SymbolState {
            symbol: r.get(0)?,
            buy_quantity: parse8(r, 1)?,
            sell_quantity: parse8(r, 2)?,
            buy_notional: parse16(r, 3)?,
            sell_notional: parse16(r, 4)?,
            trade_count: r.get(5)?,
            ..Default::default()
        };
        s.refresh();
        Ok(s)
    })?;
    Ok(rows.collect::<duckdb::Result<Vec<_>>>()?)
}

fn parse8(r: &duckdb::Row<'_>, i: usize) -> duckdb::Result<Sum8> {
    let t: String = r.get(i)?;
    Sum8::parse(&t).ok_or_else(|| not_a_sum(i, &t))
}

fn parse16(r: &duckdb::Row<'_>, i: usize) -> duckdb::Result<Sum16> {
    let t: String = r.get(i)?;
    Sum16::parse(&t).ok_or_else(|| not_a_sum(i, &t))
}

fn not_a_sum(i: usize, text: &str) -> duckdb::Error {
    duckdb::Error::FromSqlConversionFailure(i, duckdb::types::Type::Text, format!("not an exact sum: {text:?}").into())
}

/// Encodes a list position as an opaque cursor.
pub(crate) fn encode_cursor(ts: i64, id: &str) -> String {
    format!("{ts}~{id}")
}

/// Decodes a cursor made by [`encode_cursor`].
pub(crate) fn decode_cursor(s: &str) -> Option<(i64, String)> {
    let (ts, id) = s.split_once('~')?;
    crate::store::model::validate_id(id).ok()?;
    Some((ts.parse().ok()?, id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::change::Change;
    use crate::store::change::tests::trade;
    use crate::store::migrations;

    fn at(id: &str, symbol: &str, ts: i64, version: i64, seq: i64, status: Status) -> Trade {
        Trade { symbol: symbol.into(), ts, ..trade(id, version, seq, status) }
    }

    /// (id, version) of every trade `q` lists with `pending` over DuckDB, page after page.
    fn all_pages(conn: &Connection, mut q: ListQuery, pending: &[Arc<Trade>]) -> Vec<(String, i64)> {
        let mut listed = Vec::new();
        loop {
            let page = list_page(conn, &q, pending).unwrap();
            assert!(page.trades.len() <= q.limit);
            listed.extend(page.trades.iter().map(|t| (t.id.clone(), t.version)));
            match page.next {
                Some(next) => q.after = decode_cursor(&next),
                None => return listed,
            }
        }
    }

    /// DuckDB holds seqs 1..=12; the overlay moves, cancels, adds and reorders trades
    /// after that, and carries one stale image DuckDB already holds.
    #[test]
    fn a_list_is_duckdb_with_the_newer_overlay_images_over_it_on_every_page() {
        let dir = tempfile::tempdir().unwrap();
        let conn = db::open(&dir.path().join("x.duckdb"), &Default::default()).unwrap();
        migrations::up(&conn, migrations::embedded(), None).unwrap();
        let mut applied = vec![
            at("a1", "A", 10, 1, 1, Status::Filled),
            at("a2", "A", 20, 1, 2, Status::Filled),
            at("a3", "A", 30, 1, 3, Status::Pending),
            at("a4", "A", 40, 1, 4, Status::Filled),
            at("a5", "A", 50, 1, 5, Status::Filled),
            at("b1", "B", 15, 1, 6, Status::Filled),
        ];
        applied.extend((1..=6).map(|i| at(&format!("m{i}"), "A", i, 1, 6 + i, Status::Filled)));
        let changes: Vec<_> = applied.iter().map(|t| (t.seq as u64, Change::insert(t.clone()))).collect();
        applier::apply(&conn, &changes, &[]).unwrap();
        let mut pending = vec![
            at("a2", "B", 20, 2, 13, Status::Filled),
            at("a3", "A", 30, 2, 14, Status::Cancelled),
            at("a6", "A", 25, 1, 15, Status::Filled),
            at("a4", "A", 55, 2, 16, Status::Filled),
            at("a1", "A", 10, 1, 1, Status::Cancelled), // stale: DuckDB holds seq 1
        ];
        pending.extend((1..=6).map(|i| at(&format!("m{i}"), "C", i, 2, 16 + i, Status::Filled)));
        let pending: Vec<_> = pending.into_iter().map(Arc::new).collect();
        let ids = |v: &[(&str, i64)]| v.iter().map(|(id, ver)| (id.to_string(), *ver)).collect::<Vec<_>>();
        let list = |symbol: &str, limit: usize| ListQuery { symbol: symbol.into(), limit, ..Default::default() };

        let a = ids(&[("a1", 1), ("a6", 1), ("a5", 1), ("a4", 2)]);
        for limit in [1, 2, 3, 100] {
            // At limit 1 and 2 the moved m1..m6 fill DuckDB's first reads: it reads again.
            assert_eq!(all_pages(&conn, list("A", limit), &pending), a, "limit {limit}");
        }
        let with_cancelled = ListQuery { include_cancelled: true, ..list("A", 2) };
        let a_all = ids(&[("a1", 1), ("a6", 1), ("a3", 2), ("a5", 1), ("a4", 2)]);
        assert_eq!(all_pages(&conn, with_cancelled, &pending), a_all);
        assert_eq!(all_pages(&conn, list("B", 1), &pending), ids(&[("b1", 1), ("a2", 2)]));
        let c: Vec<_> = (1..=6).map(|i| (format!("m{i}"), 2)).collect();
        assert_eq!(all_pages(&conn, list("C", 4), &pending), c);
        let window = ListQuery { from: Some(10), to: Some(50), ..list("A", 100) };
        assert_eq!(all_pages(&conn, window, &pending), ids(&[("a1", 1), ("a6", 1)]));

        let duckdb_alone: Vec<_> = (1..=6)
            .map(|i| (format!("m{i}"), 1))
            .chain(ids(&[("a1", 1), ("a2", 1), ("a3", 1), ("a4", 1), ("a5", 1)]))
            .collect();
        assert_eq!(all_pages(&conn, list("A", 3), &[]), duckdb_alone, "nothing pending: DuckDB's rows");
    }

    /// DuckDB holds a1 and b1 (seqs 1, 2); b2 (seq 3) is acknowledged, not applied.
    #[tokio::test]
    async fn a_history_read_waits_only_for_its_own_trades_pending_change() {
        let dir = tempfile::tempdir().unwrap();
        let conn = db::open(&dir.path().join("x.duckdb"), &Default::default()).unwrap();
        migrations::up(&conn, migrations::embedded(), None).unwrap();
        let (a1, b1) = (trade("a", 1, 1, Status::Filled), trade("b", 1, 2, Status::Pending));
        applier::apply(&conn, &[(1, Change::insert(a1.clone())), (2, Change::insert(b1.clone()))], &[]).unwrap();
        let overlay = Arc::new(Overlay::default());
        let b2 = Arc::new(trade("b", 2, 3, Status::Filled));
        overlay.acknowledged([&b2]);
        let (applied_tx, applied) = watch::channel(2);
        let state = Arc::new(RwLock::new(HotState::default()));
        let reader =
            Reader::new(conn.try_clone().unwrap(), 2, Duration::from_secs(1), state, overlay, applied).unwrap();
        let versions = |h: Vec<Trade>| h.iter().map(|t| t.version).collect::<Vec<_>>();

        // a has nothing pending: answered from DuckDB at once, although seq 3 is not applied.
        let a = tokio::time::timeout(Duration::from_secs(1), reader.history("a")).await;
        assert_eq!(versions(a.expect("a's history waited for another trade's change").unwrap()), [1]);
        // b's version 2 is pending: its history waits until DuckDB holds it.
        let b = tokio::spawn({
            let reader = reader.clone();
            async move { reader.history("b").await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!b.is_finished(), "b's history answered without its acknowledged version 2");
        applier::apply(&conn, &[(3, Change::modify(b1, Trade::clone(&b2)))], &[]).unwrap();
        applied_tx.send_replace(3);
        assert_eq!(versions(b.await.unwrap().unwrap()), [1, 2]);
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = encode_cursor(1_700_000_000_000_000, "T-1");
        assert_eq!(decode_cursor(&c), Some((1_700_000_000_000_000, "T-1".to_string())));
        assert_eq!(decode_cursor("nope"), None);
        assert_eq!(decode_cursor("12~bad id"), None);
    }
}
