//! `research cv`: cross-validation of ai1 on a dataset without leakage
//! (`mlcore_research::cv`); `research backtest`: the daemon's decisions
//! replayed over a dataset or a feed's capture (`mlcore_research::backtest`);
//! `research theta`: θ searched on that backtest (`mlcore_research::theta`).

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use mlcore_config::{AppConfig, EnvSource, StrategyUniverse};
use mlcore_market::Quote;
use mlcore_models::artifact::{self, ArtifactFiles, TrustStore, VerifiedArtifact, VerifyContext};
use mlcore_models::runtime;
use mlcore_research::backtest::{Backtest, Figures, Scenario, Summary, Timing};
use mlcore_research::cv::{self, Learner};
use mlcore_research::dataset::Dataset;
use mlcore_research::heldout;
use mlcore_research::labels::Barriers;
use mlcore_research::replay;
use mlcore_research::validation::Scheme;

use super::{load_config, now_ms};
use crate::cli::{BacktestArgs, CvArgs, ThetaArgs};

/// Rows the point-in-time check recomputes.
const CHECKED_ROWS: usize = 50;

/// Runs the cross-validation and prints its report as JSON.
pub fn research_cv(
    config_dir: &Path,
    args: &CvArgs,
    vars: &dyn EnvSource,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let cfg = load_config(config_dir, &args.env, vars, mlcore_config::Process::Offline)?;
    let (_, symbols, benchmark) = strategy_of(&cfg, &args.strategy)?;
    let scheme = match args.scheme.as_str() {
        "kfold" => Scheme::PurgedKFold { k: args.folds },
        "expanding" => Scheme::WalkForwardExpanding { k: args.folds },
        "rolling" => Scheme::WalkForwardRolling {
            k: args.folds,
            window: args.window,
        },
        other => bail!("--scheme `{other}`: use kfold, expanding or rolling"),
    };
    if args.folds < 2 {
        bail!("--folds {}: at least 2", args.folds);
    }
    let quotes = strategy_quotes(&cfg, &args.strategy, &args.dataset)?;
    let every_ns = i64::try_from(args.decision_every_ms)
        .ok()
        .and_then(|ms| ms.checked_mul(1_000_000))
        .filter(|ns| *ns > 0)
        .context("--decision-every-ms must be between 1 and 9e12")?;
    let samples = cv::samples(&quotes, symbols.len(), benchmark, every_ns);
    cv::point_in_time_check(&quotes, symbols.len(), benchmark, &samples, CHECKED_ROWS)?;
    let barriers = Barriers {
        profit_take: args.profit_take,
        stop_loss: args.stop_loss,
        horizon: args.horizon,
    };
    let data = cv::label(&quotes, symbols.len(), &samples, &barriers, args.sigma_window);
    if data.rows() < 50 * args.folds {
        bail!(
            "{} labelled rows for {} folds: too few (more days, a faster cadence or fewer folds)",
            data.rows(),
            args.folds
        );
    }
    let learner = Learner::Gbm(args.trees.params(args.max_trees));
    let report = cv::cross_validate(
        &data,
        scheme,
        args.embargo.saturating_mul(every_ns),
        true,
        learner,
    )?;
    let json = serde_json::json!({
        "dataset": args.dataset.display().to_string(),
        "strategy": args.strategy,
        "scheme": args.scheme,
        "rows": data.rows(),
        "barriers": {"profit_take": args.profit_take, "stop_loss": args.stop_loss, "horizon": args.horizon, "sigma_window": args.sigma_window},
        "embargo_decisions": args.embargo,
        "point_in_time_rows_checked": CHECKED_ROWS.min(samples.len()),
        "report": report,
    });
    let text = serde_json::to_string_pretty(&json)? + "\n";
    if let Some(path) = &args.out {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    out.write_all(text.as_bytes())?;
    Ok(0)
}

/// `research backtest`: replays, reports and writes the backtest's files.
pub fn research_backtest(
    config_dir: &Path,
    args: &BacktestArgs,
    vars: &dyn EnvSource,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let (cfg, artifact) = verified_model(config_dir, &args.env, vars, &args.artifact)?;
    let m = &artifact.manifest;
    // What the strategy's daemons decide with: core_policy.yaml's θ for
    // the strategy when it sets one, else the model's; flags win.
    let (t1, t2) = cfg
        .core_policy
        .theta
        .for_strategy(&m.strategy)
        .map_or((m.theta.theta1, m.theta.theta2), |t| (t.theta1, t.theta2));
    let theta = (args.theta1.unwrap_or(t1), args.theta2.unwrap_or(t2));
    for (name, v) in [("--theta1", theta.0), ("--theta2", theta.1)] {
        if !(0.0..=1.0).contains(&v) {
            bail!("{name} {v}: a threshold is a probability in [0, 1]");
        }
    }
    let timing = |window| Timing {
        every_ms: args.decision_every_ms,
        latency_ms: args.latency_ms,
        window,
    };
    let run = if let Some(capture) = &args.capture {
        let events = replay::read_capture(capture)?;
        let bt = Backtest::from_config(&cfg, &m.strategy, timing((i64::MIN, i64::MAX)))?;
        let run = bt.run_events(events, &artifact, theta)?;
        run.write(&args.out, &bt.strategy)?;
        run
    } else {
        let Some(dataset) = &args.dataset else {
            bail!("give --dataset or --capture");
        };
        let quotes = strategy_quotes(&cfg, &m.strategy, dataset)?;
        let (Some(first), Some(last)) = (quotes.first(), quotes.last()) else {
            bail!("{}: no quotes of {}", dataset.display(), m.strategy);
        };
        let test = heldout::test_window(&artifact, args.decision_every_ms);
        let window = match args.window.as_str() {
            "held-out" => heldout::halves(test, args.decision_every_ms).1,
            "test" => test,
            "all" => (first.ts_ns, last.ts_ns + 1),
            other => bail!("--window `{other}`: use held-out, test or all"),
        };
        let bt = Backtest::from_config(&cfg, &m.strategy, timing(window))?;
        let scenarios: &[Scenario] = if args.no_stress { &[] } else { &Scenario::ALL };
        let run = bt.run(&quotes, &artifact, theta, scenarios)?;
        run.write(&args.out, &bt.strategy)?;
        run
    };
    print_summary(&run.summary, out)?;
    writeln!(
        out,
        "wrote portfolio_summary.json, positions.csv, equity.csv, daily_pnl.csv to {}",
        args.out.display()
    )?;
    Ok(0)
}

/// The headline figures of a backtest, one line per case.
pub fn print_summary(s: &Summary, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "backtest {} θ1={:.3} θ2={:.3}: {} decisions every {} ms, latency {} ms",
        s.model_id, s.theta1, s.theta2, s.base.decisions, s.cadence_ms, s.latency_ms
    )?;
    writeln!(
        out,
        "{:<11} {:>7} {:>17} {:>9} {:>8} {:>8} {:>6} {:>9} {:>8} {:>8}",
        "case",
        "sharpe",
        "sharpe 90% CI",
        "return",
        "max_dd",
        "not_flat",
        "fills",
        "turn/day",
        "slip_bps",
        "|β|"
    )?;
    let line = |out: &mut dyn Write, name: &str, f: &Figures| {
        writeln!(
            out,
            "{:<11} {:>7.2} [{:>6.2}, {:>6.2}] {:>9.5} {:>8.5} {:>7.1}% {:>6} {:>9.2} {:>8.2} {:>8.4}",
            name,
            f.sharpe,
            f.sharpe_ci90[0],
            f.sharpe_ci90[1],
            f.total_return,
            f.max_drawdown,
            100.0 * f.decisions_not_flat,
            f.fills,
            f.turnover_per_day,
            f.realised_slippage_bps,
            f.max_abs_residual_beta
        )
    };
    line(out, "base", &s.base)?;
    for (name, f) in &s.scenarios {
        line(out, name, f)?;
    }
    Ok(())
}

