//! A deterministic synthetic FX-like market.
//!
//! Log mids are `log P0 + mᵢ + uᵢ`: `mᵢ` is a random walk driven by a common
//! factor (per-symbol β) and idiosyncratic noise; `uᵢ` is a
//! mean-reverting deviation (AR(1), half-life ~10 steps, its strength set
//! by the spec's `effect`) — the planted
//! predictable component: a correct pipeline learns short-horizon reversal
//! (out-of-sample AUC clearly above 0.5), while a pipeline that leaks the
//! future would look far too good. Volatility switches between a calm and a
//! volatile regime (Markov, mean duration ~2 h); spreads widen with volatility.
//! Only weekdays are generated (FX trades 24 h a day, five days a week).
//!
//! Randomness is ChaCha8 seeded from `seed` with our own Box–Muller, so the
//! same spec gives the same quotes on every machine and every dependency version.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use mlcore_market::{civil, Quote};

/// The synthetic universe: symbol, start price, β to the common factor, base
/// spread in bps. The first 32 match `configs/base/universe.yaml`.
pub const SYMBOLS: [(&str, f64, f64, f64); 32] = [
    ("EURUSD", 1.0850, 1.00, 0.6),
    ("GBPUSD", 1.2700, 0.85, 0.9),
    ("USDJPY", 148.50, -0.60, 0.7),
    ("USDCHF", 0.8800, -0.80, 1.1),
    ("AUDUSD", 0.6600, 0.90, 0.9),
    ("NZDUSD", 0.6100, 0.88, 1.4),
    ("USDCAD", 1.3500, -0.70, 1.1),
    ("EURGBP", 0.8550, 0.30, 1.8),
    ("EURJPY", 161.00, 0.40, 1.8),
    ("EURCHF", 0.9550, 0.20, 1.8),
    ("EURAUD", 1.6400, 0.10, 1.8),
    ("EURNZD", 1.7800, 0.12, 1.8),
    ("EURCAD", 1.4650, 0.35, 1.8),
    ("GBPJPY", 188.50, 0.45, 1.8),
    ("GBPCHF", 1.1200, 0.25, 1.8),
    ("GBPAUD", 1.9200, 0.15, 1.8),
    ("GBPNZD", 2.0800, 0.18, 1.8),
    ("GBPCAD", 1.7150, 0.40, 1.8),
    ("AUDJPY", 98.000, 0.50, 1.8),
    ("AUDCHF", 0.5800, 0.30, 1.8),
    ("AUDNZD", 1.0850, 0.05, 1.8),
    ("AUDCAD", 0.8900, 0.20, 1.8),
    ("NZDJPY", 90.500, 0.48, 1.8),
    ("NZDCHF", 0.5350, 0.28, 1.8),
    ("NZDCAD", 0.8200, 0.22, 1.8),
    ("CADJPY", 110.00, 0.55, 1.8),
    ("CADCHF", 0.6500, 0.10, 1.8),
    ("CHFJPY", 168.50, 0.60, 1.8),
    ("USDSEK", 10.450, -0.75, 2.5),
    ("USDNOK", 10.600, -0.72, 2.5),
    ("USDSGD", 1.3400, -0.50, 2.5),
    ("USDHKD", 7.8100, -0.05, 2.5),
];

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSpec {
    /// RNG seed.
    pub seed: u64,
    /// How many symbols of [`SYMBOLS`] (1–32).
    pub symbols: usize,
    /// First day (days since 1970-01-01); weekends are skipped.
    pub start_day: i64,
    /// Number of weekdays.
    pub days: u32,
    /// Quote interval per symbol, ms (must divide a day).
    pub interval_ms: u32,
    /// Strength of the planted reversal: 1 the default, 0 none — a
    /// market with nothing to learn, where research must find nothing
    /// adoptable (the null control).
    pub effect: f64,
}

/// A spec that cannot be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid synthetic market spec: {0}")]
pub struct SpecError(pub String);

