//! The weekly health report: latency (exact percentiles of the week's raw
//! samples, the hours that breached the SLO), the portfolio (each
//! strategy's newest backtest against the drawdown budget), the week's
//! retraining runs, and the alerts the automation raised. Built from files
//! only ([`build`]), checked against the shipped JSON Schema, signed
//! ([`sign`]) and kept in `weekly_report_history/` ([`save`], [`prune`]).

pub mod sign;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::{json, Map, Value};

use crate::latency::{rollup, samples};
use crate::layout::Layout;
use crate::time::{midnight, rfc3339};
use crate::{inputs, runlog, schema, ObserveError};

/// The schema version this build writes.
pub const SCHEMA_VERSION: &str = "1.0.0";

/// What a report is built against.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// When it is built.
    pub now: DateTime<Utc>,
    /// The Monday the week starts.
    pub week_start: NaiveDate,
    /// The latency SLO (p95, ms).
    pub slo_p95_ms: f64,
    /// The drawdown a strategy may reach (fraction).
    pub drawdown_budget: f64,
    /// The share of the budget that warns.
    pub warning_fraction: f64,
}

/// The week a report covers when none is named: the week of the day
/// before `now` — the week so far on Tuesday to Sunday, and on Monday the
/// week that just ended (so a daily run at 00:30 finishes each week's
/// report).
pub fn default_week(now: DateTime<Utc>) -> NaiveDate {
    crate::time::week_start(now - Duration::days(1))
}

/// `normal`, `warning` or `breach` for a drawdown against the budget.
pub fn budget_status(drawdown: f64, p: &Params) -> &'static str {
    if drawdown >= p.drawdown_budget {
        "breach"
    } else if drawdown >= p.drawdown_budget * p.warning_fraction {
        "warning"
    } else {
        "normal"
    }
}

fn rank(status: &str) -> u8 {
    match status {
        "breach" => 2,
        "warning" => 1,
        _ => 0,
    }
}

fn pct(x: f64) -> f64 {
    (x * 100.0 * 1e6).round() / 1e6
}

/// Builds the report of the week starting `p.week_start` (validated
/// against the schema before it is returned).
pub fn build(layout: &Layout, p: &Params) -> Result<Value, ObserveError> {
    let from = midnight(p.week_start);
    let to = from + Duration::days(7);
    let in_week = |t: Option<DateTime<Utc>>| t.is_some_and(|t| t >= from && t < to);

    // Latency.
    let mut lat: Vec<f64> = samples::read_window(
        &layout.latency_csv(),
        &layout.latency_archive(),
        from.timestamp_millis(),
        to.timestamp_millis(),
    )?
    .into_iter()
    .map(|s| s.latency_ms)
    .collect();
    let n = lat.len();
    let pcts = rollup::percentiles(&mut lat);
    let hours: Vec<rollup::Rollup> = rollup::read(&layout.rollup_csv())?
        .into_iter()
        .filter(|r| in_week(r.hour()))
        .collect();
    let breaches: Vec<Value> = hours
        .iter()
        .filter(|r| r.breach_flag)
        .map(|r| json!({"hour_utc": r.hour_utc, "p95_ms": r.p95_ms, "samples": r.samples}))
        .collect();
    let latency = json!({
        "samples": n,
        "p50_ms": pcts.map(|p| p.0),
        "p95_ms": pcts.map(|p| p.1),
        "p99_ms": pcts.map(|p| p.2),
        "slo_p95_ms": p.slo_p95_ms,
        "hours": hours.len(),
        "breaches": breaches,
    });

    // Portfolio: each strategy's newest backtest finished before the week's end.
    let ledger: Vec<inputs::LedgerRow> = inputs::ledger(&layout.runs)?
        .into_iter()
        .filter(|r| r.finished().is_some_and(|t| t < to))
        .collect();
    let mut strategies = Vec::new();
    let mut worst = "normal";
    let mut worst_dd: Option<f64> = None;
    let mut alerts = Vec::new();
    for (strategy, (row, s)) in inputs::latest_portfolios(&layout.runs, &ledger)? {
        let dd = s.base.max_drawdown;
        let status = budget_status(dd, p);
        if rank(status) > rank(worst) {
            worst = status;
        }
        worst_dd = Some(worst_dd.map_or(dd, |w: f64| w.max(dd)));
        let mut equity = Map::new();
        let mut cum = 0.0;
        for (day, pnl) in &s.base.daily_pnl {
            cum += pnl;
            equity.insert(day.clone(), json!(cum));
        }
        if status != "normal" {
            alerts.push(json!({
                "id": "drawdown_budget",
                "severity": if status == "breach" { "critical" } else { "warning" },
                "message": format!(
                    "{strategy}: backtest drawdown {:.2} % against a budget of {:.2} % (run {})",
                    pct(dd), pct(p.drawdown_budget), row.run_id
                ),
                "evidence_url": format!("runs/{}/portfolio_summary.json", row.run_id),
                "notified_channels": [],
            }));
        }
        strategies.push(json!({
            "strategy": strategy,
            "run_id": row.run_id,
            "model_id": s.model_id,
            "budget_status": status,
            "drawdown_pct": pct(dd),
            "sharpe": s.base.sharpe,
            "total_return": s.base.total_return,
            "win_rate": s.base.win_rate,
            "equity_curve": equity,
        }));
    }
    let portfolio = json!({
        "budget_status": worst,
        "drawdown_pct": worst_dd.map(pct),
        "drawdown_budget_pct": pct(p.drawdown_budget),
        "strategies": strategies,
    });

    // The week's runs.
    let mut runs = Vec::new();
    for row in ledger.iter().filter(|r| in_week(r.finished())) {
        let win_rate = inputs::portfolio(&layout.runs, &row.run_id)?.map(|s| s.base.win_rate);
        runs.push(json!({
            "run_id": row.run_id,
            "strategy": row.strategy,
            "mode": row.env,
            "status": row.status,
            "start_ts": row.started_at,
            "end_ts": row.finished_at,
            "sharpe": row.sharpe,
            "win_rate": win_rate,
            "model_id": row.model_id,
        }));
    }

    // The automation's alerts of the week.
    for r in runlog::read(&layout.automation_log())? {
        if !in_week(r.job_id.started()) {
            continue;
        }
        for a in r.alerts {
            let mut kept = Map::new();
            for k in [
                "id",
                "severity",
                "message",
                "evidence_url",
                "notified_channels",
                "job_id",
            ] {
                if let Some(v) = a.get(k) {
                    kept.insert(k.to_owned(), v.clone());
                }
            }
            kept.entry("notified_channels").or_insert_with(|| json!([]));
            alerts.push(Value::Object(kept));
        }
    }

    let doc = json!({
        "schema_version": SCHEMA_VERSION,
        "generated_at": rfc3339(p.now),
        "week_start": p.week_start.to_string(),
        "week_end": (p.week_start + Duration::days(6)).to_string(),
        "latency": latency,
        "portfolio": portfolio,
        "runs": runs,
        "alerts": alerts,
    });
    schema::validate(schema::WEEKLY_REPORT, "the weekly report", &doc)?;
    Ok(doc)
}

