//! `train`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use mlcore_config::EnvSource;
use mlcore_models::artifact::{self, ArtifactFiles, SecretKeyFile, ThetaParams, TrustStore, VerifyContext};
use mlcore_models::runtime;

use super::{load_config, now_ms, research};
use crate::cli::TrainArgs;
use mlcore_research::train::{self, TrainSpec};

/// Trains, signs, verifies and writes an artifact.
pub fn train(
    config_dir: &Path,
    args: &TrainArgs,
    vars: &dyn EnvSource,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let cfg = load_config(config_dir, &args.env, vars, mlcore_config::Process::Offline)?;
    let (strategy, symbols, benchmark) = research::strategy_of(&cfg, &args.strategy)?;
    runtime::init(&cfg.storage.onnxruntime_library)?;
    let trust = TrustStore::from_config(&cfg.trust)?;
    let key = SecretKeyFile::read(&args.key)?;
    let created_at_ms = match args.created_at_ms {
        Some(ms) => ms,
        None => match vars.var("SOURCE_DATE_EPOCH") {
            Some(s) => {
                s.parse::<u64>()
                    .context("SOURCE_DATE_EPOCH must be whole seconds")?
                    * 1000
            }
            None => now_ms(),
        },
    };
    let spec = TrainSpec {
        dataset: args.dataset.clone(),
        strategy: args.strategy.clone(),
        symbols,
        benchmark,
        version: args.version,
        created_at_ms,
        valid_days: args.valid_days,
        decision_every_ms: args.decision_every_ms,
        horizon: args.horizon,
        costs_bps: mlcore_decision::symbol_params(&cfg, strategy)
            .iter()
            .map(|p| p.cost_bps)
            .collect(),
        gbm: args.trees.params(args.max_trees),
        theta: ThetaParams {
            theta1: cfg.core_policy.theta.theta1,
            theta2: cfg.core_policy.theta.theta2,
        },
    };
    let mut report = train::train(&spec, &key, &trust, now_ms())?;
    if args.search_theta || args.champion.is_some() {
        let fresh = artifact::verify(report.files.clone(), &VerifyContext::new(&trust, now_ms()))?;
        let quotes = research::strategy_quotes(&cfg, &args.strategy, &args.dataset)?;
        let mut manifest = report.manifest.clone();
        if args.search_theta {
            let research::Tuned { search, held_out } = research::tune(&cfg, &fresh, &quotes, &args.search)?;
            writeln!(out, "θ search: {}", search.verdict)?;
            manifest.theta = ThetaParams {
                theta1: search.chosen.0,
                theta2: search.chosen.1,
            };
            let tuned = match (&search.best, search.adopted) {
                (Some(b), true) => b,
                _ => &search.champion,
            };
            // The search's own figures are in-sample for θ; the `oos_`
            // ones come from the half of the held-out window it never saw.
            let figures = [
                ("theta_search_adopted", f64::from(u8::from(search.adopted))),
                ("theta_search_trials", search.trials.len() as f64),
                ("theta_search_sharpe", tuned.sharpe),
                ("theta_search_sharpe_lo", tuned.sharpe_ci90[0]),
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
            ];
            for (k, v) in figures {
                manifest.metrics.insert(k.to_owned(), v);
            }
        }
        if let Some(dir) = &args.champion {
            let champion = artifact::verify(ArtifactFiles::read(dir)?, &VerifyContext::new(&trust, now_ms()))
                .with_context(|| format!("the champion {} does not verify", dir.display()))?;
            let theta = (manifest.theta.theta1, manifest.theta.theta2);
            let v = research::challenge(&cfg, &champion, &fresh, theta, &quotes, &args.search)?;
            writeln!(out, "champion/challenger: {}", v.reason)?;
            let figures = [
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
            ];
            for (k, v) in figures {
                manifest.metrics.insert(k.to_owned(), v);
            }
        }
        let (manifest, files) = artifact::seal(manifest, report.files, &key).map_err(anyhow::Error::msg)?;
        artifact::verify(files.clone(), &VerifyContext::new(&trust, now_ms()))?;
        (report.manifest, report.files) = (manifest, files);
    }
    train::write_artifact(&report.files, &args.out)?;
    for q in &report.quarantined {
        writeln!(
            out,
            "quarantined (excluded): {} {}: {}",
            q.entry.symbol, q.entry.date, q.reason
        )?;
    }
    let m = &report.manifest;
    writeln!(out, "rows train/calibration/test: {:?}", report.rows)?;
    for (head, bins) in &report.reliability {
        let diagram: Vec<String> = bins
            .iter()
            .map(|b| format!("{:.2}→{:.2} (n={})", b.mean_predicted, b.observed, b.count))
            .collect();
        writeln!(
            out,
            "reliability {head} (test; predicted→observed): {}",
            diagram.join("  ")
        )?;
    }
    for (k, v) in &m.metrics {
        writeln!(out, "metric {k} = {v:.6}")?;
    }
    writeln!(
        out,
        "artifact {} v{} signed by {} and verified: {}",
        m.model_id,
        m.version,
        key.key_id,
        args.out.display()
    )?;
    Ok(0)
}