impl SynthSpec {
    /// Checks the spec.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.symbols == 0 || self.symbols > SYMBOLS.len() {
            return Err(SpecError(format!(
                "symbols must be 1..={}, got {}",
                SYMBOLS.len(),
                self.symbols
            )));
        }
        if !(self.effect.is_finite() && (0.0..=10.0).contains(&self.effect)) {
            return Err(SpecError(format!(
                "effect must be in [0, 10], got {}",
                self.effect
            )));
        }
        if self.days == 0 {
            return Err(SpecError("days must be at least 1".into()));
        }
        if self.interval_ms == 0 || 86_400_000 % self.interval_ms != 0 {
            return Err(SpecError(format!(
                "interval_ms must divide a day, got {}",
                self.interval_ms
            )));
        }
        Ok(())
    }

    /// Quotes per symbol per day.
    pub fn steps_per_day(&self) -> usize {
        (86_400_000 / self.interval_ms) as usize
    }

    /// The weekdays generated, as days since the epoch.
    pub fn trading_days(&self) -> Vec<i64> {
        let mut out = Vec::with_capacity(self.days as usize);
        let mut d = self.start_day;
        while out.len() < self.days as usize {
            if civil::weekday(d) < 5 {
                out.push(d);
            }
            d += 1;
        }
        out
    }

    /// Symbol names, in universe order.
    pub fn symbol_names(&self) -> Vec<&'static str> {
        SYMBOLS[..self.symbols.min(SYMBOLS.len())]
            .iter()
            .map(|s| s.0)
            .collect()
    }
}

/// Uniform in (0, 1) from 53 random bits: the same on every machine.
pub(crate) fn uniform(rng: &mut ChaCha8Rng) -> f64 {
    ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// One standard normal draw by Box–Muller from two uniforms (the cosine
/// half only: for callers that interleave other draws).
pub(crate) fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    let (u1, u2) = (uniform(rng), uniform(rng));
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Gaussian source: ChaCha8 + Box–Muller (pairs cached).
struct Normal {
    rng: ChaCha8Rng,
    spare: Option<f64>,
}

impl Normal {
    fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            spare: None,
        }
    }

    /// Uniform in (0, 1).
    fn uniform(&mut self) -> f64 {
        uniform(&mut self.rng)
    }

    fn sample(&mut self) -> f64 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let (u1, u2) = (self.uniform(), self.uniform());
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        self.spare = Some(r * t.sin());
        r * t.cos()
    }
}

/// The generator's state across days.
#[derive(Debug)]
pub struct Generator {
    spec: SynthSpec,
    normal: Normal,
    walk: Vec<f64>,
    dev: Vec<f64>,
    volatile: bool,
}

impl std::fmt::Debug for Normal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChaCha8Normal")
    }
}

/// Daily volatility of a typical pair (0.6 %).
const DAILY_VOL: f64 = 0.006;
/// AR(1) coefficient of the planted deviation: half-life of 10 steps.
const PHI: f64 = 0.933_032_991_536_807_4; // 0.5^(1/10)
/// Innovation of the planted deviation per step, in σ, at `effect` 1:
/// strong enough that its reversal pays the cost table's spreads at a
/// one-minute horizon (`docs/research.md` has the figures; at a quarter
/// of it nothing survives the costs).
const DEV_SCALE: f64 = 2.4;
/// Mean regime duration, seconds.
const REGIME_SECONDS: f64 = 7200.0;
/// Volatility multiplier in the volatile regime.
const VOLATILE_MULT: f64 = 2.5;

impl Generator {
    /// A generator at the start of `spec`.
    pub fn new(spec: SynthSpec) -> Result<Self, SpecError> {
        spec.validate()?;
        let n = spec.symbols;
        Ok(Self {
            normal: Normal::new(spec.seed),
            walk: vec![0.0; n],
            dev: vec![0.0; n],
            volatile: false,
            spec,
        })
    }

