//! `core_policy.yaml`: the decision rules — θ gate, sizing, risk limits.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole of `core_policy.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorePolicy {
    /// θ gate applied to model outputs.
    pub theta: Theta,
    /// Position sizing.
    pub sizing: Sizing,
    /// Portfolio risk limits.
    pub risk: RiskLimits,
    /// Signal lifetime.
    pub signal: SignalPolicy,
    /// When a retrained model may replace the active one.
    pub adoption: Adoption,
}

/// Champion/challenger: a new model becomes a candidate only when it beats
/// the active one on the same out-of-sample window by this much, with
/// confidence (the lower end of the 90 % bootstrap interval of the gain).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adoption {
    /// Least annualised Sharpe gain, after costs.
    pub sharpe_margin: f64,
}

/// θ gate: long when p > θ1 and risk < θ2, short when p < 1 − θ1 and risk < θ2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Theta {
    /// Probability threshold θ1, in (0.5, 1).
    pub theta1: f64,
    /// Risk threshold θ2, in (0, 1].
    pub theta2: f64,
    /// The largest change of θ1 or θ2 one retraining may propose.
    pub max_step: f64,
    /// Search bounds for θ1 `[lo, hi]`.
    pub theta1_bounds: [f64; 2],
    /// Search bounds for θ2 `[lo, hi]`.
    pub theta2_bounds: [f64; 2],
    /// θ per strategy id, set through a reviewed config change: when a
    /// strategy has one, its daemons and backtests decide with it instead
    /// of the θ its model's manifest carries (the retraining's proposal).
    /// Changed live, between two decisions.
    pub per_strategy: BTreeMap<String, ThetaPair>,
}

/// One strategy's θ.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThetaPair {
    /// Probability threshold θ1.
    pub theta1: f64,
    /// Risk threshold θ2.
    pub theta2: f64,
}

impl Theta {
    /// The θ a strategy decides with when the configuration sets one.
    pub fn for_strategy(&self, id: &str) -> Option<ThetaPair> {
        self.per_strategy.get(id).copied()
    }
}

/// Volatility-target sizing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sizing {
    /// Annualised volatility each position targets.
    pub target_annual_vol: f64,
    /// Number of returns in the realised-volatility estimate.
    pub vol_lookback: u32,
    /// Quote periods per year, to annualise per-quote volatility.
    pub periods_per_year: f64,
    /// Whether the ai3 meta-label head (when present) scales the size.
    pub use_ai3: bool,
}

/// Portfolio limits, enforced after sizing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskLimits {
    /// Cap on Σ|wᵢ|.
    pub max_gross: f64,
    /// Cap on |wᵢ| for any symbol (a symbol's own `max_weight` may be lower).
    pub max_symbol_weight: f64,
    /// |Σ wᵢβᵢ| allowed after neutralisation, caps and lot rounding.
    pub beta_tolerance: f64,
    /// Minimum expected edge over cost, in bps, for a position to be kept.
    pub min_edge_over_cost_bps: f64,
}

/// Signal lifetime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalPolicy {
    /// `valid_until` = trigger time + this.
    pub ttl_ms: u64,
}
