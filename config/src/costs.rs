//! `cost_table.yaml`: trading costs per symbol.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole of `cost_table.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostTable {
    /// Costs by symbol; every symbol of the universe must appear.
    pub symbols: BTreeMap<String, SymbolCost>,
}

/// Round-trip cost components, in basis points.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymbolCost {
    /// Half-spread paid on entry, bps.
    pub spread_bps: f64,
    /// Commission, bps.
    pub commission_bps: f64,
}
