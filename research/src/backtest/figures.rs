//! The figures of a simulation: risk-adjusted return with its bootstrap
//! interval, drawdown, trading activity, exposure and residual β.

use std::collections::BTreeMap;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::simulate::Simulation;

/// Resamples of the block bootstrap.
pub const BOOTSTRAP_RESAMPLES: usize = 400;

/// A backtest's headline figures (P&L in units of capital).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Decisions measured.
    pub decisions: usize,
    /// Share of decisions with at least one non-flat target.
    pub decisions_not_flat: f64,
    /// Share of signals (decision × symbol) not flat.
    pub signals_not_flat: f64,
    /// Orders filled.
    pub fills: usize,
    /// Total P&L after costs.
    pub total_return: f64,
    /// Costs paid (spread crossed, slippage, commission).
    pub costs_paid: f64,
    /// Annualised Sharpe ratio of per-decision P&L.
    pub sharpe: f64,
    /// 90 % moving-block-bootstrap interval of the Sharpe ratio.
    pub sharpe_ci90: [f64; 2],
    /// Annualised Sortino ratio.
    pub sortino: f64,
    /// Largest fall of the equity curve from a peak (≥ 0).
    pub max_drawdown: f64,
    /// Share of decision intervals with a position that made money (of
    /// those that made or lost any).
    pub win_rate: f64,
    /// Σ|Δw| filled per day.
    pub turnover_per_day: f64,
    /// Mean fill price against the mid at the decision, bps (spread,
    /// slippage and the market's move during the latency).
    pub realised_slippage_bps: f64,
    /// Mean Σ|w| held.
    pub mean_gross: f64,
    /// Mean |Σw| held.
    pub mean_abs_net: f64,
    /// Mean |Σwβ| of the decided targets.
    pub mean_abs_residual_beta: f64,
    /// Largest |Σwβ| of the decided targets.
    pub max_abs_residual_beta: f64,
    /// Mean |Σwβ| of the positions held.
    pub mean_abs_held_beta: f64,
    /// P&L per UTC day.
    pub daily_pnl: BTreeMap<String, f64>,
}

