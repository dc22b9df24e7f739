//! Exact money. Quantities and prices are fixed-point decimals with [`SCALE`] (8)
//! fractional digits — enough for crypto's satoshis, FX pips and any equity tick —
//! stored as DuckDB `DECIMAL(18,8)`, which DuckDB backs with a 64-bit integer (the fast
//! decimal width). In Rust they are that same integer ([`Amount`]); sums of quantities
//! ([`Sum8`]) and of notionals, `quantity × price` with 16 fractional digits
//! ([`Sum16`]), are 128-bit integers, exactly what DuckDB's `sum()` over those columns
//! computes (`DECIMAL(38,8)`, `DECIMAL(38,16)`). No binary floating point anywhere:
//! every figure is reproducible to the digit by any system reading the same trades.
//!
//! Limits: an amount has at most 10 integer digits (`|x| < 10^10`) and 8 decimals;
//! a notional sum is exact up to `10^22` per symbol. Input beyond them is refused,
//! never rounded. The one rounding is the average price, a quotient: half to even at
//! 8 decimals, computed from the exact sums, which are reported as well.
//!
//! On the wire amounts are decimal strings (`"189.5"`); requests may also send JSON
//! numbers, read from their exact text, never through a float.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Fractional digits of a quantity or price.
pub(crate) const SCALE: u32 = 8;
/// Total digits of a quantity or price (DuckDB `DECIMAL(18,8)`).
pub(crate) const WIDTH: u8 = 18;
/// Exclusive bound of an amount's units (`10^10` whole units).
const LIMIT: i64 = 1_000_000_000_000_000_000;

/// A quantity or price: `units × 10^-8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(i64);

/// A sum of amounts: `units × 10^-8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Sum8(pub i128);

/// A sum of `quantity × price` products: `units × 10^-16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Sum16(pub i128);

impl Amount {
    /// The amount of `units × 10^-8`, if within the limits.
    pub fn from_units(units: i64) -> Option<Amount> {
        (units.unsigned_abs() < LIMIT as u64).then_some(Amount(units))
    }

    /// Whole units, for tests.
    #[cfg(test)]
    pub(crate) fn whole(n: i64) -> Amount {
        Amount::from_units(n * 10i64.pow(SCALE)).expect("whole amount within limits")
    }

    /// The scaled integer.
    pub(crate) fn units(self) -> i64 {
        self.0
    }

    /// True when above zero.
    pub(crate) fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// Parses a decimal: `-12.5`, `0.00000001`, `1e3`, `1.5E-4`. Refuses what does
    /// not fit exactly (more than 8 decimals, 10 or more integer digits), and
    /// anything that is not a plain decimal (`NaN`, `Infinity`, `0x10`, ` 1`).
    pub fn parse(text: &str) -> Result<Amount, String> {
        let bad = || format!("{text:?} is not a decimal number");
        let (negative, rest) = match text.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], rest[i + 1..].parse::<i32>().map_err(|_| bad())?),
            None => (rest, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (int.is_empty() && frac.is_empty()) || !digits_only(int) || !digits_only(frac) {
            return Err(bad());
        }
        let digits = format!("{int}{frac}");
        let digits = digits.trim_start_matches('0');
        if digits.is_empty() {
            return Ok(Amount(0));
        }
        let frac_digits = i64::from(frac.len() as u32) - i64::from(exponent);
        let significant = digits.trim_end_matches('0');
        let dropped = (digits.len() - significant.len()) as i64;
        if frac_digits - dropped > i64::from(SCALE) {
            return Err(format!("{text} has more than {SCALE} decimal places"));
        }
        let shift = i64::from(SCALE) - (frac_digits - dropped);
        let too_big = || format!("{text} is too large (at most 10 integer digits)");
        if significant.len() as i64 + shift > 18 {
            return Err(too_big());
        }
        let mut units: i64 = significant.parse().map_err(|_| too_big())?;
        for _ in 0..shift {
            units = units.checked_mul(10).ok_or_else(too_big)?;
        }
        Amount::from_units(if negative { -units } else { units }).ok_or_else(too_big)
    }

    /// As a DuckDB parameter or appender value.
    pub fn to_sql(self) -> duckdb::types::Value {
        let d = duckdb::types::Decimal::new(WIDTH, SCALE as u8, i128::from(self.0)).expect("within DECIMAL(18,8)");
        duckdb::types::Value::Decimal(d)
    }

    /// From a DuckDB `DECIMAL` value of any scale up to 8.
    pub(crate) fn from_sql(d: duckdb::types::Decimal) -> Option<Amount> {
        let shift = SCALE.checked_sub(u32::from(d.scale()))?;
        let units = d.value().checked_mul(10i128.pow(shift))?;
        Amount::from_units(i64::try_from(units).ok()?)
    }

    /// `self × other` with 16 fractional digits: exact in 128 bits.
    pub(crate) fn times(self, other: Amount) -> Sum16 {
        Sum16(i128::from(self.0) * i128::from(other.0))
    }
}

