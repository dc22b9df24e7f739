//! In-memory hot state kept by the writer: per-symbol aggregates (the same numbers
//! as the `trade_state` view) and the most recently committed trades.
//!
//! The writer changes it only after a transaction committed, so readers see exactly
//! the committed state, never a half-applied batch.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use serde::Serialize;

use crate::store::by_id::ById;
use crate::store::model::{Side, Status, Trade};
use crate::store::money::{Sum8, Sum16};

/// Aggregate over the filled trades of one symbol, exact (see [`crate::store::money`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SymbolState {
    /// Instrument symbol.
    pub symbol: String,
    /// Bought minus sold quantity.
    pub position: Sum8,
    /// Total bought quantity.
    pub buy_quantity: Sum8,
    /// Total sold quantity.
    pub sell_quantity: Sum8,
    /// Sum of quantity × price over buys (16 decimals: exact).
    pub buy_notional: Sum16,
    /// Sum of quantity × price over sells.
    pub sell_notional: Sum16,
    /// Volume-weighted average price over all filled trades, rounded half to even at 8 decimals.
    pub avg_price: Option<Sum8>,
    /// Volume-weighted average buy price (same rounding).
    pub avg_buy_price: Option<Sum8>,
    /// Volume-weighted average sell price (same rounding).
    pub avg_sell_price: Option<Sum8>,
    /// Number of filled trades.
    pub trade_count: i64,
}

impl SymbolState {
    fn add(&mut self, t: &Trade, sign: i64) {
        let notional = t.quantity.times(t.price);
        match t.side {
            Side::Buy => {
                self.buy_quantity.add(t.quantity, sign);
                self.buy_notional.add(notional, sign);
            }
            Side::Sell => {
                self.sell_quantity.add(t.quantity, sign);
                self.sell_notional.add(notional, sign);
            }
        }
        self.trade_count += sign;
        self.refresh();
    }

    /// Recomputes the derived fields from the exact sums.
    pub(crate) fn refresh(&mut self) {
        let volume = Sum8(self.buy_quantity.0 + self.sell_quantity.0);
        self.position = Sum8(self.buy_quantity.0 - self.sell_quantity.0);
        self.avg_buy_price = self.buy_quantity.average(self.buy_notional);
        self.avg_sell_price = self.sell_quantity.average(self.sell_notional);
        self.avg_price = volume.average(Sum16(self.buy_notional.0 + self.sell_notional.0));
    }
}

/// Hot state: symbol aggregates and a window of recently committed trades.
#[derive(Debug, Default)]
pub struct HotState {
    symbols: BTreeMap<String, SymbolState>,
    /// Shared with the overlay and the answer that acknowledged them: not copied.
    recent: VecDeque<Arc<Trade>>,
    /// The newest of them for each id.
    recent_index: HashSet<ById>,
    recent_capacity: usize,
    last_seq: i64,
    /// Bytes the symbols' entries and the window's trades hold, kept as they come and go
    /// (see [`HotState::heap_bytes`]).
    held: usize,
}

/// What one symbol's entry holds: key and aggregate, and the symbol's text twice.
fn symbol_bytes(s: &SymbolState) -> usize {
    size_of::<(String, SymbolState)>() + 2 * s.symbol.capacity()
}

/// What a trade in the window holds: the trade, its `Arc`'s two counts, its strings.
fn trade_bytes(t: &Trade) -> usize {
    size_of::<Trade>() + 2 * size_of::<usize>() + t.id.capacity() + t.symbol.capacity()
}

impl HotState {
    /// Starts from aggregates loaded from the database.
    pub fn new(symbols: Vec<SymbolState>, last_seq: i64, recent_capacity: usize) -> Self {
        HotState {
            held: symbols.iter().map(symbol_bytes).sum(),
            symbols: symbols.into_iter().map(|s| (s.symbol.clone(), s)).collect(),
            recent: VecDeque::with_capacity(recent_capacity),
            recent_index: HashSet::new(),
            recent_capacity,
            last_seq,
        }
    }

    /// The memory it holds, about: its symbols' entries, the trades of its window, and
    /// the window's queue and id set. It grows with the symbols and up to
    /// `recent_trades`, not with the trade count (the tables' B-tree and hash
    /// overheads beyond a slot each are left out).
    pub fn heap_bytes(&self) -> usize {
        self.held
            + self.recent.capacity() * size_of::<Arc<Trade>>()
            + self.recent_index.capacity() * (size_of::<ById>() + 1)
    }

