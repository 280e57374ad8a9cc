//! A backtester that is the daemon: a dataset's quotes replayed, event by
//! event, through the daemon's feature engine, trigger preparation
//! ([`mlcore_decision::prepare`]), ONNX Runtime scoring of the exported
//! heads ([`mlcore_models::scoring::ModelScorer`]) and decision crate
//! ([`mlcore_decision::decide`]), at the daemon's cadence; orders filled
//! at the next quote after the decision plus a latency, with the cost
//! table's spread, commission and slippage; the figures beside stress
//! scenarios. No second implementation of features, scoring or decisions.
//!
//! Two phases: [`record`] (replay and score: everything θ does not
//! change, once) and [`simulate`] (decide, fill, mark: as often as a θ
//! search asks). See `docs/research.md`.

pub mod figures;
pub mod record;
pub mod simulate;
pub mod stress;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use mlcore_config::{AppConfig, ScoringConfig, Slippage};
use mlcore_contract::Signal;
use mlcore_decision::universe::{Strategy, Universe};
use mlcore_decision::Policy;
use mlcore_market::Quote;
use mlcore_models::artifact::VerifiedArtifact;
use mlcore_models::scoring::ModelScorer;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use figures::Figures;
pub use record::{record, Recorded};
pub use simulate::{simulate, FillCost, SimConfig, Simulation};
pub use stress::Scenario;

use crate::replay::{Event, Schedule};

/// Why a backtest could not run.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The strategy is not in `universe.yaml`.
    #[error("strategy {0} is not in universe.yaml")]
    UnknownStrategy(String),
    /// ONNX Runtime failed on the model.
    #[error("scoring: {0}")]
    Scoring(String),
    /// Nothing to replay in the window.
    #[error("no decision in the window: {0}")]
    Empty(String),
    /// The model was trained for another strategy.
    #[error("the model is for strategy {model}, the backtest for {asked}")]
    WrongStrategy {
        /// The manifest's strategy.
        model: String,
        /// The strategy asked for.
        asked: String,
    },
    /// Writing the outputs failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// Everything a backtest holds fixed: the strategy, policy and costs from
/// the configuration, the cadence, the latency and the measured window.
#[derive(Debug, Clone)]
pub struct Backtest {
    /// The strategy, resolved as the daemon resolves it.
    pub strategy: Strategy,
    /// `core_policy.yaml` (θ replaced by the one under test).
    pub policy: Policy,
    /// Per symbol.
    pub costs: Vec<FillCost>,
    /// The slippage model.
    pub slippage: Slippage,
    /// Decision to market, ns.
    pub latency_ns: i64,
    /// Decision cadence, ns.
    pub every_ns: i64,
    /// Measured window `[from, to)`, ns.
    pub window: (i64, i64),
    /// Seed of the bootstrap.
    pub seed: u64,
    /// How the heads are scored, as the daemon scores them (`daemon.yaml`
    /// `scoring`: the backend and the kernels' widest instruction set).
    pub scoring: ScoringConfig,
}

/// Decision cadence, latency and window of a backtest.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Decision cadence, ms.
    pub every_ms: u64,
    /// Decision to market, ms.
    pub latency_ms: u64,
    /// Measured window `[from, to)`, ns.
    pub window: (i64, i64),
}

