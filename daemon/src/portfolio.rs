//! From model outputs to target weights: θ gate → volatility-target sizing →
//! cost check → β-neutral portfolio with caps and lot rounding.
//!
//! All buffers are sized once ([`Scratch::new`]); [`decide`] allocates nothing.
//!
//! - Gate: long when `p > θ1` and `risk < θ2`; short when `p < 1 − θ1` and
//!   `risk < θ2`; else flat.
//! - Size: `|w| = min(max_weight, target_vol / σ_ann)` where `σ_ann` is the
//!   per-quote volatility (`rvol_100 / √100`) annualised with
//!   `sizing.periods_per_year`; scaled by the ai3 meta-label when present
//!   and enabled.
//! - Cost: the expected edge `|2p − 1| · rvol_20` (bps) must exceed the
//!   symbol's spread + commission from `cost_table.yaml` plus
//!   `risk.min_edge_over_cost_bps`, else the position goes flat.
//! - β-neutral: active weights are projected onto Σ wᵢβᵢ = 0, capped (per
//!   symbol, then gross), repeated until within `beta_tolerance`; then rounded
//!   to lots (below `min_qty` → 0) and, if rounding broke neutrality, nudged a
//!   lot at a time on the highest-|β| symbols. The residual β is reported.

/// Static per-symbol inputs, from `universe.yaml` and `cost_table.yaml`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SymbolParams {
    /// β against the benchmark (static, or the latest rolling estimate).
    pub beta: f64,
    /// Cap on |weight|.
    pub max_weight: f64,
    /// Quantity step.
    pub lot_size: f64,
    /// Smallest non-zero |qty|.
    pub min_qty: f64,
    /// Notional per unit of weight.
    pub notional: f64,
    /// Spread + commission, bps.
    pub cost_bps: f64,
}

/// Policy inputs, from `core_policy.yaml` (and θ from the model).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Probability threshold.
    pub theta1: f64,
    /// Risk threshold.
    pub theta2: f64,
    /// Annualised volatility target per position.
    pub target_annual_vol: f64,
    /// Quote periods per year (annualises per-quote volatility).
    pub periods_per_year: f64,
    /// Gross cap.
    pub max_gross: f64,
    /// |Σwβ| allowed.
    pub beta_tolerance: f64,
    /// Extra edge required over cost, bps.
    pub min_edge_over_cost_bps: f64,
    /// Scale size by ai3 when present.
    pub use_ai3: bool,
}

/// Per-decision model outputs and volatility features of one symbol.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SymbolInput {
    /// ai1.
    pub prob_up: f64,
    /// ai2.
    pub risk: f64,
    /// ai3 (1.0 when absent).
    pub meta: f64,
    /// √Σr² over 20 quotes, bps.
    pub rvol_20_bps: f64,
    /// √Σr² over 100 quotes, bps.
    pub rvol_100_bps: f64,
    /// Whether the symbol's features are warmed up.
    pub ready: bool,
}

/// Target of one symbol.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Target {
    /// Signed weight after rounding.
    pub weight: f64,
    /// Signed quantity.
    pub qty: f64,
}

/// Why a symbol ended flat (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlatReason {
    /// Not flat.
    #[default]
    None,
    /// Features not warmed up.
    NotReady,
    /// The θ gate said flat.
    Gate,
    /// Edge below cost.
    Cost,
    /// Rounded below a lot or `min_qty`.
    Rounding,
}

/// Reusable buffers for one strategy.
#[derive(Debug, Clone)]
pub struct Scratch {
    w: Vec<f64>,
    active: Vec<bool>,
    /// Targets, one per symbol.
    pub targets: Vec<Target>,
    /// Why each flat symbol is flat.
    pub flat: Vec<FlatReason>,
}

impl Scratch {
    /// Buffers for `n` symbols.
    pub fn new(n: usize) -> Self {
        Self {
            w: vec![0.0; n],
            active: vec![false; n],
            targets: vec![Target::default(); n],
            flat: vec![FlatReason::None; n],
        }
    }
}

/// Portfolio summary.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Summary {
    /// Σ wᵢβᵢ after rounding.
    pub residual_beta: f64,
    /// Σ |wᵢ|.
    pub gross: f64,
    /// Non-zero positions.
    pub positions: usize,
}

