//! Scoring each head of the sample model (or of the signed model that
//! `MLCORE_BENCH_MODEL` names: `mlcore_benches::bench_model`; single row and a 32-row batch)
//! through ONNX Runtime and through the native backend, on real feature
//! matrices cycled (`mlcore_benches::feature_pool`), and incremental
//! feature updates per quote.
//!
//! Run: `cargo bench -p mlcore-benches --bench scoring`. Prints criterion
//! figures, then p50/p99/p99.9 per call, then the native backend's speed-up
//! over ONNX Runtime per head on 32 rows, from calls alternated (target for
//! the tree heads: ≥ 4×).

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark binary: fail loudly, print figures

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion};
use mlcore_benches::{bench_model, describe_model, Percentiles, SYMBOLS};
use mlcore_features::{FeatureEngine, N_FEATURES};
use mlcore_market::Quote;
use mlcore_models::artifact::VALIDATION_ROWS;
use mlcore_models::native::{self, CompiledHead, InstructionSet, NativeHead};
use mlcore_models::scoring::{HeadBackend, HeadScorer};
use mlcore_research::synth::{Generator, SynthSpec};

fn main() {
    let model = bench_model();
    println!("model: {}", describe_model(&model));
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3));
    // Real feature matrices, cycled: never one constant input.
    let inputs = mlcore_benches::feature_pool(256);
    let validation = native::decode_rows(model.files.get(VALIDATION_ROWS).unwrap(), N_FEATURES).unwrap();
    // Per head: (name, ONNX Runtime, native).
    let mut heads: Vec<(String, HeadScorer, HeadScorer)> = model
        .manifest
        .heads
        .iter()
        .map(|(h, spec)| {
            let onnx = model.files.get(&spec.file).unwrap();
            let mut ort = HeadScorer::new(h, onnx, spec, SYMBOLS).unwrap();
            let mut nat = HeadScorer::new(h, onnx, spec, SYMBOLS).unwrap();
            let file = model.files.get(spec.native.as_deref().unwrap()).unwrap();
            nat.try_native(
                NativeHead::from_json(file).map_err(|e| e.to_string()),
                Some(&validation),
                &mut || {},
            );
            assert!(
                matches!(nat.backend(), HeadBackend::Native { .. }),
                "{h}: {:?}",
                nat.backend()
            );
            ort.warm_up(SYMBOLS, 50).unwrap();
            nat.warm_up(SYMBOLS, 50).unwrap();
            (h.clone(), ort, nat)
        })
        .collect();

    let mut tails = Vec::new();
    {
        let mut g = c.benchmark_group("scoring");
        for (name, ort, nat) in heads.iter_mut() {
            let learner = model.manifest.heads[name.as_str()].learner.clone();
            for (rows, backend) in [1usize, SYMBOLS]
                .into_iter()
                .flat_map(|r| [(r, "onnx"), (r, "native")])
            {
                let head = if backend == "onnx" { &mut *ort } else { &mut *nat };
                let id = format!("{name}_{learner}_{rows}_rows_{backend}");
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

    println!(
        "\n== native backend ({}) against ONNX Runtime, 32 varied rows, calls alternated ==",
        mlcore_models::native::InstructionSet::detected().name()
    );
    for (name, ort, nat) in heads.iter_mut() {
        let (mut ko, mut kn) = (0usize, 0usize);
        let (o, n) = Percentiles::measure_alternating(
            20_000,
            2_000,
            || {
                ko = (ko + 1) % inputs.len();
                black_box(ort.score(&inputs[ko], SYMBOLS).unwrap()[0]);
            },
            || {
                kn = (kn + 1) % inputs.len();
                black_box(nat.score(&inputs[kn], SYMBOLS).unwrap()[0]);
            },
        );
        println!(
            "{name}: ONNX Runtime p50 {:.1} µs, native p50 {:.1} µs: {:.1}× (target ≥ 4× for tree heads)",
            o.p50.as_secs_f64() * 1e6,
            n.p50.as_secs_f64() * 1e6,
            o.p50.as_secs_f64() / n.p50.as_secs_f64()
        );
    }

    // The forms of the native tree kernels on the same rows, each against
    // the next narrower one, alternated: what each width buys on this CPU.
    for pair in InstructionSet::ALL.windows(2) {
        let [narrow, wider] = [pair[0], pair[1]];
        if !wider.available() {
            println!(
                "\nthis CPU has no {}: the native backend does not run that form here",
                wider.name()
            );
            continue;
        }
        println!(
            "\n== native backend: {} against {}, 32 varied rows, calls alternated ==",
            narrow.name(),
            wider.name()
        );
        for (name, spec) in &model.manifest.heads {
            let file = model.files.get(spec.native.as_deref().unwrap()).unwrap();
            let head = CompiledHead::compile(&NativeHead::from_json(file).unwrap(), N_FEATURES).unwrap();
            let (mut kn, mut kw) = (0usize, 0usize);
            let (mut on, mut ow) = ([0f32; SYMBOLS], [0f32; SYMBOLS]);
            let run = |set, k: &mut usize, out: &mut [f32; SYMBOLS]| {
                *k = (*k + 1) % inputs.len();
                head.predict_on(set, &inputs[*k], out).unwrap();
                black_box(out[0]);
            };
            let (n, w) = Percentiles::measure_alternating(
                20_000,
                2_000,
                || run(narrow, &mut kn, &mut on),
                || run(wider, &mut kw, &mut ow),
            );
            println!(
                "{name}: {} p50 {:.1} µs, {} p50 {:.1} µs: {:.2}×",
                narrow.name(),
                n.p50.as_secs_f64() * 1e6,
                wider.name(),
                w.p50.as_secs_f64() * 1e6,
                n.p50.as_secs_f64() / w.p50.as_secs_f64()
            );
        }
    }
}
