//! `mlcore-reference-bench`: the daemon's stack against the Python
//! reference (`benches/python/reference.py`: onnxruntime + redis-py), on
//! the same artifact, the same feature matrices and the same Redis guard,
//! in alternating pairs, and the ratios.
//!
//! Each side makes `--decisions` decisions one after another, each: a real
//! 32-symbol feature matrix (256 from the synthetic market, cycled), the
//! sample model's three heads, the θ gate and sizing, and one guarded
//! publish, waited for. The Rust side is the daemon's code: `ModelScorer`
//! (native backend unless `--backend onnx`) and the guard client with its
//! reused buffers (`Guard::publish_many_with`); the Python side is given the
//! same decision rule. Both publish with `--contract` (v3 by default) into
//! one namespace on the test Redis, so they meet the same guard and the same
//! Redis. Pairs alternate, Python first then Rust, so that the machine's
//! drift lands on both; each pair's ratios are printed, then the medians.
//!
//! `--guard-engine module` has the Rust side publish through the guard
//! module instead (the Python side keeps the Lua function): point
//! `MLCORE_TEST_REDIS_URL` at a Redis that loaded it.
//!
//! Run: `cargo run --release -p mlcore-benches --bin mlcore-reference-bench`
//! (needs `MLCORE_REFERENCE_PYTHON`: `eval "$(bash scripts/setup-python-tools.sh)"`).

#![allow(clippy::print_stdout)] // a benchmark binary: it prints its figures

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use mlcore_benches::{feature_pool, sample_model, sample_model_dir, Percentiles, SYMBOLS};
use mlcore_config::ScoringBackend;
use mlcore_contract::guard::ContractVersion;
use mlcore_contract::{
    Guard, GuardEngine, Keys, OpsMode, PublishBuffers, PublishOutcome, Side, Signal, SignalBatch,
};
use mlcore_models::scoring::ModelScorer;

#[derive(Parser, Debug)]
#[command(
    name = "mlcore-reference-bench",
    about = "The daemon's stack against the Python reference, in alternating pairs"
)]
struct Args {
    /// Pairs of runs (Python, then Rust).
    #[arg(long, default_value_t = 5)]
    pairs: usize,
    /// Decisions per run.
    #[arg(long, default_value_t = 2000)]
    decisions: usize,
    /// Contract version both sides publish with (`v2` or `v3`).
    #[arg(long, default_value = "v3")]
    contract: String,
    /// The Rust side's scoring backend (`native` or `onnx`).
    #[arg(long, default_value = "native")]
    backend: String,
    /// What runs the Rust side's v3 publish call in Redis: `function` (the
    /// Lua library, as the Python side) or `module` (the guard module: the
    /// Redis at `MLCORE_TEST_REDIS_URL` must have loaded it).
    #[arg(long, default_value = "function")]
    guard_engine: String,
    /// The Python with onnxruntime and redis-py (scripts/setup-python-tools.sh).
    #[arg(long, env = "MLCORE_REFERENCE_PYTHON")]
    python: PathBuf,
}

const STRATEGY: &str = "ref";

/// One run's figures.
#[derive(Debug, Clone, Copy)]
struct Run {
    per_second: f64,
    p50_us: f64,
    p99_us: f64,
}

/// The decision rule both sides apply: long above θ1, short below 1 − θ1,
/// flat when the risk score is above θ2; weights from the edge, gross at
/// most 1; quantities in lots of 1,000 on a 1,000,000 notional.
fn decide(symbols: &[String], p1: &[f32], p2: &[f32], theta: (f64, f64), batch: &mut SignalBatch) {
    let edge: Vec<f64> = p1
        .iter()
        .zip(p2)
        .map(|(&p, &r)| {
            let p = f64::from(p);
            let e = if p > theta.0 || p < 1.0 - theta.0 {
                p - 0.5
            } else {
                0.0
            };
            if f64::from(r) > theta.1 {
                0.0
            } else {
                e
            }
        })
        .collect();
    let gross: f64 = edge.iter().map(|e| e.abs()).sum();
    batch.signals.clear();
    for (i, e) in edge.iter().enumerate() {
        let weight = if gross > 1.0 { e / gross } else { *e };
        batch.signals.push(Signal {
            symbol: symbols[i].clone(),
            side: Side::of_weight(weight),
            weight,
            qty: (weight * 1e6 / 1000.0).round() * 1000.0,
            return_prob: f64::from(p1[i]),
            risk_score: f64::from(p2[i]),
        });
    }
}

