//! One decision for a 32-symbol universe with the sample models: feature
//! matrix → both ONNX heads → portfolio, versus the ONNX Runtime calls
//! alone. Target: the non-ORT part ≤ 10 % of the decision.
//!
//! Run: `cargo bench -p mlcore-benches --bench decision`.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark binary: fail loudly, print figures

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use mlcore_benches::{sample_model, Percentiles, SYMBOLS};
use mlcore_daemon::job::Job;
use mlcore_decision::universe::Strategy;
use mlcore_decision::{Policy, SymbolParams};
use mlcore_features::FeatureEngine;
use mlcore_market::Quote;
use mlcore_models::scoring::ModelScorer;
use mlcore_research::synth::{Generator, SynthSpec};

fn main() {
    let model = sample_model();
    let mut scorer = ModelScorer::new(&model, SYMBOLS).unwrap();
    scorer.warm_up(SYMBOLS, 100).unwrap();
    let spec = SynthSpec {
        seed: 5,
        symbols: SYMBOLS,
        start_day: 20_458,
        days: 1,
        interval_ms: 5_000,
        effect: 1.0,
    };
    let quotes: Vec<Quote> = Generator::new(spec).unwrap().day_merged(20_458);
    let mut engine = FeatureEngine::new(SYMBOLS, 0);
    for q in &quotes[..SYMBOLS * 300] {
        engine.update(q);
    }
    let params: Vec<SymbolParams> = mlcore_research::synth::SYMBOLS
        .iter()
        .map(|s| SymbolParams {
            beta: s.2,
            max_weight: 0.1,
            lot_size: 1000.0,
            min_qty: 1000.0,
            notional: 1e7,
            cost_bps: s.3 + 0.2,
        })
        .collect();
    let policy = Policy {
        theta1: model.manifest.theta.theta1,
        theta2: model.manifest.theta.theta2,
        target_annual_vol: 0.1,
        periods_per_year: 4_354_560.0,
        max_gross: 1.0,
        beta_tolerance: 0.01,
        min_edge_over_cost_bps: 0.0,
        use_ai3: true,
    };
    let mut job = Job::new(0, &params);
    let ts = quotes[SYMBOLS * 300].ts_ns;

    // The feature matrix the decision scores, for the ONNX-only runs.
    let mut features = job.features.clone();
    engine.write_matrix(ts, &mut features);

    // The strategy as the daemon resolves it, so the decision below is the
    // daemon's own calls: prepare → score → apply_scores → decide.
    let strategy = Strategy {
        id: "fx_g10".parse().unwrap(),
        symbols: mlcore_research::synth::SYMBOLS
            .iter()
            .map(|s| s.0.parse().unwrap())
            .collect(),
        params: params.clone(),
        rolling_beta: vec![None; SYMBOLS],
        benchmark: 0,
        theta: None,
    };
    let mut full = || {
        let Job {
            features,
            inputs,
            params,
            scratch,
            ..
        } = &mut job;
        mlcore_decision::prepare(&strategy, &engine, ts, features, inputs, params);
        let scores = scorer.score(features, SYMBOLS).unwrap();
        mlcore_decision::apply_scores(inputs, scores.ai1, scores.ai2, scores.ai3);
        black_box(mlcore_decision::decide(&policy, params, inputs, scratch));
    };
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(4));
    c.bench_function("decision_32_symbols_full", |b| b.iter(&mut full));

    // The ONNX Runtime calls alone, on a scorer of their own (the same
    // model) so that the two can run alternately below.
    let mut ort_scorer = ModelScorer::new(&model, SYMBOLS).unwrap();
    ort_scorer.warm_up(SYMBOLS, 100).unwrap();
    let mut ort_only = || {
        black_box(ort_scorer.score(&features, SYMBOLS).unwrap().ai1[0]);
    };
    c.bench_function("decision_32_symbols_ort_only", |b| b.iter(&mut ort_only));
    c.final_summary();
    // The ratio from calls alternated: criterion's two runs above come one
    // after the other, and on this VM they have disagreed by more than what
    // they compare (once the ONNX Runtime calls alone read 42 µs, the
    // decision that contains them 26 µs).
    let (full_p, ort_p) = Percentiles::measure_alternating(20_000, 2_000, &mut full, &mut ort_only);

    println!("\n== one 32-symbol decision ==");
    full_p.print("full decision (features + ORT + portfolio)");
    ort_p.print("ONNX Runtime calls only (alternated with it)");
    let overhead = 1.0 - ort_p.p50.as_secs_f64() / full_p.p50.as_secs_f64();
    println!(
        "non-ORT share of the decision at p50: {:.1} % (target ≤ 10 %)",
        overhead * 100.0
    );
}
