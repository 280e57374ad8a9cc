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
//! - β-neutral: the side of the book carrying the excess β shrinks toward
//!   zero (never past it: no published side contradicts the gate, and flat
//!   symbols stay flat; a book with all its β on one side goes flat), the
//!   gross is capped; then weights are rounded to lots (toward zero; below
//!   `min_qty` → 0) and, if rounding broke neutrality, nudged a lot at a
//!   time on the highest-|β| held symbols, without crossing zero. The
//!   residual β is reported.

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

impl SymbolInput {
    /// A symbol before its first decision: not warmed up, no model output
    /// (what decision buffers start as; `prepare` and `apply_scores` fill them).
    pub const NOT_READY: Self = Self {
        prob_up: 0.5,
        risk: 1.0,
        meta: 1.0,
        rvol_20_bps: 0.0,
        rvol_100_bps: 0.0,
        ready: false,
    };
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
    /// Shrunk to zero to make the book β-neutral (its side carried all the
    /// excess β).
    Neutrality,
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
        // An edge that is not a number does not cover the cost either.
        if edge_bps.is_nan() || edge_bps < s.cost_bps + policy.min_edge_over_cost_bps {
            scratch.flat[i] = FlatReason::Cost;
            continue;
        }
        let sigma_ann = x.rvol_100_bps * 1e-4 / 10.0 * policy.periods_per_year.sqrt();
        let size = if sigma_ann > 0.0 {
            policy.target_annual_vol / sigma_ann
        } else {
            0.0
        };
        let meta = match (policy.use_ai3, x.meta.is_finite()) {
            (false, _) => 1.0,
            (true, true) => x.meta.clamp(0.0, 1.0),
            (true, false) => {
                // A meta-label that is not a number sizes nothing.
                scratch.flat[i] = FlatReason::Gate;
                continue;
            }
        };
        scratch.w[i] = side * size.min(s.max_weight) * meta;
        scratch.active[i] = scratch.w[i] != 0.0;
    }
    // 2. β-neutralise without turning any position against its gate, then
    //    cap the gross (scaling every weight alike keeps Σ wᵢβᵢ = 0; no
    //    weight grew, so the per-symbol caps still hold).
    neutralise(&mut scratch.w[..n], &symbols[..n]);
    for i in 0..n {
        if scratch.active[i] && scratch.w[i] == 0.0 {
            scratch.flat[i] = FlatReason::Neutrality;
        }
    }
    let gross: f64 = scratch.w[..n].iter().map(|w| w.abs()).sum();
    if gross > policy.max_gross {
        let k = policy.max_gross / gross;
        for w in scratch.w.iter_mut().take(n) {
            *w *= k;
        }
    }
    // 3. Lots.
    for i in 0..n {
        let s = &symbols[i];
        // Toward zero: rounding never grows a position past its caps.
        let qty = (scratch.w[i] * s.notional / s.lot_size).trunc() * s.lot_size;
        let qty = if qty.abs() < s.min_qty { 0.0 } else { qty };
        if qty == 0.0 && scratch.active[i] && scratch.flat[i] == FlatReason::None {
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

/// `w` made β-neutral (Σ wᵢβᵢ = 0) by shrinking positions toward zero,
/// never past it: the closest such weights to `w`,
/// `wᵢ' = clamp(wᵢ − λβᵢ, min(0, wᵢ), max(0, wᵢ))` for the λ at which
/// Σ wᵢ'βᵢ = 0. The side carrying the excess β gives it up, each position
/// in proportion to its β; flat symbols stay flat. A plain projection onto
/// Σ wᵢβᵢ = 0 would hedge with whatever had β — publishing `short` for a symbol the model
/// gave p = 0.99 (an end-to-end run did, before this). A book whose β
/// is all on one side therefore goes flat: it cannot be neutral without a
/// position the model did not ask for.
///
/// Σ wᵢ'βᵢ falls piecewise linearly as λ grows, so a Newton step lands on
/// the root once λ is in the root's piece; a bracket and bisection keep
/// the steps that leave it from wandering. A few passes over the symbols.
fn neutralise(w: &mut [f64], symbols: &[SymbolParams]) {
    // wᵢ − λβᵢ, kept between 0 and wᵢ.
    let shrunk = |wi: f64, beta: f64, lambda: f64| (wi - lambda * beta).clamp(wi.min(0.0), wi.max(0.0));
    // f = Σ wᵢ'βᵢ at λ, and its slope: −Σ βᵢ² over the weights strictly
    // inside their range (at 0 or at wᵢ a weight no longer moves).
    let at = |w: &[f64], lambda: f64| {
        let (mut f, mut slope) = (0.0, 0.0);
        for (&wi, s) in w.iter().zip(symbols) {
            let v = shrunk(wi, s.beta, lambda);
            if v != 0.0 && v != wi {
                slope -= s.beta * s.beta;
            }
            f += v * s.beta;
        }
        (f, slope)
    };
    let excess = beta_of(w, symbols);
    if excess == 0.0 {
        return;
    }
    // At |λ| = max |wᵢ/βᵢ| every weight on the excess side is exactly zero:
    // the answer when that side carries all the β.
    let reach = w
        .iter()
        .zip(symbols)
        .filter(|(_, s)| s.beta != 0.0)
        .map(|(wi, s)| (wi / s.beta).abs())
        .fold(0.0, f64::max);
    // f(lo) ≥ 0 ≥ f(hi) throughout; the best λ evaluated, and its |f|.
    let (mut lo, mut hi) = if excess > 0.0 { (0.0, reach) } else { (-reach, 0.0) };
    let far = if excess > 0.0 { hi } else { lo };
    let mut best = (far, at(w, far).0.abs());
    let mut lambda = 0.0;
    for _ in 0..64 {
        let (f, slope) = at(w, lambda);
        if f.abs() < best.1 {
            best = (lambda, f.abs());
        }
        if f.abs() <= 1e-12 {
            break;
        }
        if f > 0.0 {
            lo = lambda;
        } else {
            hi = lambda;
        }
        // A flat piece (slope 0) gives no Newton step: bisect.
        let newton = if slope < 0.0 { lambda - f / slope } else { f64::NAN };
        lambda = if newton > lo && newton < hi {
            newton
        } else {
            0.5 * (lo + hi)
        };
    }
    for (wi, s) in w.iter_mut().zip(symbols) {
        *wi = shrunk(*wi, s.beta, best.0);
    }
}

fn beta_of(w: &[f64], symbols: &[SymbolParams]) -> f64 {
    w.iter().zip(symbols).map(|(w, s)| w * s.beta).sum()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The policy the crate's tests decide with.
    pub(crate) fn policy() -> Policy {
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
    fn the_side_with_the_excess_beta_shrinks_and_a_one_sided_book_goes_flat() {
        // Two longs (β 1.0, 0.5) against one short (β 1.0): the longs carry
        // the excess and shrink, the largest β most; the short is untouched.
        let syms = [sym(1.0), sym(0.5), sym(1.0)];
        let mut w = [0.08, 0.06, -0.05];
        neutralise(&mut w, &syms);
        assert_eq!(w[2], -0.05);
        assert!(w[0] > 0.0 && w[0] < 0.08 && w[1] > 0.0 && w[1] < 0.06, "{w:?}");
        assert!(0.08 - w[0] > 0.06 - w[1], "the larger β gives up more: {w:?}");
        assert!(beta_of(&w, &syms).abs() < 1e-12);

        // Only longs with positive β: nothing can offset them without a
        // short the model did not ask for, so the book goes flat, and says why.
        let syms = [sym(1.0), sym(0.8), sym(0.6)];
        let mut s = Scratch::new(3);
        let summary = decide(
            &policy(),
            &syms,
            &[input(0.9, 0.1), input(0.8, 0.1), input(0.9, 0.1)],
            &mut s,
        );
        assert_eq!(summary.positions, 0);
        assert_eq!(s.flat, [FlatReason::Neutrality; 3]);
        // A zero-β long needs no offset and stays.
        let mut s = Scratch::new(2);
        let summary = decide(
            &policy(),
            &[sym(0.0), sym(1.0)],
            &[input(0.9, 0.1), input(0.9, 0.1)],
            &mut s,
        );
        assert_eq!((summary.positions, s.flat[1]), (1, FlatReason::Neutrality));
        assert!(s.targets[0].qty > 0.0);
    }

    #[test]
    fn inputs_that_are_not_numbers_give_flat_targets_not_nan() {
        let nan = f64::NAN;
        let syms = [sym(1.0), sym(0.8), sym(-0.5), sym(0.3), sym(0.9), sym(1.2)];
        let ins = [
            input(nan, 0.1),
            input(0.9, nan),
            SymbolInput {
                rvol_20_bps: nan,
                ..input(0.9, 0.1)
            },
            SymbolInput {
                rvol_100_bps: nan,
                ..input(0.9, 0.1)
            },
            SymbolInput {
                meta: nan,
                ..input(0.9, 0.1)
            },
            SymbolInput {
                rvol_100_bps: f64::INFINITY,
                ..input(0.1, 0.1)
            },
        ];
        let mut s = Scratch::new(6);
        let summary = decide(&policy(), &syms, &ins, &mut s);
        for (i, t) in s.targets.iter().enumerate() {
            assert_eq!((t.weight, t.qty), (0.0, 0.0), "symbol {i}: {t:?}");
        }
        assert!(summary.residual_beta.is_finite() && summary.gross == 0.0);
        assert_eq!(
            s.flat[..3],
            [FlatReason::Gate, FlatReason::Gate, FlatReason::Cost]
        );
        assert_eq!(s.flat[4], FlatReason::Gate, "the meta-label");
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
            // Every position keeps the side the gate gave it; gated-flat stays flat.
            let theta1 = policy().theta1;
            for (i, (t, x)) in s.targets.iter().zip(&ins).enumerate() {
                let gate = if x.prob_up > theta1 { 1.0 } else if x.prob_up < 1.0 - theta1 { -1.0 } else { 0.0 };
                prop_assert!(
                    t.qty == 0.0 || t.qty.signum() == gate,
                    "symbol {i}: p {} beta {} gave qty {}", x.prob_up, syms[i].beta, t.qty
                );
            }
        }

        #[test]
        fn neutralising_only_shrinks_and_leaves_no_beta(
            w in proptest::collection::vec(-0.1f64..0.1, 1..32),
            betas in proptest::collection::vec(-1.5f64..1.5, 32),
        ) {
            let syms: Vec<SymbolParams> = betas[..w.len()].iter().map(|b| sym(*b)).collect();
            let mut out = w.clone();
            neutralise(&mut out, &syms);
            for (before, after) in w.iter().zip(&out) {
                prop_assert!(after * before >= 0.0 && after.abs() <= before.abs() + 1e-15, "{before} -> {after}");
            }
            // Neutral, unless one side had all the β (then that side is gone).
            let residual = beta_of(&out, &syms);
            prop_assert!(residual.abs() <= 1e-9, "residual {residual} from {w:?}");
        }
    }
}
