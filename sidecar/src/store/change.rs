//! A change as the commit log records it: what happened, and the trade as it is
//! afterwards — and, for an update or a cancel, as it was before.
//!
//! Recording whole rows — not the request that caused them — makes every consumer
//! simple and exact: applying is an upsert of the after-image, the history gains the
//! before-image (the version the change superseded), and a follower forwards the
//! images as they are.

use std::sync::Arc;

use crate::store::log::Record;
use crate::store::model::{Status, Trade};

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A new trade (version 1).
    Insert,
    /// A patched trade, at its new version.
    Update,
    /// A cancelled trade, at its new version.
    Cancel,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: Kind,
    /// The trade before the change: `None` for an insert, and for a change read from
    /// an older build's record (see `after_only`).
    pub before: Option<Trade>,
    /// The trade after the change, shared by everything that holds it after the
    /// acknowledgement (the answer, the overlay, the hot state, the applier).
    pub after: Arc<Trade>,
    /// Read from a record an older build wrote (kinds 1–3): the after-image alone, of
    /// a change whose applying put that image in the history too.
    pub after_only: bool,
}

/// The `kind` byte of each change in the log (also readable by `log dump`). This build
/// writes 4–6: the payload is `(before, after)` in postcard, a compact binary serde
/// format (amounts as integer units, times as microseconds), `before` empty for an
/// insert. 1–3 are read still: the JSON after-image alone, as older builds wrote them.
const INSERT_JSON: u8 = 1;
const UPDATE_JSON: u8 = 2;
const CANCEL_JSON: u8 = 3;
const INSERT: u8 = 4;
const UPDATE: u8 = 5;
const CANCEL: u8 = 6;

impl Change {
    pub fn insert(trade: Trade) -> Change {
        Change { kind: Kind::Insert, before: None, after: Arc::new(trade), after_only: false }
    }

    /// `before` taken to `after`: a cancel when it ends cancelled, else an update.
    pub fn modify(before: Trade, after: Trade) -> Change {
        let kind = if after.status == Status::Cancelled { Kind::Cancel } else { Kind::Update };
        Change { kind, before: Some(before), after: Arc::new(after), after_only: false }
    }

    /// The trade as it is after this change.
    pub fn trade(&self) -> &Trade {
        &self.after
    }

    /// What applying this change adds to `trade_history`: the version it superseded
    /// (none for an insert; the current version is the `trades` row). Older builds
    /// appended every image, the current one too, as they applied it, and their
    /// records carry no before-image: a change replayed from one adds its own image,
    /// whatever its kind, so its trade's history comes out as those builds left it.
    pub fn history_image(&self) -> Option<&Trade> {
        match (self.after_only, self.kind) {
            (true, _) => Some(self.trade()),
            (false, Kind::Insert) => None,
            (false, Kind::Update | Kind::Cancel) => self.before.as_ref(),
        }
    }

