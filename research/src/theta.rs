//! θ search: which gate thresholds to publish a model with.
//!
//! The objective is the out-of-sample Sharpe ratio after costs of the
//! backtest ([`crate::backtest`]) over the model's held-out window — the
//! daemon's own decisions, replayed once ([`crate::backtest::record`]) and
//! decided again for each θ ([`crate::backtest::simulate`]).
//!
//! 1. The space: `core_policy.yaml`'s `theta1_bounds` and `theta2_bounds`,
//!    narrowed to `|θ − θ_champion| ≤ max_step` on each axis.
//! 2. A coarse grid over it, then a Tree-structured Parzen Estimator
//!    (Bergstra, Bardenet, Bengio, Kégl, *Algorithms for Hyper-Parameter
//!    Optimization*, NeurIPS 2011; the sampler Optuna's `TPESampler`
//!    follows): the trials so far split into the best quarter and the rest,
//!    a Gaussian kernel density over each, and the next θ the candidate
//!    (of 24 drawn from the good density) with the largest ratio of good to
//!    bad density. Seeded: the same inputs give the same θ.
//! 3. Constraints: at least `min_fills` fills and a drawdown no deeper than
//!    `max_drawdown`; a θ that breaks one is infeasible whatever its Sharpe.
//! 4. The guard: the best feasible θ is adopted only when the lower end of
//!    its 90 % bootstrap interval is above zero and above the champion θ's
//!    own lower end; otherwise the champion's θ stays.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::backtest::{simulate, Backtest, Recorded};
use crate::synth::standard_normal;

/// A closed interval.
pub type Range = (f64, f64);

/// What to search and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchSpec {
    /// The θ in force (the champion's), `(θ1, θ2)`.
    pub champion: (f64, f64),
    /// `theta1_bounds`.
    pub theta1_bounds: Range,
    /// `theta2_bounds`.
    pub theta2_bounds: Range,
    /// `max_step`.
    pub max_step: f64,
    /// Points per axis of the coarse grid.
    pub grid: usize,
    /// TPE trials after the grid.
    pub trials: usize,
    /// Fewest fills a θ must trade.
    pub min_fills: usize,
    /// Deepest drawdown allowed (units of capital).
    pub max_drawdown: f64,
    /// Seed of the sampler.
    pub seed: u64,
}

/// One θ tried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// θ1.
    pub theta1: f64,
    /// θ2.
    pub theta2: f64,
    /// `grid`, `tpe` or `champion`.
    pub stage: String,
    /// Annualised out-of-sample Sharpe after costs.
    pub sharpe: f64,
    /// Its 90 % bootstrap interval.
    pub sharpe_ci90: [f64; 2],
    /// P&L after costs.
    pub total_return: f64,
    /// Fills.
    pub fills: usize,
    /// Max drawdown.
    pub max_drawdown: f64,
    /// Share of decisions not flat.
    pub decisions_not_flat: f64,
    /// Within the constraints.
    pub feasible: bool,
}

/// What the search found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchReport {
    /// The space searched: θ1's range.
    pub theta1_range: Range,
    /// θ2's range.
    pub theta2_range: Range,
    /// The champion θ's figures.
    pub champion: Trial,
    /// The best feasible trial, if any.
    pub best: Option<Trial>,
    /// Whether `best` cleared the guard.
    pub adopted: bool,
    /// The θ to publish with: `best`'s when adopted, else the champion's.
    pub chosen: (f64, f64),
    /// Why, in a sentence.
    pub verdict: String,
    /// Every trial, in order.
    pub trials: Vec<Trial>,
}

/// A search that cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SearchError {
    /// The champion's θ ± max_step misses the bounds.
    #[error(
        "no θ{axis} within max_step {step} of the champion's {champion} lies in the bounds [{lo}, {hi}]"
    )]
    EmptySpace {
        /// 1 or 2.
        axis: u8,
        /// max_step.
        step: f64,
        /// The champion's value.
        champion: f64,
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
    },
}

fn space(axis: u8, champion: f64, bounds: Range, step: f64) -> Result<Range, SearchError> {
    let lo = bounds.0.max(champion - step);
    let hi = bounds.1.min(champion + step);
    if lo > hi || !lo.is_finite() || !hi.is_finite() {
        return Err(SearchError::EmptySpace {
            axis,
            step,
            champion,
            lo: bounds.0,
            hi: bounds.1,
        });
    }
    Ok((lo, hi))
}

