//! Every export is checked for parity: ONNX Runtime and the native head agree
//! within 1e-5 on 10,000 rows, for logistic regression and tree ensembles
//! (with Platt calibration in the graph). And the scorer runs a verified
//! artifact's heads in batches.

#![allow(clippy::unwrap_used)] // fixture helpers outside #[test] fns: a broken fixture should panic

use mlcore_features::{self as features, N_FEATURES};
use mlcore_models::artifact::{
    self, ArtifactFiles, HeadSpec, Manifest, SecretKeyFile, ThetaParams, TrainingWindow,
};
use mlcore_models::runtime;
use mlcore_models::scoring::ModelScorer;
use mlcore_research::onnx::export::{LogisticHead, Platt, TreeEnsembleHead, TreeNode};
use mlcore_testkit as testutil;
use rand_chacha::rand_core::{RngCore, SeedableRng};

const ROWS: usize = 10_000;

fn rows(seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..ROWS * N_FEATURES)
        .map(|_| (rng.next_u32() as f32 / u32::MAX as f32) * 6.0 - 3.0)
        .collect()
}

fn run_onnx(model: &[u8], x: &[f32]) -> Vec<f32> {
    let mut session = runtime::hot_path_session(model).unwrap();
    let input = ort::value::TensorRef::from_array_view(([x.len() / N_FEATURES, N_FEATURES], x)).unwrap();
    let out = session.run(ort::inputs!["x" => input]).unwrap();
    out["prob"].try_extract_tensor::<f32>().unwrap().1.to_vec()
}

/// A random full binary tree of `depth` over the features.
fn random_tree(rng: &mut rand_chacha::ChaCha8Rng, depth: u32) -> Vec<TreeNode> {
    let mut nodes = Vec::new();
    fn build(rng: &mut rand_chacha::ChaCha8Rng, nodes: &mut Vec<TreeNode>, depth: u32) -> usize {
        let me = nodes.len();
        if depth == 0 {
            nodes.push(TreeNode::Leaf(
                (rng.next_u32() as f32 / u32::MAX as f32 - 0.5) * 0.2,
            ));
            return me;
        }
        nodes.push(TreeNode::Leaf(0.0)); // placeholder
        let feature = (rng.next_u32() as usize) % N_FEATURES;
        let threshold = rng.next_u32() as f32 / u32::MAX as f32 * 4.0 - 2.0;
        let left = build(rng, nodes, depth - 1);
        let right = build(rng, nodes, depth - 1);
        nodes[me] = TreeNode::Split {
            feature,
            threshold,
            left,
            right,
        };
        me
    }
    build(rng, &mut nodes, depth);
    nodes
}

fn ensemble() -> TreeEnsembleHead {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    TreeEnsembleHead {
        trees: (0..60).map(|_| random_tree(&mut rng, 4)).collect(),
        base: -0.03,
        platt: Platt { a: 0.9, b: 0.02 },
        n_features: N_FEATURES,
    }
}

fn logistic() -> LogisticHead {
    LogisticHead {
        weights: (0..N_FEATURES).map(|i| (i as f32 * 0.7).cos() * 0.3).collect(),
        intercept: -0.2,
        platt: Platt { a: 1.1, b: 0.05 },
    }
}

/// Runs `model` in ONNX Runtime on `x` and checks every row against
/// `native` within 1e-5; returns the ONNX outputs.
fn assert_parity(model: &[u8], x: &[f32], native: impl Fn(&[f32]) -> f32) -> Vec<f32> {
    runtime::init(&testutil::ort_library()).unwrap();
    let onnx = run_onnx(model, x);
    let worst = x
        .chunks_exact(N_FEATURES)
        .zip(&onnx)
        .map(|(r, o)| (native(r) - o).abs())
        .fold(0.0, f32::max);
    assert!(worst <= 1e-5, "max abs diff {worst}");
    onnx
}

#[test]
fn logistic_regression_export_matches_native_on_10000_rows() {
    let head = logistic();
    assert_parity(&head.to_onnx("lr").unwrap(), &rows(1), |r| head.predict_row(r));
}

#[test]
fn tree_ensemble_export_matches_native_on_10000_rows() {
    let head = ensemble();
    let onnx = assert_parity(&head.to_onnx("trees").unwrap(), &rows(2), |r| head.predict_row(r));
    // The trees matter: predictions spread out.
    let (lo, hi) = onnx.iter().fold((1f32, 0f32), |(l, h), p| (l.min(*p), h.max(*p)));
    assert!(hi - lo > 0.1, "predictions {lo}..{hi}");
}

#[test]
fn a_split_out_of_range_is_refused_at_export() {
    let mut head = ensemble();
    head.trees[0][0] = TreeNode::Split {
        feature: N_FEATURES,
        threshold: 0.0,
        left: 1,
        right: 2,
    };
    assert!(head.to_onnx("bad").is_err());
}

#[test]
fn the_scorer_runs_every_head_of_a_verified_artifact_in_batches() {
    runtime::init(&testutil::ort_library()).unwrap();
    let key = SecretKeyFile::generate("k").unwrap();
    let spec = |file: &str, learner: &str| HeadSpec {
        file: file.into(),
        input: "x".into(),
        output: "prob".into(),
        n_features: N_FEATURES,
        learner: learner.into(),
        calibration: "platt".into(),
    };
    let manifest = Manifest {
        format: 1,
        model_id: "m-v1".into(),
        strategy: "fx_g10".into(),
        version: 1,
        created_at_ms: 0,
        expires_at_ms: u64::MAX,
        feature_schema_hash: features::schema_hash().to_owned(),
        heads: [
            ("ai1".to_owned(), spec("ai1.onnx", "lightgbm")),
            ("ai2".to_owned(), spec("ai2.onnx", "logistic")),
        ]
        .into(),
        theta: ThetaParams {
            theta1: 0.55,
            theta2: 0.6,
        },
        training_window: TrainingWindow {
            start_ms: 0,
            test_start_ms: 0,
            end_ms: 0,
        },
        metrics: Default::default(),
        files: Default::default(),
    };
    let files = ArtifactFiles(
        [
            ("ai1.onnx".to_owned(), ensemble().to_onnx("ai1").unwrap()),
            ("ai2.onnx".to_owned(), logistic().to_onnx("ai2").unwrap()),
        ]
        .into(),
    );
    let (manifest, files) = artifact::seal(manifest, files, &key).unwrap();
    let verified = artifact::VerifiedArtifact {
        manifest,
        files,
        key_id: "k".into(),
    };
    // The paced build pauses before each head's session (two heads here).
    let mut pauses = 0;
    let mut scorer = ModelScorer::new_paced(&verified, 32, || pauses += 1).unwrap();
    assert_eq!(pauses, 2);
    scorer.warm_up_paced(32, 3, || pauses += 1).unwrap();
    assert_eq!(pauses, 4, "and before each head's warm-up");
    let x = &rows(3)[..32 * N_FEATURES];
    let scores = scorer.score(x, 32).unwrap();
    assert!(scores.ai3.is_none());
    for (i, row) in x.chunks_exact(N_FEATURES).enumerate() {
        assert!((scores.ai1[i] - ensemble().predict_row(row)).abs() <= 1e-5);
        assert!((scores.ai2[i] - logistic().predict_row(row)).abs() <= 1e-5);
    }
    // One row works too; more rows than allocated is an error, not a panic.
    assert_eq!(scorer.score(&x[..N_FEATURES], 1).unwrap().ai1.len(), 1);
    assert!(scorer.score(&rows(4)[..33 * N_FEATURES], 33).is_err());
}