impl Backtest {
    /// The backtest of `strategy` under `cfg`.
    pub fn from_config(cfg: &AppConfig, strategy: &str, timing: Timing) -> Result<Self, BacktestError> {
        let universe = Universe::from_config(cfg);
        let s = universe
            .strategies
            .iter()
            .find(|s| s.id.as_str() == strategy)
            .cloned()
            .ok_or_else(|| BacktestError::UnknownStrategy(strategy.to_owned()))?;
        let costs = s
            .symbols
            .iter()
            .map(|sym| {
                let c = cfg.cost_table.symbols.get(sym.as_str());
                FillCost {
                    half_spread_floor_bps: c.map_or(0.0, |c| 0.5 * c.spread_bps),
                    commission_bps: c.map_or(0.0, |c| c.commission_bps),
                }
            })
            .collect();
        let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX).saturating_mul(1_000_000);
        Ok(Self {
            strategy: s,
            policy: universe.policy,
            costs,
            slippage: cfg.cost_table.slippage,
            latency_ns: ms(timing.latency_ms),
            every_ns: ms(timing.every_ms.max(1)),
            window: timing.window,
            seed: 20_261_205,
            scoring: cfg.daemon.scoring,
        })
    }

    /// Decisions a year at this cadence (FX: 252 days of 24 h).
    pub fn per_year(&self) -> f64 {
        252.0 * 86_400e9 / self.every_ns as f64
    }

    /// Replays `quotes` (time-ordered, symbols by universe index) with a
    /// decision every `every_ns` inside the window, scored by `artifact`.
    pub fn record(&self, quotes: &[Quote], artifact: &VerifiedArtifact) -> Result<Recorded, BacktestError> {
        let events = Schedule::new(quotes, self.every_ns, self.window.0, self.window.1);
        self.record_events(events, artifact)
    }

    /// Replays `events` as given (a capture of what a feed sent).
    pub fn record_events(
        &self,
        events: impl IntoIterator<Item = Event>,
        artifact: &VerifiedArtifact,
    ) -> Result<Recorded, BacktestError> {
        if artifact.manifest.strategy != self.strategy.id.as_str() {
            return Err(BacktestError::WrongStrategy {
                model: artifact.manifest.strategy.clone(),
                asked: self.strategy.id.to_string(),
            });
        }
        let n = self.strategy.symbols.len();
        let mut scorer = ModelScorer::new(artifact, n, self.scoring.backend)
            .map_err(|e| BacktestError::Scoring(e.to_string()))?;
        scorer.cap_kernels(self.scoring.max_instruction_set.into());
        let rec = record(events, &self.strategy, &mut scorer)?;
        if rec.decisions() == 0 {
            return Err(BacktestError::Empty(format!(
                "{} quotes replayed, none at or after the window's start",
                rec.quotes.len()
            )));
        }
        Ok(rec)
    }

    /// How to simulate with θ.
    pub fn sim_config(&self, theta: (f64, f64), keep_targets: bool) -> SimConfig {
        SimConfig {
            policy: self.policy.with_theta(theta.0, theta.1),
            costs: self.costs.clone(),
            slippage: self.slippage,
            latency_ns: self.latency_ns,
            measure_from_ns: self.window.0,
            keep_targets,
        }
    }

    /// The figures of `sim`.
    pub fn figures(&self, sim: &Simulation) -> Figures {
        figures::figures(sim, self.strategy.symbols.len(), self.per_year(), self.seed)
    }

    /// The base case and every scenario of `scenarios` with θ.
    pub fn run(
        &self,
        quotes: &[Quote],
        artifact: &VerifiedArtifact,
        theta: (f64, f64),
        scenarios: &[Scenario],
    ) -> Result<Run, BacktestError> {
        let betas: Vec<f64> = self.strategy.params.iter().map(|p| p.beta).collect();
        // The base case and each scenario are independent replays: side by
        // side (rayon), each deterministic.
        let (rec, stressed) = rayon::join(
            || self.record(quotes, artifact),
            || {
                scenarios
                    .par_iter()
                    .map(|s| {
                        let q = s.apply(quotes, self.window, &betas);
                        let r = self.record(&q, artifact)?;
                        let sim = simulate(&r, &self.sim_config(theta, false));
                        Ok((s.name().to_owned(), self.figures(&sim)))
                    })
                    .collect::<Result<BTreeMap<_, _>, BacktestError>>()
            },
        );
        Ok(self.finish(rec?, artifact, theta, stressed?))
    }

    /// The base case only, over `events` as given (a capture). Its cadence
    /// (which annualises the ratios) is the captured triggers' median
    /// spacing, whatever this backtest's was.
    pub fn run_events(
        &self,
        events: impl IntoIterator<Item = Event>,
        artifact: &VerifiedArtifact,
        theta: (f64, f64),
    ) -> Result<Run, BacktestError> {
        let rec = self.record_events(events, artifact)?;
        let mut gaps: Vec<i64> = rec.trigger_ts.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.sort_unstable();
        let mut bt = self.clone();
        if let Some(&median) = gaps.get(gaps.len() / 2) {
            bt.every_ns = median.max(1);
        }
        Ok(bt.finish(rec, artifact, theta, BTreeMap::new()))
    }

    fn finish(
        &self,
        rec: Recorded,
        artifact: &VerifiedArtifact,
        theta: (f64, f64),
        scenarios: BTreeMap<String, Figures>,
    ) -> Run {
        let base = simulate(&rec, &self.sim_config(theta, true));
        let summary = Summary {
            strategy: self.strategy.id.to_string(),
            model_id: artifact.manifest.model_id.clone(),
            model_version: artifact.manifest.version,
            theta1: theta.0,
            theta2: theta.1,
            window_start_ms: self.window.0.div_euclid(1_000_000),
            window_end_ms: self.window.1.div_euclid(1_000_000),
            cadence_ms: self.every_ns / 1_000_000,
            latency_ms: self.latency_ns / 1_000_000,
            slippage: self.slippage,
            base: self.figures(&base),
            scenarios,
        };
        Run { summary, rec, base }
    }
}

