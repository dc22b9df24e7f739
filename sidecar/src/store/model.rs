//! The trade data model and its validation rules (pure; no I/O).
//!
//! Times are carried as microseconds since the Unix epoch (UTC) internally and as
//! RFC 3339 strings on the wire.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::store::money::Amount;

/// Longest accepted trade id.
pub(crate) const MAX_ID_LEN: usize = 64;
/// Longest accepted symbol (also enforced by the schema).
pub(crate) const MAX_SYMBOL_LEN: usize = 32;

/// Buy or sell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Increases the position.
    Buy,
    /// Decreases the position.
    Sell,
}

/// Lifecycle of a trade. Only `filled` trades count towards the trade state;
/// `cancelled` is terminal and kept as a tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Booked but not executed yet.
    Pending,
    /// Executed; counts towards the position.
    Filled,
    /// Cancelled; terminal.
    Cancelled,
}

impl Side {
    /// The name stored in the database and used on the wire.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }

    /// Parses the stored name.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "buy" => Some(Side::Buy),
            "sell" => Some(Side::Sell),
            _ => None,
        }
    }
}

impl Status {
    /// The name stored in the database and used on the wire.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Filled => "filled",
            Status::Cancelled => "cancelled",
        }
    }

    /// Parses the stored name.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Status::Pending),
            "filled" => Some(Status::Filled),
            "cancelled" => Some(Status::Cancelled),
            _ => None,
        }
    }
}

/// A stored trade: what the API returns and what the database row holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trade {
    /// Client-chosen (or generated) unique id.
    pub id: String,
    /// Instrument symbol.
    pub symbol: String,
    /// Buy or sell.
    pub side: Side,
    /// Positive quantity (exact decimal, see [`crate::store::money`]).
    pub quantity: Amount,
    /// Price (exact decimal; may be negative, as some futures were).
    pub price: Amount,
    /// Lifecycle status.
    pub status: Status,
    /// Trade time.
    #[serde(with = "micros_rfc3339")]
    pub ts: i64,
    /// Optimistic-concurrency version; 1 on insert, +1 per change.
    pub version: i64,
    /// Commit sequence of the last change (for incremental sync).
    pub seq: i64,
    /// When the trade was first stored.
    #[serde(with = "micros_rfc3339")]
    pub created_at: i64,
    /// When the trade was last changed.
    #[serde(with = "micros_rfc3339")]
    pub updated_at: i64,
}

/// A trade as submitted for insertion.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTrade {
    /// Optional id; a time-ordered UUID is generated when absent.
    pub id: Option<String>,
    /// Instrument symbol.
    pub symbol: String,
    /// Buy or sell.
    pub side: Side,
    /// Positive quantity (exact decimal, see [`crate::store::money`]).
    pub quantity: Amount,
    /// Price (exact decimal; may be negative, as some futures were).
    pub price: Amount,
    /// Defaults to `filled`; `cancelled` is not accepted on insert.
    pub status: Option<Status>,
    /// Trade time; defaults to the time the sidecar received it.
    #[serde(default, with = "opt_micros_rfc3339")]
    pub ts: Option<i64>,
}

/// A change to an existing trade, guarded by the version the client last saw.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TradePatch {
    /// The version the client expects the trade to have; a mismatch is a conflict.
    pub expected_version: i64,
    /// New symbol.
    pub symbol: Option<String>,
    /// New side.
    pub side: Option<Side>,
    /// New quantity.
    pub quantity: Option<Amount>,
    /// New price.
    pub price: Option<Amount>,
    /// New status (`cancelled` cancels the trade).
    pub status: Option<Status>,
    /// New trade time.
    #[serde(default, with = "opt_micros_rfc3339")]
    pub ts: Option<i64>,
}

/// A validation failure, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the offending field, e.g. `trades[3].quantity`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }

    /// Prefixes the field path, e.g. for an element of a batch.
    pub(crate) fn within(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The characters ids and symbols are made of: all unreserved in a URL path, so
/// every stored id and symbol can be named in `/v1/trades/{id}` and `/v1/state/{symbol}`.
const TOKEN_PUNCTUATION: [char; 4] = ['.', '_', ':', '-'];

fn check_token(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.is_empty() || value.len() > max {
        return Err(FieldError::new(field, format!("must be 1 to {max} characters")));
    }
    if let Some(bad) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || TOKEN_PUNCTUATION.contains(c))) {
        return Err(FieldError::new(
            field,
            format!("character {bad:?} not allowed (letters, digits and {TOKEN_PUNCTUATION:?} only)"),
        ));
    }
    // A path segment of `.` or `..` is rewritten by URL normalisation in clients and
    // proxies, so such a value could be written but not read back.
    if value == "." || value == ".." {
        return Err(FieldError::new(field, format!("{value:?} is not allowed")));
    }
    Ok(())
}

