//! Champion and challenger: a newly trained model (the challenger, with
//! its searched θ) against the active one (the champion, with its own θ) on
//! the same out-of-sample window — the challenger's held-out window, which
//! must come after every row the champion was trained on.
//!
//! Both are replayed through the same backtest ([`crate::backtest`]) on the
//! same trigger grid, so their per-decision P&L pairs up; the challenger
//! wins when the lower end of the 90 % moving-block bootstrap interval of
//! the Sharpe gain (challenger − champion, resampled jointly) is above
//! `core_policy.yaml`'s `adoption.sharpe_margin`. A win makes it a
//! candidate in the registry; activating it still takes two people.

use mlcore_market::Quote;
use mlcore_models::artifact::VerifiedArtifact;
use serde::{Deserialize, Serialize};

use crate::backtest::figures::{bootstrap_indices, returns, sharpe};
use crate::backtest::{simulate, Backtest, BacktestError};

/// One side's figures on the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contender {
    /// Model id.
    pub model_id: String,
    /// Version.
    pub version: u64,
    /// θ1 it decided with.
    pub theta1: f64,
    /// θ2 it decided with.
    pub theta2: f64,
    /// Annualised Sharpe after costs.
    pub sharpe: f64,
    /// Its 90 % bootstrap interval.
    pub sharpe_ci90: [f64; 2],
    /// P&L after costs.
    pub total_return: f64,
    /// Max drawdown.
    pub max_drawdown: f64,
    /// Fills.
    pub fills: usize,
}

/// The outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The active model.
    pub champion: Contender,
    /// The new one.
    pub challenger: Contender,
    /// Challenger's Sharpe − champion's.
    pub sharpe_gain: f64,
    /// 90 % interval of the gain (paired block bootstrap).
    pub sharpe_gain_ci90: [f64; 2],
    /// The margin the lower end had to reach.
    pub margin: f64,
    /// Whether the challenger won.
    pub won: bool,
    /// Why, in a sentence.
    pub reason: String,
}

/// A comparison that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    /// The two models trade different strategies.
    #[error("the champion trades {champion}, the challenger {challenger}")]
    Strategies {
        /// The champion's.
        champion: String,
        /// The challenger's.
        challenger: String,
    },
    /// The window is not out of sample for the champion.
    #[error("the window starts at {window_ms} ms, before the champion {model} stopped training ({trained_until_ms} ms): not out of sample for it")]
    NotOutOfSample {
        /// The champion.
        model: String,
        /// Window start.
        window_ms: i64,
        /// Where the champion's training rows end.
        trained_until_ms: u64,
    },
    /// The backtest failed.
    #[error(transparent)]
    Backtest(#[from] BacktestError),
}

/// Compares `challenger` (deciding with `challenger_theta`) with
/// `champion` (with its manifest's θ) over `bt`'s window of `quotes`.
pub fn challenge(
    bt: &Backtest,
    quotes: &[Quote],
    champion: &VerifiedArtifact,
    challenger: &VerifiedArtifact,
    challenger_theta: (f64, f64),
    margin: f64,
) -> Result<Verdict, ChallengeError> {
    let (cm, xm) = (&champion.manifest, &challenger.manifest);
    if cm.strategy != xm.strategy {
        return Err(ChallengeError::Strategies {
            champion: cm.strategy.clone(),
            challenger: xm.strategy.clone(),
        });
    }
    let trained_until_ms = cm.training_window.test_start_ms;
    let window_ms = bt.window.0.div_euclid(1_000_000);
    if window_ms < i64::try_from(trained_until_ms).unwrap_or(i64::MAX) {
        return Err(ChallengeError::NotOutOfSample {
            model: cm.model_id.clone(),
            window_ms,
            trained_until_ms,
        });
    }
    let run = |a: &VerifiedArtifact, theta: (f64, f64)| -> Result<(Contender, Vec<f64>), ChallengeError> {
        let rec = bt.record(quotes, a)?;
        let sim = simulate(&rec, &bt.sim_config(theta, false));
        let f = bt.figures(&sim);
        let c = Contender {
            model_id: a.manifest.model_id.clone(),
            version: a.manifest.version,
            theta1: theta.0,
            theta2: theta.1,
            sharpe: f.sharpe,
            sharpe_ci90: f.sharpe_ci90,
            total_return: f.total_return,
            max_drawdown: f.max_drawdown,
            fills: f.fills,
        };
        Ok((c, returns(&sim)))
    };
    let (champ, rc) = run(champion, (cm.theta.theta1, cm.theta.theta2))?;
    let (chall, rx) = run(challenger, challenger_theta)?;
    let per_year = bt.per_year();
    let n = rc.len().min(rx.len());
    let gain = |idx: &[usize]| {
        let pick = |r: &[f64]| idx.iter().map(|&i| r[i]).collect::<Vec<f64>>();
        sharpe(&pick(&rx), per_year) - sharpe(&pick(&rc), per_year)
    };
    let sharpe_gain = gain(&(0..n).collect::<Vec<usize>>());
    let ci = bootstrap_indices(n, bt.seed, gain);
    let won = ci[0] > margin;
    let reason = if won {
        format!(
            "the challenger wins: Sharpe {:.2} against {:.2}, a gain of {:.2} whose 90 % interval starts at {:.2}, above the margin {margin}",
            chall.sharpe, champ.sharpe, sharpe_gain, ci[0]
        )
    } else {
        format!(
            "the champion stays: the gain {:.2} (Sharpe {:.2} against {:.2}) has a 90 % interval from {:.2}, not above the margin {margin}",
            sharpe_gain, chall.sharpe, champ.sharpe, ci[0]
        )
    };
    Ok(Verdict {
        champion: champ,
        challenger: chall,
        sharpe_gain,
        sharpe_gain_ci90: ci,
        margin,
        won,
        reason,
    })
}
