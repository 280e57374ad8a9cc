//! The model's held-out window and how research splits it: the θ search
//! tunes on the first half, and everything that must be out of sample for
//! θ too — the search's held-out figures, the default backtest, the
//! champion/challenger comparison — lives on the second half. Shared by
//! the `research` commands, `train --search-theta` and the retraining flow.

use mlcore_config::{AppConfig, RetrainSearch};
use mlcore_market::Quote;
use mlcore_models::artifact::VerifiedArtifact;

use rayon::prelude::*;

use crate::backtest::{Backtest, BacktestError, Recorded, Timing};
use crate::challenge::{self, ChallengeError, Verdict};
use crate::theta::{self, SearchError, SearchReport, SearchSpec, Trial};

/// Why a held-out step failed.
#[derive(Debug, thiserror::Error)]
pub enum HeldOutError {
    /// The backtest could not run.
    #[error(transparent)]
    Backtest(#[from] BacktestError),
    /// The θ search could not run.
    #[error(transparent)]
    Search(#[from] SearchError),
    /// The comparison could not be made.
    #[error(transparent)]
    Challenge(#[from] ChallengeError),
}

/// A θ search and what the chosen θ does afterwards.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Tuned {
    /// The search, on the first half of the held-out window.
    pub search: SearchReport,
    /// The chosen θ on the second half, which the search never saw: the
    /// out-of-sample figures.
    pub held_out: Trial,
}

/// The model's held-out window `[test start, last decision + one cadence)`, ns.
pub fn test_window(artifact: &VerifiedArtifact, every_ms: u64) -> (i64, i64) {
    let w = &artifact.manifest.training_window;
    (
        ms_to_ns(w.test_start_ms),
        ms_to_ns(w.end_ms).saturating_add(ms_to_ns(every_ms)),
    )
}

/// `window` cut in two on the decision grid: the θ search's half and the
/// half it never sees.
pub fn halves((start, end): (i64, i64), every_ms: u64) -> ((i64, i64), (i64, i64)) {
    let every = ms_to_ns(every_ms).max(1);
    let mid = start + (end - start) / 2 / every * every;
    ((start, mid), (mid, end))
}

/// The second half of `artifact`'s held-out window.
pub fn unseen_half(artifact: &VerifiedArtifact, every_ms: u64) -> (i64, i64) {
    halves(test_window(artifact, every_ms), every_ms).1
}

fn ms_to_ns(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX).saturating_mul(1_000_000)
}

fn backtest(
    cfg: &AppConfig,
    strategy: &str,
    s: &RetrainSearch,
    window: (i64, i64),
) -> Result<Backtest, BacktestError> {
    Backtest::from_config(
        cfg,
        strategy,
        Timing {
            every_ms: s.every_ms,
            latency_ms: s.latency_ms,
            window,
        },
    )
}

/// The θ search's half of the held-out window, recorded once: what the
/// grid's trials (evaluated here, or by a scale-out's tasks) and TPE
/// score.
#[derive(Debug)]
pub struct Tuning {
    /// The backtest of the first half.
    pub backtest: Backtest,
    /// Its recorded decisions.
    pub recorded: Recorded,
    /// The search.
    pub spec: SearchSpec,
}

/// Records `artifact`'s decisions on the first half of its held-out window
/// of `quotes` (the strategy's, in universe order), with core_policy.yaml's
/// θ as the search's champion.
pub fn tuning(
    cfg: &AppConfig,
    artifact: &VerifiedArtifact,
    quotes: &[Quote],
    s: &RetrainSearch,
) -> Result<Tuning, HeldOutError> {
    let m = &artifact.manifest;
    let (first, _) = halves(test_window(artifact, s.every_ms), s.every_ms);
    let t = &cfg.core_policy.theta;
    let spec = SearchSpec {
        champion: (t.theta1, t.theta2),
        theta1_bounds: (t.theta1_bounds[0], t.theta1_bounds[1]),
        theta2_bounds: (t.theta2_bounds[0], t.theta2_bounds[1]),
        max_step: t.max_step,
        grid: s.grid,
        trials: s.trials,
        min_fills: s.min_fills,
        max_drawdown: s.max_drawdown,
        seed: s.seed,
    };
    let backtest = backtest(cfg, &m.strategy, s, first)?;
    let recorded = backtest.record(quotes, artifact)?;
    Ok(Tuning {
        backtest,
        recorded,
        spec,
    })
}

impl Tuning {
    /// The grid's points, in the search's order.
    pub fn grid(&self) -> Result<Vec<(f64, f64)>, HeldOutError> {
        Ok(theta::grid(&self.spec)?.points)
    }