    /// Generates one trading day: one `Vec<Quote>` per symbol, in time order.
    /// Call once per day of [`SynthSpec::trading_days`], in order.
    pub fn day(&mut self, day: i64) -> Vec<Vec<Quote>> {
        let steps = self.spec.steps_per_day();
        let n = self.spec.symbols;
        let sigma = DAILY_VOL / (steps as f64).sqrt();
        let switch_p = f64::from(self.spec.interval_ms) / 1000.0 / REGIME_SECONDS;
        let day_ns = day * 86_400_000_000_000;
        let step_ns = i64::from(self.spec.interval_ms) * 1_000_000;
        let mut out: Vec<Vec<Quote>> = (0..n).map(|_| Vec::with_capacity(steps)).collect();
        let rng = &mut self.normal;
        for k in 0..steps {
            if rng.uniform() < switch_p {
                self.volatile = !self.volatile;
            }
            let mult = if self.volatile { VOLATILE_MULT } else { 1.0 };
            let factor = 0.7 * sigma * mult * rng.sample();
            let ts_ns = day_ns + k as i64 * step_ns;
            for (i, sym) in SYMBOLS[..n].iter().enumerate() {
                let (_, p0, beta, base_spread) = *sym;
                self.walk[i] += beta * factor + 0.5 * sigma * mult * rng.sample();
                self.dev[i] = PHI * self.dev[i] + DEV_SCALE * self.spec.effect * sigma * mult * rng.sample();
                let mid = p0 * (self.walk[i] + self.dev[i]).exp();
                let spread_bps = base_spread * (1.0 + 0.8 * (mult - 1.0)) * (1.0 + 0.1 * rng.sample().abs());
                let half = 0.5 * mid * spread_bps * 1e-4;
                let size = |u: f64| 1e6 * (1.0 + (u * 9.0).floor());
                out[i].push(Quote {
                    ts_ns,
                    symbol: i as u16,
                    bid: mid - half,
                    ask: mid + half,
                    bid_size: size(rng.uniform()),
                    ask_size: size(rng.uniform()),
                });
            }
        }
        out
    }
}

impl Generator {
    /// One trading day with every symbol's quotes merged in time order (ties
    /// by symbol): what a feed would send.
    pub fn day_merged(&mut self, day: i64) -> Vec<Quote> {
        let mut all: Vec<Quote> = self.day(day).into_iter().flatten().collect();
        all.sort_by_key(|q| (q.ts_ns, q.symbol));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SynthSpec {
        SynthSpec {
            seed: 7,
            symbols: 4,
            start_day: civil::parse("2026-01-09").unwrap(),
            days: 2,
            interval_ms: 60_000,
            effect: 1.0,
        }
    }

    #[test]
    fn same_seed_same_market() {
        let mut a = Generator::new(spec()).unwrap();
        let mut b = Generator::new(spec()).unwrap();
        let day = spec().trading_days()[0];
        assert_eq!(a.day(day), b.day(day));
        let mut c = Generator::new(SynthSpec { seed: 8, ..spec() }).unwrap();
        assert_ne!(Generator::new(spec()).unwrap().day(day), c.day(day));
    }

    #[test]
    fn weekends_are_skipped_and_quotes_are_sane() {
        let days = spec().trading_days();
        // 2026-01-09 is a Friday: the next trading day is Monday the 12th.
        assert_eq!(
            days.iter().map(|d| civil::format(*d)).collect::<Vec<_>>(),
            ["2026-01-09", "2026-01-12"]
        );
        let mut g = Generator::new(spec()).unwrap();
        let quotes = g.day(days[0]);
        assert_eq!(quotes.len(), 4);
        for q in quotes.iter().flatten() {
            assert!(q.is_sane(), "{q:?}");
            assert!(q.spread_bps() > 0.1 && q.spread_bps() < 20.0, "{q:?}");
        }
    }

    #[test]
    fn bad_specs_are_refused() {
        assert!(SynthSpec {
            symbols: 33,
            ..spec()
        }
        .validate()
        .is_err());
        assert!(SynthSpec {
            interval_ms: 7,
            ..spec()
        }
        .validate()
        .is_err());
        assert!(SynthSpec { days: 0, ..spec() }.validate().is_err());
    }
}
