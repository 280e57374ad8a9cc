//! One decision for a 32-symbol universe with the sample model, as the
//! daemon makes it: one feature engine fed the next minute of the
//! synthetic market's quotes before each decision (untimed;
//! `mlcore_benches::MarketReplay`), then feature matrix → the three heads
//! → portfolio, with the heads on the native backend and on ONNX Runtime,
//! and the ONNX Runtime calls alone. Also the native decision on 256
//! engine states cycled (`mlcore_benches::engine_pool`), each read from
//! cold caches.
//! Targets: the whole decision's compute under 10 µs p50 with the native
//! backend; the non-ORT part of an ONNX Runtime decision ≤ 10 %.
//!
//! Run: `cargo bench -p mlcore-benches --bench decision`; with
//! `MLCORE_BENCH_MODEL=.run/models/fx_g10/v<N>`, on the model the demo
//! trained instead of the sample model (`mlcore_benches::bench_model`).

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark binary: fail loudly, print figures

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use mlcore_benches::{bench_model, describe_model, MarketReplay, Percentiles, SYMBOLS};
use mlcore_config::ScoringBackend;
use mlcore_daemon::job::Job;
use mlcore_decision::universe::Strategy;
use mlcore_decision::{Policy, SymbolParams};
use mlcore_models::scoring::{HeadBackend, ModelScorer};

fn main() {
    let model = bench_model();
    println!("model: {}", describe_model(&model));
    let scorer = |backend| {
        let mut s = ModelScorer::new(&model, SYMBOLS, backend).unwrap();
        s.warm_up(SYMBOLS, 100).unwrap();
        s
    };
    let mut native = scorer(ScoringBackend::Native);
    for (head, backend) in native.backends() {
        assert!(
            matches!(backend, HeadBackend::Native { .. }),
            "{head} is not native: {backend:?}"
        );
    }
    let mut onnx = scorer(ScoringBackend::Onnx);
    let pool = mlcore_benches::engine_pool(256);
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
    let (mut job, mut job2) = (Job::new(0, &params), Job::new(0, &params));
    let matrices = mlcore_benches::feature_pool(pool.len());

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
    // The daemon's calls: prepare → score → apply_scores → decide, on a
    // market state.
    let decision =
        |scorer: &mut ModelScorer, engine: &mlcore_features::FeatureEngine, ts: i64, job: &mut Job| {
            let Job {
                features,
                inputs,
                params,
                scratch,
                ..
            } = job;
            mlcore_decision::prepare(&strategy, engine, ts, features, inputs, params);
            let scores = scorer.score(features, SYMBOLS).unwrap();
            mlcore_decision::apply_scores(inputs, scores.ai1, scores.ai2, scores.ai3);
            black_box(mlcore_decision::decide(&policy, params, inputs, scratch));
        };
    // The next minute of quotes fed (untimed), then one decision, timed.
    let replayed = |replay: &mut MarketReplay, scorer: &mut ModelScorer, job: &mut Job| {
        let (engine, ts) = replay.advance();
        let start = Instant::now();
        decision(scorer, engine, ts, job);
        start.elapsed()
    };
    let (mut replay, mut replay2) = (MarketReplay::new(), MarketReplay::new());
    let (mut kc, mut kr) = (0usize, 0usize);
    let ort_only = |scorer: &mut ModelScorer, k: &mut usize| {
        *k = (*k + 1) % matrices.len();
        black_box(scorer.score(&matrices[*k], SYMBOLS).unwrap().ai1[0]);
    };
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(4));
    c.bench_function("decision_32_symbols_native", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| replayed(&mut replay, &mut native, &mut job))
                .sum()
        })
    });
    let mut onnx_decision = scorer(ScoringBackend::Onnx);
    c.bench_function("decision_32_symbols_onnx", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| replayed(&mut replay2, &mut onnx_decision, &mut job))
                .sum()
        })
    });
    c.bench_function("decision_32_symbols_ort_only", |b| {
        b.iter(|| ort_only(&mut onnx, &mut kr))
    });
    c.final_summary();
    // Ratios from calls alternated: criterion's runs above come one after
    // the other, and on this VM they have disagreed by more than what they
    // compare.
    let (native_p, onnx_p) = Percentiles::measure_alternating_timed(
        20_000,
        2_000,
        || replayed(&mut replay, &mut native, &mut job),
        || replayed(&mut replay2, &mut onnx_decision, &mut job2),
    );
    let (onnx_p2, ort_p) = Percentiles::measure_alternating_timed(
        20_000,
        2_000,
        || replayed(&mut replay2, &mut onnx_decision, &mut job2),
        || {
            let start = Instant::now();
            ort_only(&mut onnx, &mut kr);
            start.elapsed()
        },
    );
    // The engine read cold: each decision on another of 256 states,
    // alternated with the replay's (same backend, same run).
    // (One scorer for both, so both read the same heads.)
    let shared = std::cell::RefCell::new(&mut native);
    let (replayed_p, cold_p) = Percentiles::measure_alternating_timed(
        20_000,
        2_000,
        || replayed(&mut replay, &mut shared.borrow_mut(), &mut job),
        || {
            kc = (kc + 1) % pool.len();
            let (engine, ts) = &pool[kc];
            let mut scorer = shared.borrow_mut();
            let start = Instant::now();
            decision(&mut scorer, engine, *ts, &mut job2);
            start.elapsed()
        },
    );

    println!(
        "\n== one 32-symbol decision, the next minute of quotes fed before each (native backend: {}) ==",
        mlcore_models::native::InstructionSet::detected().name()
    );
    native_p.print("full decision, native heads (features + 3 heads + portfolio)");
    onnx_p.print("full decision, ONNX Runtime heads (alternated with it)");
    println!(
        "native decision at p50: {:.1} µs (target < 10 µs); ONNX Runtime decision / native: {:.2}×",
        native_p.p50.as_secs_f64() * 1e6,
        onnx_p.p50.as_secs_f64() / native_p.p50.as_secs_f64()
    );
    replayed_p.print("native decision, market replayed (alternated with the next)");
    cold_p.print("native decision on 256 engine states cycled (each read from cold caches)");
    println!(
        "cold engine states / market replayed at p50: {:.2}×",
        cold_p.p50.as_secs_f64() / replayed_p.p50.as_secs_f64()
    );
    onnx_p2.print("full decision, ONNX Runtime heads");
    ort_p.print("ONNX Runtime calls only (alternated with it)");
    let overhead = 1.0 - ort_p.p50.as_secs_f64() / onnx_p2.p50.as_secs_f64();
    println!(
        "non-ORT share of an ONNX Runtime decision at p50: {:.1} % (target ≤ 10 %)",
        overhead * 100.0
    );
}