/// Per-decision P&L: the equity curve's steps.
pub fn returns(sim: &Simulation) -> Vec<f64> {
    sim.equity.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Annualised Sharpe of `r` (0 when flat or too short).
pub fn sharpe(r: &[f64], per_year: f64) -> f64 {
    let (mean, sd) = mean_sd(r);
    if sd > 0.0 {
        mean / sd * per_year.sqrt()
    } else {
        0.0
    }
}

fn mean_sd(r: &[f64]) -> (f64, f64) {
    if r.len() < 2 {
        return (0.0, 0.0);
    }
    let n = r.len() as f64;
    let mean = r.iter().sum::<f64>() / n;
    let var = r.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// A moving-block bootstrap of `stat` over `r` (blocks of √n, which keeps
/// the serial dependence overlapping positions create): the 5th and 95th
/// percentiles. Seeded: the same series gives the same interval.
pub fn bootstrap(r: &[f64], seed: u64, stat: impl Fn(&[f64]) -> f64) -> [f64; 2] {
    let mut sample = Vec::with_capacity(r.len());
    bootstrap_indices(r.len(), seed, |idx| {
        sample.clear();
        sample.extend(idx.iter().map(|&i| r[i]));
        stat(&sample)
    })
}

/// [`bootstrap`] over positions `0..n`: `stat` sees each resample's
/// positions, so series that pair up (two models on one trigger grid) are
/// resampled together.
pub fn bootstrap_indices(n: usize, seed: u64, mut stat: impl FnMut(&[usize]) -> f64) -> [f64; 2] {
    let all: Vec<usize> = (0..n).collect();
    if n < 4 {
        let s = stat(&all);
        return [s, s];
    }
    let block = ((n as f64).sqrt().ceil() as usize).max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sample = Vec::with_capacity(n);
    let mut stats: Vec<f64> = (0..BOOTSTRAP_RESAMPLES)
        .map(|_| {
            sample.clear();
            while sample.len() < n {
                let start = (rng.next_u64() % (n - block + 1) as u64) as usize;
                let take = block.min(n - sample.len());
                sample.extend_from_slice(&all[start..start + take]);
            }
            stat(&sample)
        })
        .collect();
    stats.sort_by(f64::total_cmp);
    let at = |p: f64| stats[((p * (stats.len() - 1) as f64).round() as usize).min(stats.len() - 1)];
    [at(0.05), at(0.95)]
}

/// The figures of `sim`; `per_year` decisions a year annualise.
pub fn figures(sim: &Simulation, n_symbols: usize, per_year: f64, seed: u64) -> Figures {
    let r = returns(sim);
    let decisions = sim.summaries.len();
    let not_flat = sim.summaries.iter().filter(|s| s.positions > 0).count();
    let signals: usize = sim.summaries.iter().map(|s| s.positions).sum();
    let (mean, _) = mean_sd(&r);
    let downside = (r.iter().map(|x| x.min(0.0).powi(2)).sum::<f64>() / r.len().max(1) as f64).sqrt();
    let mut peak = 0.0f64;
    let mut max_dd = 0.0f64;
    for &e in &sim.equity {
        peak = peak.max(e);
        max_dd = max_dd.max(peak - e);
    }
    let (mut wins, mut moves) = (0usize, 0usize);
    // Interval k runs from decision k to the next one; what it holds is
    // decision k's book once filled, i.e. what the next decision finds.
    for (k, x) in r.iter().enumerate() {
        if sim.held_gross.get(k + 1).copied().unwrap_or(0.0) > 0.0 && *x != 0.0 {
            moves += 1;
            wins += usize::from(*x > 0.0);
        }
    }
    let mut daily: BTreeMap<String, f64> = BTreeMap::new();
    for (k, x) in r.iter().enumerate() {
        let ts = sim.ts.get(k).copied().unwrap_or(0);
        *daily
            .entry(mlcore_market::civil::format(ts.div_euclid(86_400_000_000_000)))
            .or_default() += x;
    }
    let days = daily.len().max(1) as f64;
    let residual_beta: Vec<f64> = sim.summaries.iter().map(|s| s.residual_beta).collect();
    Figures {
        decisions,
        decisions_not_flat: not_flat as f64 / decisions.max(1) as f64,
        signals_not_flat: signals as f64 / (decisions * n_symbols).max(1) as f64,
        fills: sim.fills,
        total_return: sim.equity.last().copied().unwrap_or(0.0) - sim.equity.first().copied().unwrap_or(0.0),
        costs_paid: sim.costs_paid,
        sharpe: sharpe(&r, per_year),
        sharpe_ci90: bootstrap(&r, seed, |s| sharpe(s, per_year)),
        sortino: if downside > 0.0 {
            mean / downside * per_year.sqrt()
        } else {
            0.0
        },
        max_drawdown: max_dd,
        win_rate: wins as f64 / moves.max(1) as f64,
        turnover_per_day: sim.traded_weight / days,
        realised_slippage_bps: if sim.traded_weight > 0.0 {
            sim.slippage_weighted_bps / sim.traded_weight
        } else {
            0.0
        },
        mean_gross: mean_abs(&sim.held_gross),
        mean_abs_net: mean_abs(&sim.held_net),
        mean_abs_residual_beta: mean_abs(&residual_beta),
        max_abs_residual_beta: residual_beta.iter().fold(0.0, |m, b| f64::max(m, b.abs())),
        mean_abs_held_beta: mean_abs(&sim.held_beta),
        daily_pnl: daily,
    }
}

/// Mean of |x| (0 for nothing).
fn mean_abs(v: &[f64]) -> f64 {
    v.iter().map(|x| x.abs()).sum::<f64>() / v.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharpe_and_its_interval_are_what_the_series_says() {
        // Alternating +2/−1: mean 0.5, sd ≈ 1.5.
        let r: Vec<f64> = (0..400).map(|i| if i % 2 == 0 { 2.0 } else { -1.0 }).collect();
        let s = sharpe(&r, 1.0);
        assert!((s - 0.5 / 1.5019).abs() < 1e-3, "{s}");
        let [lo, hi] = bootstrap(&r, 7, |x| sharpe(x, 1.0));
        assert!(lo <= s && s <= hi && hi - lo < 0.2, "{lo} {s} {hi}");
        assert_eq!(bootstrap(&r, 7, |x| sharpe(x, 1.0)), [lo, hi], "seeded");
        assert_eq!(sharpe(&[1.0; 10], 252.0), 0.0, "no variance, no ratio");
    }
}
