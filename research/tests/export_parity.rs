//! Every export is checked for parity: ONNX Runtime and the native head agree
//! within 1e-5 on 10,000 rows, for logistic regression and tree ensembles
//! (with Platt calibration in the graph). And the scorer runs a verified
//! artifact's heads in batches.

#![allow(clippy::unwrap_used)] // fixture helpers outside #[test] fns: a broken fixture should panic

use mlcore_config::ScoringBackend;
use mlcore_features::{self as features, N_FEATURES};
use mlcore_models::artifact::{
    self, ArtifactFiles, HeadSpec, Manifest, SecretKeyFile, ThetaParams, TrainingWindow,
};
use mlcore_models::runtime;
use mlcore_models::scoring::ModelScorer;
use mlcore_research::onnx::export::{LogisticHead, Platt, ToOnnx, TreeEnsembleHead, TreeNode};
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

/// The manifest of an artifact with ai1 (trees, `ai1.onnx`) and ai2
/// (logistic, `ai2.onnx`), each naming its native file when asked.
fn two_head_manifest(ai1_native: bool, ai2_native: bool) -> Manifest {
    let spec = |head: &str, learner: &str, native: bool| HeadSpec {
        file: format!("{head}.onnx"),
        input: "x".into(),
        output: "prob".into(),
        n_features: N_FEATURES,
        learner: learner.into(),
        calibration: "platt".into(),
        native: native.then(|| mlcore_models::native::file_name(head)),
    };
    Manifest {
        format: 1,
        model_id: "m-v1".into(),
        strategy: "fx_g10".into(),
        version: 1,
        created_at_ms: 0,
        expires_at_ms: u64::MAX,
        feature_schema_hash: features::schema_hash().to_owned(),
        heads: [
            ("ai1".to_owned(), spec("ai1", "lightgbm", ai1_native)),
            ("ai2".to_owned(), spec("ai2", "logistic", ai2_native)),
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
    }
}

#[test]
fn the_scorer_runs_every_head_of_a_verified_artifact_in_batches() {
    runtime::init(&testutil::ort_library()).unwrap();
    let key = SecretKeyFile::generate("k").unwrap();
    let manifest = two_head_manifest(false, false);
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
    let mut scorer = ModelScorer::new_paced(&verified, 32, ScoringBackend::Onnx, || pauses += 1).unwrap();
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

/// A sealed artifact whose ai1 is [`ensemble`] and ai2 [`logistic`], with
/// `ai1_native` as ai1's native file (raw bytes) when given, ai2's native
/// file always, and `validation` rows when given.
fn native_artifact(ai1_native: Option<Vec<u8>>, validation: Option<&[f32]>) -> artifact::VerifiedArtifact {
    use mlcore_models::native::{self, NativeHead};
    let key = SecretKeyFile::generate("k").unwrap();
    let manifest = two_head_manifest(ai1_native.is_some(), true);
    let mut files = ArtifactFiles(
        [
            ("ai1.onnx".to_owned(), ensemble().to_onnx("ai1").unwrap()),
            ("ai2.onnx".to_owned(), logistic().to_onnx("ai2").unwrap()),
            (
                native::file_name("ai2"),
                NativeHead::Logistic(logistic()).to_json().unwrap(),
            ),
        ]
        .into(),
    );
    if let Some(bytes) = ai1_native {
        files.0.insert(native::file_name("ai1"), bytes);
    }
    if let Some(rows) = validation {
        files
            .0
            .insert(artifact::VALIDATION_ROWS.into(), native::encode_rows(rows));
    }
    let (manifest, files) = artifact::seal(manifest, files, &key).unwrap();
    artifact::VerifiedArtifact {
        manifest,
        files,
        key_id: "k".into(),
    }
}

fn trees_json(head: TreeEnsembleHead) -> Vec<u8> {
    mlcore_models::native::NativeHead::Trees(head).to_json().unwrap()
}

#[test]
fn native_heads_serve_once_they_agree_with_onnx_runtime_and_score_as_it_does() {
    use mlcore_models::scoring::HeadBackend;
    runtime::init(&testutil::ort_library()).unwrap();
    let validation = &rows(5)[..256 * N_FEATURES];
    let model = native_artifact(Some(trees_json(ensemble())), Some(validation));
    let mut native = ModelScorer::new(&model, 32, ScoringBackend::Native).unwrap();
    let backends: Vec<(String, HeadBackend)> = native
        .backends()
        .map(|(h, b)| (h.to_owned(), b.clone()))
        .collect();
    for (head, backend) in &backends {
        match backend {
            HeadBackend::Native {
                rows,
                max_abs_diff,
                kernel,
            } => {
                assert_eq!(*rows, 256, "{head}");
                assert!(*max_abs_diff <= 1e-6, "{head}: {max_abs_diff}");
                // ai1 is the tree ensemble, ai2 the logistic head.
                let want = (head == "ai1").then(mlcore_models::native::InstructionSet::detected);
                assert_eq!(*kernel, want, "{head}");
            }
            other => panic!("{head} runs on {other:?}"),
        }
    }
    // On rows it was not checked on, batches of 32 and of 1, it scores as
    // ONNX Runtime does.
    let mut ort = ModelScorer::new(&model, 32, ScoringBackend::Onnx).unwrap();
    assert!(ort.backends().all(|(_, b)| *b == HeadBackend::Onnx));
    // Unseen rows, and rows with NaN and infinite features: ONNX's
    // `BRANCH_LT` sends NaN right, as the native test does.
    let mut x = rows(6);
    for (i, v) in x.iter_mut().enumerate().take(64 * N_FEATURES) {
        match i % 7 {
            0 => *v = f32::NAN,
            3 => *v = f32::INFINITY,
            5 => *v = f32::NEG_INFINITY,
            _ => {}
        }
    }
    for batch in x.chunks_exact(32 * N_FEATURES).take(50) {
        for n in [32, 1] {
            let want = ort.score(&batch[..n * N_FEATURES], n).unwrap();
            let (w1, w2) = (want.ai1.to_vec(), want.ai2.to_vec());
            let got = native.score(&batch[..n * N_FEATURES], n).unwrap();
            // The trees give a probability for any input; the logistic
            // head's sum is NaN on both sides when a feature is not finite.
            for (a, b) in got.ai1.iter().zip(&w1) {
                assert!((a - b).abs() <= 1e-6, "ai1: native {a}, ONNX Runtime {b}");
            }
            for (a, b) in got.ai2.iter().zip(&w2) {
                assert!(
                    (a - b).abs() <= 1e-6 || (a.is_nan() && b.is_nan()),
                    "ai2: native {a}, ONNX Runtime {b}"
                );
            }
        }
    }
}

/// `daemon.yaml` `scoring.max_instruction_set`: a scorer held to a set
/// runs its tree heads in the widest set of this CPU under it, reports
/// that set, and scores the same bits.
#[test]
fn a_scorer_held_to_an_instruction_set_reports_it_and_scores_the_same() {
    use mlcore_models::native::InstructionSet;
    use mlcore_models::scoring::HeadBackend;
    runtime::init(&testutil::ort_library()).unwrap();
    let validation = &rows(5)[..256 * N_FEATURES];
    let model = native_artifact(Some(trees_json(ensemble())), Some(validation));
    let x = rows(7);
    let batch = &x[..32 * N_FEATURES];
    let mut widest = ModelScorer::new(&model, 32, ScoringBackend::Native).unwrap();
    let want = widest.score(batch, 32).unwrap().ai1.to_vec();
    for cap in InstructionSet::ALL {
        let mut capped = ModelScorer::new(&model, 32, ScoringBackend::Native).unwrap();
        capped.cap_kernels(cap);
        let kernels: Vec<Option<InstructionSet>> = capped
            .backends()
            .map(|(_, b)| match b {
                HeadBackend::Native { kernel, .. } => *kernel,
                other => panic!("{other:?}"),
            })
            .collect();
        // ai1 the tree ensemble, ai2 the logistic head (one form).
        assert_eq!(
            kernels,
            [Some(InstructionSet::widest_up_to(cap)), None],
            "{cap:?}"
        );
        assert_eq!(capped.score(batch, 32).unwrap().ai1, want.as_slice(), "{cap:?}");
    }
    // The configuration's names are the sets'.
    for (name, set) in [
        ("avx512", InstructionSet::Avx512),
        ("avx2", InstructionSet::Avx2),
        ("baseline", InstructionSet::Baseline),
    ] {
        let parsed: mlcore_config::MaxInstructionSet = serde_json::from_str(&format!("\"{name}\"")).unwrap();
        assert_eq!(InstructionSet::from(parsed), set);
    }
}

#[test]
fn a_native_head_that_is_refused_falls_back_to_onnx_runtime_and_says_why() {
    use mlcore_models::scoring::HeadBackend;
    runtime::init(&testutil::ort_library()).unwrap();
    let validation = &rows(7)[..128 * N_FEATURES];
    // One leaf off by 0.01: signed like the rest, so only parity catches it.
    let mut off = ensemble();
    let leaf = off.trees[3]
        .iter_mut()
        .find_map(|n| match n {
            TreeNode::Leaf(v) => Some(v),
            TreeNode::Split { .. } => None,
        })
        .unwrap();
    *leaf += 0.01;
    let mut cyclic = ensemble();
    cyclic.trees[0][1] = TreeNode::Split {
        feature: 0,
        threshold: 0.0,
        left: 0,
        right: 2,
    };
    let cases = [
        (
            Some(trees_json(off)),
            Some(validation),
            "differs from ONNX Runtime",
        ),
        (Some(trees_json(ensemble())), None, "no validation_rows.f32"),
        (
            Some(b"{\"trees\": 3}".to_vec()),
            Some(validation),
            "ai1.native.json",
        ),
        (Some(trees_json(cyclic)), Some(validation), "reached twice"),
    ];
    let x = &rows(8)[..32 * N_FEATURES];
    let mut ort = ModelScorer::new(&native_artifact(None, None), 32, ScoringBackend::Onnx).unwrap();
    let want = ort.score(x, 32).unwrap().ai1.to_vec();
    for (file, validation, says) in cases {
        let model = native_artifact(file, validation);
        let mut scorer = ModelScorer::new(&model, 32, ScoringBackend::Native).unwrap();
        let ai1 = scorer.backends().find(|(h, _)| *h == "ai1").unwrap().1.clone();
        match ai1 {
            HeadBackend::Fallback { reason } => assert!(reason.contains(says), "{reason}"),
            other => panic!("expected a fallback ({says}), got {other:?}"),
        }
        // ONNX Runtime's values, exactly: the fallback is the session.
        assert_eq!(scorer.score(x, 32).unwrap().ai1, &want[..]);
    }
    // An artifact without a native form of ai1: ONNX Runtime, no fallback.
    let scorer = ModelScorer::new(
        &native_artifact(None, Some(validation)),
        32,
        ScoringBackend::Native,
    )
    .unwrap();
    let ai1 = scorer.backends().find(|(h, _)| *h == "ai1").unwrap().1.clone();
    assert_eq!(ai1, HeadBackend::Onnx);
    // And `onnx` in the configuration keeps every head there.
    let model = native_artifact(Some(trees_json(ensemble())), Some(validation));
    let scorer = ModelScorer::new(&model, 32, ScoringBackend::Onnx).unwrap();
    assert!(scorer.backends().all(|(_, b)| *b == HeadBackend::Onnx));
}