/// Computes targets into `scratch.targets`. No allocation.
#[allow(clippy::needless_range_loop)] // parallel per-symbol arrays: one index reads clearer than nested zips
pub fn decide(
    policy: &Policy,
    symbols: &[SymbolParams],
    inputs: &[SymbolInput],
    scratch: &mut Scratch,
) -> Summary {
    let n = symbols.len().min(inputs.len()).min(scratch.w.len());
    // 1. Gate, size, cost.
    for i in 0..n {
        let (s, x) = (&symbols[i], &inputs[i]);
        scratch.flat[i] = FlatReason::None;
        scratch.w[i] = 0.0;
        scratch.active[i] = false;
        if !x.ready {
            scratch.flat[i] = FlatReason::NotReady;
            continue;
        }
        let side = if x.prob_up > policy.theta1 && x.risk < policy.theta2 {
            1.0
        } else if x.prob_up < 1.0 - policy.theta1 && x.risk < policy.theta2 {
            -1.0
        } else {
            scratch.flat[i] = FlatReason::Gate;
            continue;
        };
        let edge_bps = (2.0 * x.prob_up - 1.0).abs() * x.rvol_20_bps;
        if edge_bps < s.cost_bps + policy.min_edge_over_cost_bps {
            scratch.flat[i] = FlatReason::Cost;
            continue;
        }
        let sigma_ann = x.rvol_100_bps * 1e-4 / 10.0 * policy.periods_per_year.sqrt();
        let size = if sigma_ann > 0.0 {
            policy.target_annual_vol / sigma_ann
        } else {
            0.0
        };
        let meta = if policy.use_ai3 {
            x.meta.clamp(0.0, 1.0)
        } else {
            1.0
        };
        scratch.w[i] = side * size.min(s.max_weight) * meta;
        scratch.active[i] = scratch.w[i] != 0.0;
    }
    // 2. β-neutralise and cap, until both hold.
    for _ in 0..20 {
        let (mut b, mut s2) = (0.0, 0.0);
        for i in 0..n {
            if scratch.active[i] {
                b += scratch.w[i] * symbols[i].beta;
                s2 += symbols[i].beta * symbols[i].beta;
            }
        }
        if s2 > 0.0 {
            for i in 0..n {
                if scratch.active[i] {
                    scratch.w[i] -= b / s2 * symbols[i].beta;
                }
            }
        }
        let mut gross = 0.0;
        for i in 0..n {
            scratch.w[i] = scratch.w[i].clamp(-symbols[i].max_weight, symbols[i].max_weight);
            gross += scratch.w[i].abs();
        }
        if gross > policy.max_gross {
            let k = policy.max_gross / gross;
            for w in scratch.w.iter_mut().take(n) {
                *w *= k;
            }
        }
        if beta_of(&scratch.w[..n], symbols).abs() <= policy.beta_tolerance * 0.5 {
            break;
        }
    }
    // 3. Lots.
    for i in 0..n {
        let s = &symbols[i];
        // Toward zero: rounding never grows a position past its caps.
        let qty = (scratch.w[i] * s.notional / s.lot_size).trunc() * s.lot_size;
        let qty = if qty.abs() < s.min_qty { 0.0 } else { qty };
        if qty == 0.0 && scratch.active[i] {
            scratch.flat[i] = FlatReason::Rounding;
        }
        scratch.targets[i] = Target {
            weight: qty / s.notional,
            qty,
        };
    }
    // 4. If rounding broke neutrality, move one lot at a time on the
    //    highest-|β| held symbol whose step reduces the residual without
    //    breaking a cap (shrinking a position always qualifies).
    for _ in 0..64 {
        let residual: f64 = (0..n).map(|i| scratch.targets[i].weight * symbols[i].beta).sum();
        if residual.abs() <= policy.beta_tolerance {
            break;
        }
        let gross: f64 = scratch.targets[..n].iter().map(|t| t.weight.abs()).sum();
        let mut best: Option<(usize, f64)> = None;
        for i in 0..n {
            let (t, s) = (scratch.targets[i], &symbols[i]);
            if t.qty == 0.0 || s.beta == 0.0 {
                continue;
            }
            let step = -residual.signum() * s.beta.signum() * s.lot_size;
            let qty = t.qty + step;
            let grows = qty.abs() > t.qty.abs();
            let fits = (qty / s.notional).abs() <= s.max_weight
                && gross + s.lot_size / s.notional <= policy.max_gross;
            let keeps_min = qty == 0.0 || qty.abs() >= s.min_qty;
            if (grows && !fits) || !keeps_min {
                continue;
            }
            if best.is_none_or(|(j, _)| s.beta.abs() > symbols[j].beta.abs()) {
                best = Some((i, qty));
            }
        }
        let Some((i, qty)) = best else { break };
        scratch.targets[i] = Target {
            weight: qty / symbols[i].notional,
            qty,
        };
    }
    let residual_beta = (0..n).map(|i| scratch.targets[i].weight * symbols[i].beta).sum();
    Summary {
        residual_beta,
        gross: scratch.targets[..n].iter().map(|t| t.weight.abs()).sum(),
        positions: scratch.targets[..n].iter().filter(|t| t.qty != 0.0).count(),
    }
}