/// Evaluates θ on the recorded decisions.
pub fn evaluate(bt: &Backtest, rec: &Recorded, theta: (f64, f64), spec: &SearchSpec, stage: &str) -> Trial {
    let sim = simulate(rec, &bt.sim_config(theta, false));
    let f = bt.figures(&sim);
    Trial {
        theta1: theta.0,
        theta2: theta.1,
        stage: stage.to_owned(),
        sharpe: f.sharpe,
        sharpe_ci90: f.sharpe_ci90,
        total_return: f.total_return,
        fills: f.fills,
        max_drawdown: f.max_drawdown,
        decisions_not_flat: f.decisions_not_flat,
        feasible: f.fills >= spec.min_fills && f.max_drawdown <= spec.max_drawdown,
    }
}

/// The space searched and the coarse grid over it.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// θ1's range.
    pub theta1: Range,
    /// θ2's range.
    pub theta2: Range,
    /// The grid's points, in the order the search evaluates them: what a
    /// scale-out fans out as tasks.
    pub points: Vec<(f64, f64)>,
}

/// The space `spec` searches and its coarse grid.
pub fn grid(spec: &SearchSpec) -> Result<Grid, SearchError> {
    let r1 = space(1, spec.champion.0, spec.theta1_bounds, spec.max_step)?;
    let r2 = space(2, spec.champion.1, spec.theta2_bounds, spec.max_step)?;
    let g = spec.grid.max(1);
    let at = |r: Range, k: usize| {
        if g == 1 {
            0.5 * (r.0 + r.1)
        } else {
            r.0 + (r.1 - r.0) * k as f64 / (g - 1) as f64
        }
    };
    let points = (0..g)
        .flat_map(|i| (0..g).map(move |j| (i, j)))
        .map(|(i, j)| (at(r1, i), at(r2, j)))
        .collect();
    Ok(Grid {
        theta1: r1,
        theta2: r2,
        points,
    })
}

/// Searches θ; see the module documentation. The grid's trials are
/// independent and run in parallel (rayon).
pub fn search(bt: &Backtest, rec: &Recorded, spec: &SearchSpec) -> Result<SearchReport, SearchError> {
    let trials = grid(spec)?
        .points
        .par_iter()
        .map(|p| evaluate(bt, rec, *p, spec, "grid"))
        .collect();
    search_from_grid(bt, rec, spec, trials)
}

/// The search continued from its grid's trials (evaluated here or by a
/// scale-out's tasks, in [`grid`]'s order): TPE, then the verdict.
pub fn search_from_grid(
    bt: &Backtest,
    rec: &Recorded,
    spec: &SearchSpec,
    grid_trials: Vec<Trial>,
) -> Result<SearchReport, SearchError> {
    let Grid {
        theta1: r1,
        theta2: r2,
        ..
    } = grid(spec)?;
    let champion = evaluate(bt, rec, spec.champion, spec, "champion");
    let mut trials = grid_trials;
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    for _ in 0..spec.trials {
        let next = tpe_next(&trials, r1, r2, &mut rng);
        trials.push(evaluate(bt, rec, next, spec, "tpe"));
    }
    let best = trials
        .iter()
        .filter(|t| t.feasible)
        .max_by(|a, b| a.sharpe.total_cmp(&b.sharpe))
        .cloned();
    let (adopted, verdict) = match &best {
        None => (
            false,
            format!(
                "no θ met the constraints (≥ {} fills, drawdown ≤ {}): the champion's θ stays",
                spec.min_fills, spec.max_drawdown
            ),
        ),
        Some(b) if b.sharpe_ci90[0] <= 0.0 => (
            false,
            format!(
                "the best θ's Sharpe {:.2} is not above zero with confidence (90 % interval from {:.2}): the champion's θ stays",
                b.sharpe, b.sharpe_ci90[0]
            ),
        ),
        Some(b) if b.sharpe_ci90[0] <= champion.sharpe_ci90[0] => (
            false,
            format!(
                "the best θ's lower bound {:.2} does not clear the champion's {:.2}: the champion's θ stays",
                b.sharpe_ci90[0], champion.sharpe_ci90[0]
            ),
        ),
        Some(b) => (
            true,
            format!(
                "adopted: Sharpe {:.2} (90 % interval {:.2} to {:.2}) against the champion θ's {:.2} (from {:.2})",
                b.sharpe, b.sharpe_ci90[0], b.sharpe_ci90[1], champion.sharpe, champion.sharpe_ci90[0]
            ),
        ),
    };
    let chosen = match (&best, adopted) {
        (Some(b), true) => (b.theta1, b.theta2),
        _ => spec.champion,
    };
    Ok(SearchReport {
        theta1_range: r1,
        theta2_range: r2,
        champion,
        best,
        adopted,
        chosen,
        verdict,
        trials,
    })
}

