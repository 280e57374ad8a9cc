//! Artifact verification: every refusal has its own error.
//!
//! Order matters: the signature is checked before anything the manifest says
//! is believed; then files, feature schema, expiry and rollback.

use ed25519_dalek::{Signature, Verifier};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::files::ArtifactFiles;
use super::manifest::Manifest;
use super::rollback::RollbackAuthorization;
use super::trust::{KeyRefusal, TrustStore};
use super::{FEATURE_SCHEMA, MANIFEST, SIGNATURE};
use mlcore_config::KeyPurpose;

/// Why an artifact is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// `manifest.json` or `manifest.sig` is absent or unparsable.
    #[error("malformed artifact: {0}")]
    Malformed(String),
    /// The signing key is not in `trust.yaml`.
    #[error("unknown signing key `{0}`")]
    UnknownKey(String),
    /// The signing key is revoked.
    #[error("signing key `{0}` is revoked")]
    RevokedKey(String),
    /// The signing key is outside its validity window or may not sign models.
    #[error("signing key not usable: {0}")]
    KeyNotUsable(String),
    /// The signature does not verify.
    #[error("bad signature on manifest.json (key `{0}`)")]
    BadSignature(String),
    /// A file listed in the manifest is missing.
    #[error("file `{0}` listed in the manifest is missing")]
    MissingFile(String),
    /// A file's sha256 differs from the manifest.
    #[error("file `{file}` has sha256 {actual}, the manifest says {expected}")]
    HashMismatch {
        /// File.
        file: String,
        /// From the manifest.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// A file not listed in the manifest is present.
    #[error("file `{0}` is not listed in the manifest")]
    ExtraFile(String),
    /// The model was trained on other features than this build computes.
    #[error("feature schema mismatch: model trained on {model}, this build computes {ours}")]
    FeatureSchemaMismatch {
        /// The model's.
        model: String,
        /// Ours.
        ours: String,
    },
    /// The manifest expired (freeze).
    #[error("model expired at {expires_at_ms} (now {now_ms})")]
    Expired {
        /// Expiry.
        expires_at_ms: u64,
        /// Now.
        now_ms: u64,
    },
    /// Version not above the highest accepted, without a valid authorisation.
    #[error("version {version} is not above the highest accepted {highest}: rollback refused ({reason})")]
    Rollback {
        /// The artifact's version.
        version: u64,
        /// Highest accepted so far.
        highest: u64,
        /// Why no authorisation applied.
        reason: String,
    },
}

/// What verification needs to know.
#[derive(Debug, Clone, Copy)]
pub struct VerifyContext<'a> {
    /// Trusted keys.
    pub trust: &'a TrustStore,
    /// This build's feature schema hash.
    pub feature_schema_hash: &'a str,
    /// Current time, ms since the epoch.
    pub now_ms: u64,
    /// Highest version accepted so far for the strategy (persisted).
    pub highest_accepted: Option<u64>,
    /// Permission to go back, when rolling back.
    pub rollback: Option<&'a RollbackAuthorization>,
}

impl<'a> VerifyContext<'a> {
    /// A first acceptance at `now_ms`: this build's feature schema, no
    /// rollback floor, no authorisation (set those fields when they apply).
    pub fn new(trust: &'a TrustStore, now_ms: u64) -> Self {
        Self {
            trust,
            feature_schema_hash: mlcore_features::schema_hash(),
            now_ms,
            highest_accepted: None,
            rollback: None,
        }
    }
}

/// An artifact that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedArtifact {
    /// Its manifest.
    pub manifest: Manifest,
    /// Its files (the bytes that were hashed).
    pub files: ArtifactFiles,
    /// The key that signed it.
    pub key_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureFile {
    key_id: String,
    algorithm: String,
    signature: String,
}

