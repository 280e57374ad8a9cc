//! The four datasets, built from the runs ledger, the runs' backtests and
//! the latency rollups. Every number is checked against its range before
//! a bundle is written: a dashboard showing a win rate of 140 % is worse
//! than one that did not refresh.
//!
//! The Python design's EV history came from a state archive this product
//! does not have; here it is each finished run's backtest: the expected
//! P&L per decision, the win rate and the Sharpe ratio with its 90 %
//! lower bound.

use serde::Serialize;
use serde_json::{json, Value};

use crate::inputs::{self, LedgerRow, PortfolioSummary};
use crate::latency::rollup;
use crate::layout::Layout;
use crate::ObserveError;

/// A dataset of the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dataset {
    /// Per finished run: EV per decision, win rate, Sharpe and its bound.
    EvHistory,
    /// Per strategy's newest backtest: realised slippage and fills.
    Slippage,
    /// Per finished run: trades per day, turnover, drawdown.
    Turnover,
    /// The hourly latency rollups.
    LatencyRollups,
}

impl Dataset {
    /// Every dataset, in bundle order.
    pub const ALL: [Self; 4] = [
        Self::EvHistory,
        Self::Slippage,
        Self::Turnover,
        Self::LatencyRollups,
    ];

    /// Its name (file `<name>.json`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::EvHistory => "ev_history",
            Self::Slippage => "slippage",
            Self::Turnover => "turnover",
            Self::LatencyRollups => "latency_rollups",
        }
    }

    /// The dataset called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// What the datasets read.
#[derive(Debug)]
pub struct Sources {
    ledger: Vec<LedgerRow>,
    /// Runs with a backtest, newest finished first.
    backtested: Vec<(LedgerRow, PortfolioSummary)>,
    rollups: Vec<rollup::Rollup>,
    /// The files read (the manifest's provenance).
    pub inputs: Vec<String>,
}

impl Sources {
    /// Reads the ledger, every run's backtest and the rollups.
    pub fn read(layout: &Layout) -> Result<Self, ObserveError> {
        let ledger = inputs::ledger(&layout.runs)?;
        let mut backtested = Vec::new();
        let mut read = vec![layout.display(&layout.runs.join("index.csv"))];
        for row in &ledger {
            if let Some(p) = inputs::portfolio(&layout.runs, &row.run_id)? {
                read.push(
                    layout
                        .display(&inputs::run_dir(&layout.runs, &row.run_id).join("portfolio_summary.json")),
                );
                backtested.push((row.clone(), p));
            }
        }
        backtested.sort_by_key(|b| std::cmp::Reverse(b.0.finished()));
        read.push(layout.display(&layout.rollup_csv()));
        Ok(Self {
            rollups: rollup::read(&layout.rollup_csv())?,
            ledger,
            backtested,
            inputs: read,
        })
    }

    /// Finished runs in the ledger.
    pub fn runs(&self) -> usize {
        self.ledger.len()
    }
}

struct Check<'a> {
    dataset: &'static str,
    row: usize,
    errors: &'a mut Vec<ObserveError>,
}

