//! The feature engine: one implementation for training and serving.
//!
//! Per symbol, a fixed-size state ([`SymbolState`]: a ring of the last
//! [`HISTORY`] log mids plus EWMA moments) is updated per quote with no
//! allocation. A feature row is read from that state at decision time.
//! Serving feeds quotes one by one ([`FeatureEngine::update`]); training folds
//! the same engine over history ([`batch`]). Both run the same code, so their
//! rows are bit-identical — the parity test keeps it that way.
//!
//! The definition (names, order, parameters) is [`schema`]; its canonical
//! sha256 is what a model declares it was trained on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use mlcore_market::Quote;

/// Log mids kept per symbol (≥ the longest lookback + 2; a power of two so
/// ring indexing is a mask).
pub const HISTORY: usize = 128;
const MASK: usize = HISTORY - 1;
/// Quotes a symbol needs before its features are meaningful.
pub const WARMUP: usize = 101;
/// Return horizons, in quotes.
const RETURN_HORIZONS: [usize; 4] = [1, 5, 20, 60];
/// Realised-volatility windows, in returns.
const VOL_WINDOWS: [usize; 2] = [20, 100];
/// EWMA half-lives for z-scores, in quotes.
const EWMA_HALF_LIVES: [f64; 2] = [20.0, 100.0];
/// High–low range window, in quotes.
const RANGE_WINDOW: usize = 60;
/// Momentum window, in quotes.
const MOMENTUM_WINDOW: usize = 60;
/// Benchmark return horizons, in quotes.
const BENCH_HORIZONS: [usize; 2] = [1, 20];

/// Number of features in a row.
pub const N_FEATURES: usize = 15;

/// Feature names, in row order.
pub const NAMES: [&str; N_FEATURES] = [
    "ret_1_bps",
    "ret_5_bps",
    "ret_20_bps",
    "ret_60_bps",
    "rvol_20_bps",
    "rvol_100_bps",
    "ewma_z_20",
    "ewma_z_100",
    "spread_bps",
    "range_60_bps",
    "momentum_60",
    "tod_sin",
    "tod_cos",
    "bench_ret_1_bps",
    "bench_ret_20_bps",
];

/// `1 − 0.5^(1/half_life)` per EWMA, computed once (powf is not const).
#[inline]
fn ewma_alphas() -> &'static [f64; 2] {
    static ALPHAS: std::sync::OnceLock<[f64; 2]> = std::sync::OnceLock::new();
    ALPHAS.get_or_init(|| EWMA_HALF_LIVES.map(|hl| 1.0 - 0.5f64.powf(1.0 / hl)))
}

/// One symbol's incremental state. Fixed size (1,640 bytes): no heap.
#[derive(Debug, Clone, Copy)]
pub struct SymbolState {
    log_mids: [f64; HISTORY],
    head: usize,
    count: usize,
    ewma_mean: [f64; 2],
    ewma_var: [f64; 2],
    /// Running Σr² over each of `VOL_WINDOWS`: O(1) per quote instead of
    /// O(window) per row.
    sum_sq: [f64; 2],
    /// Monotonic deques of quote numbers for the range window's max and min
    /// (amortised O(1) per quote, O(1) per row).
    max_q: Deque,
    min_q: Deque,
    spread_bps: f64,
}

/// A fixed-capacity ring of quote numbers (no heap).
#[derive(Debug, Clone, Copy)]
struct Deque {
    items: [u32; DEQUE_CAP],
    head: usize,
    len: usize,
}

/// Capacity of the range deques (≥ `RANGE_WINDOW`, power of two).
const DEQUE_CAP: usize = 64;

impl Deque {
    const EMPTY: Self = Self {
        items: [0; DEQUE_CAP],
        head: 0,
        len: 0,
    };

    #[inline]
    fn front(&self) -> Option<u32> {
        (self.len > 0).then(|| self.items[self.head])
    }

    #[inline]
    fn back(&self) -> Option<u32> {
        (self.len > 0).then(|| self.items[(self.head + self.len - 1) & (DEQUE_CAP - 1)])
    }

    #[inline]
    fn pop_front(&mut self) {
        if self.len > 0 {
            self.head = (self.head + 1) & (DEQUE_CAP - 1);
            self.len -= 1;
        }
    }

    #[inline]
    fn pop_back(&mut self) {
        self.len = self.len.saturating_sub(1);
    }

    #[inline]
    fn push_back(&mut self, v: u32) {
        if self.len == DEQUE_CAP {
            self.pop_front();
        }
        self.items[(self.head + self.len) & (DEQUE_CAP - 1)] = v;
        self.len += 1;
    }
}

