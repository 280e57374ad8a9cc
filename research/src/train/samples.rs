//! From quotes to labelled, time-split samples.
//!
//! Labels look at most `horizon` quotes ahead of the symbol's latest quote
//! at the decision ([`crate::labels`]): ai1 — the triple barrier's "up"
//! (profit-take at +1σ, stop-loss at −1σ, vertical at the horizon; σ over
//! the last 100 quotes, scaled to the horizon); ai2 — an adverse excursion
//! of more than 0.5σ against that side before the exit (the risk θ2 gates).
//! Splits are by decision time (train, calibration, test), with a purge gap
//! of one label horizon between them so no label straddles two segments.

use mlcore_features::{self as features, Sample, N_FEATURES};
use mlcore_market::Quote;

use crate::labels::{self, Barriers};

/// Profit-take and stop-loss barriers, in σ.
pub const BARRIER_SIGMAS: f64 = 1.0;
/// The adverse excursion ai2 learns, in σ: below the stop-loss barrier, or
/// the label could never be true (a path that far against the side would
/// have ended the event at the barrier).
pub const ADVERSE_SIGMAS: f64 = 0.5;
/// Quotes in σ's window.
pub const SIGMA_WINDOW: usize = 100;

/// Labelled samples of one segment.
#[derive(Debug, Clone, Default)]
pub struct Segment {
    /// Feature rows, row-major.
    pub x: Vec<f32>,
    /// ai1 labels (triple barrier: up).
    pub up: Vec<bool>,
    /// ai2 labels (adverse excursion).
    pub adverse: Vec<bool>,
    /// Average uniqueness of each sample's label among its symbol's.
    pub weight: Vec<f64>,
    /// Decision times.
    pub ts_ns: Vec<i64>,
    /// Each sample's symbol (universe index).
    pub symbol: Vec<u16>,
    /// Log return from the decision to the event's exit (ai3's label reads
    /// it with the side ai1 would take).
    pub ret: Vec<f64>,
}

impl Segment {
    /// Rows.
    pub fn rows(&self) -> usize {
        self.up.len()
    }

    fn push(&mut self, s: &Sample, event: &labels::Event, adverse: bool, weight: f64) {
        let up = event.up();
        self.symbol.push(s.symbol);
        self.ret.push(event.ret);
        self.x.extend_from_slice(&s.features);
        self.up.push(up);
        self.adverse.push(adverse);
        self.weight.push(weight);
        self.ts_ns.push(s.ts_ns);
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
    /// The purge gap between segments (one label horizon), ns.
    pub gap_ns: i64,
}

/// Builds labelled samples from time-ordered `quotes` and splits them:
/// [`features::batch`], then [`label`].
pub fn build(
    quotes: &[Quote],
    n_symbols: usize,
    benchmark: usize,
    decision_every_ns: i64,
    horizon: usize,
    fractions: (f64, f64),
) -> Split {
    let samples = features::batch(quotes, n_symbols, benchmark, decision_every_ns);
    label(quotes, n_symbols, &samples, horizon, fractions)
}

/// Labels `samples` (from [`features::batch`] over the same `quotes`) and
/// splits them by decision time into train, calibration and test
/// (`fractions` of the span for the first two).
pub fn label(
    quotes: &[Quote],
    n_symbols: usize,
    samples: &[Sample],
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
    let barriers = Barriers {
        profit_take: BARRIER_SIGMAS,
        stop_loss: BARRIER_SIGMAS,
        horizon,
    };
    let sigmas: Vec<Vec<f64>> = mids
        .iter()
        .map(|x| labels::rolling_sigma(x, SIGMA_WINDOW, horizon))
        .collect();
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
        gap_ns: gap,
    };
    // Every labelled sample, then each one's average uniqueness among the
    // events of its symbol (overlapping labels weigh less).
    let mut labelled: Vec<(&Sample, labels::Event, bool)> = Vec::with_capacity(samples.len());
    for s in samples {
        let sym = usize::from(s.symbol);
        let (x, sigma) = (&mids[sym], &sigmas[sym]);
        let Some(Some(event)) = labels::triple_barrier(x, sigma, &[s.quote_index], &barriers).pop() else {
            continue;
        };
        let adverse = labels::adverse_excursion(x, sigma, &[event], ADVERSE_SIGMAS)[0];
        labelled.push((s, event, adverse));
    }
    let mut weights = vec![1.0; labelled.len()];
    for (sym, path) in mids.iter().enumerate() {
        let mine: Vec<usize> = (0..labelled.len())
            .filter(|&i| usize::from(labelled[i].0.symbol) == sym)
            .collect();
        let events: Vec<labels::Event> = mine.iter().map(|&i| labelled[i].1).collect();
        for (&i, w) in mine.iter().zip(labels::uniqueness_weights(&events, path.len())) {
            weights[i] = w;
        }
    }
    for ((s, event, adverse), w) in labelled.into_iter().zip(weights) {
        let t = s.ts_ns;
        if t + gap < cal_start {
            split.train.push(s, &event, adverse, w);
        } else if t >= cal_start && t + gap < test_start {
            split.calibration.push(s, &event, adverse, w);
        } else if t >= test_start {
            split.test.push(s, &event, adverse, w);
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