    /// What `log dump` calls it.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Insert => "insert",
            Kind::Update => "update",
            Kind::Cancel => "cancel",
        }
    }

    /// This change as log record `seq` (a trade's image carries the same `seq`).
    pub fn to_record(&self, seq: u64) -> Record {
        debug_assert_eq!(self.after.seq as u64, seq, "a trade image carries its record's seq");
        let (binary, json) = match self.kind {
            Kind::Insert => (INSERT, INSERT_JSON),
            Kind::Update => (UPDATE, UPDATE_JSON),
            Kind::Cancel => (CANCEL, CANCEL_JSON),
        };
        if self.after_only {
            let payload = serde_json::to_vec(self.trade()).expect("a trade serializes");
            return Record { seq, kind: json, payload };
        }
        let payload = postcard::to_allocvec(&(self.before.as_ref(), self.trade())).expect("a change serializes");
        Record { seq, kind: binary, payload }
    }

    /// Reads a log record back.
    pub fn from_record(r: &Record) -> Result<Change, String> {
        let bad = |e: &dyn std::fmt::Display| format!("record {}: {e}", r.seq);
        let json = || serde_json::from_slice::<Trade>(&r.payload).map(|t| (None, t)).map_err(|e| bad(&e));
        let binary = || match postcard::take_from_bytes::<(Option<Trade>, Trade)>(&r.payload) {
            Ok((images, [])) => Ok(images),
            Ok((_, rest)) => Err(bad(&format!("{} bytes after the images", rest.len()))),
            Err(e) => Err(bad(&e)),
        };
        let after_only = matches!(r.kind, INSERT_JSON | UPDATE_JSON | CANCEL_JSON);
        let (kind, (before, after)) = match r.kind {
            INSERT => (Kind::Insert, binary()?),
            UPDATE => (Kind::Update, binary()?),
            CANCEL => (Kind::Cancel, binary()?),
            INSERT_JSON => (Kind::Insert, json()?),
            UPDATE_JSON => (Kind::Update, json()?),
            CANCEL_JSON => (Kind::Cancel, json()?),
            other => return Err(format!("record {} has kind {other}, which this build does not know", r.seq)),
        };
        if kind == Kind::Insert && before.is_some() {
            return Err(bad(&"an insert with a before-image"));
        }
        if after.seq as u64 != r.seq {
            return Err(format!("record {} holds a trade image with seq {}", r.seq, after.seq));
        }
        Ok(Change { kind, before, after: Arc::new(after), after_only })
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
            Change::insert(trade("t1", 1, 5, Status::Filled)),
            Change::modify(trade("t1", 1, 5, Status::Filled), trade("t1", 2, 6, Status::Pending)),
            Change::modify(trade("t1", 2, 6, Status::Pending), trade("t1", 3, 7, Status::Cancelled)),
        ];
        let kinds: Vec<Kind> = changes.iter().map(|c| c.kind).collect();
        assert_eq!(kinds, [Kind::Insert, Kind::Update, Kind::Cancel]);
        for (seq, c) in (5..).zip(changes) {
            assert_eq!(Change::from_record(&c.to_record(seq)).unwrap(), c);
        }
    }

    #[test]
    fn what_a_change_adds_to_the_history_is_its_before_image() {
        let (v1, v2) = (trade("t1", 1, 5, Status::Filled), trade("t1", 2, 6, Status::Pending));
        assert_eq!(Change::insert(v1.clone()).history_image(), None);
        assert_eq!(Change::modify(v1.clone(), v2.clone()).history_image(), Some(&v1));
    }

    #[test]
    fn a_record_of_an_older_log_reads_back_with_its_own_image_for_the_history() {
        // Kinds 1–3 as builds before the before-image wrote them: the JSON after-image alone.
        let v2 = trade("t1", 2, 6, Status::Pending);
        for (kind, expected) in [(INSERT_JSON, Kind::Insert), (UPDATE_JSON, Kind::Update), (CANCEL_JSON, Kind::Cancel)]
        {
            let r = Record { seq: 6, kind, payload: serde_json::to_vec(&v2).unwrap() };
            let c = Change::from_record(&r).unwrap();
            assert_eq!((c.kind, &c.before, c.trade()), (expected, &None, &v2));
            assert!(c.after_only);
            assert_eq!(c.history_image(), Some(&v2), "older builds wrote every image to the history");
            assert_eq!(c.to_record(6), r, "written back as it was read");
        }
    }

    #[test]
    fn a_record_holds_amounts_as_units_and_times_as_microseconds() {
        let mut t = trade("t1", 1, 5, Status::Filled);
        t.price = Amount::parse("-99999999.99999999").unwrap();
        (t.ts, t.created_at) = (-1, i64::MAX);
        let r = Change::insert(t.clone()).to_record(5);
        assert!(r.payload.len() < 80, "{} bytes: a compact record", r.payload.len());
        assert_eq!(*Change::from_record(&r).unwrap().after, t);
    }

    #[test]
    fn a_record_that_is_not_a_change_is_refused_with_its_seq() {
        let mut r = Change::insert(trade("t1", 1, 5, Status::Filled)).to_record(5);
        r.seq = 9;
        assert!(Change::from_record(&r).unwrap_err().contains("seq 5"));
        r.kind = 77;
        assert!(Change::from_record(&r).unwrap_err().contains("kind 77"));
        let junk = Record { seq: 3, kind: INSERT, payload: b"{".to_vec() };
        assert!(Change::from_record(&junk).unwrap_err().starts_with("record 3"));
        let mut longer = Change::insert(trade("t1", 1, 5, Status::Filled)).to_record(5);
        longer.payload.push(0);
        assert!(Change::from_record(&longer).unwrap_err().contains("1 bytes after"));
        longer.payload.truncate(longer.payload.len() - 9);
        assert!(Change::from_record(&longer).unwrap_err().starts_with("record 5"), "cut short");
        let v1 = trade("t1", 1, 5, Status::Filled);
        let mut insert_with_before = Change::modify(v1.clone(), trade("t1", 2, 6, Status::Filled)).to_record(6);
        insert_with_before.kind = INSERT;
        assert!(Change::from_record(&insert_with_before).unwrap_err().contains("an insert with a before-image"));
    }
}
