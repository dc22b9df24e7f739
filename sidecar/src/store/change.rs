//! A change as the commit log records it: what happened, and the trade as it is
//! afterwards.
//!
//! Recording the whole row after the change — not the request that caused it — makes
//! every consumer simple and exact: applying is an upsert of the image, history is the
//! images in order, and a follower forwards them as they are.

use crate::store::log::Record;
use crate::store::model::Trade;

#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A new trade (version 1).
    Insert(Trade),
    /// A patched trade, at its new version.
    Update(Trade),
    /// A cancelled trade, at its new version.
    Cancel(Trade),
}

/// The `kind` byte of each change in the log (also readable by `log dump`).
const INSERT: u8 = 1;
const UPDATE: u8 = 2;
const CANCEL: u8 = 3;

impl Change {
    /// The trade as it is after this change.
    pub fn trade(&self) -> &Trade {
        match self {
            Change::Insert(t) | Change::Update(t) | Change::Cancel(t) => t,
        }
    }

    /// What `log dump` calls it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Change::Insert(_) => "insert",
            Change::Update(_) => "update",
            Change::Cancel(_) => "cancel",
        }
    }

    /// This change as log record `seq` (a trade's image carries the same `seq`).
    pub fn to_record(&self, seq: u64) -> Record {
        let (kind, payload) = match self {
            Change::Insert(t) => (INSERT, serde_json::to_vec(t)),
            Change::Update(t) => (UPDATE, serde_json::to_vec(t)),
            Change::Cancel(t) => (CANCEL, serde_json::to_vec(t)),
        };
        debug_assert_eq!(self.trade().seq as u64, seq, "a trade image carries its record's seq");
        Record { seq, kind, payload: payload.expect("a change serializes") }
    }

    /// Reads a log record back.
    pub fn from_record(r: &Record) -> Result<Change, String> {
        let trade = || -> Result<Trade, String> {
            let t: Trade = serde_json::from_slice(&r.payload).map_err(|e| format!("record {}: {e}", r.seq))?;
            if t.seq as u64 != r.seq {
                return Err(format!("record {} holds a trade image with seq {}", r.seq, t.seq));
            }
            Ok(t)
        };
        match r.kind {
            INSERT => trade().map(Change::Insert),
            UPDATE => trade().map(Change::Update),
            CANCEL => trade().map(Change::Cancel),
            other => Err(format!("record {} has kind {other}, which this build does not know", r.seq)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::model::{Side, Status};
    use crate::store::money::Amount;

    pub(crate) fn trade(id: &str, version: i64, seq: i64, status: Status) -> Trade {
        Trade {
            id: id.into(),
            symbol: "BTC-USD".into(),
            side: Side::Buy,
            quantity: Amount::parse("0.00000001").unwrap(),
            price: Amount::parse("-97000.12345678").unwrap(),
            status,
            ts: 1_700_000_000_123_456,
            version,
            seq,
            created_at: 1_700_000_000_000_001,
            updated_at: 1_700_000_000_000_002 + seq,
        }
    }

    #[test]
    fn every_kind_of_change_reads_back_exactly() {
        let changes = [
            Change::Insert(trade("t1", 1, 5, Status::Filled)),
            Change::Update(trade("t1", 2, 6, Status::Pending)),
            Change::Cancel(trade("t1", 3, 7, Status::Cancelled)),
        ];
        for (seq, c) in (5..).zip(changes) {
            assert_eq!(Change::from_record(&c.to_record(seq)).unwrap(), c);
        }
    }

    #[test]
    fn a_record_that_is_not_a_change_is_refused_with_its_seq() {
        let mut r = Change::Insert(trade("t1", 1, 5, Status::Filled)).to_record(5);
        r.seq = 9;
        assert!(Change::from_record(&r).unwrap_err().contains("seq 5"));
        r.kind = 77;
        assert!(Change::from_record(&r).unwrap_err().contains("kind 77"));
        let junk = Record { seq: 3, kind: INSERT, payload: b"{".to_vec() };
        assert!(Change::from_record(&junk).unwrap_err().starts_with("record 3"));
    }
}
