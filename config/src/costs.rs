//! `cost_table.yaml`: trading costs per symbol.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole of `cost_table.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostTable {
    /// Costs by symbol; every symbol of the universe must appear.
    pub symbols: BTreeMap<String, SymbolCost>,
    /// What a fill pays beyond the spread (the backtester's model).
    pub slippage: Slippage,
}

/// Slippage beyond the spread, per fill:
/// `fixed_bps + impact_bps_per_million × notional traded / 1e6`
/// (linear impact: a larger order walks further into the book).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slippage {
    /// Paid on every fill, bps.
    pub fixed_bps: f64,
    /// Added per million units of notional traded, bps.
    pub impact_bps_per_million: f64,
}

/// Round-trip cost components, in basis points.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymbolCost {
    /// Typical quoted spread, bps. The decision's cost check counts it
    /// with the commission as a round trip (half on entry, half on exit);
    /// a backtest fill crosses half of it, or half of the quote's own
    /// spread when that is wider.
    pub spread_bps: f64,
    /// Commission, bps.
    pub commission_bps: f64,
}
