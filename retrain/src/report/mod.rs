//! What a finished run leaves for people: `metrics.json`, `daily.csv`,
//! `portfolio_summary.json`, `report.html` (one self-contained page: its
//! plots are embedded) and the plots as PNG under `plots/`; and the
//! ledger line of `runs/index.csv`.

mod plots;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use mlcore_research::backtest::Summary as Backtest;
use mlcore_research::heldout::Tuned;
use mlcore_research::train::Fitted;
use serde_json::json;

use crate::ledger::{rfc3339, Entry};
use crate::run::{RunManifest, RunStatus};
use crate::steps::{read_json, Challenge, DatasetReport};
use crate::store::write_atomic;
use crate::{FlowError, Step};

/// What the report concluded.
#[derive(Debug, Clone)]
pub struct Summary {
    /// One line.
    pub verdict: String,
}

/// Whatever the run's steps left (a failed run has only some of it).
#[derive(Debug, Default)]
struct Inputs {
    dataset: Option<DatasetReport>,
    fitted: Option<Fitted>,
    cv: Option<mlcore_research::cv::CvReport>,
    tuned: Option<Tuned>,
    backtest: Option<Backtest>,
    equity: Vec<(i64, f64)>,
    daily: Option<String>,
    challenge: Option<Challenge>,
}

