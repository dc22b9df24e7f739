//! The trades whose latest change is acknowledged (durable in the commit log) but not
//! yet in DuckDB: read before DuckDB, so a trade read right after its acknowledgement
//! is seen as acknowledged. Bounded by the applier's backlog.

use parking_lot::RwLock;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::store::by_id::ById;
use crate::store::model::Trade;

#[derive(Default)]
pub struct Overlay {
    /// The images the writer acknowledged, shared with it (not copied).
    trades: RwLock<HashSet<ById>>,
    /// The last acknowledged `seq`: what a consistent read waits for DuckDB to reach.
    acked: AtomicI64,
    /// The highest `seq` a read is waiting for DuckDB to reach: the applier stops
    /// gathering when it is above what DuckDB holds.
    awaited: AtomicI64,
}

impl Overlay {
    /// The acknowledged, not yet applied state of `id`, if any.
    pub fn get(&self, id: &str) -> Option<Trade> {
        self.trades.read().get(id).map(|t| Trade::clone(&t.0))
    }

    /// Every image not yet applied, when there are at most `max` (a list merges them
    /// over DuckDB's rows); `None` when there are more.
    pub fn pending(&self, max: usize) -> Option<Vec<Arc<Trade>>> {
        let trades = self.trades.read();
        (trades.len() <= max).then(|| trades.iter().map(|t| t.0.clone()).collect())
    }

    /// Records acknowledged images (called before the acknowledgement goes out).
    pub fn acknowledged<'a>(&self, images: impl IntoIterator<Item = &'a Arc<Trade>>) {
        let mut trades = self.trades.write();
        let mut last = 0;
        for t in images {
            last = last.max(t.seq);
            trades.replace(ById(t.clone()));
        }
        self.acked.fetch_max(last, Ordering::SeqCst);
    }

    /// The last acknowledged `seq`.
    pub fn acked_seq(&self) -> i64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// A read waits for DuckDB to hold everything acknowledged; returns that `seq`.
    pub fn await_acked(&self) -> i64 {
        self.await_seq(self.acked_seq())
    }

    /// A read waits for DuckDB to hold every change up to `seq`; returns it.
    pub fn await_seq(&self, seq: i64) -> i64 {
        self.awaited.fetch_max(seq, Ordering::SeqCst);
        seq
    }

    /// True when a read waits for a change DuckDB does not hold at `applied`.
    pub fn awaited_beyond(&self, applied: i64) -> bool {
        self.awaited.load(Ordering::SeqCst) > applied
    }

    /// Forgets images DuckDB now holds: those at or below `applied` (a later change of
    /// the same trade stays until it is applied too). Removed first and put back in
    /// that rare case: one lookup a trade instead of two.
    pub fn applied<'a>(&self, images: impl IntoIterator<Item = &'a Trade>, applied: i64) {
        let mut trades = self.trades.write();
        for t in images {
            if let Some(cur) = trades.take(t.id.as_str())
                && cur.0.seq > applied
            {
                trades.insert(cur);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::change::tests::trade;
    use crate::store::model::Status;

    #[test]
    fn an_applied_image_is_forgotten_unless_a_later_change_is_acknowledged() {
        let overlay = Overlay::default();
        let (a1, a2, b1) =
            (trade("a", 1, 1, Status::Filled), trade("a", 2, 3, Status::Pending), trade("b", 1, 2, Status::Filled));
        overlay.acknowledged(&[a1.clone(), b1.clone(), a2.clone()].map(Arc::new));
        overlay.applied([&a1, &b1], 2);
        assert_eq!((overlay.get("a"), overlay.get("b")), (Some(a2.clone()), None), "a's version 2 is not applied yet");
        overlay.applied([&a2], 3);
        assert_eq!(overlay.get("a"), None);
        assert_eq!(overlay.acked_seq(), 3);
    }
}