/// Candidates drawn from the good density per TPE step.
const CANDIDATES: usize = 24;
/// Share of trials that count as good.
const GAMMA: f64 = 0.25;

/// The next θ to try: the candidate with the largest l(x)/g(x).
fn tpe_next(trials: &[Trial], r1: Range, r2: Range, rng: &mut ChaCha8Rng) -> (f64, f64) {
    // Infeasible trials rank below every feasible one.
    let score = |t: &Trial| if t.feasible { t.sharpe } else { f64::NEG_INFINITY };
    let mut order: Vec<&Trial> = trials.iter().collect();
    order.sort_by(|a, b| score(b).total_cmp(&score(a)));
    let n_good = ((GAMMA * order.len() as f64).ceil() as usize).clamp(1, order.len().max(1));
    let (good, bad) = order.split_at(n_good.min(order.len()));
    let pts = |v: &[&Trial]| v.iter().map(|t| (t.theta1, t.theta2)).collect::<Vec<_>>();
    let (good, bad) = (pts(good), pts(bad));
    let centre = (0.5 * (r1.0 + r1.1), 0.5 * (r2.0 + r2.1));
    if good.is_empty() {
        return centre; // nothing tried yet
    }
    // Scott-like bandwidths, shrinking as trials accumulate.
    let bw = |r: Range, n: usize| ((r.1 - r.0) * (n.max(1) as f64).powf(-0.2)).max(1e-6);
    let (g1, g2) = (bw(r1, good.len()), bw(r2, good.len()));
    let (b1, b2) = (bw(r1, bad.len()), bw(r2, bad.len()));
    let density = |pts: &[(f64, f64)], x: (f64, f64), h1: f64, h2: f64| {
        if pts.is_empty() {
            return 1.0 / ((r1.1 - r1.0).max(1e-6) * (r2.1 - r2.0).max(1e-6));
        }
        pts.iter()
            .map(|p| {
                let (z1, z2) = ((x.0 - p.0) / h1, (x.1 - p.1) / h2);
                (-0.5 * (z1 * z1 + z2 * z2)).exp() / (h1 * h2)
            })
            .sum::<f64>()
            / pts.len() as f64
    };
    let mut best = (f64::NEG_INFINITY, centre);
    for _ in 0..CANDIDATES {
        let centre = good[(rng.next_u64() % good.len() as u64) as usize];
        let x = (
            (centre.0 + g1 * standard_normal(rng)).clamp(r1.0, r1.1),
            (centre.1 + g2 * standard_normal(rng)).clamp(r2.0, r2.1),
        );
        let ratio = density(&good, x, g1, g2) / density(&bad, x, b1, b2).max(1e-300);
        if ratio > best.0 {
            best = (ratio, x);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(theta1: f64, theta2: f64, sharpe: f64) -> Trial {
        Trial {
            theta1,
            theta2,
            stage: "grid".into(),
            sharpe,
            sharpe_ci90: [sharpe - 1.0, sharpe + 1.0],
            total_return: 0.0,
            fills: 100,
            max_drawdown: 0.0,
            decisions_not_flat: 0.5,
            feasible: true,
        }
    }

    #[test]
    fn the_space_is_the_bounds_within_max_step_of_the_champion() {
        assert_eq!(space(1, 0.55, (0.5, 0.8), 0.05), Ok((0.5, 0.6000000000000001)));
        assert!(matches!(
            space(2, 0.1, (0.2, 0.95), 0.05),
            Err(SearchError::EmptySpace { axis: 2, .. })
        ));
    }

    #[test]
    fn tpe_proposes_near_the_good_trials_and_is_seeded() {
        // Sharpe peaks at (0.7, 0.3).
        let mut trials = Vec::new();
        for i in 0..5 {
            for j in 0..5 {
                let (a, b) = (
                    0.5 + 0.1 * f64::from(i) / 2.0,
                    0.2 + 0.1 * f64::from(j) / 2.0 * 2.0,
                );
                trials.push(trial(a, b, -((a - 0.7).powi(2) + (b - 0.3).powi(2)) * 100.0));
            }
        }
        let (r1, r2) = ((0.5, 0.7), (0.2, 0.6));
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let next = tpe_next(&trials, r1, r2, &mut rng);
        assert!(next.0 > 0.62 && next.1 < 0.42, "{next:?}");
        let mut again = ChaCha8Rng::seed_from_u64(3);
        assert_eq!(tpe_next(&trials, r1, r2, &mut again), next);
    }
}
