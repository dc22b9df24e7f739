//! Every trade id's current version, in memory, so the writer decides duplicates,
//! stale versions and cancelled trades exactly without asking DuckDB.
//!
//! An id is held as a 64-bit fingerprint (SipHash with a key drawn per process, so
//! nobody can aim ids at one fingerprint) mapped to a packed version and cancelled
//! flag: 16 bytes a slot in the hash table, 20–40 bytes a trade depending on how full
//! the table is since it last doubled — instead of the id itself. Two ids with one
//! fingerprint are rare (about n²/2⁶⁵: one in 37 million at a million trades) but
//! possible, so the index never guesses: an id whose fingerprint belongs to another
//! id, or to several, is [`Known::Ask`] — the caller looks the full id up in the
//! store, which is what every lookup cost before the index.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

/// What the index knows about one id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// No trade has this id.
    Absent,
    /// This id, at this version.
    Present { version: i64, cancelled: bool },
    /// The fingerprint is shared: look the id up in the store.
    Ask,
}

/// Slot value meaning "more than one id has this fingerprint".
const SHARED: u32 = u32::MAX;
const CANCELLED: u32 = 1 << 31;
/// Versions are packed into 31 bits; an id past that is served by [`Known::Ask`].
const MAX_VERSION: i64 = (CANCELLED - 1) as i64;

pub struct IdIndex {
    keys: RandomState,
    slots: HashMap<u64, u32, BuildHasherDefault<Fingerprint>>,
}

/// The map's hasher: its keys are already hashes.
#[derive(Default)]
struct Fingerprint(u64);

impl Hasher for Fingerprint {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 fingerprints are hashed")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl Default for IdIndex {
    fn default() -> Self {
        IdIndex { keys: RandomState::new(), slots: HashMap::default() }
    }
}

impl IdIndex {
    pub fn with_capacity(n: usize) -> IdIndex {
        IdIndex { keys: RandomState::new(), slots: HashMap::with_capacity_and_hasher(n, Default::default()) }
    }

    fn fingerprint(&self, id: &str) -> u64 {
        self.keys.hash_one(id)
    }

    /// What is known about `id`: `Absent` is exact; `Present` is exact for ids the
    /// store holds (see the comment inside).
    pub fn get(&self, id: &str) -> Known {
        match self.slots.get(&self.fingerprint(id)) {
            None => Known::Absent,
            Some(&SHARED) => Known::Ask,
            // The slot is this id's if the store holds the id; for an id it does not
            // hold, it may be another id's. An insert that meets `Present` asks the
            // store (it needs the current row for its 409 anyway) and, when the id is
            // in fact new, records it with `new_id`, which shares the slot.
            Some(&v) => Known::Present { version: i64::from(v & !CANCELLED), cancelled: v & CANCELLED != 0 },
        }
    }

    /// Records `id` at `version`. `new_id` says the caller has established that no
    /// trade had this id before (an insert); when its fingerprint is taken already,
    /// the slot becomes shared and every id on it is asked about from then on.
    pub fn record(&mut self, id: &str, version: i64, cancelled: bool, new_id: bool) {
        let fp = self.fingerprint(id);
        let packed = if (1..=MAX_VERSION).contains(&version) {
            version as u32 | if cancelled { CANCELLED } else { 0 }
        } else {
            SHARED
        };
        match self.slots.get_mut(&fp) {
            Some(slot) if new_id => *slot = SHARED,
            Some(slot) if *slot == SHARED => {}
            Some(slot) => *slot = packed,
            None => {
                self.slots.insert(fp, packed);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.len()
    }

    /// Bytes the table holds (slots and control bytes), for the metrics and the docs.
    pub(crate) fn heap_bytes(&self) -> usize {
        // hashbrown: one (u64, u32) slot of 16 bytes and one control byte per bucket.
        let buckets = (self.slots.capacity() * 8 / 7).next_power_of_two();
        buckets * (std::mem::size_of::<(u64, u32)>() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_cancellation_read_back_exactly() {
        let mut ix = IdIndex::default();
        assert_eq!(ix.get("t-1"), Known::Absent);
        ix.record("t-1", 1, false, true);
        ix.record("t-2", 7, true, true);
        assert_eq!(ix.get("t-1"), Known::Present { version: 1, cancelled: false });
        assert_eq!(ix.get("t-2"), Known::Present { version: 7, cancelled: true });
        ix.record("t-1", 2, false, false);
        assert_eq!(ix.get("t-1"), Known::Present { version: 2, cancelled: false });
        assert_eq!(ix.get("t-3"), Known::Absent);
        assert_eq!(ix.len(), 2);
    }

    #[test]
    fn a_shared_fingerprint_is_asked_about_for_ever() {
        let mut ix = IdIndex::default();
        // Another id holds b's fingerprint at version 3, as a collision would leave it.
        let fp = ix.fingerprint("b");
        ix.slots.insert(fp, 3);
        assert_eq!(ix.get("b"), Known::Present { version: 3, cancelled: false }, "the caller must confirm");
        ix.record("b", 1, false, true); // the store said "b" is new: so the slot is shared
        assert_eq!(ix.get("b"), Known::Ask);
        ix.record("b", 2, false, false);
        assert_eq!(ix.get("b"), Known::Ask, "stays shared");
    }

    #[test]
    fn versions_beyond_31_bits_are_asked_about() {
        let mut ix = IdIndex::default();
        ix.record("busy", MAX_VERSION, false, true);
        assert_eq!(ix.get("busy"), Known::Present { version: MAX_VERSION, cancelled: false });
        ix.record("busy", MAX_VERSION + 1, false, false);
        assert_eq!(ix.get("busy"), Known::Ask);
    }

    #[test]
    fn a_million_ids_take_under_48_bytes_each() {
        let mut ix = IdIndex::default();
        for i in 0..1_000_000 {
            ix.record(&format!("trade-{i}"), 1, false, true);
        }
        let per_trade = ix.heap_bytes() as f64 / 1e6;
        assert!(per_trade <= 48.0, "{per_trade} bytes per trade");
        assert!((0..1_000_000).step_by(997).all(|i| ix.get(&format!("trade-{i}")) != Known::Absent));
    }
}
