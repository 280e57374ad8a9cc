//! What the retraining flow leaves that the reports read: `runs/index.csv`
//! (one line per finished run) and each run's `portfolio_summary.json` and
//! `daily.csv`. Only the fields used here are read; a file that lacks one
//! is an error naming the file and the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::time::parse;
use crate::ObserveError;

/// One line of `runs/index.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerRow {
    /// Run id.
    pub run_id: String,
    /// Strategy.
    pub strategy: String,
    /// Environment.
    pub env: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
    /// `succeeded`, `rejected`, `failed`.
    pub status: String,
    /// One line.
    pub verdict: String,
    /// The registered model (empty otherwise).
    pub model_id: String,
    /// The backtest's Sharpe.
    pub sharpe: Option<f64>,
    /// Its 90 % lower bound.
    pub sharpe_lo: Option<f64>,
    /// Max drawdown.
    pub max_drawdown: Option<f64>,
    /// Fills.
    pub fills: Option<f64>,
}

impl LedgerRow {
    /// When the run finished.
    pub fn finished(&self) -> Option<DateTime<Utc>> {
        parse(&self.finished_at)
    }
}

/// Every finished run (none when there is no ledger yet), in file order.
pub fn ledger(runs: &Path) -> Result<Vec<LedgerRow>, ObserveError> {
    let path = runs.join("index.csv");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut r = csv::Reader::from_path(&path).map_err(|e| ObserveError::input(&path, e.to_string()))?;
    let mut out = Vec::new();
    for (i, row) in r.deserialize::<LedgerRow>().enumerate() {
        let row: LedgerRow = row.map_err(|e| ObserveError::input(&path, format!("line {}: {e}", i + 2)))?;
        if row.finished().is_none() || parse(&row.started_at).is_none() {
            return Err(ObserveError::input(
                &path,
                format!("line {}: started_at/finished_at are not RFC 3339", i + 2),
            ));
        }
        out.push(row);
    }
    Ok(out)
}

/// The backtest figures of `portfolio_summary.json` the reports use.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Figures {
    /// Decisions measured.
    pub decisions: u64,
    /// Orders filled.
    pub fills: u64,
    /// Total P&L after costs.
    pub total_return: f64,
    /// Costs paid.
    pub costs_paid: f64,
    /// Annualised Sharpe.
    pub sharpe: f64,
    /// Its 90 % bootstrap interval.
    pub sharpe_ci90: [f64; 2],
    /// Largest fall from a peak (≥ 0).
    pub max_drawdown: f64,
    /// Share of intervals with a position that made money.
    pub win_rate: f64,
    /// Σ|Δw| per day.
    pub turnover_per_day: f64,
    /// Mean fill against the decision's mid, bps.
    pub realised_slippage_bps: f64,
    /// P&L per UTC day.
    pub daily_pnl: BTreeMap<String, f64>,
}

/// `portfolio_summary.json`, as far as the reports read it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PortfolioSummary {
    /// Strategy.
    pub strategy: String,
    /// The model.
    pub model_id: String,
    /// Measured window, ms.
    pub window_start_ms: i64,
    /// End of the window, ms.
    pub window_end_ms: i64,
    /// The market as it was.
    pub base: Figures,
}

impl PortfolioSummary {
    /// The measured window in days.
    pub fn window_days(&self) -> f64 {
        (self.window_end_ms - self.window_start_ms) as f64 / 86_400_000.0
    }
}

/// A run's folder.
pub fn run_dir(runs: &Path, run_id: &str) -> PathBuf {
    runs.join(run_id)
}

/// A run's `portfolio_summary.json` (`None` when the run has none: it
/// failed before its backtest).
pub fn portfolio(runs: &Path, run_id: &str) -> Result<Option<PortfolioSummary>, ObserveError> {
    let path = run_dir(runs, run_id).join("portfolio_summary.json");
    if !path.exists() {
        return Ok(None);
    }
    crate::files::read_json(&path).map(Some)
}

/// A run's `daily.csv` (`day,pnl`): P&L per day (empty when absent).
pub fn daily(runs: &Path, run_id: &str) -> Result<Vec<(String, f64)>, ObserveError> {
    let path = run_dir(runs, run_id).join("daily.csv");
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut r = csv::Reader::from_path(&path).map_err(|e| ObserveError::input(&path, e.to_string()))?;
    let mut out = Vec::new();
    for (i, row) in r.deserialize::<(String, f64)>().enumerate() {
        out.push(row.map_err(|e| ObserveError::input(&path, format!("line {}: {e}", i + 2)))?);
    }
    Ok(out)
}

/// Per strategy, the newest run with a portfolio summary (succeeded or
/// rejected), with it.
pub fn latest_portfolios(
    runs: &Path,
    ledger: &[LedgerRow],
) -> Result<BTreeMap<String, (LedgerRow, PortfolioSummary)>, ObserveError> {
    let mut out: BTreeMap<String, (LedgerRow, PortfolioSummary)> = BTreeMap::new();
    for row in ledger {
        if row.status == "failed" {
            continue;
        }
        let newer = out
            .get(&row.strategy)
            .is_none_or(|(seen, _)| row.finished() >= seen.finished());
        if newer {
            if let Some(p) = portfolio(runs, &row.run_id)? {
                out.insert(row.strategy.clone(), (row.clone(), p));
            }
        }
    }
    Ok(out)
}
