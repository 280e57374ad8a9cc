//! The first trainer on synthetic data: it learns (out-of-sample AUC above
//! 0.5), its ONNX exports agree with the native models, it is reproducible
//! byte for byte, and the artifact verifies.

#![allow(clippy::unwrap_used)] // fixture helpers outside #[test] fns: a broken fixture should panic

use mlcore_config::{KeyPurpose, TrustConfig, TrustedKeyConfig};
use mlcore_features as features;
use mlcore_models::artifact::{self, SecretKeyFile, ThetaParams, TrustStore, VerifyContext};
use mlcore_models::runtime;
use mlcore_research::synth::SYMBOLS;
use mlcore_research::train::{self, GbmParams, ModelMeta, TrainSpec};
use mlcore_testkit as testutil;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn spec(dataset: &std::path::Path, created_at_ms: u64) -> TrainSpec {
    TrainSpec {
        model: ModelMeta {
            strategy: "fx_g10".into(),
            version: 3,
            created_at_ms,
            valid_days: 30,
            theta: ThetaParams {
                theta1: 0.55,
                theta2: 0.6,
            },
        },
        dataset: dataset.to_owned(),
        symbols: SYMBOLS[..8].iter().map(|s| s.0.to_owned()).collect(),
        benchmark: 0,
        decision_every_ms: 60_000,
        horizon: 12,
        costs_bps: vec![1.0; 32],
        gbm: GbmParams {
            max_trees: 200,
            ..GbmParams::default()
        },
    }
}

fn trust_for(key: &SecretKeyFile) -> TrustStore {
    TrustStore::from_config(&TrustConfig {
        keys: vec![TrustedKeyConfig {
            id: key.key_id.clone(),
            public_key: key.public().unwrap().public_key,
            purposes: vec![KeyPurpose::ModelSigning],
            valid_from: "2020-01-01".into(),
            valid_until: "2099-12-31".into(),
        }],
        revoked: vec![],
    })
    .unwrap()
}

#[test]
fn trainer_learns_exports_with_parity_and_is_byte_for_byte_reproducible() {
    runtime::init(&testutil::ort_library()).unwrap();
    let data = tempfile::tempdir().unwrap();
    testutil::synth_dataset(data.path(), 21, 8, 3, 15_000);
    let key = SecretKeyFile::generate("train-test").unwrap();
    let trust = trust_for(&key);
    let created = now_ms();

    let a = train::train(&spec(data.path(), created), &key, &trust, now_ms()).unwrap();
    let m = &a.manifest;
    let auc = m.metrics["ai1_auc_test"];
    assert!(
        auc > 0.53,
        "ai1 should learn the planted reversal: test AUC {auc}"
    );
    assert!(
        auc < 0.75,
        "ai1 AUC {auc} is too good for this market: look for leakage"
    );
    // ai2 learns whether the path goes 0.5σ against the trade's side
    // before it exits: harder than ai1, above chance all the same.
    assert!(
        m.metrics["ai2_auc_test"] > 0.52,
        "ai2 AUC {}",
        m.metrics["ai2_auc_test"]
    );
    // Calibrated heads (Platt in the graph), and labels weighted by their
    // uniqueness: overlapping 12-quote labels at a 4-quote cadence share
    // most of their span.
    for head in ["ai1", "ai2"] {
        let ece = m.metrics[&format!("{head}_ece_test")];
        assert!(ece < 0.05, "{head} calibration error {ece}");
        assert!(m.metrics[&format!("{head}_brier_test")] < 0.25);
    }
    // ai3 (the meta-label) is a head like the others: calibrated, exported,
    // parity-checked, and better than a coin on the test rows.
    assert!(
        a.manifest.heads.contains_key("ai3"),
        "{:?}",
        a.manifest.heads.keys()
    );
    assert!(m.metrics["ai3_ece_test"] < 0.05, "{:?}", m.metrics);
    assert!(m.metrics["ai3_auc_test"] > 0.52, "{:?}", m.metrics);
    assert!(m.metrics["ai3_onnx_parity_max_abs"] <= 1e-5);
    // A reliability diagram per head, over every test row.
    for head in ["ai1", "ai2", "ai3"] {
        let bins = &a.reliability[head];
        assert!(bins.len() >= 3, "{head}: {bins:?}");
        assert_eq!(bins.iter().map(|b| b.count).sum::<usize>(), a.rows.2, "{head}");
    }
    let uniqueness = m.metrics["train_mean_uniqueness"];
    assert!(
        uniqueness > 0.05 && uniqueness < 1.0,
        "mean uniqueness {uniqueness}"
    );
    let adverse = m.metrics["ai2_base_rate_test"];
    assert!(
        adverse > 0.05 && adverse < 0.95,
        "ai2's label is nearly constant: {adverse}"
    );
    assert!(m.metrics["ai1_onnx_parity_max_abs"] <= 1e-5);
    assert!(m.metrics["ai2_onnx_parity_max_abs"] <= 1e-5);
    assert_eq!(m.feature_schema_hash, features::schema_hash());
    assert!(m.training_window.start_ms < m.training_window.test_start_ms);

    let b = train::train(&spec(data.path(), created), &key, &trust, now_ms()).unwrap();
    assert_eq!(
        a.files, b.files,
        "same data, seed and created_at must give a byte-identical artifact"
    );

    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("model");
    train::write_artifact(&a.files, &dir).unwrap();
    assert!(
        train::write_artifact(&a.files, &dir).is_err(),
        "never overwrite an artifact"
    );
    let files = artifact::ArtifactFiles::read(&dir).unwrap();
    let hash = features::schema_hash().to_owned();
    let ctx = VerifyContext {
        trust: &trust,
        feature_schema_hash: &hash,
        now_ms: now_ms(),
        highest_accepted: Some(2),
        rollback: None,
    };
    artifact::verify(files, &ctx).unwrap();
}

#[test]
fn too_little_data_is_a_clear_error() {
    runtime::init(&testutil::ort_library()).unwrap();
    let data = tempfile::tempdir().unwrap();
    testutil::synth_dataset(data.path(), 1, 2, 1, 600_000);
    let key = SecretKeyFile::generate("k").unwrap();
    let mut s = spec(data.path(), now_ms());
    s.symbols.truncate(2);
    let err = train::train(&s, &key, &trust_for(&key), now_ms()).unwrap_err();
    assert!(err.to_string().contains("not enough data"), "{err}");
}
