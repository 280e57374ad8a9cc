//! Cross-validation of a head on the market: samples labelled by the
//! triple barrier ([`crate::labels`]), checked point-in-time, cut by
//! [`crate::validation`], fitted fold by fold, scored out of sample and
//! stitched; every fold's index ranges, AUC, log loss, Brier score,
//! expected calibration error and the reliability diagram are reported.

use mlcore_features::{self as features, FeatureEngine, Sample, N_FEATURES};
use mlcore_market::Quote;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::labels::{self, Barriers};
use crate::train::learners::{self, FitError, GbmParams};
use crate::train::{auc, brier, log_loss, reliability, ReliabilityBin};
use crate::validation::{self, Fold, Scheme};

/// Samples with their labels and label spans, time-ordered.
#[derive(Debug, Clone, Default)]
pub struct Labelled {
    /// Feature rows, row-major, `N_FEATURES` wide.
    pub x: Vec<f32>,
    /// ai1's labels (triple barrier: up).
    pub y: Vec<bool>,
    /// (decision time, time the label was known), ns.
    pub spans: Vec<(i64, i64)>,
}

impl Labelled {
    /// Rows.
    pub fn rows(&self) -> usize {
        self.y.len()
    }

    fn rows_of(&self, idx: impl Iterator<Item = usize>) -> (Vec<f32>, Vec<bool>) {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in idx {
            x.extend_from_slice(&self.x[i * N_FEATURES..(i + 1) * N_FEATURES]);
            y.push(self.y[i]);
        }
        (x, y)
    }
}

/// The feature rows of `quotes` at every decision time (the daemon's
/// engine in batch mode).
pub fn samples(quotes: &[Quote], n_symbols: usize, benchmark: usize, every_ns: i64) -> Vec<Sample> {
    features::batch(quotes, n_symbols, benchmark, every_ns)
}

/// A feature row that was not computable at its decision time.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("look-ahead: the row of symbol {symbol} at {ts_ns} ns differs in feature {feature} (`{name}`) from what the quotes before that time give ({got} vs {want}); refusing to validate on it")]
pub struct LookAhead {
    /// Decision time.
    pub ts_ns: i64,
    /// Universe index.
    pub symbol: u16,
    /// Feature index.
    pub feature: usize,
    /// Its name.
    pub name: String,
    /// The row's value.
    pub got: f32,
    /// The point-in-time value.
    pub want: f32,
}

/// Recomputes `checks` of `samples`' rows (evenly spaced) from the quotes
/// strictly before each row's decision time, and refuses a row that
/// differs: a feature that used a later quote.
pub fn point_in_time_check(
    quotes: &[Quote],
    n_symbols: usize,
    benchmark: usize,
    samples: &[Sample],
    checks: usize,
) -> Result<(), LookAhead> {
    if samples.is_empty() {
        return Ok(());
    }
    let names = features::schema().features;
    let step = (samples.len() / checks.max(1)).max(1);
    for s in samples.iter().step_by(step) {
        let mut engine = FeatureEngine::new(n_symbols, benchmark);
        for q in quotes.iter().take_while(|q| q.ts_ns < s.ts_ns) {
            engine.update(q);
        }
        let mut want = [0f32; N_FEATURES];
        engine.write_row(usize::from(s.symbol), s.ts_ns, &mut want);
        if let Some(f) = (0..N_FEATURES).find(|&f| want[f].to_bits() != s.features[f].to_bits()) {
            return Err(LookAhead {
                ts_ns: s.ts_ns,
                symbol: s.symbol,
                feature: f,
                name: names.get(f).map(|n| n.name.clone()).unwrap_or_default(),
                got: s.features[f],
                want: want[f],
            });
        }
    }
    Ok(())
}

/// Labels `samples` with the triple barrier on each symbol's log-mid path
/// (σ over the last `sigma_window` quotes, scaled to the horizon); samples
/// whose label cannot be known (σ unknown, horizon past the data) are left
/// out.
pub fn label(
    quotes: &[Quote],
    n_symbols: usize,
    samples: &[Sample],
    barriers: &Barriers,
    sigma_window: usize,
) -> Labelled {
    let mut paths: Vec<(Vec<f64>, Vec<i64>)> = vec![(Vec::new(), Vec::new()); n_symbols];
    for q in quotes {
        if let Some((x, t)) = paths.get_mut(usize::from(q.symbol)) {
            x.push(if q.is_sane() { q.mid().ln() } else { f64::NAN });
            t.push(q.ts_ns);
        }
    }
    let sigmas: Vec<Vec<f64>> = paths
        .iter()
        .map(|(x, _)| labels::rolling_sigma(x, sigma_window, barriers.horizon))
        .collect();
    let mut out = Labelled::default();
    for s in samples {
        let sym = usize::from(s.symbol);
        let (x, t) = &paths[sym];
        let Some(Some(e)) = labels::triple_barrier(x, &sigmas[sym], &[s.quote_index], barriers).pop() else {
            continue;
        };
        out.x.extend_from_slice(&s.features);
        out.y.push(e.up());
        out.spans.push((s.ts_ns, t[e.end]));
    }
    out
}

