//! In-memory hot state kept by the writer: per-symbol aggregates (the same numbers
//! as the `trade_state` view) and the most recently committed trades.
//!
//! The writer changes it only after a transaction committed, so readers see exactly
//! the committed state, never a half-applied batch.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;

use crate::model::{Side, Status, Trade};

/// Aggregate over the filled trades of one symbol.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SymbolState {
    /// Instrument symbol.
    pub symbol: String,
    /// Bought minus sold quantity.
    pub position: f64,
    /// Total bought quantity.
    pub buy_quantity: f64,
    /// Total sold quantity.
    pub sell_quantity: f64,
    /// Sum of quantity × price over buys.
    pub buy_notional: f64,
    /// Sum of quantity × price over sells.
    pub sell_notional: f64,
    /// Volume-weighted average price over all filled trades.
    pub avg_price: Option<f64>,
    /// Volume-weighted average buy price.
    pub avg_buy_price: Option<f64>,
    /// Volume-weighted average sell price.
    pub avg_sell_price: Option<f64>,
    /// Number of filled trades.
    pub trade_count: i64,
}

impl SymbolState {
    fn add(&mut self, t: &Trade, sign: f64) {
        let notional = t.quantity * t.price;
        match t.side {
            Side::Buy => {
                self.buy_quantity += sign * t.quantity;
                self.buy_notional += sign * notional;
            }
            Side::Sell => {
                self.sell_quantity += sign * t.quantity;
                self.sell_notional += sign * notional;
            }
        }
        self.trade_count += sign as i64;
        self.refresh();
    }

    /// Recomputes the derived fields from the sums.
    pub fn refresh(&mut self) {
        fn ratio(n: f64, d: f64) -> Option<f64> {
            (d > 0.0).then(|| n / d)
        }
        self.position = self.buy_quantity - self.sell_quantity;
        self.avg_buy_price = ratio(self.buy_notional, self.buy_quantity);
        self.avg_sell_price = ratio(self.sell_notional, self.sell_quantity);
        self.avg_price = ratio(self.buy_notional + self.sell_notional, self.buy_quantity + self.sell_quantity);
    }

    /// True when two states agree up to floating-point summation order.
    pub fn approx_eq(&self, other: &SymbolState) -> bool {
        fn close(a: f64, b: f64) -> bool {
            (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
        }
        self.symbol == other.symbol
            && self.trade_count == other.trade_count
            && close(self.buy_quantity, other.buy_quantity)
            && close(self.sell_quantity, other.sell_quantity)
            && close(self.buy_notional, other.buy_notional)
            && close(self.sell_notional, other.sell_notional)
    }
}

/// Hot state: symbol aggregates and a window of recently committed trades.
#[derive(Debug, Default)]
pub struct HotState {
    symbols: BTreeMap<String, SymbolState>,
    recent: VecDeque<Trade>,
    recent_index: HashMap<String, i64>,
    recent_capacity: usize,
    last_seq: i64,
}

impl HotState {
    /// Starts from aggregates loaded from the database.
    pub fn new(symbols: Vec<SymbolState>, last_seq: i64, recent_capacity: usize) -> Self {
        HotState {
            symbols: symbols.into_iter().map(|s| (s.symbol.clone(), s)).collect(),
            recent: VecDeque::with_capacity(recent_capacity),
            recent_index: HashMap::new(),
            recent_capacity,
            last_seq,
        }
    }

    /// Applies one committed change: `before` is the row as it was (None for an insert).
    pub fn apply(&mut self, before: Option<&Trade>, after: &Trade) {
        if let Some(b) = before.filter(|b| b.status == Status::Filled) {
            let entry = self.symbols.entry(b.symbol.clone()).or_default();
            entry.add(b, -1.0);
            if entry.trade_count == 0 {
                self.symbols.remove(&b.symbol);
            }
        }
        if after.status == Status::Filled {
            let entry = self
                .symbols
                .entry(after.symbol.clone())
                .or_insert_with(|| SymbolState { symbol: after.symbol.clone(), ..Default::default() });
            entry.add(after, 1.0);
        }
        self.last_seq = self.last_seq.max(after.seq);
        self.remember(after.clone());
    }

    /// Adds a trade to the recent window without touching the aggregates
    /// (used when loading the window at start).
    pub fn remember(&mut self, t: Trade) {
        if self.recent_capacity == 0 {
            return;
        }
        if self.recent.len() == self.recent_capacity
            && let Some(old) = self.recent.pop_front()
            && self.recent_index.get(&old.id) == Some(&old.seq)
        {
            self.recent_index.remove(&old.id);
        }
        self.recent_index.insert(t.id.clone(), t.seq);
        self.recent.push_back(t);
    }

    /// The state of one symbol, if it has filled trades.
    pub fn symbol(&self, symbol: &str) -> Option<SymbolState> {
        self.symbols.get(symbol).cloned()
    }

    /// All symbols with filled trades, ordered by symbol.
    pub fn all_symbols(&self) -> Vec<SymbolState> {
        self.symbols.values().cloned().collect()
    }

    /// The latest version of a recently changed trade, if still in the window.
    pub fn recent_trade(&self, id: &str) -> Option<Trade> {
        let seq = *self.recent_index.get(id)?;
        // `recent` is ordered by seq, so a binary search finds the entry.
        let i = self.recent.binary_search_by_key(&seq, |t| t.seq).ok()?;
        Some(self.recent[i].clone())
    }

    /// Sequence of the last committed change.
    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trade(id: &str, symbol: &str, side: Side, q: f64, p: f64, status: Status, seq: i64) -> Trade {
        Trade {
            id: id.into(),
            symbol: symbol.into(),
            side,
            quantity: q,
            price: p,
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
        s.apply(None, &trade("a", "X", Side::Buy, 10.0, 100.0, Status::Filled, 1));
        s.apply(None, &trade("b", "X", Side::Buy, 30.0, 200.0, Status::Filled, 2));
        s.apply(None, &trade("c", "X", Side::Sell, 5.0, 300.0, Status::Filled, 3));
        s.apply(None, &trade("d", "X", Side::Buy, 99.0, 1.0, Status::Pending, 4));
        let x = s.symbol("X").unwrap();
        assert_eq!(x.position, 35.0);
        assert_eq!(x.avg_buy_price, Some(175.0));
        assert_eq!(x.avg_sell_price, Some(300.0));
        assert_eq!(x.trade_count, 3);
        assert_eq!(s.last_seq(), 4);
    }

    #[test]
    fn updates_and_cancels_move_the_aggregate() {
        let mut s = HotState::new(vec![], 0, 10);
        let a = trade("a", "X", Side::Buy, 10.0, 100.0, Status::Filled, 1);
        s.apply(None, &a);
        let mut a2 = a.clone();
        a2.quantity = 4.0;
        a2.seq = 2;
        s.apply(Some(&a), &a2);
        assert_eq!(s.symbol("X").unwrap().position, 4.0);
        let mut a3 = a2.clone();
        a3.status = Status::Cancelled;
        a3.seq = 3;
        s.apply(Some(&a2), &a3);
        assert!(s.symbol("X").is_none(), "no filled trades left");
        assert_eq!(s.recent_trade("a").unwrap().seq, 3);
    }

    #[test]
    fn recent_window_forgets_old_trades() {
        let mut s = HotState::new(vec![], 0, 2);
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            s.apply(None, &trade(id, "X", Side::Buy, 1.0, 1.0, Status::Filled, i as i64 + 1));
        }
        assert!(s.recent_trade("a").is_none());
        assert!(s.recent_trade("c").is_some());
    }
}
