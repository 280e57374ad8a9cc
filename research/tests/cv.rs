//! Validation's controls (#23): on the synthetic market, triple-barrier
//! labels validated with purged k-fold and walk-forward learn the planted
//! reversal; shuffled labels score 0.50 ± 0.02; removing the purge lets
//! overlapping labels leak and inflate the score; features that saw the
//! future are refused by the point-in-time check.

#![allow(clippy::unwrap_used)] // fixture helpers outside #[test] fns: a broken fixture should panic

use mlcore_features::{self as features, N_FEATURES};
use mlcore_market::Quote;
use mlcore_research::cv::{self, Labelled, Learner};
use mlcore_research::dataset::Dataset;
use mlcore_research::labels::Barriers;
use mlcore_research::synth::SYMBOLS;
use mlcore_research::train::GbmParams;
use mlcore_research::validation::Scheme;
use mlcore_testkit as testutil;

const BARRIERS: Barriers = Barriers {
    profit_take: 1.0,
    stop_loss: 1.0,
    horizon: 12,
};
const EVERY_NS: i64 = 60_000_000_000;

fn market() -> (Vec<Quote>, usize) {
    let dir = tempfile::tempdir().unwrap();
    testutil::synth_dataset(dir.path(), 21, 8, 2, 15_000);
    let names: Vec<&str> = SYMBOLS[..8].iter().map(|s| s.0).collect();
    (
        Dataset::open(dir.path()).unwrap().load_quotes(&names).unwrap(),
        names.len(),
    )
}

fn gbm() -> Learner {
    Learner::Gbm(GbmParams {
        max_trees: 100,
        ..GbmParams::default()
    })
}

#[test]
fn purged_validation_learns_the_planted_reversal_and_shuffled_labels_learn_nothing() {
    let (quotes, n) = market();
    let samples = features::batch(&quotes, n, 0, EVERY_NS);
    cv::point_in_time_check(&quotes, n, 0, &samples, 10).unwrap();
    let data = cv::label(&quotes, n, &samples, &BARRIERS, 100);
    assert!(data.rows() > 3_000, "{} rows", data.rows());
    let embargo = 12 * EVERY_NS;

    let kfold = cv::cross_validate(&data, Scheme::PurgedKFold { k: 5 }, embargo, true, gbm()).unwrap();
    assert_eq!(kfold.folds.len(), 5);
    for f in &kfold.folds {
        // The fold's ranges are reported, and none of its training rows
        // spans into its test block.
        assert!(f.train_rows > 0 && f.test.1 > f.test.0);
        let (t0, t1) = (data.spans[f.test.0].0, data.spans[f.test.1 - 1].1);
        for &(a, b) in &f.train {
            assert!(
                (a..b).all(|i| data.spans[i].1 < t0 || data.spans[i].0 > t1),
                "{f:?}"
            );
        }
    }
    let auc = kfold.auc.unwrap();
    assert!(auc > 0.53, "purged k-fold AUC {auc}");
    assert!(kfold.brier < 0.25 && kfold.ece < 0.1, "{kfold:?}");
    assert!(!kfold.reliability.is_empty());

    let walk =
        cv::cross_validate(&data, Scheme::WalkForwardExpanding { k: 4 }, embargo, true, gbm()).unwrap();
    assert!(walk.auc.unwrap() > 0.53, "walk-forward AUC {:?}", walk.auc);
    assert!(walk.folds.iter().all(|f| f.train.iter().all(|r| r.1 <= f.test.0)));

    // The same pipeline on shuffled labels: nothing to learn.
    let mut shuffled = data.clone();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for i in (1..shuffled.y.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        shuffled.y.swap(i, (state % (i as u64 + 1)) as usize);
    }
    let null = cv::cross_validate(&shuffled, Scheme::PurgedKFold { k: 5 }, embargo, true, gbm()).unwrap();
    let null_auc = null.auc.unwrap();
    assert!((null_auc - 0.5).abs() <= 0.02, "shuffled labels AUC {null_auc}");
}

/// Samples whose only feature is their time, labelled by the sign of a
/// random walk's move over the next `h` steps: nothing predicts the label,
/// but neighbouring labels share most of their path. Without the purge, a
/// tree learns each test block's edges from the training rows beside it.
/// (With overlapping labels there are only about n / h independent
/// outcomes, so the purged figure itself is noisy around 0.5; the gap is
/// what the purge removes.)
#[test]
fn removing_the_purge_lets_overlapping_labels_leak() {
    let (n, h) = (4_000usize, 200usize);
    let mut walk = vec![0.0f64; n + h + 1];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in 1..walk.len() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        walk[i] = walk[i - 1] + if state.is_multiple_of(2) { 1.0 } else { -1.0 };
    }
    let mut data = Labelled::default();
    for i in 0..n {
        let mut row = [0f32; N_FEATURES];
        row[0] = i as f32;
        data.x.extend_from_slice(&row);
        data.y.push(walk[i + h] > walk[i]);
        data.spans.push((i as i64, (i + h) as i64));
    }
    // Small leaves and a fast rate: trees that memorise what leaks.
    let trees = Learner::Gbm(GbmParams {
        num_leaves: 63,
        learning_rate: 0.3,
        min_data_in_leaf: 3,
        max_trees: 60,
    });
    let scheme = Scheme::PurgedKFold { k: 20 };
    let purged = cv::cross_validate(&data, scheme, h as i64, true, trees)
        .unwrap()
        .auc
        .unwrap();
    let leaky = cv::cross_validate(&data, scheme, h as i64, false, trees)
        .unwrap()
        .auc
        .unwrap();
    assert!(
        leaky > purged + 0.08,
        "the leak should inflate the score: purged {purged:.3}, unpurged {leaky:.3}"
    );
}

#[test]
fn features_that_saw_the_future_are_refused() {
    let (quotes, n) = market();
    let mut samples = features::batch(&quotes, n, 0, EVERY_NS);
    samples.truncate(2_000);
    cv::point_in_time_check(&quotes, n, 0, &samples, 25).unwrap();
    // Each row replaced by the same symbol's row one decision later.
    let shifted: Vec<_> = samples
        .iter()
        .map(|s| {
            let next = samples
                .iter()
                .find(|o| o.symbol == s.symbol && o.ts_ns > s.ts_ns)
                .unwrap_or(s);
            features::Sample {
                features: next.features,
                ..s.clone()
            }
        })
        .collect();
    let refused = cv::point_in_time_check(&quotes, n, 0, &shifted, 25).unwrap_err();
    let said = refused.to_string();
    assert!(
        said.starts_with("look-ahead:") && said.contains(&format!("`{}`", refused.name)),
        "{said}"
    );
}