/// Checks a trade id: 1–64 of `A-Za-z0-9._:-`, not `.` or `..`.
pub(crate) fn validate_id(id: &str) -> Result<(), FieldError> {
    check_token("id", id, MAX_ID_LEN)
}

/// Checks a symbol: 1–32 of `A-Za-z0-9._:-`, not `.` or `..`.
pub(crate) fn validate_symbol(symbol: &str) -> Result<(), FieldError> {
    check_token("symbol", symbol, MAX_SYMBOL_LEN)
}

/// The range and scale of a price are the type's ([`Amount`]); a quantity must also
/// be positive.
fn validate_quantity(q: Amount) -> Result<(), FieldError> {
    if !q.is_positive() {
        return Err(FieldError::new("quantity", "must be > 0"));
    }
    Ok(())
}

impl NewTrade {
    /// Validates every field; the first problem found is reported.
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        if let Some(id) = &self.id {
            validate_id(id)?;
        }
        validate_symbol(&self.symbol)?;
        validate_quantity(self.quantity)?;
        if self.status == Some(Status::Cancelled) {
            return Err(FieldError::new("status", "a trade cannot be inserted as cancelled"));
        }
        Ok(())
    }

    /// Turns a validated submission into a stored trade.
    pub(crate) fn into_trade(self, id: String, seq: i64, now: i64) -> Trade {
        Trade {
            id,
            symbol: self.symbol,
            side: self.side,
            quantity: self.quantity,
            price: self.price,
            status: self.status.unwrap_or(Status::Filled),
            ts: self.ts.unwrap_or(now),
            version: 1,
            seq,
            created_at: now,
            updated_at: now,
        }
    }
}

impl TradePatch {
    /// Validates every present field.
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        if self.expected_version < 1 {
            return Err(FieldError::new("expected_version", "must be >= 1"));
        }
        if let Some(s) = &self.symbol {
            validate_symbol(s)?;
        }
        if let Some(q) = self.quantity {
            validate_quantity(q)?;
        }
        Ok(())
    }

    /// The trade after this patch, as the next version with sequence `seq`.
    pub(crate) fn apply(&self, current: &Trade, seq: i64, now: i64) -> Trade {
        Trade {
            id: current.id.clone(),
            symbol: self.symbol.clone().unwrap_or_else(|| current.symbol.clone()),
            side: self.side.unwrap_or(current.side),
            quantity: self.quantity.unwrap_or(current.quantity),
            price: self.price.unwrap_or(current.price),
            status: self.status.unwrap_or(current.status),
            ts: self.ts.unwrap_or(current.ts),
            version: current.version + 1,
            seq,
            created_at: current.created_at,
            updated_at: now,
        }
    }
}

/// Current time in microseconds since the epoch.
pub(crate) fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// Formats epoch microseconds as RFC 3339 (UTC, microsecond precision).
pub(crate) fn format_micros(micros: i64) -> String {
    Rfc3339(micros).to_string()
}

/// Epoch microseconds shown as RFC 3339 (UTC, microsecond precision), written straight
/// into whatever formats it: every trade in an answer or a log record carries three,
/// and chrono's formatter built a `String` for each (~4% of the CPU a batch costs,
/// docs/benchmarks.md, session 12). humantime writes 1970–9999 from a buffer on the
/// stack; chrono does the rest of the range, the same text.
pub(crate) struct Rfc3339(pub i64);

/// The first microsecond of the year 10000, where humantime stops.
const YEAR_10000: u64 = 253_402_300_800_000_000;

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match u64::try_from(self.0) {
            Ok(us) if us < YEAR_10000 => {
                let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us);
                humantime::format_rfc3339_micros(t).fmt(f)
            }
            _ => match DateTime::<Utc>::from_timestamp_micros(self.0) {
                Some(t) => f.write_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true)),
                None => write!(f, "{}", self.0),
            },
        }
    }
}

/// Parses an RFC 3339 time into epoch microseconds.
pub(crate) fn parse_micros(s: &str) -> Result<i64, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc).timestamp_micros())
        .map_err(|e| format!("not an RFC 3339 time ({e})"))
}

mod micros_rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// RFC 3339 text in human-readable formats (JSON); the microseconds themselves in
    /// binary ones (the commit log's records).
    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() { s.collect_str(&super::Rfc3339(*v)) } else { s.serialize_i64(*v) }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        if !d.is_human_readable() {
            return i64::deserialize(d);
        }
        let s = String::deserialize(d)?;
        super::parse_micros(&s).map_err(D::Error::custom)
    }
}

