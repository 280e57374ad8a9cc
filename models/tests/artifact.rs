//! Artifact verification: each refusal is distinct, and a good artifact
//! scores through ONNX Runtime like its native heads.

#![allow(clippy::unwrap_used)] // fixture helpers outside #[test] fns: a broken fixture should panic

use std::collections::BTreeMap;

use mlcore_config::{KeyPurpose, TrustConfig, TrustedKeyConfig};
use mlcore_features as features;
use mlcore_models::artifact::rollback::{self, RollbackGrant};
use mlcore_models::artifact::{
    self, ArtifactFiles, Manifest, SecretKeyFile, ThetaParams, TrainingWindow, TrustStore, VerifyContext,
    VerifyError,
};
use mlcore_research::onnx::export::ToOnnx;
use mlcore_testkit::{logistic_head, logistic_head_spec};

const NOW: u64 = 1_790_000_000_000; // 2026-09-21

struct Fixture {
    key: SecretKeyFile,
    trust: TrustStore,
    files: ArtifactFiles,
    schema_hash: String,
}

fn trusted(key: &SecretKeyFile, purposes: Vec<KeyPurpose>, from: &str, until: &str) -> TrustedKeyConfig {
    TrustedKeyConfig {
        id: key.key_id.clone(),
        public_key: key.public().unwrap().public_key,
        purposes,
        valid_from: from.into(),
        valid_until: until.into(),
    }
}

fn manifest(version: u64) -> Manifest {
    Manifest {
        format: 1,
        model_id: format!("fx_g10-v{version}"),
        strategy: "fx_g10".into(),
        version,
        created_at_ms: NOW - 1000,
        expires_at_ms: NOW + 86_400_000,
        feature_schema_hash: features::schema_hash().to_owned(),
        heads: [
            ("ai1".to_owned(), logistic_head_spec("ai1.onnx")),
            ("ai2".to_owned(), logistic_head_spec("ai2.onnx")),
        ]
        .into(),
        theta: ThetaParams {
            theta1: 0.55,
            theta2: 0.6,
        },
        training_window: TrainingWindow {
            start_ms: 1,
            test_start_ms: 2,
            end_ms: 3,
        },
        metrics: [("ai1_auc_test".to_owned(), 0.5612345678901234)].into(),
        files: BTreeMap::new(),
    }
}

fn sealed(key: &SecretKeyFile, m: Manifest) -> ArtifactFiles {
    let schema = serde_json::to_vec(&features::schema()).unwrap();
    let files = ArtifactFiles(
        [
            ("ai1.onnx".to_owned(), logistic_head(1.0).to_onnx("ai1").unwrap()),
            ("ai2.onnx".to_owned(), logistic_head(2.0).to_onnx("ai2").unwrap()),
            (artifact::FEATURE_SCHEMA.to_owned(), schema),
        ]
        .into(),
    );
    artifact::seal(m, files, key).unwrap().1
}

fn fixture() -> Fixture {
    let key = SecretKeyFile::generate("test-key").unwrap();
    let trust = TrustStore::from_config(&TrustConfig {
        keys: vec![trusted(
            &key,
            vec![KeyPurpose::ModelSigning, KeyPurpose::Rollback],
            "2026-01-01",
            "2026-12-31",
        )],
        revoked: vec![],
    })
    .unwrap();
    let files = sealed(&key, manifest(5));
    Fixture {
        key,
        trust,
        files,
        schema_hash: features::schema_hash().to_owned(),
    }
}

impl Fixture {
    fn ctx(&self) -> VerifyContext<'_> {
        VerifyContext {
            trust: &self.trust,
            feature_schema_hash: &self.schema_hash,
            now_ms: NOW,
            highest_accepted: None,
            rollback: None,
        }
    }

    fn verify(&self, files: ArtifactFiles) -> Result<artifact::VerifiedArtifact, VerifyError> {
        artifact::verify(files, &self.ctx())
    }
}

#[test]
fn a_sealed_artifact_verifies() {
    let f = fixture();
    let v = f.verify(f.files.clone()).unwrap();
    assert_eq!((v.manifest.version, v.key_id.as_str()), (5, "test-key"));
    assert_eq!(v.manifest.metrics["ai1_auc_test"], 0.5612345678901234);
}