    /// One grid trial.
    pub fn trial(&self, point: (f64, f64)) -> Trial {
        theta::evaluate(&self.backtest, &self.recorded, point, &self.spec, "grid")
    }

    /// The search from the grid's trials (in [`Tuning::grid`]'s order),
    /// then the chosen θ on the second half, which the search never saw.
    pub fn finish(
        &self,
        cfg: &AppConfig,
        artifact: &VerifiedArtifact,
        quotes: &[Quote],
        s: &RetrainSearch,
        grid_trials: Vec<Trial>,
    ) -> Result<Tuned, HeldOutError> {
        let search = theta::search_from_grid(&self.backtest, &self.recorded, &self.spec, grid_trials)?;
        let bt = backtest(
            cfg,
            &artifact.manifest.strategy,
            s,
            unseen_half(artifact, s.every_ms),
        )?;
        let held_out = theta::evaluate(
            &bt,
            &bt.record(quotes, artifact)?,
            search.chosen,
            &self.spec,
            "held_out",
        );
        Ok(Tuned { search, held_out })
    }
}

/// Searches θ for `artifact` on the first half of its held-out window of
/// `quotes` (the strategy's, in universe order), with core_policy.yaml's θ
/// as the champion — the grid's trials in parallel — then measures the
/// chosen θ on the second half.
pub fn tune(
    cfg: &AppConfig,
    artifact: &VerifiedArtifact,
    quotes: &[Quote],
    s: &RetrainSearch,
) -> Result<Tuned, HeldOutError> {
    let t = tuning(cfg, artifact, quotes, s)?;
    let trials = t.grid()?.par_iter().map(|p| t.trial(*p)).collect();
    t.finish(cfg, artifact, quotes, s, trials)
}

/// `challenger` (deciding with `theta`) against `champion` on the second
/// half of the challenger's held-out window of `quotes` (the half its θ
/// search did not see), with core_policy.yaml's margin.
pub fn challenge(
    cfg: &AppConfig,
    champion: &VerifiedArtifact,
    challenger: &VerifiedArtifact,
    theta: (f64, f64),
    quotes: &[Quote],
    s: &RetrainSearch,
) -> Result<Verdict, HeldOutError> {
    let bt = backtest(
        cfg,
        &challenger.manifest.strategy,
        s,
        unseen_half(challenger, s.every_ms),
    )?;
    let margin = cfg.core_policy.adoption.sharpe_margin;
    Ok(challenge::challenge(
        &bt, quotes, champion, challenger, theta, margin,
    )?)
}

/// The figures a θ search and a challenge add to a manifest's metrics:
/// the search's own (in-sample for θ), the `oos_` ones from the half it
/// never saw, and the verdict against the champion.
pub fn manifest_figures(tuned: Option<&Tuned>, verdict: Option<&Verdict>) -> Vec<(&'static str, f64)> {
    let mut out = Vec::new();
    if let Some(Tuned { search, held_out }) = tuned {
        let best = match (&search.best, search.adopted) {
            (Some(b), true) => b,
            _ => &search.champion,
        };
        out.extend([
            ("theta_search_adopted", f64::from(u8::from(search.adopted))),
            ("theta_search_trials", search.trials.len() as f64),
            ("theta_search_sharpe", best.sharpe),
            ("theta_search_sharpe_lo", best.sharpe_ci90[0]),
            ("theta_search_configured_sharpe", search.champion.sharpe),
            (
                "theta_search_configured_sharpe_lo",
                search.champion.sharpe_ci90[0],
            ),
            ("oos_sharpe", held_out.sharpe),
            ("oos_sharpe_lo", held_out.sharpe_ci90[0]),
            ("oos_sharpe_hi", held_out.sharpe_ci90[1]),
            ("oos_return", held_out.total_return),
            ("oos_fills", held_out.fills as f64),
            ("oos_max_drawdown", held_out.max_drawdown),
            ("oos_decisions_not_flat", held_out.decisions_not_flat),
        ]);
    }
    if let Some(v) = verdict {
        out.extend([
            ("challenge_won", f64::from(u8::from(v.won))),
            ("challenge_margin", v.margin),
            ("challenge_sharpe_gain", v.sharpe_gain),
            ("challenge_sharpe_gain_lo", v.sharpe_gain_ci90[0]),
            ("challenge_sharpe_gain_hi", v.sharpe_gain_ci90[1]),
            ("challenge_champion_version", v.champion.version as f64),
            ("challenge_champion_sharpe", v.champion.sharpe),
            ("challenge_champion_return", v.champion.total_return),
            ("challenge_challenger_sharpe", v.challenger.sharpe),
            ("challenge_challenger_return", v.challenger.total_return),
        ]);
    }
    out
}
