//! From quotes to labelled, time-split samples.
//!
//! Labels look `horizon` quotes ahead of the symbol's latest quote at the
//! decision: ai1 — did the mid go up; ai2 — was the absolute move in the top
//! quartile of the training period (a risk score). Splits are by decision
//! time (train, calibration, test), with a purge gap of one label horizon
//! between them so no label straddles two segments.

use mlcore_features::{self as features, Sample, N_FEATURES};
use mlcore_market::Quote;

/// Labelled samples of one segment.
#[derive(Debug, Clone, Default)]
pub struct Segment {
    /// Feature rows, row-major.
    pub x: Vec<f32>,
    /// ai1 labels (up move).
    pub up: Vec<bool>,
    /// Absolute log move over the horizon (for the ai2 threshold).
    pub abs_move: Vec<f64>,
    /// Decision times.
    pub ts_ns: Vec<i64>,
}

impl Segment {
    /// Rows.
    pub fn rows(&self) -> usize {
        self.up.len()
    }

    fn push(&mut self, s: &Sample, up: bool, abs_move: f64) {
        self.x.extend_from_slice(&s.features);
        self.up.push(up);
        self.abs_move.push(abs_move);
        self.ts_ns.push(s.ts_ns);
    }

    /// ai2 labels for a threshold.
    pub fn risky(&self, threshold: f64) -> Vec<bool> {
        self.abs_move.iter().map(|m| *m > threshold).collect()
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.x[i * N_FEATURES..(i + 1) * N_FEATURES]
    }
}

/// The three segments.
#[derive(Debug, Clone)]
pub struct Split {
    /// Fitting.
    pub train: Segment,
    /// Platt calibration.
    pub calibration: Segment,
    /// Held out.
    pub test: Segment,
    /// First decision time, ms.
    pub start_ms: u64,
    /// First test decision time, ms.
    pub test_start_ms: u64,
    /// Last decision time, ms.
    pub end_ms: u64,
}

/// Builds labelled samples from time-ordered `quotes` and splits them.
pub fn build(
    quotes: &[Quote],
    n_symbols: usize,
    benchmark: usize,
    decision_every_ns: i64,
    horizon: usize,
    fractions: (f64, f64),
) -> Split {
    // Each symbol's log mids in order, to read labels from.
    let mut mids: Vec<Vec<f64>> = vec![Vec::new(); n_symbols];
    for q in quotes {
        if let Some(m) = mids.get_mut(usize::from(q.symbol)) {
            m.push(if q.is_sane() { q.mid().ln() } else { f64::NAN });
        }
    }
    let samples = features::batch(quotes, n_symbols, benchmark, decision_every_ns);
    let first = samples.first().map_or(0, |s| s.ts_ns);
    let last = samples.last().map_or(0, |s| s.ts_ns);
    let span = (last - first) as f64;
    let cal_start = first + (span * fractions.0) as i64;
    let test_start = first + (span * (fractions.0 + fractions.1)) as i64;
    // Purge: a label reaches `horizon` quotes ahead; at the decision cadence
    // that is at most this long.
    let gap = horizon as i64 * quote_interval_ns(quotes, n_symbols);
    let mut split = Split {
        train: Segment::default(),
        calibration: Segment::default(),
        test: Segment::default(),
        start_ms: (first / 1_000_000).max(0) as u64,
        test_start_ms: (test_start / 1_000_000).max(0) as u64,
        end_ms: (last / 1_000_000).max(0) as u64,
    };
    for s in &samples {
        let series = &mids[usize::from(s.symbol)];
        let Some(&future) = series.get(s.quote_index + horizon) else {
            continue;
        };
        let now = series[s.quote_index];
        if !future.is_finite() || !now.is_finite() {
            continue;
        }
        let (up, abs_move) = (future > now, (future - now).abs());
        let t = s.ts_ns;
        if t + gap < cal_start {
            split.train.push(s, up, abs_move);
        } else if t >= cal_start && t + gap < test_start {
            split.calibration.push(s, up, abs_move);
        } else if t >= test_start {
            split.test.push(s, up, abs_move);
        }
    }
    split
}

/// Typical spacing of one symbol's quotes.
fn quote_interval_ns(quotes: &[Quote], n_symbols: usize) -> i64 {
    let span = quotes.last().map_or(0, |q| q.ts_ns) - quotes.first().map_or(0, |q| q.ts_ns);
    let per_symbol = (quotes.len() / n_symbols.max(1)).max(2) as i64;
    (span / (per_symbol - 1)).max(1)
}

/// The `q`-quantile of `values` (nearest rank).
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let idx = ((v.len() - 1) as f64 * q).round() as usize;
    v[idx.min(v.len() - 1)]
}