#[test]
fn unknown_key_is_refused() {
    let f = fixture();
    let stranger = SecretKeyFile::generate("stranger").unwrap();
    let err = f.verify(sealed(&stranger, manifest(5))).unwrap_err();
    assert_eq!(err, VerifyError::UnknownKey("stranger".into()));
}

#[test]
fn revoked_key_is_refused() {
    let f = fixture();
    let trust = TrustStore::from_config(&TrustConfig {
        keys: vec![trusted(
            &f.key,
            vec![KeyPurpose::ModelSigning],
            "2026-01-01",
            "2026-12-31",
        )],
        revoked: vec!["test-key".into()],
    })
    .unwrap();
    let err = artifact::verify(
        f.files.clone(),
        &VerifyContext {
            trust: &trust,
            ..f.ctx()
        },
    )
    .unwrap_err();
    assert_eq!(err, VerifyError::RevokedKey("test-key".into()));
}

#[test]
fn key_outside_its_window_or_purpose_is_refused() {
    let f = fixture();
    for cfg in [
        trusted(&f.key, vec![KeyPurpose::ModelSigning], "2025-01-01", "2025-12-31"),
        trusted(&f.key, vec![KeyPurpose::Rollback], "2026-01-01", "2026-12-31"),
    ] {
        let trust = TrustStore::from_config(&TrustConfig {
            keys: vec![cfg],
            revoked: vec![],
        })
        .unwrap();
        let err = artifact::verify(
            f.files.clone(),
            &VerifyContext {
                trust: &trust,
                ..f.ctx()
            },
        )
        .unwrap_err();
        assert!(matches!(err, VerifyError::KeyNotUsable(_)), "{err}");
    }
}

#[test]
fn a_changed_manifest_breaks_the_signature() {
    let f = fixture();
    let mut files = f.files.clone();
    let text = String::from_utf8(files.0["manifest.json"].clone()).unwrap();
    files.0.insert(
        "manifest.json".into(),
        text.replace("\"version\": 5", "\"version\": 6").into_bytes(),
    );
    assert_eq!(
        f.verify(files).unwrap_err(),
        VerifyError::BadSignature("test-key".into())
    );
}

#[test]
fn changed_missing_and_extra_files_are_refused() {
    let f = fixture();
    let mut changed = f.files.clone();
    changed.0.get_mut("ai1.onnx").unwrap().push(0);
    assert!(
        matches!(f.verify(changed).unwrap_err(), VerifyError::HashMismatch { file, .. } if file == "ai1.onnx")
    );

    let mut missing = f.files.clone();
    missing.0.remove("ai2.onnx");
    assert_eq!(
        f.verify(missing).unwrap_err(),
        VerifyError::MissingFile("ai2.onnx".into())
    );

    let mut extra = f.files.clone();
    extra.0.insert("notes.txt".into(), b"hi".to_vec());
    assert_eq!(
        f.verify(extra).unwrap_err(),
        VerifyError::ExtraFile("notes.txt".into())
    );

    // A head naming a native file the artifact does not list.
    let mut m = manifest(5);
    m.heads.get_mut("ai1").unwrap().native = Some("ai1.native.json".into());
    let e = f.verify(sealed(&f.key, m)).unwrap_err();
    assert_eq!(
        e,
        VerifyError::Malformed("head `ai1` file `ai1.native.json` is not listed".into())
    );
}

#[test]
fn feature_schema_mismatch_is_refused() {
    let f = fixture();
    let mut m = manifest(5);
    m.feature_schema_hash = "0".repeat(64);
    let err = f.verify(sealed(&f.key, m)).unwrap_err();
    assert!(matches!(err, VerifyError::FeatureSchemaMismatch { .. }), "{err}");
}

#[test]
fn expired_manifest_is_refused() {
    let f = fixture();
    let mut m = manifest(5);
    m.expires_at_ms = NOW;
    assert!(matches!(
        f.verify(sealed(&f.key, m)).unwrap_err(),
        VerifyError::Expired { .. }
    ));
}

