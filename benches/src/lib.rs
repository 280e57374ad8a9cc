//! Fixtures shared by the criterion benches (`benches/benches/`),
//! `mlcore-guard-cost` and the load generator (`benches/loadgen/`, a crate
//! of its own).
//!
//! - [`sample_model`]: a real model trained on the synthetic market (32
//!   symbols, LightGBM heads ai1, ai2, ai3), signed with a throwaway key and
//!   verified; cached under the target dir so repeated runs skip training.
//!   [`bench_model`] is another signed model when `MLCORE_BENCH_MODEL`
//!   names one (the demo's), and [`describe_model`] says how big it is.
//! - [`feature_pool`] and [`engine_pool`]: real market states of the
//!   synthetic market, cycled by the benches so no input repeats often;
//!   [`MarketReplay`]: the same market fed to one engine a minute of
//!   quotes at a time, as the daemon's ingress does (the decision bench).
//! - [`Percentiles`]: p50/p99/p99.9 of per-iteration timings, printed next to
//!   criterion's figures (criterion reports means and medians, not tails).
//! - [`daemon_metrics`]: a running daemon's `/metrics` (the load generator
//!   and `mlcore-config-apply-bench`).
//!
//! What the machine does meanwhile (stalls, steal time, bursts, idle
//! settings) is `mlcore-host`'s: the load generator records it beside its
//! figures.

#![allow(clippy::print_stdout)] // benchmark helpers print their figures

pub mod daemon_metrics;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mlcore_config::{Environment, KeyPurpose, Process, ProcessEnv, TrustConfig, TrustedKeyConfig};
use mlcore_features as features;
use mlcore_models::artifact::{
    self, ArtifactFiles, SecretKeyFile, ThetaParams, TrustStore, VerifiedArtifact, VerifyContext,
};
use mlcore_models::native::{NativeHead, TreeNode};
use mlcore_models::runtime;
use mlcore_research::synth;
use mlcore_research::train::{self, GbmParams, ModelMeta, TrainSpec};
use mlcore_testkit as testutil;

/// Symbols in the sample universe.
pub const SYMBOLS: usize = 32;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn cache_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| testutil::workspace_root().join("target"));
    target.join("mlcore-bench-fixtures")
}

/// The folder [`sample_model`] keeps the sample model in (for tools that
/// read the artifact's files themselves: the Python reference).
pub fn sample_model_dir() -> PathBuf {
    cache_dir().join(format!("model-{}", &features::schema_hash()[..12]))
}