impl Default for SymbolState {
    fn default() -> Self {
        Self {
            log_mids: [0.0; HISTORY],
            head: 0,
            count: 0,
            ewma_mean: [0.0; 2],
            ewma_var: [0.0; 2],
            sum_sq: [0.0; 2],
            max_q: Deque::EMPTY,
            min_q: Deque::EMPTY,
            spread_bps: 0.0,
        }
    }
}

impl SymbolState {
    /// Adds a quote. Insane quotes (crossed, non-positive) are ignored.
    #[inline]
    pub fn update(&mut self, q: &Quote) {
        if !q.is_sane() {
            return;
        }
        let x = q.mid().ln();
        let prev = self.log_mids[self.head];
        self.head = (self.head + 1) & MASK;
        self.log_mids[self.head] = x;
        if self.count == 0 {
            self.ewma_mean = [x; 2];
        } else {
            let r = x - prev;
            // Returns now held: `count` (one per quote after the first).
            for (i, w) in VOL_WINDOWS.iter().enumerate() {
                self.sum_sq[i] += r * r;
                if self.count > *w {
                    let old = self.log_mids[(self.head + HISTORY - w) & MASK]
                        - self.log_mids[(self.head + HISTORY - w - 1) & MASK];
                    self.sum_sq[i] -= old * old;
                }
            }
            for (i, alpha) in ewma_alphas().iter().enumerate() {
                let d = x - self.ewma_mean[i];
                self.ewma_mean[i] += alpha * d;
                self.ewma_var[i] = (1.0 - alpha) * (self.ewma_var[i] + alpha * d * d);
            }
        }
        self.count += 1;
        self.spread_bps = q.spread_bps();
        // Quote numbers (wrapping u32) index the log-mid ring by `& MASK`.
        let n = (self.count - 1) as u32;
        let at = |k: u32| self.log_mids[(k as usize + 1) & MASK];
        while self.max_q.back().is_some_and(|b| at(b) <= x) {
            self.max_q.pop_back();
        }
        self.max_q.push_back(n);
        while self.min_q.back().is_some_and(|b| at(b) >= x) {
            self.min_q.pop_back();
        }
        self.min_q.push_back(n);
        let window = RANGE_WINDOW as u32;
        while self.max_q.front().is_some_and(|f| n.wrapping_sub(f) >= window) {
            self.max_q.pop_front();
        }
        while self.min_q.front().is_some_and(|f| n.wrapping_sub(f) >= window) {
            self.min_q.pop_front();
        }
    }

    /// Quotes seen.
    pub fn count(&self) -> usize {
        self.count
    }

    /// β of this symbol's 1-quote returns against `bench`'s over the last
    /// `window` returns (capped by the history kept); `None` until 20 returns.
    pub fn beta_against(&self, bench: &SymbolState, window: usize) -> Option<f64> {
        let n = window
            .min(HISTORY - 2)
            .min(self.count.saturating_sub(1))
            .min(bench.count.saturating_sub(1));
        if n < 20 {
            return None;
        }
        let (mut sx, mut sy, mut sxy, mut sxx) = (0.0, 0.0, 0.0, 0.0);
        for k in 0..n {
            let y = self.lag(k) - self.lag(k + 1);
            let x = bench.lag(k) - bench.lag(k + 1);
            sx += x;
            sy += y;
            sxy += x * y;
            sxx += x * x;
        }
        let nf = n as f64;
        let var = sxx / nf - (sx / nf) * (sx / nf);
        (var > 1e-18).then(|| (sxy / nf - (sx / nf) * (sy / nf)) / var)
    }

    /// Realised volatility over 20 and 100 quotes, bps.
    pub fn rvols_bps(&self) -> (f64, f64) {
        (self.rvol(0) * 1e4, self.rvol(1) * 1e4)
    }

    /// Whether every lookback is filled.
    pub fn is_ready(&self) -> bool {
        self.count >= WARMUP
    }

    /// The log mid `lag` quotes ago (0 = latest); the oldest kept when the
    /// history is shorter.
    #[inline]
    fn lag(&self, lag: usize) -> f64 {
        let lag = lag.min(self.count.saturating_sub(1)).min(MASK);
        self.log_mids[(self.head + HISTORY - lag) & MASK]
    }

    #[inline]
    fn ret(&self, h: usize) -> f64 {
        self.lag(0) - self.lag(h)
    }

