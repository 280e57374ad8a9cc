//! `research cv`: cross-validation of ai1 on a dataset without leakage
//! (`mlcore_research::cv`).

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use mlcore_config::EnvSource;
use mlcore_research::cv::{self, Learner};
use mlcore_research::dataset::Dataset;
use mlcore_research::labels::Barriers;
use mlcore_research::train::GbdtParams;
use mlcore_research::validation::Scheme;

use super::load_config;
use crate::cli::CvArgs;

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
    let strategy = cfg
        .strategy(&args.strategy)
        .with_context(|| format!("strategy `{}` is not in universe.yaml", args.strategy))?;
    let symbols: Vec<String> = strategy.symbols.iter().map(|s| s.symbol.to_string()).collect();
    let Some(benchmark) = symbols.iter().position(|s| strategy.benchmark == *s) else {
        bail!(
            "benchmark {} is not a symbol of {}",
            strategy.benchmark,
            args.strategy
        );
    };
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
    let names: Vec<&str> = symbols.iter().map(String::as_str).collect();
    let dataset = Dataset::open(&args.dataset)?;
    let quotes = dataset.load_quotes(&names)?;
    let every_ns = i64::try_from(args.decision_every_ms)
        .ok()
        .and_then(|ms| ms.checked_mul(1_000_000))
        .filter(|ns| *ns > 0)
        .context("--decision-every-ms must be between 1 and 9e12")?;
    let samples = cv::samples(&quotes, names.len(), benchmark, every_ns);
    cv::point_in_time_check(&quotes, names.len(), benchmark, &samples, CHECKED_ROWS)?;
    let barriers = Barriers {
        profit_take: args.profit_take,
        stop_loss: args.stop_loss,
        horizon: args.horizon,
    };
    let data = cv::label(&quotes, names.len(), &samples, &barriers, args.sigma_window);
    if data.rows() < 50 * args.folds {
        bail!(
            "{} labelled rows for {} folds: too few (more days, a faster cadence or fewer folds)",
            data.rows(),
            args.folds
        );
    }
    let learner = Learner::Gbdt(GbdtParams {
        trees: args.trees,
        depth: args.depth,
        learning_rate: 0.1,
        min_leaf: 50,
    });
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
