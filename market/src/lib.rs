//! Market data types and checked identifiers.
//!
//! Identifiers are validated once, at the edge (config, CLI, wire), so the
//! rest of the code can rely on them: a [`Symbol`] is 1–16 chars of
//! `[A-Z0-9._]`, a [`StrategyId`] 1–32 chars of `[a-z0-9_]` (it is also the Redis
//! hash tag), a [`ModelId`] 1–64 chars of `[A-Za-z0-9._-]`.

use std::fmt;

/// An identifier failed its check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} `{value}`: {rule}")]
pub struct IdError {
    /// Which kind of identifier.
    pub kind: &'static str,
    /// The rejected value.
    pub value: String,
    /// The rule it broke.
    pub rule: &'static str,
}

macro_rules! checked_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:literal, $rule:literal, $ok:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `value`.
            pub fn new(value: &str) -> Result<Self, IdError> {
                let ok: fn(char) -> bool = $ok;
                if value.is_empty() || value.len() > $max || !value.chars().all(ok) {
                    return Err(IdError { kind: $kind, value: value.to_owned(), rule: $rule });
                }
                Ok(Self(value.to_owned()))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        // Read as text wherever text is expected (keys, labels, logs): the
        // check happened at construction, and cannot be undone through `&str`.
        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

checked_id!(
    /// A tradable symbol, e.g. `EURUSD`.
    Symbol, "symbol", 16, "1-16 characters of A-Z, 0-9, `.` or `_`",
    |c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '.' || c == '_'
);
checked_id!(
    /// A strategy id, e.g. `fx_g10`.
    StrategyId, "strategy id", 32, "1-32 characters of a-z, 0-9 or `_`",
    |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
);
checked_id!(
    /// A model id, e.g. `fx_g10-gbdt-20261122`.
    ModelId, "model id", 64, "1-64 characters of A-Z, a-z, 0-9, `.`, `_` or `-`",
    |c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-'
);

/// One top-of-book quote. Plain `Copy` data: it crosses threads by value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quote {
    /// Exchange/feed timestamp, ns since the epoch.
    pub ts_ns: i64,
    /// Index of the symbol in its universe (not the wire id).
    pub symbol: u16,
    /// Best bid.
    pub bid: f64,
    /// Best ask.
    pub ask: f64,
    /// Size at the bid.
    pub bid_size: f64,
    /// Size at the ask.
    pub ask_size: f64,
}

impl Quote {
    /// Mid price.
    pub fn mid(&self) -> f64 {
        0.5 * (self.bid + self.ask)
    }

    /// Spread in basis points of the mid.
    pub fn spread_bps(&self) -> f64 {
        (self.ask - self.bid) / self.mid() * 1e4
    }

    /// Whether the quote can be used: positive, finite, not crossed.
    pub fn is_sane(&self) -> bool {
        self.bid.is_finite() && self.ask.is_finite() && self.bid > 0.0 && self.ask >= self.bid
    }
}

/// An OHLC bar of mids.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bar {
    /// Bar start, ns since the epoch.
    pub start_ns: i64,
    /// First mid.
    pub open: f64,
    /// Highest mid.
    pub high: f64,
    /// Lowest mid.
    pub low: f64,
    /// Last mid.
    pub close: f64,
    /// Quotes in the bar.
    pub count: u32,
}

impl Bar {
    /// A bar opened by one quote.
    pub fn open_with(start_ns: i64, mid: f64) -> Self {
        Self {
            start_ns,
            open: mid,
            high: mid,
            low: mid,
            close: mid,
            count: 1,
        }
    }

    /// Adds a later quote's mid.
    pub fn push(&mut self, mid: f64) {
        self.high = self.high.max(mid);
        self.low = self.low.min(mid);
        self.close = mid;
        self.count += 1;
    }
}

/// Calendar helpers (UTC), without a date library: days since the epoch to
/// `YYYY-MM-DD` and back (Howard Hinnant's civil-date algorithms).
pub mod civil {
    /// `(year, month, day)` of a day count since 1970-01-01.
    pub fn from_days(z: i64) -> (i64, u32, u32) {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let y = yoe + era * 400 + i64::from(m <= 2);
        (y, m, d)
    }

    /// Day count since 1970-01-01 of a date.
    pub fn to_days(y: i64, m: u32, d: u32) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let m = i64::from(m);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// `YYYY-MM-DD`.
    pub fn format(days: i64) -> String {
        let (y, m, d) = from_days(days);
        format!("{y:04}-{m:02}-{d:02}")
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Option<i64> {
        let mut it = s.splitn(3, '-');
        let y = it.next()?.parse().ok()?;
        let m: u32 = it.next()?.parse().ok()?;
        let d: u32 = it.next()?.parse().ok()?;
        if !(1..=12).contains(&m) || !(1..=31).contains(&d) || s.len() != 10 {
            return None;
        }
        let days = to_days(y, m, d);
        (from_days(days) == (y, m, d)).then_some(days)
    }

    /// Day of week, 0 = Monday.
    pub fn weekday(days: i64) -> u32 {
        // 1970-01-01 was a Thursday.
        (days + 3).rem_euclid(7) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked() {
        assert!(Symbol::new("EURUSD").is_ok());
        assert!(Symbol::new("eurusd").is_err());
        assert!(StrategyId::new("fx_g10").is_ok());
        assert!(StrategyId::new("FX").is_err());
        assert!(ModelId::new("fx_g10-gbdt-1.2").is_ok());
        assert!(ModelId::new("").is_err());
        let err = Symbol::new("EUR/USD").unwrap_err();
        assert!(err.to_string().contains("EUR/USD"));
    }

    #[test]
    fn civil_dates_round_trip() {
        for days in [-1000i64, 0, 19_000, 20_458, 60_000] {
            let s = civil::format(days);
            assert_eq!(civil::parse(&s), Some(days), "{s}");
        }
        assert_eq!(civil::format(0), "1970-01-01");
        assert_eq!(civil::parse("2026-02-30"), None);
        assert_eq!(civil::weekday(civil::parse("2026-11-23").unwrap()), 0); // a Monday
    }
}