impl Sum8 {
    /// Adds `sign × a`.
    pub(crate) fn add(&mut self, a: Amount, sign: i64) {
        self.0 += i128::from(sign) * i128::from(a.0);
    }

    /// `notional / self` at 8 decimals, rounded half to even; none when not positive.
    pub(crate) fn average(self, notional: Sum16) -> Option<Sum8> {
        (self.0 > 0).then(|| Sum8(divide_half_even(notional.0, self.0)))
    }

    /// Parses DuckDB's text of a `DECIMAL(38,8)` (or any scale up to 8).
    pub fn parse(text: &str) -> Option<Sum8> {
        parse_scaled(text, 8).map(Sum8)
    }
}

impl Sum16 {
    /// Adds `sign × n`.
    pub(crate) fn add(&mut self, n: Sum16, sign: i64) {
        self.0 += i128::from(sign) * n.0;
    }

    /// Parses DuckDB's text of a `DECIMAL(38,16)`.
    pub fn parse(text: &str) -> Option<Sum16> {
        parse_scaled(text, 16).map(Sum16)
    }
}

/// `n / d` rounded half to even (`d > 0`).
fn divide_half_even(n: i128, d: i128) -> i128 {
    let (q, r) = (n.div_euclid(d), n.rem_euclid(d));
    match (2 * r).cmp(&d) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => q + (q & 1),
    }
}

/// Parses `-123.45` into units of `10^-scale` (at most `scale` decimals).
fn parse_scaled(text: &str, scale: usize) -> Option<i128> {
    let (negative, rest) = text.strip_prefix('-').map_or((false, text), |r| (true, r));
    let (int, frac) = rest.split_once('.').unwrap_or((rest, ""));
    if int.is_empty() || frac.len() > scale || !format!("{int}{frac}").bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let units: i128 = format!("{int}{frac:0<scale$}").parse().ok()?;
    Some(if negative { -units } else { units })
}

/// `units × 10^-scale` as decimal text without trailing zeros, built on the stack: a
/// hot-state response renders nine of these, and `u128` division per digit is what
/// formatting costs, so digits are taken in `u64` whenever the value fits.
struct Scaled {
    buf: [u8; 42], // sign, 39 digits of an i128, the point, one leading zero
    start: usize,
}

