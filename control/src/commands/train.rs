//! `train`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use mlcore_config::EnvSource;
use mlcore_models::artifact::{self, ArtifactFiles, SecretKeyFile, ThetaParams, TrustStore, VerifyContext};
use mlcore_models::runtime;

use super::{load_config, now_ms, research};
use crate::cli::TrainArgs;
use mlcore_research::heldout;
use mlcore_research::train::{self, ModelMeta, TrainSpec};

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
        model: ModelMeta {
            strategy: args.strategy.clone(),
            version: args.version,
            created_at_ms,
            valid_days: args.valid_days,
            theta: ThetaParams {
                theta1: cfg.core_policy.theta.theta1,
                theta2: cfg.core_policy.theta.theta2,
            },
        },
        symbols,
        benchmark,
        decision_every_ms: args.decision_every_ms,
        horizon: args.horizon,
        costs_bps: mlcore_decision::symbol_params(&cfg, strategy)
            .iter()
            .map(|p| p.cost_bps)
            .collect(),
        gbm: args.trees.params(args.max_trees),
    };
    let mut report = train::train(&spec, &key, &trust, now_ms())?;
    if args.search_theta || args.champion.is_some() {
        let fresh = artifact::verify(report.files.clone(), &VerifyContext::new(&trust, now_ms()))?;
        let quotes = research::strategy_quotes(&cfg, &args.strategy, &args.dataset)?;
        let settings = args.search.settings();
        let mut manifest = report.manifest.clone();
        let tuned = if args.search_theta {
            let tuned = heldout::tune(&cfg, &fresh, &quotes, &settings)?;
            writeln!(out, "θ search: {}", tuned.search.verdict)?;
            manifest.theta = ThetaParams {
                theta1: tuned.search.chosen.0,
                theta2: tuned.search.chosen.1,
            };
            Some(tuned)
        } else {
            None
        };
        let verdict = match &args.champion {
            Some(dir) => {
                let champion =
                    artifact::verify(ArtifactFiles::read(dir)?, &VerifyContext::new(&trust, now_ms()))
                        .with_context(|| format!("the champion {} does not verify", dir.display()))?;
                let theta = (manifest.theta.theta1, manifest.theta.theta2);
                let v = heldout::challenge(&cfg, &champion, &fresh, theta, &quotes, &settings)?;
                writeln!(out, "champion/challenger: {}", v.reason)?;
                Some(v)
            }
            None => None,
        };
        for (k, v) in heldout::manifest_figures(tuned.as_ref(), verdict.as_ref()) {
            manifest.metrics.insert(k.to_owned(), v);
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
