//! Signed model artifacts.
//!
//! An artifact is a folder (or a tar of one): one ONNX file per head (`ai1`
//! up-move probability, `ai2` risk score, optional `ai3` meta-label),
//! `feature_schema.json`, `manifest.json` (what it is, what it was trained on,
//! sha256 of every file) and `manifest.sig` (ed25519 over the canonical
//! manifest bytes, with a key id).
//!
//! - [`files`]: reading a folder or tar into memory. Verification and session
//!   creation use the same bytes, so nothing can change in between.
//! - [`manifest`]: the manifest and its canonical bytes.
//! - [`keys`]: key files, generation, signing.
//! - [`trust`]: the trusted keys from `trust.yaml`.
//! - [`verify`]: every check, each with its own error.
//! - [`rollback`]: the control plane's signed permission to go back a version.

pub mod files;
pub mod keys;
pub mod manifest;
pub mod rollback;
pub mod trust;
pub mod verify;

pub use files::ArtifactFiles;
pub use keys::{KeyFileError, PublicKeyFile, SecretKeyFile};
pub use manifest::{HeadSpec, Manifest, ThetaParams, TrainingWindow};
pub use rollback::RollbackAuthorization;
pub use trust::{SharedTrust, TrustStore};
pub use verify::{seal, verify, VerifiedArtifact, VerifyContext, VerifyError};

/// Manifest file name.
pub const MANIFEST: &str = "manifest.json";
/// Signature file name.
pub const SIGNATURE: &str = "manifest.sig";
/// Feature schema file name.
pub const FEATURE_SCHEMA: &str = "feature_schema.json";
/// Rows of the model's own validation data (little-endian f32, row-major,
/// the feature schema's width), on which a native head must agree with ONNX
/// Runtime before it may serve.
pub const VALIDATION_ROWS: &str = "validation_rows.f32";
