//! The daemon's view of its configuration, resolved once at start into
//! indexed tables the hot threads read without lookups by name.

use std::collections::HashMap;

use mlcore_models::config::{AppConfig, BetaSource};

use crate::portfolio::{Policy, SymbolParams};

/// One strategy, ready for the hot path.
#[derive(Debug, Clone)]
pub struct Strategy {
    /// Strategy id.
    pub id: String,
    /// Symbols in universe order.
    pub symbols: Vec<String>,
    /// Per-symbol portfolio parameters.
    pub params: Vec<SymbolParams>,
    /// Symbols whose β is estimated (rolling window), by index.
    pub rolling_beta: Vec<Option<usize>>,
    /// Index of the benchmark symbol.
    pub benchmark: usize,
}

/// All strategies and the wire-id routing table.
#[derive(Debug, Clone)]
pub struct Universe {
    /// Strategies in `universe.yaml` order (the trigger frame's index).
    pub strategies: Vec<Strategy>,
    /// Wire symbol id → every (strategy, symbol index) that trades it.
    pub routes: HashMap<u32, Vec<(u16, u16)>>,
    /// Portfolio policy (θ replaced by the model's at decision time).
    pub policy: Policy,
    /// Signal lifetime.
    pub ttl_ms: u64,
}

impl Universe {
    /// Resolves the configuration.
    pub fn from_config(cfg: &AppConfig) -> Self {
        let p = &cfg.core_policy;
        let policy = Policy {
            theta1: p.theta.theta1,
            theta2: p.theta.theta2,
            target_annual_vol: p.sizing.target_annual_vol,
            periods_per_year: p.sizing.periods_per_year,
            max_gross: p.risk.max_gross,
            beta_tolerance: p.risk.beta_tolerance,
            min_edge_over_cost_bps: p.risk.min_edge_over_cost_bps,
            use_ai3: p.sizing.use_ai3,
        };
        let mut routes: HashMap<u32, Vec<(u16, u16)>> = HashMap::new();
        let strategies = cfg
            .universe
            .strategies
            .iter()
            .enumerate()
            .map(|(si, s)| {
                let params = s
                    .symbols
                    .iter()
                    .map(|sym| {
                        let cost = cfg
                            .cost_table
                            .symbols
                            .get(&sym.symbol)
                            .map_or(0.0, |c| c.spread_bps + c.commission_bps);
                        SymbolParams {
                            beta: match sym.beta {
                                BetaSource::Static { value } => value,
                                // Until the window fills, assume β = 1.
                                BetaSource::Rolling { .. } => 1.0,
                            },
                            max_weight: sym.max_weight.min(p.risk.max_symbol_weight),
                            lot_size: sym.lot_size,
                            min_qty: sym.min_qty,
                            notional: sym.notional_per_unit_weight,
                            cost_bps: cost,
                        }
                    })
                    .collect();
                for (i, sym) in s.symbols.iter().enumerate() {
                    routes.entry(sym.id).or_default().push((si as u16, i as u16));
                }
                Strategy {
                    id: s.id.clone(),
                    symbols: s.symbols.iter().map(|x| x.symbol.clone()).collect(),
                    params,
                    rolling_beta: s
                        .symbols
                        .iter()
                        .map(|x| match x.beta {
                            BetaSource::Rolling { window } => Some(window as usize),
                            BetaSource::Static { .. } => None,
                        })
                        .collect(),
                    benchmark: s
                        .symbols
                        .iter()
                        .position(|x| x.symbol == s.benchmark)
                        .unwrap_or(0),
                }
            })
            .collect();
        Self {
            strategies,
            routes,
            policy,
            ttl_ms: p.signal.ttl_ms,
        }
    }
}