impl Check<'_> {
    fn range(&mut self, field: &str, v: f64, lo: f64, hi: f64) -> f64 {
        if !(v.is_finite() && v >= lo && v <= hi) {
            self.errors.push(ObserveError::Range {
                dataset: self.dataset,
                row: self.row,
                message: format!("{field} = {v} is outside [{lo}, {hi}]"),
            });
        }
        v
    }

    fn finite(&mut self, field: &str, v: f64) -> f64 {
        self.range(field, v, f64::MIN, f64::MAX)
    }
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// The rows of `d` (every out-of-range value is an error naming its row
/// and field; the first is returned).
pub fn build(
    d: Dataset,
    src: &Sources,
    ev_history_runs: usize,
    runs: &std::path::Path,
) -> Result<Vec<Value>, ObserveError> {
    let mut errors = Vec::new();
    let name = d.name();
    let mut rows = Vec::new();
    match d {
        Dataset::EvHistory => {
            for (i, (row, p)) in src.backtested.iter().take(ev_history_runs).enumerate() {
                let mut c = Check {
                    dataset: name,
                    row: i,
                    errors: &mut errors,
                };
                let f = &p.base;
                let ev = if f.decisions > 0 {
                    f.total_return / f.decisions as f64
                } else {
                    0.0
                };
                rows.push(json!({
                    "strategy": row.strategy,
                    "run_id": row.run_id,
                    "finished_at": row.finished_at,
                    "status": row.status,
                    "model_id": p.model_id,
                    "decisions": f.decisions,
                    "ev_per_decision": round6(c.finite("ev_per_decision", ev)),
                    "win_rate": c.range("win_rate", f.win_rate, 0.0, 1.0),
                    "sharpe": c.finite("sharpe", f.sharpe),
                    "sharpe_lo": c.finite("sharpe_lo", f.sharpe_ci90[0]),
                }));
            }
        }
        Dataset::Slippage => {
            let mut seen = std::collections::BTreeSet::new();
            for (row, p) in &src.backtested {
                if !seen.insert(row.strategy.clone()) {
                    continue;
                }
                let mut c = Check {
                    dataset: name,
                    row: rows.len(),
                    errors: &mut errors,
                };
                rows.push(json!({
                    "strategy": row.strategy,
                    "run_id": row.run_id,
                    "slippage_bps": c.finite("slippage_bps", p.base.realised_slippage_bps),
                    "fill_count": p.base.fills,
                    "costs_paid": c.finite("costs_paid", p.base.costs_paid),
                    "window_days": round6(c.range("window_days", p.window_days(), 0.0, 3650.0)),
                }));
            }
        }
        Dataset::Turnover => {
            for (i, (row, p)) in src.backtested.iter().enumerate() {
                let daily = inputs::daily(runs, &row.run_id)?;
                let mut c = Check {
                    dataset: name,
                    row: i,
                    errors: &mut errors,
                };
                let days = p.window_days();
                let trades = if days > 0.0 {
                    p.base.fills as f64 / days
                } else {
                    0.0
                };
                let pnl_per_day = if daily.is_empty() {
                    None
                } else {
                    Some(round6(
                        daily.iter().map(|d| d.1).sum::<f64>() / daily.len() as f64,
                    ))
                };
                rows.push(json!({
                    "strategy": row.strategy,
                    "run_id": row.run_id,
                    "finished_at": row.finished_at,
                    "avg_trades_per_day": round6(c.range("avg_trades_per_day", trades, 0.0, f64::MAX)),
                    "turnover_per_day": round6(c.range("turnover_per_day", p.base.turnover_per_day, 0.0, f64::MAX)),
                    "drawdown_pct": round6(c.range("drawdown_pct", p.base.max_drawdown * 100.0, 0.0, 100.0)),
                    "days": daily.len(),
                    "pnl_per_day": pnl_per_day,
                }));
            }
        }
        Dataset::LatencyRollups => {
            for (i, r) in src.rollups.iter().enumerate() {
                let mut c = Check {
                    dataset: name,
                    row: i,
                    errors: &mut errors,
                };
                for (f, v) in [("p50_ms", r.p50_ms), ("p95_ms", r.p95_ms), ("p99_ms", r.p99_ms)] {
                    c.range(f, v, 0.0, f64::MAX);
                }
                if !(r.p50_ms <= r.p95_ms && r.p95_ms <= r.p99_ms) {
                    c.errors.push(ObserveError::Range {
                        dataset: name,
                        row: i,
                        message: format!(
                            "percentiles out of order: p50 {} p95 {} p99 {}",
                            r.p50_ms, r.p95_ms, r.p99_ms
                        ),
                    });
                }
                rows.push(serde_json::to_value(r).unwrap_or(Value::Null));
            }
        }
    }
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(rows),
    }
}