    /// Realised volatility over `VOL_WINDOWS[i]` returns (fewer while warming up).
    #[inline]
    fn rvol(&self, i: usize) -> f64 {
        // Subtraction can leave a tiny negative residue.
        self.sum_sq[i].max(0.0).sqrt()
    }

    /// High − low of the log mid over the last `RANGE_WINDOW` quotes, from
    /// the monotonic deques.
    #[inline]
    fn range(&self) -> f64 {
        match (self.max_q.front(), self.min_q.front()) {
            (Some(hi), Some(lo)) => {
                self.log_mids[(hi as usize + 1) & MASK] - self.log_mids[(lo as usize + 1) & MASK]
            }
            _ => 0.0,
        }
    }

    /// The same by scanning the ring (reference for tests).
    #[cfg(test)]
    fn range_scan(&self, w: usize) -> f64 {
        let n = w.min(self.count).min(HISTORY);
        if n == 0 {
            return 0.0;
        }
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for k in 0..n {
            let x = self.log_mids[(self.head + HISTORY - k) & MASK];
            lo = lo.min(x);
            hi = hi.max(x);
        }
        hi - lo
    }
}

/// Per-symbol states of one universe, plus which symbol is the benchmark.
#[derive(Debug, Clone)]
pub struct FeatureEngine {
    states: Vec<SymbolState>,
    benchmark: usize,
}

impl FeatureEngine {
    /// An engine for `n_symbols` (universe order); `benchmark` is an index.
    /// Allocates once, here.
    pub fn new(n_symbols: usize, benchmark: usize) -> Self {
        Self {
            states: vec![SymbolState::default(); n_symbols],
            benchmark: benchmark.min(n_symbols.saturating_sub(1)),
        }
    }

    /// Adds one quote (`q.symbol` is the universe index; others are ignored).
    #[inline]
    pub fn update(&mut self, q: &Quote) {
        if let Some(s) = self.states.get_mut(usize::from(q.symbol)) {
            s.update(q);
        }
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether the engine has no symbols.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// One symbol's state.
    pub fn state(&self, symbol: usize) -> Option<&SymbolState> {
        self.states.get(symbol)
    }

    /// Whether `symbol` and the benchmark are warmed up.
    pub fn is_ready(&self, symbol: usize) -> bool {
        self.states.get(symbol).is_some_and(SymbolState::is_ready) && self.states[self.benchmark].is_ready()
    }

    /// Writes `symbol`'s feature row at decision time `ts_ns`. No allocation.
    #[inline]
    pub fn write_row(&self, symbol: usize, ts_ns: i64, out: &mut [f32; N_FEATURES]) {
        self.write_row_at(symbol, time_of_day(ts_ns), out);
    }

    #[inline]
    fn write_row_at(&self, symbol: usize, (tod_sin, tod_cos): (f64, f64), out: &mut [f32; N_FEATURES]) {
        let s = &self.states[symbol];
        let b = &self.states[self.benchmark];
        let bps = 1e4;
        let rv100 = s.rvol(1);
        let z = |i: usize| {
            let sd = s.ewma_var[i].sqrt();
            if sd > 1e-12 {
                (s.lag(0) - s.ewma_mean[i]) / sd
            } else {
                0.0
            }
        };
        let mom_scale = rv100 * (MOMENTUM_WINDOW as f64 / VOL_WINDOWS[1] as f64).sqrt();
        let momentum = if mom_scale > 1e-12 {
            s.ret(MOMENTUM_WINDOW) / mom_scale
        } else {
            0.0
        };
        let row: [f64; N_FEATURES] = [
            s.ret(RETURN_HORIZONS[0]) * bps,
            s.ret(RETURN_HORIZONS[1]) * bps,
            s.ret(RETURN_HORIZONS[2]) * bps,
            s.ret(RETURN_HORIZONS[3]) * bps,
            s.rvol(0) * bps,
            rv100 * bps,
            z(0),
            z(1),
            s.spread_bps,
            s.range() * bps,
            momentum,
            tod_sin,
            tod_cos,
            b.ret(BENCH_HORIZONS[0]) * bps,
            b.ret(BENCH_HORIZONS[1]) * bps,
        ];
        for (o, v) in out.iter_mut().zip(row) {
            *o = v as f32;
        }
    }

    /// Writes every symbol's row into `out` (row-major, `len() × N_FEATURES`).
    #[inline]
    pub fn write_matrix(&self, ts_ns: i64, out: &mut [f32]) {
        for (i, chunk) in out
            .chunks_exact_mut(N_FEATURES)
            .enumerate()
            .take(self.states.len())
        {
            let mut row = [0f32; N_FEATURES];
            self.write_row(i, ts_ns, &mut row);
            chunk.copy_from_slice(&row);
        }
    }
}

/// `(sin, cos)` of the time of day (UTC) of `ts_ns`.
#[inline]
fn time_of_day(ts_ns: i64) -> (f64, f64) {
    let sod = ts_ns.rem_euclid(86_400_000_000_000) as f64 / 86_400e9;
    (std::f64::consts::TAU * sod).sin_cos()
}

/// A feature row with where and when it was taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Decision time.
    pub ts_ns: i64,
    /// Universe index.
    pub symbol: u16,
    /// Index into the quote history of the symbol's latest quote (for labels).
    pub quote_index: usize,
    /// The features.
    pub features: [f32; N_FEATURES],
}