/// Verifies `files` as an artifact.
pub fn verify(files: ArtifactFiles, ctx: &VerifyContext<'_>) -> Result<VerifiedArtifact, VerifyError> {
    let manifest_sha256 = files.manifest_sha256().unwrap_or_default();
    let manifest_bytes = files
        .get(MANIFEST)
        .ok_or_else(|| VerifyError::Malformed(format!("{MANIFEST} is missing")))?;
    let sig_bytes = files
        .get(SIGNATURE)
        .ok_or_else(|| VerifyError::Malformed(format!("{SIGNATURE} is missing")))?;
    let manifest: Manifest = serde_json::from_slice(manifest_bytes)
        .map_err(|e| VerifyError::Malformed(format!("{MANIFEST}: {e}")))?;
    let sig: SignatureFile =
        serde_json::from_slice(sig_bytes).map_err(|e| VerifyError::Malformed(format!("{SIGNATURE}: {e}")))?;
    if sig.algorithm != "ed25519" {
        return Err(VerifyError::Malformed(format!(
            "{SIGNATURE}: algorithm `{}` is not ed25519",
            sig.algorithm
        )));
    }

    // 1. Signature, before believing anything the manifest says.
    let key = ctx
        .trust
        .key_for(&sig.key_id, KeyPurpose::ModelSigning, ctx.now_ms)
        .map_err(|e| match e {
            KeyRefusal::Unknown(id) => VerifyError::UnknownKey(id),
            KeyRefusal::Revoked(id) => VerifyError::RevokedKey(id),
            other => VerifyError::KeyNotUsable(other.to_string()),
        })?;
    let raw: [u8; 64] = hex::decode(&sig.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| VerifyError::BadSignature(sig.key_id.clone()))?;
    let signed = manifest
        .canonical_bytes()
        .map_err(|e| VerifyError::Malformed(format!("{MANIFEST} has no canonical form: {e}")))?;
    key.verify(&signed, &Signature::from_bytes(&raw))
        .map_err(|_| VerifyError::BadSignature(sig.key_id.clone()))?;

    // 2. Files: exactly the listed ones, with the listed hashes.
    for (name, expected) in &manifest.files {
        let bytes = files
            .get(name)
            .ok_or_else(|| VerifyError::MissingFile(name.clone()))?;
        let actual = hex::encode(Sha256::digest(bytes));
        if &actual != expected {
            return Err(VerifyError::HashMismatch {
                file: name.clone(),
                expected: expected.clone(),
                actual,
            });
        }
    }
    if let Some(extra) = files
        .0
        .keys()
        .find(|n| *n != MANIFEST && *n != SIGNATURE && !manifest.files.contains_key(*n))
    {
        return Err(VerifyError::ExtraFile(extra.clone()));
    }
    for head in ["ai1", "ai2"] {
        if !manifest.heads.contains_key(head) {
            return Err(VerifyError::Malformed(format!("head `{head}` is missing")));
        }
    }
    for (name, head) in &manifest.heads {
        for file in std::iter::once(&head.file).chain(head.native.as_ref()) {
            if !manifest.files.contains_key(file) {
                return Err(VerifyError::Malformed(format!(
                    "head `{name}` file `{file}` is not listed"
                )));
            }
        }
    }

    // 3. Features: the model's schema must be the one this build computes,
    //    and the shipped schema file must be the one the manifest names.
    if manifest.feature_schema_hash != ctx.feature_schema_hash {
        return Err(VerifyError::FeatureSchemaMismatch {
            model: manifest.feature_schema_hash.clone(),
            ours: ctx.feature_schema_hash.to_owned(),
        });
    }
    if let Some(schema) = files.get(FEATURE_SCHEMA) {
        let shipped = serde_json::from_slice::<mlcore_features::FeatureSchema>(schema)
            .and_then(|s| s.hash())
            .map_err(|e| VerifyError::Malformed(format!("{FEATURE_SCHEMA}: {e}")))?;
        if shipped != manifest.feature_schema_hash {
            return Err(VerifyError::FeatureSchemaMismatch {
                model: shipped,
                ours: ctx.feature_schema_hash.to_owned(),
            });
        }
    }

    // 4. Freeze.
    if ctx.now_ms >= manifest.expires_at_ms {
        return Err(VerifyError::Expired {
            expires_at_ms: manifest.expires_at_ms,
            now_ms: ctx.now_ms,
        });
    }

    // 5. Rollback.
    if let Some(highest) = ctx.highest_accepted {
        if manifest.version <= highest {
            let reason = match ctx.rollback {
                None => "no rollback authorisation".to_owned(),
                Some(auth) => match super::rollback::check(
                    auth,
                    ctx.trust,
                    &manifest.strategy,
                    &manifest.model_id,
                    manifest.version,
                    &manifest_sha256,
                    ctx.now_ms,
                ) {
                    Ok(()) => String::new(),
                    Err(why) => format!("rollback authorisation refused: {why}"),
                },
            };
            if !reason.is_empty() {
                return Err(VerifyError::Rollback {
                    version: manifest.version,
                    highest,
                    reason,
                });
            }
        }
    }
    Ok(VerifiedArtifact {
        manifest,
        files,
        key_id: sig.key_id,
    })
}

/// Fills in file hashes, writes `manifest.json` and signs it into
/// `manifest.sig`. `files` holds every artifact file except those two.
pub fn seal(
    mut manifest: Manifest,
    mut files: ArtifactFiles,
    key: &super::keys::SecretKeyFile,
) -> Result<(Manifest, ArtifactFiles), String> {
    files.0.remove(MANIFEST);
    files.0.remove(SIGNATURE);
    manifest.files = files
        .0
        .iter()
        .map(|(n, b)| (n.clone(), hex::encode(Sha256::digest(b))))
        .collect();
    let signed = manifest
        .canonical_bytes()
        .map_err(|e| format!("{MANIFEST} has no canonical form: {e}"))?;
    let signature = key.sign_hex(&signed)?;
    let pretty = serde_json::to_string_pretty(&manifest).map_err(|e| e.to_string())? + "\n";
    let sig = serde_json::json!({"key_id": key.key_id, "algorithm": "ed25519", "signature": signature});
    files.0.insert(MANIFEST.into(), pretty.into_bytes());
    files
        .0
        .insert(SIGNATURE.into(), (sig.to_string() + "\n").into_bytes());
    Ok((manifest, files))
}