/// Writes `<week_start>.json` (the canonical JSON that was signed) and
/// `<week_start>.sig` (the header value) into `dir`; returns both paths.
pub fn save(dir: &Path, doc: &Value, signature: &str) -> Result<[PathBuf; 2], ObserveError> {
    let week = doc["week_start"].as_str().unwrap_or("unknown");
    let json_path = dir.join(format!("{week}.json"));
    let sig_path = dir.join(format!("{week}.sig"));
    crate::files::write_atomic(&json_path, &sign::canonical(doc)?)?;
    crate::files::write_atomic(&sig_path, format!("{signature}\n").as_bytes())?;
    Ok([json_path, sig_path])
}

/// Deletes reports in `dir` whose week started more than `days` before
/// `now`; returns what it deleted.
pub fn prune(dir: &Path, now: DateTime<Utc>, days: u32) -> Result<Vec<PathBuf>, ObserveError> {
    let cutoff = (now - Duration::days(i64::from(days))).date_naive();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".json").or_else(|| name.strip_suffix(".sig")) else {
            continue;
        };
        if NaiveDate::parse_from_str(stem, "%Y-%m-%d").is_ok_and(|d| d < cutoff) {
            std::fs::remove_file(e.path()).map_err(ObserveError::io(&e.path()))?;
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// The report kept for `week_start` (or the newest one), with its
/// signature header.
pub fn load(dir: &Path, week_start: Option<NaiveDate>) -> Result<Option<(Value, String)>, ObserveError> {
    let week = match week_start {
        Some(w) => w.to_string(),
        None => {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return Ok(None);
            };
            let newest = entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(str::to_owned))
                .filter(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok())
                .max();
            match newest {
                Some(w) => w,
                None => return Ok(None),
            }
        }
    };
    let path = dir.join(format!("{week}.json"));
    if !path.exists() {
        return Ok(None);
    }
    let doc: Value = crate::files::read_json(&path)?;
    let sig_path = dir.join(format!("{week}.sig"));
    let sig = std::fs::read_to_string(&sig_path).map_err(ObserveError::io(&sig_path))?;
    Ok(Some((doc, sig.trim().to_owned())))
}
