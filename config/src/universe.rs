//! `universe.yaml`: the strategies and the symbols each one trades.

use mlcore_market::{StrategyId, Symbol};
use serde::{Deserialize, Serialize};

/// The whole of `universe.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Universe {
    /// Every strategy the daemon decides for.
    pub strategies: Vec<StrategyUniverse>,
}

/// One strategy's universe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategyUniverse {
    /// Strategy id (checked at load: 1-32 of `[a-z0-9_]`, so it is safe as
    /// the Redis hash tag).
    pub id: StrategyId,
    /// The benchmark symbol rolling betas are estimated against.
    pub benchmark: Symbol,
    /// Symbols, in feature-row order.
    pub symbols: Vec<SymbolSpec>,
}

/// One tradable symbol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymbolSpec {
    /// Ticker, e.g. `EURUSD` (checked at load: 1-16 of `[A-Z0-9._]`).
    pub symbol: Symbol,
    /// Numeric id used on the wire (frames carry ids, not strings).
    pub id: u32,
    /// Where β comes from.
    pub beta: BetaSource,
    /// Quantities are multiples of this.
    pub lot_size: f64,
    /// Smaller non-zero quantities are rounded to zero.
    pub min_qty: f64,
    /// Cap on |weight| for this symbol.
    pub max_weight: f64,
    /// Notional per unit of weight, to turn weights into quantities.
    pub notional_per_unit_weight: f64,
}

/// β of a symbol against the strategy benchmark:
/// `{source: static, value: 0.8}` or `{source: rolling, window: 256}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", deny_unknown_fields, rename_all = "snake_case")]
pub enum BetaSource {
    /// A fixed β.
    Static {
        /// The β.
        value: f64,
    },
    /// Estimated over a rolling window of returns.
    Rolling {
        /// Number of returns in the window.
        window: u32,
    },
}