/// Batch mode: folds the engine over time-ordered `quotes` and takes a row for
/// every ready symbol at each decision time (every `decision_every_ns`, on
/// the grid of the first quote's day), after all quotes up to that time.
pub fn batch(quotes: &[Quote], n_symbols: usize, benchmark: usize, decision_every_ns: i64) -> Vec<Sample> {
    let mut engine = FeatureEngine::new(n_symbols, benchmark);
    let mut out = Vec::new();
    let Some(first) = quotes.first() else { return out };
    let step = decision_every_ns.max(1);
    let mut next_decision = first.ts_ns - first.ts_ns.rem_euclid(step) + step;
    let mut seen = vec![0usize; n_symbols];
    let take = |engine: &FeatureEngine, ts: i64, seen: &[usize], out: &mut Vec<Sample>| {
        for (sym, count) in seen.iter().enumerate() {
            if engine.is_ready(sym) {
                let mut features = [0f32; N_FEATURES];
                engine.write_row(sym, ts, &mut features);
                out.push(Sample {
                    ts_ns: ts,
                    symbol: sym as u16,
                    quote_index: count - 1,
                    features,
                });
            }
        }
    };
    for q in quotes {
        while q.ts_ns >= next_decision {
            take(&engine, next_decision, &seen, &mut out);
            next_decision += step;
        }
        engine.update(q);
        if let Some(n) = seen.get_mut(usize::from(q.symbol)) {
            *n += 1;
        }
    }
    out
}

/// One feature in the schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDef {
    /// Name.
    pub name: String,
    /// Element type (`float32`).
    pub dtype: String,
    /// Parameters (horizons, windows, half-lives).
    pub params: BTreeMap<String, f64>,
}

/// `feature_schema.json`: names, order, dtype, parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSchema {
    /// Schema format version.
    pub version: u32,
    /// Ring size per symbol.
    pub history: usize,
    /// Quotes before a symbol is ready.
    pub warmup: usize,
    /// Features in row order.
    pub features: Vec<FeatureDef>,
}

impl FeatureSchema {
    /// The canonical JSON (RFC 8785, JCS) the hash covers. Fails only for
    /// a parameter that is not a finite number, which JSON cannot carry.
    pub fn canonical_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        // serde_json would write such a number as `null`: refuse it by name.
        for f in &self.features {
            if let Some((k, v)) = f.params.iter().find(|(_, v)| !v.is_finite()) {
                let what = format!("feature {} parameter {k} is {v}, not a finite number", f.name);
                return Err(serde::ser::Error::custom(what));
            }
        }
        serde_json_canonicalizer::to_vec(self)
    }

    /// sha256 (hex) of the canonical form.
    pub fn hash(&self) -> Result<String, serde_json::Error> {
        Ok(hex::encode(Sha256::digest(self.canonical_json()?)))
    }
}

/// The hash of [`schema`], computed once: what every artifact must match.
/// This build's schema has only finite parameters; were one not, the hash
/// would be a text no artifact declares, so every artifact is refused
/// rather than matched against the hash of nothing.
pub fn schema_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        schema()
            .hash()
            .unwrap_or_else(|e| format!("unhashable feature schema: {e}"))
    })
}

