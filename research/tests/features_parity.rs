//! One feature implementation, two modes: the incremental engine fed quote by
//! quote (as the daemon does) gives bit-identical rows to batch mode (as the
//! trainer does) on the sample data.

use mlcore_features::{self as features, FeatureEngine, N_FEATURES};
use mlcore_research::dataset::Dataset;
use mlcore_research::synth::SYMBOLS;
use mlcore_testkit as testutil;

#[test]
fn batch_and_incremental_features_are_bit_identical_on_sample_data() {
    let dir = tempfile::tempdir().unwrap();
    testutil::synth_dataset(dir.path(), 11, 8, 2, 30_000);
    let names: Vec<&str> = SYMBOLS[..8].iter().map(|s| s.0).collect();
    let quotes = Dataset::open(dir.path()).unwrap().load_quotes(&names).unwrap();
    let every = 120_000_000_000i64; // a decision every 2 minutes
    let batch = features::batch(&quotes, names.len(), 0, every);
    assert!(batch.len() > 1000, "{} samples", batch.len());

    // Serving: quotes arrive one at a time; at each decision the daemon reads
    // every ready symbol's row from the live engine.
    let mut engine = FeatureEngine::new(names.len(), 0);
    let mut live = Vec::new();
    let mut next = quotes[0].ts_ns - quotes[0].ts_ns.rem_euclid(every) + every;
    for q in &quotes {
        while q.ts_ns >= next {
            for sym in 0..names.len() {
                if engine.is_ready(sym) {
                    let mut row = [0f32; N_FEATURES];
                    engine.write_row(sym, next, &mut row);
                    live.push((next, sym as u16, row));
                }
            }
            next += every;
        }
        engine.update(q);
    }
    assert_eq!(live.len(), batch.len());
    for (b, (ts, sym, row)) in batch.iter().zip(&live) {
        assert_eq!((b.ts_ns, b.symbol), (*ts, *sym));
        let bits = |r: &[f32; N_FEATURES]| r.map(f32::to_bits);
        assert_eq!(bits(&b.features), bits(row), "ts {ts} symbol {sym}");
    }
    // Features carry information: not all rows equal, all finite.
    assert!(batch.iter().all(|s| s.features.iter().all(|v| v.is_finite())));
    assert!(batch.windows(2).any(|w| w[0].features != w[1].features));
}

#[test]
fn write_matrix_equals_rows() {
    let dir = tempfile::tempdir().unwrap();
    testutil::synth_dataset(dir.path(), 3, 4, 1, 60_000);
    let names: Vec<&str> = SYMBOLS[..4].iter().map(|s| s.0).collect();
    let quotes = Dataset::open(dir.path()).unwrap().load_quotes(&names).unwrap();
    let mut engine = FeatureEngine::new(4, 0);
    for q in &quotes {
        engine.update(q);
    }
    let ts = quotes.last().unwrap().ts_ns;
    let mut matrix = vec![0f32; 4 * N_FEATURES];
    engine.write_matrix(ts, &mut matrix);
    for sym in 0..4 {
        let mut row = [0f32; N_FEATURES];
        engine.write_row(sym, ts, &mut row);
        assert_eq!(&matrix[sym * N_FEATURES..(sym + 1) * N_FEATURES], &row);
    }
}