#[test]
fn rollback_needs_an_authorisation_naming_exactly_that_model_and_version() {
    let f = fixture();
    let old = sealed(&f.key, manifest(3));
    let ctx = VerifyContext {
        highest_accepted: Some(5),
        ..f.ctx()
    };
    let err = artifact::verify(old.clone(), &ctx).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Rollback {
                version: 3,
                highest: 5,
                ..
            }
        ),
        "{err}"
    );
    // Same version as the active one is a rollback too.
    let same = artifact::verify(f.files.clone(), &ctx).unwrap_err();
    assert!(matches!(same, VerifyError::Rollback { version: 5, .. }));

    let old_sha = old.manifest_sha256().unwrap();
    let grant = |version: u64, expires: u64| RollbackGrant {
        strategy: "fx_g10".into(),
        model_id: "fx_g10-v3".into(),
        version,
        manifest_sha256: old_sha.clone(),
        from_version: 5,
        from_manifest_sha256: "ab".repeat(32),
        issued_at_ms: NOW - 10,
        expires_at_ms: expires,
        request_id: "req-9".into(),
    };
    let good = rollback::sign(grant(3, NOW + 60_000), &f.key).unwrap();
    artifact::verify(
        old.clone(),
        &VerifyContext {
            rollback: Some(&good),
            ..ctx
        },
    )
    .unwrap();

    let wrong_version = rollback::sign(grant(4, NOW + 60_000), &f.key).unwrap();
    let expired = rollback::sign(grant(3, NOW), &f.key).unwrap();
    let mut forged = good.clone();
    forged.grant.version = 2;
    let mut other_manifest = grant(3, NOW + 60_000);
    other_manifest.manifest_sha256 = "cd".repeat(32);
    let other_manifest = rollback::sign(other_manifest, &f.key).unwrap();
    let stranger = rollback::sign(grant(3, NOW + 60_000), &SecretKeyFile::generate("x").unwrap()).unwrap();
    for auth in [wrong_version, expired, forged, other_manifest, stranger] {
        let err = artifact::verify(
            old.clone(),
            &VerifyContext {
                rollback: Some(&auth),
                ..ctx
            },
        )
        .unwrap_err();
        assert!(matches!(err, VerifyError::Rollback { .. }), "{err}");
    }
    // A newer version needs no authorisation.
    artifact::verify(sealed(&f.key, manifest(6)), &ctx).unwrap();
}

#[test]
fn artifacts_read_from_folders_and_tars() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("model");
    f.files.write(&folder).unwrap();
    assert_eq!(ArtifactFiles::read(&folder).unwrap(), f.files);

    let tar_path = dir.path().join("model.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
    builder.append_dir_all("model", &folder).unwrap();
    builder.finish().unwrap();
    drop(builder);
    let from_tar = ArtifactFiles::read(&tar_path).unwrap();
    assert_eq!(from_tar, f.files);
    f.verify(from_tar).unwrap();

    std::fs::create_dir(folder.join("nested")).unwrap();
    assert!(ArtifactFiles::read(&folder).is_err(), "artifacts are flat");
}

#[test]
fn keys_rotate_and_revocations_apply_without_a_restart() {
    let f = fixture();
    let new_key = SecretKeyFile::generate("next-key").unwrap();
    let shared = artifact::SharedTrust::new(f.trust.clone());
    let by_new_key = sealed(&new_key, manifest(6));
    let check = |files: &ArtifactFiles| {
        let trust = shared.snapshot();
        artifact::verify(
            files.clone(),
            &VerifyContext {
                trust: &trust,
                ..f.ctx()
            },
        )
    };
    assert_eq!(
        check(&by_new_key).unwrap_err(),
        VerifyError::UnknownKey("next-key".into())
    );
    // Rotation: add the new key, revoke the old one.
    let all = vec![KeyPurpose::ModelSigning, KeyPurpose::Rollback];
    shared
        .reload(&TrustConfig {
            keys: vec![
                trusted(&f.key, all.clone(), "2026-01-01", "2026-12-31"),
                trusted(&new_key, all, "2026-01-01", "2026-12-31"),
            ],
            revoked: vec!["test-key".into()],
        })
        .unwrap();
    check(&by_new_key).unwrap();
    assert_eq!(
        check(&f.files).unwrap_err(),
        VerifyError::RevokedKey("test-key".into())
    );
    // A bad reload keeps the store in force.
    let mut broken = trusted(
        &new_key,
        vec![KeyPurpose::ModelSigning],
        "2026-01-01",
        "2026-12-31",
    );
    broken.public_key = "zz".into();
    assert!(shared
        .reload(&TrustConfig {
            keys: vec![broken],
            revoked: vec![]
        })
        .is_err());
    check(&by_new_key).unwrap();
}
