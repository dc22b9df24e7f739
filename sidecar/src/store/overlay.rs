//! The trades whose latest change is acknowledged (durable in the commit log) but not
//! yet in DuckDB: read before DuckDB, so a trade read right after its acknowledgement
//! is seen as acknowledged. Bounded by the applier's backlog.

use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::store::model::Trade;

#[derive(Default)]
pub struct Overlay {
    trades: RwLock<HashMap<String, Trade>>,
    /// The last acknowledged `seq`: what a consistent read waits for DuckDB to reach.
    acked: AtomicI64,
    /// The highest `seq` a read is waiting for DuckDB to reach: the applier stops
    /// gathering when it is above what DuckDB holds.
    awaited: AtomicI64,
}

impl Overlay {
    /// The acknowledged, not yet applied state of `id`, if any.
    pub fn get(&self, id: &str) -> Option<Trade> {
        self.trades.read().get(id).cloned()
    }

    /// Records acknowledged images (called before the acknowledgement goes out).
    pub fn acknowledged<'a>(&self, images: impl IntoIterator<Item = &'a Trade>) {
        let mut trades = self.trades.write();
        let mut last = 0;
        for t in images {
            last = last.max(t.seq);
            trades.insert(t.id.clone(), t.clone());
        }
        self.acked.fetch_max(last, Ordering::SeqCst);
    }

    /// The last acknowledged `seq`.
    pub fn acked_seq(&self) -> i64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// A read waits for DuckDB to hold everything acknowledged; returns that `seq`.
    pub fn await_acked(&self) -> i64 {
        let target = self.acked_seq();
        self.awaited.fetch_max(target, Ordering::SeqCst);
        target
    }

    /// True when a read waits for a change DuckDB does not hold at `applied`.
    pub fn awaited_beyond(&self, applied: i64) -> bool {
        self.awaited.load(Ordering::SeqCst) > applied
    }

    /// Forgets images DuckDB now holds: those at or below `applied` (a later change of
    /// the same trade stays until it is applied too).
    pub fn applied<'a>(&self, images: impl IntoIterator<Item = &'a Trade>, applied: i64) {
        let mut trades = self.trades.write();
        for t in images {
            if trades.get(&t.id).is_some_and(|cur| cur.seq <= applied) {
                trades.remove(&t.id);
            }
        }
    }
}