    /// Applies one committed change: `before` is the row as it was (None for an insert).
    pub fn apply(&mut self, before: Option<&Trade>, after: &Arc<Trade>) {
        if let Some(b) = before.filter(|b| b.status == Status::Filled) {
            let entry = self.symbols.entry(b.symbol.clone()).or_default();
            entry.add(b, -1);
            if entry.trade_count == 0
                && let Some(gone) = self.symbols.remove(&b.symbol)
            {
                // Saturating: an entry `or_default` made above (a change of a symbol the
                // state did not hold, which the integrity check reports) was never counted.
                self.held = self.held.saturating_sub(symbol_bytes(&gone));
            }
        }
        if after.status == Status::Filled {
            // Looked up before `entry`, which would allocate the key for every trade.
            match self.symbols.get_mut(&after.symbol) {
                Some(entry) => entry.add(after, 1),
                None => {
                    let mut entry = SymbolState { symbol: after.symbol.clone(), ..Default::default() };
                    entry.add(after, 1);
                    self.held += symbol_bytes(&entry);
                    self.symbols.insert(after.symbol.clone(), entry);
                }
            }
        }
        self.last_seq = self.last_seq.max(after.seq);
        self.remember(after.clone());
    }

    /// Adds a trade to the recent window without touching the aggregates
    /// (used when loading the window at start).
    pub(crate) fn remember(&mut self, t: Arc<Trade>) {
        if self.recent_capacity == 0 {
            return;
        }
        // The oldest leaves; its id stays indexed if a newer change of it is in the window.
        if self.recent.len() == self.recent_capacity
            && let Some(old) = self.recent.pop_front()
        {
            self.held -= trade_bytes(&old);
            if let Some(newest) = self.recent_index.take(old.id.as_str())
                && newest.0.seq != old.seq
            {
                self.recent_index.insert(newest);
            }
        }
        self.held += trade_bytes(&t);
        self.recent_index.replace(ById(t.clone()));
        self.recent.push_back(t);
    }

    /// The state of one symbol, if it has filled trades.
    pub(crate) fn symbol(&self, symbol: &str) -> Option<SymbolState> {
        self.symbols.get(symbol).cloned()
    }

    /// All symbols with filled trades, ordered by symbol.
    pub fn all_symbols(&self) -> Vec<SymbolState> {
        self.symbols.values().cloned().collect()
    }

    /// The latest version of a recently changed trade, if still in the window.
    pub(crate) fn recent_trade(&self, id: &str) -> Option<Trade> {
        self.recent_index.get(id).map(|t| Trade::clone(&t.0))
    }