/// The learner a fold fits.
#[derive(Debug, Clone, Copy)]
pub enum Learner {
    /// Gradient-boosted trees (ai1's).
    Gbm(GbmParams),
    /// Logistic regression with this L2 strength.
    Logistic(f64),
}

impl Learner {
    fn fit_predict(self, x: &[f32], y: &[bool], test_x: &[f32]) -> Result<Vec<f32>, FitError> {
        let rows = test_x.chunks_exact(N_FEATURES);
        Ok(match self {
            Self::Gbm(p) => {
                let head = learners::fit_gbm(x, y, None, None, p)?;
                rows.map(|r| head.predict_row(r)).collect()
            }
            Self::Logistic(alpha) => {
                let head = learners::fit_logistic(x, y, alpha)?;
                rows.map(|r| head.predict_row(r)).collect()
            }
        })
    }
}

/// One fold's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldReport {
    /// Training index ranges `[start, end)`.
    pub train: Vec<(usize, usize)>,
    /// Test index range.
    pub test: (usize, usize),
    /// Training rows after purge and embargo.
    pub train_rows: usize,
    /// Test AUC (`None`: one class only).
    pub auc: Option<f64>,
}

/// What cross-validation found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvReport {
    /// Every fold.
    pub folds: Vec<FoldReport>,
    /// Rows scored out of sample.
    pub oos_rows: usize,
    /// Stitched out-of-sample AUC.
    pub auc: Option<f64>,
    /// Stitched log loss.
    pub log_loss: f64,
    /// Stitched Brier score.
    pub brier: f64,
    /// Expected calibration error over 10 bins.
    pub ece: f64,
    /// The reliability diagram.
    pub reliability: Vec<ReliabilityBin>,
    /// The base rate of positive labels out of sample.
    pub base_rate: f64,
}

/// Fits `learner` fold by fold and scores the stitched out-of-sample
/// predictions. `purge: false` only for the control that shows the leak.
pub fn cross_validate(
    data: &Labelled,
    scheme: Scheme,
    embargo_ns: i64,
    purge: bool,
    learner: Learner,
) -> Result<CvReport, FitError> {
    let folds = validation::folds(&data.spans, scheme, embargo_ns, purge);
    let results = folds
        .par_iter()
        .map(|fold| run_fold(data, fold, learner))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(report(data, &folds, &results))
}

/// One fold fitted and scored: what a scale-out runs as a task.
pub fn run_fold(data: &Labelled, fold: &Fold, learner: Learner) -> Result<FoldResult, FitError> {
    let (x, y) = data.rows_of(fold.train_indices());
    let (tx, ty) = data.rows_of(fold.test.clone());
    let scores = learner.fit_predict(&x, &y, &tx)?;
    Ok(FoldResult {
        report: FoldReport {
            train: fold.train.iter().map(|r| (r.start, r.end)).collect(),
            test: (fold.test.start, fold.test.end),
            train_rows: fold.train_len(),
            auc: auc(&scores, &ty),
        },
        scores,
    })
}

/// The cross-validation's report from every fold's result (in `folds`' order).
pub fn report(data: &Labelled, folds: &[Fold], results: &[FoldResult]) -> CvReport {
    let scores: Vec<Vec<f32>> = results.iter().map(|r| r.scores.clone()).collect();
    let stitched = validation::stitch(data.rows(), folds, &scores);
    let (mut p, mut y) = (Vec::new(), Vec::new());
    for (i, s) in stitched.iter().enumerate() {
        if let Some(s) = s {
            p.push(*s);
            y.push(data.y[i]);
        }
    }
    let (diagram, ece) = reliability(&p, &y, 10);
    CvReport {
        folds: results.iter().map(|r| r.report.clone()).collect(),
        oos_rows: p.len(),
        auc: auc(&p, &y),
        log_loss: log_loss(&p, &y),
        brier: brier(&p, &y),
        ece,
        reliability: diagram,
        base_rate: y.iter().filter(|v| **v).count() as f64 / y.len().max(1) as f64,
    }
}

/// A fold's figures and its test rows' out-of-sample scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldResult {
    /// The fold's figures.
    pub report: FoldReport,
    /// Scores of its test rows, in order.
    pub scores: Vec<f32>,
}