mod opt_micros_rfc3339 {
    use serde::{Deserialize, Deserializer, de::Error};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => super::parse_micros(&s).map(Some).map_err(D::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_trade() -> NewTrade {
        serde_json::from_str(r#"{"symbol":"AAPL","side":"buy","quantity":10,"price":189.5}"#).unwrap()
    }

    #[test]
    fn accepts_a_plain_trade_and_fills_defaults() {
        let t = new_trade();
        t.validate().unwrap();
        let stored = t.into_trade("x".into(), 7, 1_000);
        assert_eq!(stored.status, Status::Filled);
        assert_eq!((stored.ts, stored.version, stored.seq), (1_000, 1, 7));
    }

    #[test]
    fn rejects_bad_fields_naming_them() {
        let cases = [
            (r#"{"symbol":"","side":"buy","quantity":1,"price":1}"#, "symbol"),
            (r#"{"symbol":"A B","side":"buy","quantity":1,"price":1}"#, "symbol"),
            (r#"{"symbol":"A","side":"buy","quantity":0,"price":1}"#, "quantity"),
            (r#"{"symbol":"A","side":"buy","quantity":-3,"price":1}"#, "quantity"),
            (r#"{"id":"a/b","symbol":"A","side":"buy","quantity":1,"price":1}"#, "id"),
            (r#"{"id":"..","symbol":"A","side":"buy","quantity":1,"price":1}"#, "id"),
            (r#"{"id":"a%2Fb","symbol":"A","side":"buy","quantity":1,"price":1}"#, "id"),
            (r#"{"symbol":"BTC/USD","side":"buy","quantity":1,"price":1}"#, "symbol"),
            (r#"{"symbol":"BTC\u0000","side":"buy","quantity":1,"price":1}"#, "symbol"),
            (r#"{"symbol":".","side":"buy","quantity":1,"price":1}"#, "symbol"),
            (r#"{"symbol":"A","side":"buy","quantity":1,"price":1,"status":"cancelled"}"#, "status"),
        ];
        for (json, field) in cases {
            let t: NewTrade = serde_json::from_str(json).unwrap();
            assert_eq!(t.validate().unwrap_err().field, field, "{json}");
        }
    }

    #[test]
    fn rejects_unknown_fields_and_bad_enums_at_parse_time() {
        assert!(
            serde_json::from_str::<NewTrade>(r#"{"symbol":"A","side":"buy","quantity":1,"price":1,"qty":2}"#).is_err()
        );
        assert!(serde_json::from_str::<NewTrade>(r#"{"symbol":"A","side":"hold","quantity":1,"price":1}"#).is_err());
        assert!(
            serde_json::from_str::<NewTrade>(r#"{"symbol":"A","side":"buy","quantity":1,"price":1,"ts":"yesterday"}"#)
                .is_err()
        );
        for amounts in
            [r#""quantity":1e13,"price":1"#, r#""quantity":1,"price":1e300"#, r#""quantity":1,"price":"NaN""#]
        {
            let json = format!(r#"{{"symbol":"A","side":"buy",{amounts}}}"#);
            assert!(serde_json::from_str::<NewTrade>(&json).is_err(), "{json}");
        }
    }

    #[test]
    fn patch_bumps_version_and_keeps_untouched_fields() {
        let cur = new_trade().into_trade("t".into(), 1, 10);
        let p: TradePatch = serde_json::from_str(r#"{"expected_version":1,"price":200}"#).unwrap();
        p.validate().unwrap();
        let next = p.apply(&cur, 2, 20);
        assert_eq!((next.version, next.seq, next.price, next.quantity), (2, 2, Amount::whole(200), Amount::whole(10)));
        assert_eq!((next.created_at, next.updated_at), (10, 20));
        let bad: TradePatch = serde_json::from_str(r#"{"expected_version":0}"#).unwrap();
        assert_eq!(bad.validate().unwrap_err().field, "expected_version");
    }

    #[test]
    fn times_round_trip_through_rfc3339() {
        let us = parse_micros("2026-11-22T10:00:00.123456Z").unwrap();
        assert_eq!(format_micros(us), "2026-11-22T10:00:00.123456Z");
        assert_eq!(parse_micros("2026-11-22T12:00:00+02:00").unwrap(), parse_micros("2026-11-22T10:00:00Z").unwrap());
    }

    fn chrono_text(us: i64) -> String {
        DateTime::<Utc>::from_timestamp_micros(us).unwrap().to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    #[test]
    fn rfc3339_text_at_the_edges_of_the_fast_range() {
        let last = YEAR_10000 as i64 - 1;
        for us in [0, 1, 951_782_400_000_000 /* 2000-02-29 */, last, last + 1, -1, -20 * YEAR_10000 as i64] {
            assert_eq!(Rfc3339(us).to_string(), chrono_text(us), "{us}");
        }
        assert_eq!(Rfc3339(last).to_string(), "9999-12-31T23:59:59.999999Z");
        assert_eq!(Rfc3339(-1).to_string(), "1969-12-31T23:59:59.999999Z");
    }

    proptest::proptest! {
        #[test]
        fn rfc3339_text_is_chronos(us in -(YEAR_10000 as i64)..2 * YEAR_10000 as i64) {
            proptest::prop_assert_eq!(Rfc3339(us).to_string(), chrono_text(us));
        }
    }
}