    /// Sequence of the last committed change.
    pub(crate) fn last_seq(&self) -> i64 {
        self.last_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::money::Amount;

    fn trade(id: &str, symbol: &str, side: Side, q: &str, p: &str, status: Status, seq: i64) -> Trade {
        Trade {
            id: id.into(),
            symbol: symbol.into(),
            side,
            quantity: Amount::parse(q).unwrap(),
            price: Amount::parse(p).unwrap(),
            status,
            ts: 0,
            version: 1,
            seq,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn aggregates_positions_and_average_prices() {
        let mut s = HotState::new(vec![], 0, 10);
        s.apply(None, &Arc::new(trade("a", "X", Side::Buy, "10", "100", Status::Filled, 1)));
        s.apply(None, &Arc::new(trade("b", "X", Side::Buy, "30", "200", Status::Filled, 2)));
        s.apply(None, &Arc::new(trade("c", "X", Side::Sell, "5", "300", Status::Filled, 3)));
        s.apply(None, &Arc::new(trade("d", "X", Side::Buy, "99", "1", Status::Pending, 4)));
        let x = s.symbol("X").unwrap();
        let shown = |v: Option<Sum8>| v.map(|v| v.to_string());
        assert_eq!(x.position.to_string(), "35");
        assert_eq!(shown(x.avg_buy_price), Some("175".into()));
        assert_eq!(shown(x.avg_sell_price), Some("300".into()));
        assert_eq!(x.trade_count, 3);
        assert_eq!(s.last_seq(), 4);
    }

    #[test]
    fn a_flat_book_reads_exactly_zero() {
        let mut s = HotState::new(vec![], 0, 10);
        s.apply(None, &Arc::new(trade("a", "X", Side::Buy, "0.1", "1.1", Status::Filled, 1)));
        s.apply(None, &Arc::new(trade("b", "X", Side::Buy, "0.2", "1.2", Status::Filled, 2)));
        s.apply(None, &Arc::new(trade("c", "X", Side::Sell, "0.3", "1.3", Status::Filled, 3)));
        let x = s.symbol("X").unwrap();
        assert_eq!((x.position, x.buy_quantity.to_string()), (Sum8(0), "0.3".to_string()));
        assert_eq!(x.buy_notional.to_string(), "0.35", "0.1 × 1.1 + 0.2 × 1.2");
        assert_eq!(shown_avg(&x), "1.16666667", "0.35 / 0.3, half to even at 8 decimals");
    }

    fn shown_avg(x: &SymbolState) -> String {
        x.avg_buy_price.unwrap().to_string()
    }

    #[test]
    fn updates_and_cancels_move_the_aggregate() {
        let mut s = HotState::new(vec![], 0, 10);
        let a = trade("a", "X", Side::Buy, "10", "100", Status::Filled, 1);
        s.apply(None, &Arc::new(a.clone()));
        let mut a2 = a.clone();
        a2.quantity = Amount::whole(4);
        a2.seq = 2;
        s.apply(Some(&a), &Arc::new(a2.clone()));
        assert_eq!(s.symbol("X").unwrap().position, Sum8(4 * 100_000_000));
        let mut a3 = a2.clone();
        a3.status = Status::Cancelled;
        a3.seq = 3;
        s.apply(Some(&a2), &Arc::new(a3));
        assert!(s.symbol("X").is_none(), "no filled trades left");
        assert_eq!(s.recent_trade("a").unwrap().seq, 3);
    }

    #[test]
    fn its_memory_follows_the_symbols_and_the_window_not_the_trade_count() {
        let mut s = HotState::new(vec![], 0, 3);
        let empty = s.heap_bytes();
        let t =
            |i: i64, symbol: &str| Arc::new(trade(&format!("t{i:04}"), symbol, Side::Buy, "1", "1", Status::Filled, i));
        for i in 1..=3 {
            s.apply(None, &t(i, "X"));
        }
        let full = s.heap_bytes();
        assert!(full > empty + 3 * size_of::<Trade>(), "{empty} → {full}");
        for i in 4..=100 {
            s.apply(None, &t(i, "X"));
        }
        assert_eq!(s.heap_bytes(), full, "a full window of like trades and the same symbol: no growth");
        s.apply(None, &t(101, "Y"));
        let with_y = s.heap_bytes();
        assert_eq!(with_y, full + symbol_bytes(&s.symbol("Y").unwrap()), "one more symbol");
        let y = trade("t0101", "Y", Side::Buy, "1", "1", Status::Filled, 101);
        s.apply(Some(&y), &Arc::new(Trade { status: Status::Cancelled, seq: 102, ..y.clone() }));
        assert_eq!(s.heap_bytes(), full, "Y's last filled trade cancelled: its entry is gone");
    }

    #[test]
    fn recent_window_forgets_old_trades() {
        let mut s = HotState::new(vec![], 0, 2);
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            s.apply(None, &Arc::new(trade(id, "X", Side::Buy, "1", "1", Status::Filled, i as i64 + 1)));
        }
        assert!(s.recent_trade("a").is_none());
        assert!(s.recent_trade("c").is_some());
    }

    #[test]
    fn a_trade_changed_within_the_window_stays_until_its_newest_version_leaves() {
        let mut s = HotState::new(vec![], 0, 2);
        let t = |id, seq| Arc::new(trade(id, "X", Side::Buy, "1", "1", Status::Filled, seq));
        s.apply(None, &t("a", 1));
        s.apply(None, &t("a", 2));
        s.apply(None, &t("b", 3));
        assert_eq!(s.recent_trade("a").map(|a| a.seq), Some(2), "a's first version left, its newest did not");
        s.apply(None, &t("c", 4));
        assert!(s.recent_trade("a").is_none());
        assert_eq!(s.recent_trade("b").map(|b| b.seq), Some(3));
    }
}