/// `portfolio_summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Strategy.
    pub strategy: String,
    /// The model replayed.
    pub model_id: String,
    /// Its version.
    pub model_version: u64,
    /// θ1 decided with.
    pub theta1: f64,
    /// θ2 decided with.
    pub theta2: f64,
    /// Measured window, ms.
    pub window_start_ms: i64,
    /// End of the window (exclusive), ms.
    pub window_end_ms: i64,
    /// Decision cadence, ms.
    pub cadence_ms: i64,
    /// Latency assumed, ms.
    pub latency_ms: i64,
    /// The slippage model.
    pub slippage: Slippage,
    /// The market as it was.
    pub base: Figures,
    /// The market made harder, by scenario.
    pub scenarios: BTreeMap<String, Figures>,
}

/// A backtest run: its summary, and the base case's replay and simulation.
#[derive(Debug)]
pub struct Run {
    /// What goes into `portfolio_summary.json`.
    pub summary: Summary,
    /// The base case's recorded decisions.
    pub rec: Recorded,
    /// The base case's simulation (targets kept).
    pub base: Simulation,
}

impl Run {
    /// Writes `portfolio_summary.json`, `positions.csv` (every measured
    /// decision's target of every symbol, flat ones too: the signals the
    /// daemon would publish), `equity.csv` and `daily_pnl.csv` into
    /// `dir` (created).
    pub fn write(&self, dir: &Path, strategy: &Strategy) -> Result<(), BacktestError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| BacktestError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let json = serde_json::to_string_pretty(&self.summary).unwrap_or_default() + "\n";
        let p = dir.join("portfolio_summary.json");
        std::fs::write(&p, json).map_err(io(&p))?;
        let n = strategy.symbols.len();
        let p = dir.join("positions.csv");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&p).map_err(io(&p))?);
        let first = self.rec.trigger_ts.len() - self.base.ts.len();
        writeln!(out, "ts_ns,symbol,side,weight,qty,return_prob,risk_score").map_err(io(&p))?;
        // The signals the daemon would publish, through its own mapping.
        let mut signals: Vec<Signal> = strategy
            .symbols
            .iter()
            .map(|s| Signal::flat(s.as_str()))
            .collect();
        for (k, ts) in self.base.ts.iter().enumerate() {
            let (inputs, _) = self.rec.decision(first + k);
            for ((t, input), sig) in self.base.targets[k * n..(k + 1) * n]
                .iter()
                .zip(inputs)
                .zip(&mut signals)
            {
                sig.set_decision(t.weight, t.qty, input.prob_up, input.risk);
                writeln!(
                    out,
                    "{ts},{},{},{},{},{},{}",
                    sig.symbol,
                    sig.side.as_str(),
                    sig.weight,
                    sig.qty,
                    sig.return_prob,
                    sig.risk_score
                )
                .map_err(io(&p))?;
            }
        }
        out.flush().map_err(io(&p))?;
        let p = dir.join("equity.csv");
        let mut out = String::from("ts_ns,equity,held_gross,held_beta\n");
        for (k, ts) in self.base.ts.iter().enumerate() {
            out.push_str(&format!(
                "{ts},{},{},{}\n",
                self.base.equity[k], self.base.held_gross[k], self.base.held_beta[k]
            ));
        }
        std::fs::write(&p, out).map_err(io(&p))?;
        let p = dir.join("daily_pnl.csv");
        let mut out = String::from("day,pnl\n");
        for (d, v) in &self.summary.base.daily_pnl {
            out.push_str(&format!("{d},{v}\n"));
        }
        std::fs::write(&p, out).map_err(io(&p))?;
        Ok(())
    }
}