impl Scaled {
    fn new(units: i128, scale: u32) -> Scaled {
        let mut digits = [b'0'; 40];
        let mut at = digits.len();
        let mut push = |d: u8| {
            at -= 1;
            digits[at] = b'0' + d;
        };
        // 128-bit division only while the value does not fit 64 bits.
        let mut n = units.unsigned_abs();
        while n > u128::from(u64::MAX) {
            push((n % 10) as u8);
            n /= 10;
        }
        let mut n = n as u64;
        while n > 0 {
            push((n % 10) as u8);
            n /= 10;
        }
        let scale = scale as usize;
        let first = at.min(digits.len() - scale - 1); // at least one integer digit
        let (int, frac) = digits[first..].split_at(digits.len() - first - scale);
        let frac = &frac[..frac.iter().rposition(|&d| d != b'0').map_or(0, |i| i + 1)];
        let mut out = Scaled { buf: [0; 42], start: 42 };
        let len = usize::from(units < 0) + int.len() + if frac.is_empty() { 0 } else { frac.len() + 1 };
        out.start -= len;
        let mut w = out.start;
        let mut put = |bytes: &[u8]| {
            out.buf[w..w + bytes.len()].copy_from_slice(bytes);
            w += bytes.len();
        };
        if units < 0 {
            put(b"-");
        }
        put(int);
        if !frac.is_empty() {
            put(b".");
            put(frac);
        }
        out
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[self.start..]).expect("ASCII digits")
    }
}

/// Display and serialization of each amount type: its decimal text at its scale in
/// human-readable formats (JSON), its integer units in binary ones (the commit log's
/// records, where the text's division and digits cost the writer for nothing).
macro_rules! decimal_text {
    ($($t:ty => |$v:ident| $units:expr, $scale:expr;)*) => {$(
        impl $t {
            fn text(&self) -> Scaled {
                let $v = self;
                Scaled::new($units, $scale)
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.text().as_str())
            }
        }

        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(self.text().as_str())
                } else {
                    let $v = self;
                    s.serialize_i128($units)
                }
            }
        }
    )*};
}
decimal_text! {
    Amount => |a| i128::from(a.0), SCALE;
    Sum8 => |s| s.0, SCALE;
    Sum16 => |s| s.0, 2 * SCALE;
}