/// Loads ONNX Runtime and returns the sample model (training it on first use).
pub fn sample_model() -> VerifiedArtifact {
    runtime::init(&testutil::ort_library()).unwrap_or_else(|e| panic!("{e}"));
    let dir = cache_dir();
    let model_dir = sample_model_dir();
    let key_path = dir.join("bench.key");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    if !key_path.exists() {
        SecretKeyFile::generate("bench")
            .and_then(|k| k.write(&key_path))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let key = SecretKeyFile::read(&key_path).unwrap_or_else(|e| panic!("{e}"));
    let trust = TrustStore::from_config(&TrustConfig {
        keys: vec![TrustedKeyConfig {
            id: key.key_id.clone(),
            public_key: key.public().unwrap_or_else(|e| panic!("{e}")).public_key,
            purposes: vec![KeyPurpose::ModelSigning],
            valid_from: "2020-01-01".into(),
            valid_until: "2099-12-31".into(),
        }],
        revoked: vec![],
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let ctx = VerifyContext::new(&trust, now_ms());
    // A cached model from before the native backend (no native heads) is
    // trained again.
    if let Ok(v) = ArtifactFiles::read(&model_dir)
        .map_err(|e| e.to_string())
        .and_then(|f| artifact::verify(f, &ctx).map_err(|e| e.to_string()))
    {
        if v.manifest.heads.values().all(|h| h.native.is_some()) {
            return v;
        }
    }
    println!("training the sample model (once) into {}", model_dir.display());
    let _ = std::fs::remove_dir_all(&model_dir);
    let data = dir.join("dataset");
    if !data.join("dataset_index.json").exists() {
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).unwrap_or_else(|e| panic!("{e}"));
        testutil::synth_dataset(&data, 7, SYMBOLS, 2, 10_000);
    }
    let spec = TrainSpec {
        dataset: data,
        model: ModelMeta {
            strategy: "fx_g10".into(),
            version: 1,
            created_at_ms: now_ms(),
            valid_days: 365,
            theta: ThetaParams {
                theta1: 0.55,
                theta2: 0.6,
            },
        },
        symbols: synth::SYMBOLS[..SYMBOLS].iter().map(|s| s.0.to_owned()).collect(),
        benchmark: 0,
        decision_every_ms: 60_000,
        horizon: 12,
        costs_bps: vec![1.0; 32],
        gbm: GbmParams {
            max_trees: 200,
            ..GbmParams::default()
        },
    };
    let report = train::train(&spec, &key, &trust, now_ms()).unwrap_or_else(|e| panic!("{e}"));
    train::write_artifact(&report.files, &model_dir).unwrap_or_else(|e| panic!("{e}"));
    artifact::verify(report.files, &ctx).unwrap_or_else(|e| panic!("{e}"))
}

/// The variable naming another model for the benches that score one.
pub const BENCH_MODEL_VAR: &str = "MLCORE_BENCH_MODEL";

/// The model a bench scores: the signed artifact in the directory that
/// [`BENCH_MODEL_VAR`] names (the demo's `.run/models/fx_g10/v<N>`, say),
/// verified against the dev environment's trust (`configs/`), else the
/// [`sample_model`]. A named model that does not verify stops the bench
/// with the reason: a figure must never silently come from another model.
pub fn bench_model() -> VerifiedArtifact {
    let Some(dir) = std::env::var_os(BENCH_MODEL_VAR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
    else {
        return sample_model();
    };
    // `cargo bench` runs a bench in its package's folder: a relative path
    // is the workspace's, as the docs write it (`.run/models/...`).
    let dir = testutil::workspace_root().join(dir);
    runtime::init(&testutil::ort_library()).unwrap_or_else(|e| panic!("{e}"));
    let configs = testutil::workspace_root().join("configs");
    let cfg = mlcore_config::load_for(&configs, Environment::Dev, &ProcessEnv, Process::Offline)
        .unwrap_or_else(|e| {
            panic!(
                "{BENCH_MODEL_VAR}: the dev configuration in {}: {e}",
                configs.display()
            )
        });
    let trust = TrustStore::from_config(&cfg.trust).unwrap_or_else(|e| panic!("{BENCH_MODEL_VAR}: {e}"));
    let files =
        ArtifactFiles::read(&dir).unwrap_or_else(|e| panic!("{BENCH_MODEL_VAR}={}: {e}", dir.display()));
    artifact::verify(files, &VerifyContext::new(&trust, now_ms()))
        .unwrap_or_else(|e| panic!("{BENCH_MODEL_VAR}={}: {e}", dir.display()))
}

/// What a bench's figures depend on in `model`: its strategy and version,
/// and each head's size (trees and splits, or a logistic head).
pub fn describe_model(model: &VerifiedArtifact) -> String {
    let m = &model.manifest;
    let heads: Vec<String> = m
        .heads
        .iter()
        .map(|(name, spec)| {
            let native = spec
                .native
                .as_deref()
                .and_then(|f| model.files.get(f))
                .map(NativeHead::from_json);
            match native {
                Some(Ok(NativeHead::Trees(t))) => {
                    let splits: usize = t
                        .trees
                        .iter()
                        .map(|tree| {
                            tree.iter()
                                .filter(|n| matches!(n, TreeNode::Split { .. }))
                                .count()
                        })
                        .sum();
                    format!("{name} {} trees ({splits} splits)", t.trees.len())
                }
                Some(Ok(NativeHead::Logistic(_))) => format!("{name} logistic"),
                Some(Err(e)) => format!("{name} (its native file does not parse: {e})"),
                None => format!("{name} (no native form)"),
            }
        })
        .collect();
    format!("{} v{}: {}", m.strategy, m.version, heads.join(", "))
}

/// `n` real 32-symbol feature matrices (row-major, `SYMBOLS × N_FEATURES`):
/// the synthetic market through the feature engine, one matrix per
/// decision time a minute apart, after a warm-up. Benches cycle through
/// them so that the trees' branches are not learnt from one constant
/// input (on one matrix repeated, ai1 read 14.5 µs where varied rows cost
/// about 40 µs).
pub fn feature_pool(n: usize) -> Vec<Vec<f32>> {
    engine_pool(n)
        .into_iter()
        .map(|(engine, ts)| {
            let mut m = vec![0f32; SYMBOLS * features::N_FEATURES];
            engine.write_matrix(ts, &mut m);
            m
        })
        .collect()
}

/// Quotes between two decisions: a minute of 5 s quotes, every symbol.
const QUOTES_PER_DECISION: usize = SYMBOLS * 12;
/// Quotes fed before the first decision: the engine's warm-up and more.
const WARM_UP_QUOTES: usize = SYMBOLS * 300;

/// The feature engine as `n` decisions a minute apart see it (the same
/// synthetic day as [`feature_pool`]), with each decision's time: for
/// benches that run the whole decision, features included. Each state is
/// an engine of its own (≈ 50 KB), a copy of [`MarketReplay`]'s at that
/// decision, so cycling through them reads each decision's engine from
/// cold caches; the replay is the daemon's way.
pub fn engine_pool(n: usize) -> Vec<(features::FeatureEngine, i64)> {
    let mut replay = MarketReplay::new();
    assert!(
        n <= replay.decisions(),
        "the synthetic day holds fewer than {n} decisions"
    );
    (0..n)
        .map(|_| {
            let (engine, ts) = replay.advance();
            (engine.clone(), ts)
        })
        .collect()
}

/// The market as the daemon sees it between two decisions: one feature
/// engine, fed the next minute of the synthetic day's quotes (every
/// symbol) before each decision. Each decision reads a new market state,
/// from an engine the quotes have just touched, as the daemon's ingress
/// leaves it; after the day's last minute the replay starts again from
/// the warmed-up engine.
#[derive(Debug)]
pub struct MarketReplay {
    quotes: Vec<mlcore_market::Quote>,
    /// The engine after the warm-up quotes: where each pass starts.
    warm: features::FeatureEngine,
    engine: features::FeatureEngine,
    /// The next quote to feed.
    next: usize,
}

impl Default for MarketReplay {
    fn default() -> Self {
        Self::new()
    }
}

impl MarketReplay {
    /// The synthetic day of [`engine_pool`], warmed up.
    pub fn new() -> Self {
        // 32 symbols quoting every 5 s for a day.
        let spec = synth::SynthSpec {
            seed: 11,
            symbols: SYMBOLS,
            start_day: 20_458,
            days: 1,
            interval_ms: 5_000,
            effect: 1.0,
        };
        let quotes = synth::Generator::new(spec)
            .unwrap_or_else(|e| panic!("synthetic market: {e}"))
            .day_merged(20_458);
        assert!(
            quotes.len() >= WARM_UP_QUOTES + 2 * QUOTES_PER_DECISION,
            "the synthetic day holds too few quotes"
        );
        let mut warm = features::FeatureEngine::new(SYMBOLS, 0);
        for q in &quotes[..WARM_UP_QUOTES] {
            warm.update(q);
        }
        Self {
            engine: warm.clone(),
            warm,
            quotes,
            next: WARM_UP_QUOTES,
        }
    }

    /// Decisions in one pass over the day.
    pub fn decisions(&self) -> usize {
        (self.quotes.len() - WARM_UP_QUOTES) / QUOTES_PER_DECISION
    }

    /// Feeds the next minute of quotes; returns the engine and the last
    /// quote's time (the decision's).
    pub fn advance(&mut self) -> (&features::FeatureEngine, i64) {
        if self.next + QUOTES_PER_DECISION > self.quotes.len() {
            self.engine.clone_from(&self.warm);
            self.next = WARM_UP_QUOTES;
        }
        let minute = &self.quotes[self.next..self.next + QUOTES_PER_DECISION];
        for q in minute {
            self.engine.update(q);
        }
        self.next += QUOTES_PER_DECISION;
        let ts = minute.last().map_or(0, |q| q.ts_ns);
        (&self.engine, ts)
    }
}

/// Tail latencies of a closure, measured per call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Percentiles {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
}

impl Percentiles {
    /// Calls `f` `warmup` times, then `n` times timing each call.
    pub fn measure(n: usize, warmup: usize, mut f: impl FnMut()) -> Self {
        for _ in 0..warmup {
            f();
        }
        let t: Vec<Duration> = (0..n.max(1))
            .map(|_| {
                let s = Instant::now();
                f();
                s.elapsed()
            })
            .collect();
        Self::of(t).unwrap_or_default()
    }

    /// As [`Percentiles::measure`] for two closures, their calls alternated
    /// (`f`, `g`, `f`, `g`, ...): a machine whose speed wanders (a slower
    /// stretch of a few seconds on a shared VM) slows both alike, so their
    /// ratio holds where two measurements one after the other can disagree
    /// by more than what they compare.
    pub fn measure_alternating(
        n: usize,
        warmup: usize,
        mut f: impl FnMut(),
        mut g: impl FnMut(),
    ) -> (Self, Self) {
        let timed = |h: &mut dyn FnMut()| {
            let s = Instant::now();
            h();
            s.elapsed()
        };
        Self::measure_alternating_timed(n, warmup, || timed(&mut f), || timed(&mut g))
    }

    /// As [`Percentiles::measure_alternating`] for closures that time
    /// themselves: each returns the part of its call to count (what comes
    /// before it, feeding a market's quotes say, is left out).
    pub fn measure_alternating_timed(
        n: usize,
        warmup: usize,
        mut f: impl FnMut() -> Duration,
        mut g: impl FnMut() -> Duration,
    ) -> (Self, Self) {
        for _ in 0..warmup {
            f();
            g();
        }
        let (mut tf, mut tg) = (Vec::with_capacity(n.max(1)), Vec::with_capacity(n.max(1)));
        for _ in 0..n.max(1) {
            tf.push(f());
            tg.push(g());
        }
        (Self::of(tf).unwrap_or_default(), Self::of(tg).unwrap_or_default())
    }

    /// As [`Percentiles::measure`], but one call every `period` (the thread
    /// sleeps in between, as a thread serving paced events does), so what
    /// the calls cost from cold caches and a sleeping core shows.
    pub fn measure_paced(n: usize, warmup: usize, period: Duration, mut f: impl FnMut()) -> Self {
        let mut next = Instant::now();
        let mut timed = Vec::with_capacity(n.max(1));
        for i in 0..warmup + n.max(1) {
            next += period;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            let s = Instant::now();
            f();
            if i >= warmup {
                timed.push(s.elapsed());
            }
        }
        Self::of(timed).unwrap_or_default()
    }

    /// Percentiles of `samples` (nearest rank); `None` when there are none.
    pub fn of(mut samples: Vec<Duration>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Some(Self {
            p50: at(0.5),
            p99: at(0.99),
            p999: at(0.999),
        })
    }

    /// Prints one line: `name p50 .. p99 .. p99.9 ..`.
    pub fn print(&self, name: &str) {
        println!("{name:<44} {self}");
    }
}

/// `p50 .. p99 .. p99.9 ..`, each right-aligned, so lines of them align.
impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:>10.3?}  p99 {:>10.3?}  p99.9 {:>10.3?}",
            self.p50, self.p99, self.p999
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn the_replay_feeds_a_minute_per_decision_and_starts_the_day_again_after_its_end() {
        let mut replay = MarketReplay::new();
        let decisions = replay.decisions();
        let first = replay.advance().1;
        let (engine, second) = replay.advance();
        assert_eq!(second - first, 60_000_000_000, "a minute of 5 s quotes apart");
        let mut matrix = vec![0f32; SYMBOLS * features::N_FEATURES];
        engine.write_matrix(second, &mut matrix);
        assert!(matrix.iter().all(|v| v.is_finite()) && matrix.iter().any(|v| *v != 0.0));
        // The same states as the pool's (copies of a replay's).
        let (pooled, pooled_ts) = &engine_pool(2)[1];
        let mut from_pool = vec![0f32; matrix.len()];
        pooled.write_matrix(*pooled_ts, &mut from_pool);
        assert_eq!((*pooled_ts, &from_pool), (second, &matrix));
        let mut first_matrix = vec![0f32; matrix.len()];
        engine_pool(1)[0].0.write_matrix(first, &mut first_matrix);
        for _ in 2..decisions {
            replay.advance();
        }
        // Its first minute again, from the warmed-up engine (not from the
        // day's end).
        let (engine, ts) = replay.advance();
        engine.write_matrix(ts, &mut matrix);
        assert_eq!(
            (ts, &matrix),
            (first, &first_matrix),
            "after the day's last minute, its first again"
        );
    }

    #[test]
    fn alternating_calls_take_turns_and_are_timed_apart() {
        let log = RefCell::new(Vec::new());
        let (f, g) = Percentiles::measure_alternating(
            3,
            2,
            || log.borrow_mut().push('f'),
            || {
                log.borrow_mut().push('g');
                // Slower than `f` by far more than any timer's granularity.
                std::thread::sleep(Duration::from_millis(2));
            },
        );
        assert_eq!(log.into_inner().iter().collect::<String>(), "fgfgfgfgfg");
        assert!(g.p50 >= Duration::from_millis(2), "g timed as {g:?}");
        assert!(f.p50 < g.p50, "f {f:?} not timed apart from g {g:?}");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = Percentiles::of((1..=1000).map(Duration::from_micros).collect()).expect("samples");
        assert_eq!(p.p50, Duration::from_micros(501));
        assert_eq!(p.p99, Duration::from_micros(990));
        assert_eq!(p.p999, Duration::from_micros(999));
        assert_eq!(Percentiles::of(Vec::new()), None);
        assert_eq!(p.to_string(), "p50  501.000µs  p99  990.000µs  p99.9  999.000µs");
    }
}
