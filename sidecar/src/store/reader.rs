//! The read path: a pool of connections to the same database instance the writer
//! uses (DuckDB lets only one process open the file), so reads never queue behind
//! writes. Hot reads (trade state, recently changed trades) are answered from the
//! writer's in-memory state and never touch DuckDB.

use std::sync::Arc;
use std::time::Duration;

use duckdb::{Connection, params_from_iter};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::store::db;
use crate::store::model::Trade;
use crate::store::money::{Sum8, Sum16};
use crate::store::overlay::Overlay;
use crate::store::state::{HotState, SymbolState};

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
    pub(crate) async fn history(&self, id: &str) -> Result<Vec<Trade>> {
        self.caught_up().await?;
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
        let target = self.overlay.await_acked();
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
    /// acknowledged before the call.
    pub(crate) async fn list(&self, q: ListQuery) -> Result<Page> {
        self.caught_up().await?;
        self.with_conn(move |conn| {
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
            sql.push_str(&format!(" ORDER BY ts, id LIMIT {}", q.limit + 1));
            let mut stmt = conn.prepare(&sql)?;
            let mut trades = stmt
                .query_map(params_from_iter(args.iter()), db::trade_from_row)?
                .collect::<duckdb::Result<Vec<_>>>()?;
            let next = if trades.len() > q.limit {
                trades.truncate(q.limit);
                trades.last().map(|t| encode_cursor(t.ts, &t.id))
            } else {
                None
            };
            Ok(Page { trades, next })
        })
        .await
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

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = encode_cursor(1_700_000_000_000_000, "T-1");
        assert_eq!(decode_cursor(&c), Some((1_700_000_000_000_000, "T-1".to_string())));
        assert_eq!(decode_cursor("nope"), None);
        assert_eq!(decode_cursor("12~bad id"), None);
    }
}
