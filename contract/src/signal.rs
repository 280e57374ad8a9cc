//! Signals as published and as read back.

use std::fmt;
use std::str::FromStr;

use super::ContractError;

/// Direction of a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Positive weight.
    Long,
    /// Negative weight.
    Short,
    /// Zero weight: no position.
    Flat,
}

impl Side {
    /// The wire form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Long => "long",
            Self::Short => "short",
            Self::Flat => "flat",
        }
    }

    /// The side a weight implies.
    pub fn of_weight(w: f64) -> Self {
        if w > 0.0 {
            Self::Long
        } else if w < 0.0 {
            Self::Short
        } else {
            Self::Flat
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Side {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "long" => Ok(Self::Long),
            "short" => Ok(Self::Short),
            "flat" => Ok(Self::Flat),
            other => Err(format!("unknown side `{other}`")),
        }
    }
}

/// One symbol's signal within a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// Symbol, e.g. `EURUSD`.
    pub symbol: String,
    /// Direction; must agree with the sign of `weight`.
    pub side: Side,
    /// Portfolio weight (signed).
    pub weight: f64,
    /// Quantity in units (signed, lot-rounded).
    pub qty: f64,
    /// ai1: probability of an up move.
    pub return_prob: f64,
    /// ai2: risk score.
    pub risk_score: f64,
}

impl Signal {
    /// Sets what one decision says of this symbol: the target (`weight`,
    /// `qty`; the side follows the weight's sign) and the model's outputs
    /// (ai1 as `return_prob`, kept within [0, 1]; ai2 as `risk_score`). The
    /// daemon's publisher and the backtester's positions both come through
    /// here, so they cannot disagree. No allocation.
    pub fn set_decision(&mut self, weight: f64, qty: f64, prob_up: f64, risk: f64) {
        self.side = Side::of_weight(weight);
        self.weight = weight;
        self.qty = qty;
        self.return_prob = prob_up.clamp(0.0, 1.0);
        self.risk_score = risk;
    }

    /// A flat signal for `symbol`: no position, neutral probability, no risk.
    pub fn flat(symbol: impl Into<String>) -> Self {
        Self {
            symbol: symbol.into(),
            side: Side::Flat,
            weight: 0.0,
            qty: 0.0,
            return_prob: 0.5,
            risk_score: 0.0,
        }
    }
}

/// All signals of one decision of one strategy: published atomically.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SignalBatch {
    /// Strategy id.
    pub strategy: String,
    /// Per-strategy monotonic sequence number (shared by the batch).
    pub seq: u64,
    /// When the decision was made (ms since epoch).
    pub generated_at_ms: u64,
    /// Consumers must not act on the signals after this (ms since epoch).
    pub valid_until_ms: u64,
    /// Model that produced the signals.
    pub model_id: String,
    /// Its version.
    pub model_version: u64,
    /// The signals.
    pub signals: Vec<Signal>,
}

/// A signal as stored in `ns:{S}:sig:<SYMBOL>`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSignal {
    /// Symbol (from the key).
    pub symbol: String,
    /// Sequence number.
    pub seq: u64,
    /// Direction.
    pub side: Side,
    /// Weight.
    pub weight: f64,
    /// Quantity.
    pub qty: f64,
    /// ai1 probability.
    pub return_prob: f64,
    /// ai2 risk score.
    pub risk_score: f64,
    /// Model id.
    pub model_id: String,
    /// Model version.
    pub model_version: u64,
    /// Decision time.
    pub generated_at_ms: u64,
    /// Expiry.
    pub valid_until_ms: u64,
}

impl StoredSignal {
    /// Parses the hash fields of a stored signal.
    pub fn from_fields(symbol: &str, fields: &[(String, String)]) -> Result<Self, ContractError> {
        let get = |k: &'static str| {
            fields
                .iter()
                .find(|(f, _)| f == k)
                .map(|(_, v)| v.as_str())
                .ok_or_else(|| ContractError::Protocol(format!("stored signal {symbol} lacks `{k}`")))
        };
        fn parse<T: FromStr>(symbol: &str, k: &str, v: &str) -> Result<T, ContractError> {
            v.parse()
                .map_err(|_| ContractError::Protocol(format!("stored signal {symbol}: bad `{k}` {v:?}")))
        }
        Ok(Self {
            symbol: symbol.to_owned(),
            seq: parse(symbol, "seq", get("seq")?)?,
            side: get("side")?.parse().map_err(ContractError::Protocol)?,
            weight: parse(symbol, "weight", get("weight")?)?,
            qty: parse(symbol, "qty", get("qty")?)?,
            return_prob: parse(symbol, "return_prob", get("return_prob")?)?,
            risk_score: parse(symbol, "risk_score", get("risk_score")?)?,
            model_id: get("model_id")?.to_owned(),
            model_version: parse(symbol, "model_version", get("model_version")?)?,
            generated_at_ms: parse(symbol, "generated_at_ms", get("generated_at_ms")?)?,
            valid_until_ms: parse(symbol, "valid_until_ms", get("valid_until_ms")?)?,
        })
    }
}