impl<'de> Deserialize<'de> for Amount {
    /// A decimal string or a JSON number, taken from its exact text; in a binary
    /// format, the integer units it was serialized as.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Amount, D::Error> {
        if !d.is_human_readable() {
            let units = i128::deserialize(d)?;
            return i64::try_from(units)
                .ok()
                .and_then(Amount::from_units)
                .ok_or_else(|| D::Error::custom(format!("{units} units are out of an amount's range")));
        }
        let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
        let raw = raw.get();
        let text = match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            Some(inner) => inner,
            None if raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => raw,
            None => return Err(D::Error::custom(format!("expected a decimal number or string, got {raw}"))),
        };
        Amount::parse(text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The obvious formatting, to hold the stack-built one to.
    fn reference(units: i128, scale: u32) -> String {
        let one = 10u128.pow(scale);
        let (int, frac) = (units.unsigned_abs() / one, units.unsigned_abs() % one);
        let sign = if units < 0 { "-" } else { "" };
        let frac = format!("{frac:0width$}", width = scale as usize);
        match frac.trim_end_matches('0') {
            "" => format!("{sign}{int}"),
            frac => format!("{sign}{int}.{frac}"),
        }
    }

    proptest! {
        #[test]
        fn decimal_text_is_the_reference_text(units in any::<i128>(), small in any::<i64>(), scale in prop::sample::select(vec![8u32, 16])) {
            for units in [units, i128::from(small)] {
                let text = Scaled::new(units, scale);
                prop_assert_eq!(text.as_str(), reference(units, scale));
            }
        }
    }

    #[test]
    fn decimal_text_at_the_edges() {
        for (units, scale, text) in [
            (0, 8, "0"),
            (1, 8, "0.00000001"),
            (-1, 16, "-0.0000000000000001"),
            (100_000_000, 8, "1"),
            (-150_000_000, 8, "-1.5"),
            (i128::MIN, 16, "-17014118346046923173168.7303715884105728"),
            (i128::MAX, 8, "1701411834604692317316873037158.84105727"),
        ] {
            assert_eq!(Scaled::new(units, scale).as_str(), text);
        }
    }

    fn units(text: &str) -> Result<i64, String> {
        Amount::parse(text).map(Amount::units)
    }

    #[test]
    fn parses_exact_decimals_and_refuses_what_does_not_fit() {
        assert_eq!(units("189.5"), Ok(18_950_000_000));
        assert_eq!(units("189.50000000"), Ok(18_950_000_000));
        assert_eq!(units("-0.00000001"), Ok(-1));
        assert_eq!(units("1e3"), Ok(100_000_000_000));
        assert_eq!(units("1.5E-4"), Ok(15_000));
        assert_eq!(units("0.100000000000"), Ok(10_000_000), "trailing zeros are not precision");
        assert_eq!(units("9999999999.99999999"), Ok(999_999_999_999_999_999));
        assert_eq!(units(".5"), Ok(50_000_000));
        assert_eq!(units("0"), Ok(0));
        assert_eq!((units("0.000000000"), units("0e400"), units("-0")), (Ok(0), Ok(0), Ok(0)));
        for (bad, why) in [
            ("0.000000001", "more than 8 decimal places"),
            ("1e-9", "more than 8 decimal places"),
            ("10000000000", "too large"),
            ("1e10", "too large"),
            ("1e999999999999", "not a decimal"),
            ("1e400", "too large"),
            ("NaN", "not a decimal"),
            ("-Infinity", "not a decimal"),
            ("inf", "not a decimal"),
            ("0x10", "not a decimal"),
            (" 1", "not a decimal"),
            ("1.2.3", "not a decimal"),
            ("", "not a decimal"),
            ("-", "not a decimal"),
            ("1e", "not a decimal"),
        ] {
            let e = Amount::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn json_numbers_are_read_from_their_text_and_strings_are_accepted() {
        let a: Amount = serde_json::from_str("0.1").unwrap();
        let b: Amount = serde_json::from_str("\"0.2\"").unwrap();
        assert_eq!(a.units() + b.units(), Amount::parse("0.3").unwrap().units(), "0.1 + 0.2 is 0.3");
        assert!(serde_json::from_str::<Amount>("12345678.123456789").is_err(), "no silent rounding");
        assert!(serde_json::from_str::<Amount>("\"NaN\"").is_err());
        assert!(serde_json::from_str::<Amount>("true").is_err());
        assert_eq!(serde_json::to_string(&Amount::parse("189.50").unwrap()).unwrap(), "\"189.5\"");
    }

    #[test]
    fn sums_and_averages_are_exact() {
        let (q1, q2) = (Amount::parse("0.1").unwrap(), Amount::parse("0.2").unwrap());
        let mut qty = Sum8::default();
        qty.add(q1, 1);
        qty.add(q2, 1);
        qty.add(Amount::parse("0.3").unwrap(), -1);
        assert_eq!(qty, Sum8(0), "a flat book is exactly zero");
        assert_eq!(
            Amount::parse("1.5").unwrap().times(Amount::parse("0.00000003").unwrap()).to_string(),
            "0.000000045"
        );
        let avg = |n: &str, q: &str| Sum8::parse(q).unwrap().average(Sum16::parse(n).unwrap()).unwrap().to_string();
        assert_eq!(avg("10", "3"), "3.33333333");
        assert_eq!(avg("0.000000025", "1"), "0.00000002", "half to even: down");
        assert_eq!(avg("0.000000035", "1"), "0.00000004", "half to even: up");
        assert_eq!(avg("-0.000000025", "1"), "-0.00000002");
        assert_eq!(Sum8(1).average(Sum16(5)), Some(Sum8(5)));
        assert_eq!(Sum8(0).average(Sum16(5)), None);
        assert_eq!(Sum16::parse("-12.0000000000000001").unwrap().to_string(), "-12.0000000000000001");
        assert_eq!(Sum8::parse("7.50000000"), Some(Sum8(750_000_000)));
    }
}
