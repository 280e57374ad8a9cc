//! Scoring through ONNX Runtime (single row and a 32-row batch, per head)
//! on real feature matrices cycled (`mlcore_benches::feature_pool`), and
//! incremental feature updates per quote.
//!
//! Run: `cargo bench -p mlcore-benches --bench scoring`. Prints criterion
//! figures, then p50/p99/p99.9 per call.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark binary: fail loudly, print figures

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion};
use mlcore_benches::{sample_model, Percentiles, SYMBOLS};
use mlcore_features::{FeatureEngine, N_FEATURES};
use mlcore_market::Quote;
use mlcore_models::scoring::HeadScorer;
use mlcore_research::synth::{Generator, SynthSpec};

fn main() {
    let model = sample_model();
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3));
    // Real feature matrices, cycled: never one constant input.
    let inputs = mlcore_benches::feature_pool(256);
    let mut heads: Vec<(String, HeadScorer)> = ["ai1", "ai2"]
        .iter()
        .map(|h| {
            let spec = &model.manifest.heads[*h];
            let mut s = HeadScorer::new(h, model.files.get(&spec.file).unwrap(), spec, SYMBOLS).unwrap();
            s.warm_up(SYMBOLS, 50).unwrap();
            ((*h).to_owned(), s)
        })
        .collect();

    let mut tails = Vec::new();
    {
        let mut g = c.benchmark_group("scoring");
        for (name, head) in heads.iter_mut() {
            let learner = model.manifest.heads[name.as_str()].learner.clone();
            for rows in [1usize, SYMBOLS] {
                let id = format!("{name}_{learner}_{rows}_rows");
                let mut k = 0usize;
                g.bench_function(&id, |b| {
                    b.iter(|| {
                        k = (k + 1) % inputs.len();
                        black_box(head.score(&inputs[k][..rows * N_FEATURES], rows).unwrap()[0])
                    })
                });
                tails.push((
                    id,
                    Percentiles::measure(20_000, 1_000, || {
                        k = (k + 1) % inputs.len();
                        black_box(head.score(&inputs[k][..rows * N_FEATURES], rows).unwrap()[0]);
                    }),
                ));
            }
        }
        g.finish();
    }

    // Incremental features: one quote into a warmed-up 32-symbol engine, and
    // a full 32-row matrix read at decision time.
    let spec = SynthSpec {
        seed: 3,
        symbols: SYMBOLS,
        start_day: 20_458,
        days: 1,
        interval_ms: 1000,
        effect: 1.0,
    };
    let quotes: Vec<Quote> = Generator::new(spec).unwrap().day_merged(20_458);
    let mut engine = FeatureEngine::new(SYMBOLS, 0);
    for q in &quotes[..SYMBOLS * 200] {
        engine.update(q);
    }
    let mut i = SYMBOLS * 200;
    let mut matrix = vec![0f32; SYMBOLS * N_FEATURES];
    {
        let mut g = c.benchmark_group("features");
        g.bench_function("update_one_quote", |b| {
            b.iter_batched(
                || {
                    i = if i + 1 < quotes.len() {
                        i + 1
                    } else {
                        SYMBOLS * 200
                    };
                    quotes[i]
                },
                |q| engine.update(black_box(&q)),
                BatchSize::SmallInput,
            )
        });
        g.bench_function("write_matrix_32_rows", |b| {
            b.iter(|| engine.write_matrix(black_box(1), &mut matrix))
        });
        g.finish();
    }
    let mut j = SYMBOLS * 200;
    tails.push((
        "features_update_one_quote".into(),
        Percentiles::measure(200_000, 10_000, || {
            j = if j + 1 < quotes.len() {
                j + 1
            } else {
                SYMBOLS * 200
            };
            engine.update(black_box(&quotes[j]));
        }),
    ));
    tails.push((
        "features_write_matrix_32_rows".into(),
        Percentiles::measure(100_000, 10_000, || {
            engine.write_matrix(black_box(1), &mut matrix);
        }),
    ));
    c.final_summary();

    println!("\n== per-call percentiles ==");
    for (name, p) in tails {
        p.print(&name);
    }
}
