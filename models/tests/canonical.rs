//! Golden bytes: what manifests and rollback grants are signed over, and
//! what a feature schema's hash covers. RFC 8785 (JCS) canonical JSON:
//! keys sorted, no whitespace, numbers as ECMAScript prints them. A change
//! here invalidates every signature ever made: it must be deliberate.

use std::collections::BTreeMap;

use mlcore_models::artifact::rollback::{self, RollbackGrant};
use mlcore_models::artifact::{HeadSpec, Manifest, ThetaParams, TrainingWindow};

fn manifest() -> Manifest {
    let head = |file: &str, learner: &str| HeadSpec {
        file: file.into(),
        input: "x".into(),
        output: "prob".into(),
        n_features: 15,
        learner: learner.into(),
        calibration: "platt".into(),
        native: None,
    };
    Manifest {
        format: 1,
        model_id: "fx_g10-v3".into(),
        strategy: "fx_g10".into(),
        version: 3,
        created_at_ms: 1_767_225_600_000,
        expires_at_ms: 1_769_817_600_000,
        feature_schema_hash: "ab".repeat(32),
        heads: BTreeMap::from([
            ("ai2".into(), head("ai2.onnx", "logistic")),
            ("ai1".into(), head("ai1.onnx", "gbdt")),
        ]),
        theta: ThetaParams {
            theta1: 0.55,
            theta2: 0.6,
        },
        training_window: TrainingWindow {
            start_ms: 1_767_225_600_000,
            test_start_ms: 1_767_830_400_000,
            end_ms: 1_768_435_200_000,
        },
        // 1.0 and 1e-7: where JCS and serde_json's own printing differ.
        metrics: BTreeMap::from([("ai1_auc_test".into(), 1.0), ("ai2_brier".into(), 1e-7)]),
        files: BTreeMap::from([("ai1.onnx".into(), "00".repeat(32))]),
    }
}

#[test]
fn a_manifest_is_signed_over_its_jcs_bytes() {
    let bytes = String::from_utf8(manifest().canonical_bytes().unwrap()).unwrap();
    let expected = concat!(
        r#"{"created_at_ms":1767225600000,"expires_at_ms":1769817600000,"#,
        r#""feature_schema_hash":"abababababababababababababababababababababababababababababababab","#,
        r#""files":{"ai1.onnx":"0000000000000000000000000000000000000000000000000000000000000000"},"#,
        r#""format":1,"heads":{"#,
        r#""ai1":{"calibration":"platt","file":"ai1.onnx","input":"x","learner":"gbdt","n_features":15,"output":"prob"},"#,
        r#""ai2":{"calibration":"platt","file":"ai2.onnx","input":"x","learner":"logistic","n_features":15,"output":"prob"}},"#,
        r#""metrics":{"ai1_auc_test":1,"ai2_brier":1e-7},"model_id":"fx_g10-v3","strategy":"fx_g10","#,
        r#""theta":{"theta1":0.55,"theta2":0.6},"#,
        r#""training_window":{"end_ms":1768435200000,"start_ms":1767225600000,"test_start_ms":1767830400000},"#,
        r#""version":3}"#
    );
    assert_eq!(bytes, expected);
}

#[test]
fn a_manifest_json_cannot_carry_is_refused_not_signed_as_nothing() {
    let mut m = manifest();
    m.metrics.insert("broken".into(), f64::NAN);
    let err = m.canonical_bytes().unwrap_err().to_string();
    assert!(err.contains("broken is NaN"), "{err}");
}

#[test]
fn a_rollback_grant_is_signed_over_its_jcs_bytes() {
    let grant = RollbackGrant {
        strategy: "fx_g10".into(),
        model_id: "fx_g10-v2".into(),
        version: 2,
        manifest_sha256: "12".repeat(32),
        from_version: 3,
        from_manifest_sha256: "34".repeat(32),
        issued_at_ms: 1_767_225_600_000,
        expires_at_ms: 1_767_225_900_000,
        request_id: "ops-1".into(),
    };
    let bytes = String::from_utf8(rollback::canonical_bytes(&grant).unwrap()).unwrap();
    assert_eq!(
        bytes,
        concat!(
            r#"{"expires_at_ms":1767225900000,"from_manifest_sha256":"3434343434343434343434343434343434343434343434343434343434343434","#,
            r#""from_version":3,"issued_at_ms":1767225600000,"#,
            r#""manifest_sha256":"1212121212121212121212121212121212121212121212121212121212121212","#,
            r#""model_id":"fx_g10-v2","request_id":"ops-1","strategy":"fx_g10","version":2}"#
        )
    );
}

#[test]
fn the_feature_schema_hash_covers_its_jcs_bytes() {
    let schema = mlcore_features::schema();
    let bytes = String::from_utf8(schema.canonical_json().unwrap()).unwrap();
    assert!(
        bytes.starts_with(r#"{"features":[{"dtype":"float32","name":"ret_1_bps","params":{"horizon":1}},"#),
        "{bytes}"
    );
    // The hash every artifact of this build declares.
    assert_eq!(mlcore_features::schema_hash(), GOLDEN_SCHEMA_HASH, "{bytes}");
}

const GOLDEN_SCHEMA_HASH: &str = "4e12eb6607670ff941dbb1c4bf6f6baea04dcabf45af14beae374aa6640b61bc";