fn beta_of(w: &[f64], symbols: &[SymbolParams]) -> f64 {
    w.iter().zip(symbols).map(|(w, s)| w * s.beta).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> Policy {
        Policy {
            theta1: 0.55,
            theta2: 0.6,
            target_annual_vol: 0.1,
            periods_per_year: 4_354_560.0,
            max_gross: 1.0,
            beta_tolerance: 0.01,
            min_edge_over_cost_bps: 0.0,
            use_ai3: true,
        }
    }

    fn sym(beta: f64) -> SymbolParams {
        SymbolParams {
            beta,
            max_weight: 0.1,
            lot_size: 1000.0,
            min_qty: 1000.0,
            notional: 1e7,
            cost_bps: 0.8,
        }
    }

    fn input(p: f64, risk: f64) -> SymbolInput {
        SymbolInput {
            prob_up: p,
            risk,
            meta: 1.0,
            rvol_20_bps: 20.0,
            rvol_100_bps: 40.0,
            ready: true,
        }
    }

    #[test]
    fn the_gate_follows_theta() {
        let syms = [sym(1.0), sym(0.8), sym(-0.5), sym(0.3), sym(0.9)];
        let ins = [
            input(0.7, 0.1),
            input(0.2, 0.1),
            input(0.5, 0.1),
            input(0.7, 0.9),
            SymbolInput {
                ready: false,
                ..input(0.9, 0.0)
            },
        ];
        let mut s = Scratch::new(5);
        decide(&policy(), &syms, &ins, &mut s);
        assert_eq!(s.flat[2], FlatReason::Gate);
        assert_eq!(s.flat[3], FlatReason::Gate, "risk above θ2");
        assert_eq!(s.flat[4], FlatReason::NotReady);
        assert!(s.targets[2].qty == 0.0 && s.targets[3].qty == 0.0 && s.targets[4].qty == 0.0);
    }

    #[test]
    fn edge_below_cost_goes_flat() {
        let mut expensive = sym(1.0);
        expensive.cost_bps = 50.0;
        let mut s = Scratch::new(2);
        decide(
            &policy(),
            &[expensive, sym(0.5)],
            &[input(0.7, 0.1), input(0.3, 0.1)],
            &mut s,
        );
        assert_eq!(s.flat[0], FlatReason::Cost);
    }

    proptest! {
        #[test]
        fn portfolio_is_beta_neutral_capped_and_lot_rounded(
            betas in proptest::collection::vec(-1.5f64..1.5, 2..32),
            probs in proptest::collection::vec(0.0f64..1.0, 32),
        ) {
            let n = betas.len();
            let syms: Vec<SymbolParams> = betas.iter().map(|b| sym(*b)).collect();
            let ins: Vec<SymbolInput> = probs[..n].iter().map(|p| input(*p, 0.1)).collect();
            let mut s = Scratch::new(n);
            let summary = decide(&policy(), &syms, &ins, &mut s);
            prop_assert!(summary.gross <= 1.0 + 1e-9);
            for (t, sp) in s.targets.iter().zip(&syms) {
                prop_assert!(t.weight.abs() <= sp.max_weight + 1e-12);
                prop_assert!((t.qty / sp.lot_size - (t.qty / sp.lot_size).round()).abs() < 1e-9);
                prop_assert!(t.qty == 0.0 || t.qty.abs() >= sp.min_qty);
            }
            let residual: f64 = s.targets.iter().zip(&syms).map(|(t, sp)| t.weight * sp.beta).sum();
            prop_assert!((residual - summary.residual_beta).abs() < 1e-12);
            // Neutral within tolerance whenever at least two positions could offset.
            if summary.positions >= 2 {
                prop_assert!(residual.abs() <= 0.01 + 1e-12, "residual {residual}");
            }
        }
    }
}