/// The schema this build computes.
pub fn schema() -> FeatureSchema {
    let p = |pairs: &[(&str, f64)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect::<BTreeMap<_, _>>()
    };
    let params: [BTreeMap<String, f64>; N_FEATURES] = [
        p(&[("horizon", RETURN_HORIZONS[0] as f64)]),
        p(&[("horizon", RETURN_HORIZONS[1] as f64)]),
        p(&[("horizon", RETURN_HORIZONS[2] as f64)]),
        p(&[("horizon", RETURN_HORIZONS[3] as f64)]),
        p(&[("window", VOL_WINDOWS[0] as f64)]),
        p(&[("window", VOL_WINDOWS[1] as f64)]),
        p(&[("half_life", EWMA_HALF_LIVES[0])]),
        p(&[("half_life", EWMA_HALF_LIVES[1])]),
        p(&[]),
        p(&[("window", RANGE_WINDOW as f64)]),
        p(&[
            ("window", MOMENTUM_WINDOW as f64),
            ("vol_window", VOL_WINDOWS[1] as f64),
        ]),
        p(&[("period_s", 86_400.0)]),
        p(&[("period_s", 86_400.0)]),
        p(&[("horizon", BENCH_HORIZONS[0] as f64)]),
        p(&[("horizon", BENCH_HORIZONS[1] as f64)]),
    ];
    FeatureSchema {
        version: 1,
        history: HISTORY,
        warmup: WARMUP,
        features: NAMES
            .iter()
            .zip(params)
            .map(|(n, params)| FeatureDef {
                name: (*n).to_owned(),
                dtype: "float32".into(),
                params,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(ts: i64, sym: u16, mid: f64) -> Quote {
        Quote {
            ts_ns: ts,
            symbol: sym,
            bid: mid - 0.0001,
            ask: mid + 0.0001,
            bid_size: 1.0,
            ask_size: 1.0,
        }
    }

    #[test]
    fn symbol_state_is_small_and_heap_free() {
        // A fixed-size, Copy state: 128 log mids + a few moments.
        assert_eq!(
            std::mem::size_of::<SymbolState>(),
            HISTORY * 8 + 8 * 2 + 8 * 6 + 2 * (DEQUE_CAP * 4 + 16) + 8
        );
        assert_eq!(N_FEATURES, NAMES.len());
        assert_eq!(schema().features.len(), N_FEATURES);
    }

    #[test]
    fn returns_and_ranges_follow_the_definition() {
        let mut e = FeatureEngine::new(1, 0);
        for i in 0..200 {
            e.update(&q(i, 0, 1.0 + i as f64 * 1e-4));
        }
        let mut row = [0f32; N_FEATURES];
        e.write_row(0, 0, &mut row);
        let s = e.state(0).unwrap();
        let expected_ret_5 = ((1.0 + 199e-4f64).ln() - (1.0 + 194e-4f64).ln()) * 1e4;
        assert!((f64::from(row[1]) - expected_ret_5).abs() < 1e-3);
        assert!(row[9] > 0.0 && row[4] > 0.0);
        // Running Σr² equals the direct sum over the last 20 and 100 returns.
        for (col, w) in [(4usize, 20usize), (5, 100)] {
            let direct: f64 = (0..w)
                .map(|k| (s.lag(k) - s.lag(k + 1)).powi(2))
                .sum::<f64>()
                .sqrt()
                * 1e4;
            assert!(
                (f64::from(row[col]) - direct).abs() < 1e-3,
                "rvol_{w}: {} vs {direct}",
                row[col]
            );
        }
        assert!(s.is_ready());
        // Midnight: time of day sin 0, cos 1.
        assert_eq!((row[11], row[12]), (0.0, 1.0));
    }

    #[test]
    fn deque_range_equals_a_scan_of_the_window() {
        let mut s = SymbolState::default();
        let mut x = 1.0f64;
        for i in 0..1000u32 {
            // A wandering, sometimes flat path.
            x *= 1.0 + ((i * 7919) % 13) as f64 * 1e-4 - 6e-4;
            s.update(&q(i64::from(i), 0, x));
            assert!(
                (s.range() - s.range_scan(RANGE_WINDOW)).abs() < 1e-15,
                "quote {i}"
            );
        }
    }

    #[test]
    fn crossed_quotes_are_ignored() {
        let mut s = SymbolState::default();
        s.update(&Quote {
            ts_ns: 0,
            symbol: 0,
            bid: 1.1,
            ask: 1.0,
            bid_size: 1.0,
            ask_size: 1.0,
        });
        assert_eq!(s.count(), 0);
    }

    #[test]
    fn schema_hash_is_stable_and_sensitive() {
        let a = schema();
        assert_eq!(a.hash().unwrap(), schema().hash().unwrap());
        let mut b = schema();
        b.features[0].params.insert("horizon".into(), 2.0);
        assert_ne!(a.hash().unwrap(), b.hash().unwrap());
        // A parameter JSON cannot carry is an error, never the hash of nothing.
        b.features[0].params.insert("horizon".into(), f64::NAN);
        assert!(b.hash().is_err());
        assert!(!a.canonical_json().unwrap().contains(&b' '));
    }
}