impl Inputs {
    fn load(dirs: &BTreeMap<Step, PathBuf>) -> Self {
        let get = |s: Step| dirs.get(&s);
        let equity = get(Step::Backtest)
            .and_then(|d| std::fs::read_to_string(d.join("equity.csv")).ok())
            .map(|text| {
                text.lines()
                    .skip(1)
                    .filter_map(|l| {
                        let mut f = l.split(',');
                        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            dataset: get(Step::Dataset).and_then(|d| read_json(d, "dataset.json").ok()),
            fitted: get(Step::Train).and_then(|d| read_json(d, "fitted.json").ok()),
            cv: get(Step::Validation).and_then(|d| read_json(d, "cv.json").ok()),
            tuned: get(Step::Theta).and_then(|d| read_json(d, "theta.json").ok()),
            backtest: get(Step::Backtest).and_then(|d| read_json(d, "portfolio_summary.json").ok()),
            equity,
            daily: get(Step::Backtest).and_then(|d| std::fs::read_to_string(d.join("daily_pnl.csv")).ok()),
            challenge: get(Step::Challenge).and_then(|d| read_json(d, "challenge.json").ok()),
        }
    }
}

fn verdict(run: &RunManifest, i: &Inputs) -> String {
    let model = format!("{}-v{}", run.spec.strategy, run.spec.version);
    let bt = i
        .backtest
        .as_ref()
        .map(|b| {
            format!(
                "backtest Sharpe {:.2} [{:.2}, {:.2}] on the half of the held-out window the θ search never saw",
                b.base.sharpe, b.base.sharpe_ci90[0], b.base.sharpe_ci90[1]
            )
        })
        .unwrap_or_default();
    let versus = match i.challenge.as_ref().and_then(|c| c.verdict.as_ref()) {
        Some(v) => v.reason.clone(),
        None => "no active model to beat".into(),
    };
    match run.status {
        RunStatus::Succeeded => format!("{model} signed and registered as a candidate; {bt}; {versus}"),
        RunStatus::Rejected => format!("{model} not signed: it lost to the active model ({versus}); {bt}"),
        RunStatus::Failed | RunStatus::Running => run
            .failure
            .as_ref()
            .map(|f| f.message.clone())
            .unwrap_or_else(|| "unfinished".into()),
    }
}

/// Writes the run folder's files for `run` from its steps' folders.
pub fn write(
    run_dir: &Path,
    run: &RunManifest,
    dirs: &BTreeMap<Step, PathBuf>,
) -> Result<Summary, FlowError> {
    let i = Inputs::load(dirs);
    let verdict = verdict(run, &i);
    let io = |e: crate::store::StoreError| FlowError::Store(e);
    let model_id = format!("{}-v{}", run.spec.strategy, run.spec.version);
    let metrics = json!({
        "run_id": run.run_id,
        "status": run.status,
        "verdict": verdict,
        "model_id": run.model_id,
        "dataset": i.dataset,
        "model": i.fitted.as_ref().map(|f| &f.metrics),
        "validation": i.cv,
        "theta": i.tuned.as_ref().map(|t| json!({
            "chosen": t.search.chosen, "adopted": t.search.adopted, "verdict": t.search.verdict,
            "configured": t.search.champion, "best": t.search.best, "held_out": t.held_out,
            "trials": t.search.trials.len()})),
        "backtest": i.backtest.as_ref().map(|b| json!({"base": b.base, "scenarios": b.scenarios})),
        "challenge": i.challenge.as_ref().and_then(|c| c.verdict.as_ref()),
    });
    let text = serde_json::to_string_pretty(&metrics).map_err(|e| FlowError::Report(e.to_string()))? + "\n";
    write_atomic(&run_dir.join("metrics.json"), text.as_bytes()).map_err(io)?;
    if let Some(daily) = &i.daily {
        write_atomic(&run_dir.join("daily.csv"), daily.as_bytes()).map_err(io)?;
    }
    if let Some(b) = &i.backtest {
        let mut b = b.clone();
        if run.status == RunStatus::Succeeded {
            b.model_id = model_id.clone();
            b.model_version = run.spec.version;
        }
        let text = serde_json::to_string_pretty(&b).map_err(|e| FlowError::Report(e.to_string()))? + "\n";
        write_atomic(&run_dir.join("portfolio_summary.json"), text.as_bytes()).map_err(io)?;
    }
    let plots = render_plots(&run_dir.join("plots"), &i)?;
    let html = html(run, &i, &verdict, &plots);
    write_atomic(&run_dir.join("report.html"), html.as_bytes()).map_err(io)?;
    Ok(Summary { verdict })
}

/// Renders each plot the inputs allow; returns (name, title, PNG bytes).
fn render_plots(dir: &Path, i: &Inputs) -> Result<Vec<(String, String, Vec<u8>)>, FlowError> {
    std::fs::create_dir_all(dir).map_err(|source| FlowError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut out = Vec::new();
    let mut render =
        |name: &str, title: &str, draw: &dyn Fn(&Path) -> Result<(), String>| -> Result<(), FlowError> {
            let tmp = dir.join(format!(".tmp-{name}.png"));
            draw(&tmp).map_err(|e| FlowError::Report(format!("{name}.png: {e}")))?;
            let path = dir.join(format!("{name}.png"));
            std::fs::rename(&tmp, &path).map_err(|source| FlowError::Io {
                path: path.clone(),
                source,
            })?;
            let bytes = std::fs::read(&path).map_err(|source| FlowError::Io { path, source })?;
            out.push((name.to_owned(), title.to_owned(), bytes));
            Ok(())
        };
    if let Some(&(t0, _)) = i.equity.first() {
        let day = |t: i64| (t - t0) as f64 / 86_400e9;
        let equity: Vec<(f64, f64)> = i.equity.iter().map(|&(t, e)| (day(t), e)).collect();
        let mut peak = f64::NEG_INFINITY;
        let drawdown: Vec<(f64, f64)> = i
            .equity
            .iter()
            .map(|&(t, e)| {
                peak = peak.max(e);
                (day(t), e - peak)
            })
            .collect();
        render("equity", "Equity (units of capital, after costs)", &|p| {
            plots::series(p, "Equity curve, base case", "cumulative P&L", &equity, false)
        })?;
        render("drawdown", "Drawdown from the running peak", &|p| {
            plots::series(p, "Drawdown", "below peak", &drawdown, true)
        })?;
    }
    if let Some(f) = &i.fitted {
        let heads: Vec<(String, Vec<_>)> = f
            .reliability
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        render("reliability", "Reliability diagrams (test rows)", &|p| {
            plots::reliability(p, &heads)
        })?;
    }
    if let Some(t) = &i.tuned {
        let trials: Vec<(f64, f64, f64, bool)> = t
            .search
            .trials
            .iter()
            .map(|t| (t.theta1, t.theta2, t.sharpe, t.feasible))
            .collect();
        let chosen = t.search.chosen;
        render("theta", "θ search surface", &|p| {
            plots::theta(p, &trials, chosen)
        })?;
    }
    if let Some(b) = &i.backtest {
        let mut bars = vec![("base".to_owned(), b.base.sharpe, b.base.sharpe_ci90)];
        bars.extend(
            b.scenarios
                .iter()
                .map(|(k, f)| (k.clone(), f.sharpe, f.sharpe_ci90)),
        );
        render("stress", "Sharpe by stress scenario", &|p| {
            plots::bars(
                p,
                "Sharpe by scenario (90 % interval)",
                "annualised Sharpe",
                &bars,
            )
        })?;
    }
    if let Some(v) = i.challenge.as_ref().and_then(|c| c.verdict.as_ref()) {
        let bars = vec![
            (
                format!("active v{}", v.champion.version),
                v.champion.sharpe,
                v.champion.sharpe_ci90,
            ),
            (
                "candidate".to_owned(),
                v.challenger.sharpe,
                v.challenger.sharpe_ci90,
            ),
        ];
        render("challenge", "Champion vs challenger", &|p| {
            plots::bars(
                p,
                "Champion vs challenger (same window)",
                "annualised Sharpe",
                &bars,
            )
        })?;
    }
    Ok(out)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn html(run: &RunManifest, i: &Inputs, verdict: &str, plots: &[(String, String, Vec<u8>)]) -> String {
    let mut h = String::new();
    let title = format!("Retraining {} — {}", run.spec.strategy, run.run_id);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>\
body{{font:15px/1.45 system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}}\
table{{border-collapse:collapse;margin:.5em 0 1.5em}}td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:right}}\
th{{background:#f3f3f3}}td:first-child,th:first-child{{text-align:left}}img{{max-width:100%;border:1px solid #eee}}\
.verdict{{padding:.6em 1em;border-left:5px solid {};background:#fafafa}}code{{font-size:90%}}</style></head><body>",
        esc(&title),
        match run.status {
            RunStatus::Succeeded => "#2a7",
            RunStatus::Rejected => "#c80",
            _ => "#c33",
        }
    );
    let _ = write!(
        h,
        "<h1>{}</h1><p class=\"verdict\"><b>{}</b> — {}</p>",
        esc(&title),
        run.status.as_str(),
        esc(verdict)
    );
    let _ = write!(
        h,
        "<p>Environment <code>{}</code>, version {} · started {} by {} ({}) · code <code>{}</code></p>",
        esc(&run.spec.env),
        run.spec.version,
        rfc3339(run.started_at_ms),
        esc(&run.spec.actor),
        esc(&run.spec.trigger),
        esc(&run.code_version)
    );
    if let Some(d) = &i.dataset {
        let _ = write!(
            h,
            "<p>Data: {} ({}), {} days {} → {}, {} quotes; {} partitions quarantined.</p>",
            esc(&d.dataset.display().to_string()),
            esc(&d.source),
            d.days,
            esc(&d.first_day),
            esc(&d.last_day),
            d.quotes.iter().sum::<u64>(),
            d.quarantined.len()
        );
    }
    if let Some(b) = &i.backtest {
        h.push_str("<h2>Headline (unseen half of the held-out window)</h2><table><tr><th>case</th><th>Sharpe</th><th>90 % interval</th><th>return</th><th>max drawdown</th><th>fills</th><th>turnover/day</th><th>slippage bps</th><th>max |Σwβ|</th></tr>");
        let mut row = |name: &str, f: &mlcore_research::backtest::Figures| {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{:.2}</td><td>[{:.2}, {:.2}]</td><td>{:.5}</td><td>{:.5}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.4}</td></tr>",
                esc(name),
                f.sharpe,
                f.sharpe_ci90[0],
                f.sharpe_ci90[1],
                f.total_return,
                f.max_drawdown,
                f.fills,
                f.turnover_per_day,
                f.realised_slippage_bps,
                f.max_abs_residual_beta
            );
        };
        row("base", &b.base);
        for (name, f) in &b.scenarios {
            row(name, f);
        }
        let _ = write!(
            h,
            "</table><p>θ1 = {:.3}, θ2 = {:.3}; {} decisions every {} ms, latency {} ms.</p>",
            b.theta1, b.theta2, b.base.decisions, b.cadence_ms, b.latency_ms
        );
    }
    if let Some(f) = &i.fitted {
        h.push_str("<h2>Model (test rows)</h2><table><tr><th>head</th><th>AUC</th><th>log loss</th><th>Brier</th><th>ECE</th><th>base rate</th></tr>");
        for head in ["ai1", "ai2", "ai3"] {
            let m = |k: &str| {
                f.metrics
                    .get(&format!("{head}_{k}_test"))
                    .copied()
                    .unwrap_or(f64::NAN)
            };
            let _ = write!(
                h,
                "<tr><td>{head}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.3}</td></tr>",
                m("auc"),
                m("logloss"),
                m("brier"),
                m("ece"),
                m("base_rate")
            );
        }
        h.push_str("</table>");
    }
    if let Some(cv) = &i.cv {
        let folds: Vec<String> = cv
            .folds
            .iter()
            .map(|f| f.auc.map_or("–".into(), |a| format!("{a:.4}")))
            .collect();
        let _ = write!(
            h,
            "<h2>Validation (purged k-fold, ai1)</h2><p>Stitched out-of-sample AUC {} over {} rows (per fold: {}), log loss {:.4}, Brier {:.4}, ECE {:.4}.</p>",
            cv.auc.map_or("–".into(), |a| format!("{a:.4}")),
            cv.oos_rows,
            folds.join(", "),
            cv.log_loss,
            cv.brier,
            cv.ece
        );
    }
    if let Some(t) = &i.tuned {
        let _ = write!(
            h,
            "<h2>θ search</h2><p>{}</p><p>Out of sample for θ (the unseen half): Sharpe {:.2} [{:.2}, {:.2}], {} fills.</p>",
            esc(&t.search.verdict),
            t.held_out.sharpe,
            t.held_out.sharpe_ci90[0],
            t.held_out.sharpe_ci90[1],
            t.held_out.fills
        );
    }
    if let Some(c) = &i.challenge {
        match &c.verdict {
            Some(v) => {
                let _ = write!(
                    h,
                    "<h2>Champion vs challenger</h2><p>{}</p><table><tr><th>model</th><th>θ1</th><th>θ2</th><th>Sharpe</th><th>90 % interval</th><th>return</th><th>fills</th></tr>",
                    esc(&v.reason)
                );
                for (name, x) in [("active (champion)", &v.champion), ("candidate", &v.challenger)] {
                    let _ = write!(
                        h,
                        "<tr><td>{name} {}</td><td>{:.3}</td><td>{:.3}</td><td>{:.2}</td><td>[{:.2}, {:.2}]</td><td>{:.5}</td><td>{}</td></tr>",
                        esc(&x.model_id),
                        x.theta1,
                        x.theta2,
                        x.sharpe,
                        x.sharpe_ci90[0],
                        x.sharpe_ci90[1],
                        x.total_return,
                        x.fills
                    );
                }
                h.push_str("</table>");
            }
            None => h.push_str("<h2>Champion vs challenger</h2><p>No active model: the candidate is the strategy's first.</p>"),
        }
    }
    for (name, title, png) in plots {
        let _ = write!(
            h,
            "<h3>{}</h3><img alt=\"{}\" src=\"data:image/png;base64,{}\">",
            esc(title),
            esc(name),
            base64::engine::general_purpose::STANDARD.encode(png)
        );
    }
    h.push_str("<h2>Steps</h2><table><tr><th>step</th><th>state</th><th>key</th><th>rows</th><th>took (ms)</th><th>produced in (ms)</th></tr>");
    for s in &run.steps {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{:?}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.name),
            s.state,
            esc(s.key.short()),
            s.rows.map(|r| r.to_string()).unwrap_or_default(),
            s.duration_ms.map(|r| r.to_string()).unwrap_or_default(),
            s.produced_in_ms.map(|r| r.to_string()).unwrap_or_default()
        );
    }
    h.push_str("</table></body></html>\n");
    h
}

/// The ledger line of `run`.
pub fn ledger_entry(run: &RunManifest, dirs: &BTreeMap<Step, PathBuf>, duration_s: f64) -> Entry {
    let i = Inputs::load(dirs);
    let chosen = i.tuned.as_ref().map(|t| t.search.chosen);
    Entry {
        run_id: run.run_id.clone(),
        strategy: run.spec.strategy.clone(),
        env: run.spec.env.clone(),
        started_at: rfc3339(run.started_at_ms),
        finished_at: run.finished_at_ms.map(rfc3339).unwrap_or_default(),
        status: run.status.as_str().to_owned(),
        verdict: run.verdict.clone().unwrap_or_default(),
        model_id: run.model_id.clone().unwrap_or_default(),
        data: i
            .dataset
            .as_ref()
            .map(|d| (d.first_day.clone(), d.last_day.clone()))
            .unwrap_or_default(),
        kpis: [
            i.fitted
                .as_ref()
                .and_then(|f| f.metrics.get("ai1_auc_test").copied()),
            i.tuned.as_ref().map(|t| t.held_out.sharpe),
            i.backtest.as_ref().map(|b| b.base.sharpe),
            i.backtest.as_ref().map(|b| b.base.sharpe_ci90[0]),
            i.backtest.as_ref().map(|b| b.base.max_drawdown),
            i.backtest.as_ref().map(|b| b.base.fills as f64),
            chosen.map(|c| c.0),
            chosen.map(|c| c.1),
            i.challenge
                .as_ref()
                .and_then(|c| c.verdict.as_ref())
                .map(|v| v.sharpe_gain),
        ],
        duration_s,
    }
}
