//! Rollback authorisations: the control plane's signed permission for a
//! consumer to accept a model version not above the one it runs.
//!
//! Without one, verification refuses any version ≤ the highest accepted, so
//! an old (possibly bad) file cannot be slipped in. With one, it must name
//! exactly that strategy, model id and version, be unexpired, and be signed by
//! a key trusted for `rollback`.

use ed25519_dalek::{Signature, Verifier};
use serde::{Deserialize, Serialize};

use super::keys::SecretKeyFile;
use super::trust::{KeyRefusal, TrustStore};
use crate::config::KeyPurpose;

/// The signed fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackGrant {
    /// Strategy.
    pub strategy: String,
    /// Model id allowed back.
    pub model_id: String,
    /// Exact version allowed back.
    pub version: u64,
    /// When issued, ms since the epoch.
    pub issued_at_ms: u64,
    /// Not usable after this, ms since the epoch.
    pub expires_at_ms: u64,
    /// Control-plane request that approved it.
    pub request_id: String,
}

/// A grant with its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackAuthorization {
    /// What is allowed.
    pub grant: RollbackGrant,
    /// Signing key id.
    pub key_id: String,
    /// ed25519 over the grant's canonical JSON, hex.
    pub signature: String,
}

impl RollbackGrant {
    fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_value(self)
            .map(|v| v.to_string().into_bytes())
            .unwrap_or_default()
    }

    /// Signs the grant.
    pub fn sign(self, key: &SecretKeyFile) -> Result<RollbackAuthorization, String> {
        let signature = key.sign_hex(&self.canonical_bytes())?;
        Ok(RollbackAuthorization {
            grant: self,
            key_id: key.key_id.clone(),
            signature,
        })
    }
}

impl RollbackAuthorization {
    /// Checks the authorisation allows exactly `(strategy, model_id, version)` at `now_ms`.
    pub fn check(
        &self,
        trust: &TrustStore,
        strategy: &str,
        model_id: &str,
        version: u64,
        now_ms: u64,
    ) -> Result<(), String> {
        let key = trust
            .key_for(&self.key_id, KeyPurpose::Rollback, now_ms)
            .map_err(|e: KeyRefusal| e.to_string())?;
        let sig_bytes: [u8; 64] = hex::decode(&self.signature)
            .map_err(|e| format!("signature is not hex: {e}"))?
            .try_into()
            .map_err(|_| "signature must be 64 bytes".to_owned())?;
        key.verify(&self.grant.canonical_bytes(), &Signature::from_bytes(&sig_bytes))
            .map_err(|_| "signature does not verify".to_owned())?;
        let g = &self.grant;
        if g.strategy != strategy || g.model_id != model_id || g.version != version {
            return Err(format!(
                "it authorises {}/{} v{}, not {strategy}/{model_id} v{version}",
                g.strategy, g.model_id, g.version
            ));
        }
        if now_ms >= g.expires_at_ms {
            return Err(format!("it expired at {}", g.expires_at_ms));
        }
        Ok(())
    }
}
