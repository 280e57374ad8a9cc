//! The policy and per-symbol parameters, resolved from the configuration
//! once (the hot path reads plain numbers).

use mlcore_config::{AppConfig, BetaSource, CorePolicy, StrategyUniverse};

use crate::portfolio::{Policy, SymbolParams};

/// `core_policy.yaml` as the portfolio reads it; θ is the configured one
/// (a model's own θ replaces it at decision time).
pub fn policy(p: &CorePolicy) -> Policy {
    Policy {
        theta1: p.theta.theta1,
        theta2: p.theta.theta2,
        target_annual_vol: p.sizing.target_annual_vol,
        periods_per_year: p.sizing.periods_per_year,
        max_gross: p.risk.max_gross,
        beta_tolerance: p.risk.beta_tolerance,
        min_edge_over_cost_bps: p.risk.min_edge_over_cost_bps,
        use_ai3: p.sizing.use_ai3,
    }
}

/// Each symbol's parameters, in universe order: β (static, or 1 until a
/// rolling window has filled), caps from `universe.yaml` within the
/// policy's `max_symbol_weight`, lots, and spread + commission from
/// `cost_table.yaml` (0 for a symbol the table does not list).
pub fn symbol_params(cfg: &AppConfig, strategy: &StrategyUniverse) -> Vec<SymbolParams> {
    let risk = &cfg.core_policy.risk;
    strategy
        .symbols
        .iter()
        .map(|sym| {
            let cost = cfg
                .cost_table
                .symbols
                .get(sym.symbol.as_str())
                .map_or(0.0, |c| c.spread_bps + c.commission_bps);
            SymbolParams {
                beta: match sym.beta {
                    BetaSource::Static { value } => value,
                    // Until the window fills, assume β = 1.
                    BetaSource::Rolling { .. } => 1.0,
                },
                max_weight: sym.max_weight.min(risk.max_symbol_weight),
                lot_size: sym.lot_size,
                min_qty: sym.min_qty,
                notional: sym.notional_per_unit_weight,
                cost_bps: cost,
            }
        })
        .collect()
}
