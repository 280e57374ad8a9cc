//! `trust.yaml`: which keys may sign model artifacts and rollback
//! authorisations, when, and which are revoked.

use serde::{Deserialize, Serialize};

/// The whole of `trust.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// Trusted public keys.
    pub keys: Vec<TrustedKeyConfig>,
    /// Key ids that are no longer trusted, whatever their window says.
    pub revoked: Vec<String>,
}

/// One trusted public key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKeyConfig {
    /// Key id, as written in signatures.
    pub id: String,
    /// ed25519 public key, 64 hex digits.
    pub public_key: String,
    /// What the key may sign.
    pub purposes: Vec<KeyPurpose>,
    /// First day the key is valid (`YYYY-MM-DD`, UTC, inclusive).
    pub valid_from: String,
    /// Last day the key is valid (`YYYY-MM-DD`, UTC, inclusive).
    pub valid_until: String,
}

/// What a key may sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyPurpose {
    /// Model artifact manifests.
    ModelSigning,
    /// Rollback authorisations (the control plane's key).
    Rollback,
    /// Checkpoints of the audit log's head (the control plane's key).
    AuditCheckpoint,
}