fn main() -> Result<()> {
    let a = Args::parse();
    let contract = match a.contract.as_str() {
        "v2" => ContractVersion::V2,
        "v3" => ContractVersion::V3,
        other => bail!("--contract must be v2 or v3, got {other}"),
    };
    let backend = match a.backend.as_str() {
        "native" => ScoringBackend::Native,
        "onnx" => ScoringBackend::Onnx,
        other => bail!("--backend must be native or onnx, got {other}"),
    };
    let engine = match a.guard_engine.as_str() {
        "function" => GuardEngine::Function,
        "module" => GuardEngine::Module,
        other => bail!("--guard-engine must be function or module, got {other}"),
    };
    let model = sample_model();
    let pool = feature_pool(256);
    let dir = tempfile::tempdir()?;
    let features = dir.path().join("features.f32");
    let bytes: Vec<u8> = pool.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&features, bytes).context("writing the feature pool")?;

    let ns = mlcore_testkit::RedisNamespace::new();
    let mut conn = mlcore_testkit::redis_connection();
    Guard::load(&mut conn)?;
    let guard = Guard::new(Keys::new(&ns.ns), 1000)
        .with_contract(contract)
        .with_engine(engine);
    guard
        .check_engine(&mut conn)
        .context("the Rust side's guard engine")?;
    mlcore_testkit::set_mode(&guard, &mut conn, STRATEGY, OpsMode::Active);

    let mut scorer = ModelScorer::new(&model, SYMBOLS, backend)?;
    scorer.warm_up(SYMBOLS, 100)?;
    let theta = (model.manifest.theta.theta1, model.manifest.theta.theta2);
    let symbols: Vec<String> = (0..SYMBOLS).map(|i| format!("SYM{i:02}")).collect();
    let mut seq = mlcore_daemon::clock::now_ms() * 1000;
    let n_features = pool[0].len() / SYMBOLS;

    let mut rust = |seq_start: u64| -> Result<Run> {
        let mut batch = [SignalBatch {
            strategy: STRATEGY.into(),
            seq: 0,
            generated_at_ms: 0,
            valid_until_ms: 0,
            model_id: "rust".into(),
            model_version: 1,
            signals: Vec::with_capacity(SYMBOLS),
        }];
        let mut bufs = PublishBuffers::default();
        let mut times = Vec::with_capacity(a.decisions);
        let started = Instant::now();
        for k in 0..a.decisions {
            let t0 = Instant::now();
            let scores = scorer.score(&pool[k % pool.len()], SYMBOLS)?;
            decide(&symbols, scores.ai1, scores.ai2, theta, &mut batch[0]);
            let now = mlcore_daemon::clock::now_ms();
            batch[0].seq = seq_start + k as u64;
            batch[0].generated_at_ms = now;
            batch[0].valid_until_ms = now + 60_000;
            let out = guard.publish_many_with(&mut conn, &batch, &mut bufs)?;
            if !matches!(out.first(), Some(Ok(PublishOutcome::Accepted { .. }))) {
                bail!("decision {k}: the guard answered {out:?}");
            }
            times.push(t0.elapsed());
        }
        let seconds = started.elapsed().as_secs_f64();
        let p = Percentiles::of(times).context("no decision timed")?;
        Ok(Run {
            per_second: a.decisions as f64 / seconds,
            p50_us: p.p50.as_secs_f64() * 1e6,
            p99_us: p.p99.as_secs_f64() * 1e6,
        })
    };
    let python = |seq_start: u64| -> Result<Run> {
        let out = Command::new(&a.python)
            .arg(mlcore_testkit::workspace_root().join("benches/python/reference.py"))
            .arg("--artifact")
            .arg(sample_model_dir())
            .arg("--features")
            .arg(&features)
            .args([
                "--redis",
                &mlcore_testkit::redis_url(),
                "--ns",
                &ns.ns,
                "--strategy",
                STRATEGY,
            ])
            .args(["--contract", &a.contract, "--decisions", &a.decisions.to_string()])
            .args([
                "--seq",
                &seq_start.to_string(),
                "--n-features",
                &n_features.to_string(),
            ])
            .output()
            .with_context(|| format!("running {}", a.python.display()))?;
        if !out.status.success() {
            bail!(
                "the Python reference failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("the reference's JSON")?;
        let num = |k: &str| v[k].as_f64().with_context(|| format!("{k} in {v}"));
        Ok(Run {
            per_second: num("decisions")? / num("seconds")?,
            p50_us: num("p50_us")?,
            p99_us: num("p99_us")?,
        })
    };

    println!(
        "== mlcore-reference-bench: {} pairs of {} decisions, contract {}, Rust heads {}, Rust guard {} ==",
        a.pairs, a.decisions, a.contract, a.backend, a.guard_engine
    );
    println!("pair | Python: per s, p50, p99 | Rust: per s, p50, p99 | throughput × | p50 × | p99 ×");
    let mut ratios = (Vec::new(), Vec::new(), Vec::new());
    for pair in 1..=a.pairs {
        let py = python(seq)?;
        seq += a.decisions as u64;
        let rs = rust(seq)?;
        seq += a.decisions as u64;
        let r = (
            rs.per_second / py.per_second,
            py.p50_us / rs.p50_us,
            py.p99_us / rs.p99_us,
        );
        println!(
            "{pair} | {:.0}/s, {:.0} µs, {:.0} µs | {:.0}/s, {:.0} µs, {:.0} µs | {:.2} | {:.2} | {:.2}",
            py.per_second, py.p50_us, py.p99_us, rs.per_second, rs.p50_us, rs.p99_us, r.0, r.1, r.2
        );
        ratios.0.push(r.0);
        ratios.1.push(r.1);
        ratios.2.push(r.2);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "median of {} pairs: throughput {:.2}×, p50 {:.2}× faster, p99 {:.2}× faster (Rust over Python)",
        a.pairs,
        median(&mut ratios.0),
        median(&mut ratios.1),
        median(&mut ratios.2)
    );
    Ok(())
}