/// The configuration of `env` with ONNX Runtime loaded, and the artifact
/// at `path` verified against the environment's trust.
pub fn verified_model(
    config_dir: &Path,
    env: &str,
    vars: &dyn EnvSource,
    path: &Path,
) -> anyhow::Result<(AppConfig, VerifiedArtifact)> {
    let cfg = load_config(config_dir, env, vars, mlcore_config::Process::Offline)?;
    runtime::init(&cfg.storage.onnxruntime_library)?;
    let trust = TrustStore::from_config(&cfg.trust)?;
    let files = ArtifactFiles::read(path)?;
    let artifact = artifact::verify(files, &VerifyContext::new(&trust, now_ms()))
        .with_context(|| format!("{} does not verify", path.display()))?;
    Ok((cfg, artifact))
}

/// `id`'s entry in universe.yaml, its symbols' names in universe order and
/// the benchmark's index among them.
pub fn strategy_of<'a>(
    cfg: &'a AppConfig,
    id: &str,
) -> anyhow::Result<(&'a StrategyUniverse, Vec<String>, usize)> {
    let strategy = cfg
        .strategy(id)
        .with_context(|| format!("strategy `{id}` is not in universe.yaml"))?;
    let symbols: Vec<String> = strategy.symbols.iter().map(|s| s.symbol.to_string()).collect();
    let Some(benchmark) = symbols.iter().position(|s| strategy.benchmark == *s) else {
        bail!("benchmark {} is not a symbol of {id}", strategy.benchmark);
    };
    Ok((strategy, symbols, benchmark))
}

/// The strategy's quotes from a dataset, in universe order.
pub fn strategy_quotes(cfg: &AppConfig, strategy: &str, dataset: &Path) -> anyhow::Result<Vec<Quote>> {
    let (_, names, _) = strategy_of(cfg, strategy)?;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let quotes = Dataset::open(dataset)?.load_quotes(&refs)?;
    if quotes.is_empty() {
        bail!("{}: no quotes of {strategy}", dataset.display());
    }
    Ok(quotes)
}

/// `research theta`: searches and prints the report.
pub fn research_theta(
    config_dir: &Path,
    args: &ThetaArgs,
    vars: &dyn EnvSource,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let (cfg, artifact) = verified_model(config_dir, &args.env, vars, &args.artifact)?;
    let quotes = strategy_quotes(&cfg, &artifact.manifest.strategy, &args.dataset)?;
    let tuned = heldout::tune(&cfg, &artifact, &quotes, &args.search.settings())?;
    let report = serde_json::json!({"search": tuned.search, "held_out": tuned.held_out});
    let text = serde_json::to_string_pretty(&report)? + "\n";
    if let Some(path) = &args.out {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    out.write_all(text.as_bytes())?;
    Ok(0)
}
