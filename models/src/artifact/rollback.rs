//! Rollback authorisations: the control plane's signed permission for a
//! consumer to accept a model version not above the one it runs.
//!
//! Without one, verification refuses any version ≤ the highest accepted, so
//! an old (possibly bad) file cannot be slipped in. With one, it must name
//! exactly that strategy, model id and version, be unexpired, and be signed by
//! a key trusted for `rollback`.

use ed25519_dalek::{Signature, Verifier};
pub use mlcore_contract::{RollbackAuthorization, RollbackGrant};

use super::keys::SecretKeyFile;
use super::trust::{KeyRefusal, TrustStore};
use mlcore_config::KeyPurpose;

/// The signed bytes of a grant: its canonical JSON (RFC 8785, JCS).
pub fn canonical_bytes(grant: &RollbackGrant) -> Result<Vec<u8>, String> {
    serde_json_canonicalizer::to_vec(grant).map_err(|e| format!("rollback grant cannot be serialised: {e}"))
}

/// Signs `grant` with `key`.
pub fn sign(grant: RollbackGrant, key: &SecretKeyFile) -> Result<RollbackAuthorization, String> {
    let signature = key.sign_hex(&canonical_bytes(&grant)?)?;
    Ok(RollbackAuthorization {
        grant,
        key_id: key.key_id.clone(),
        signature,
    })
}

/// Checks that `auth` is signed by a key trusted for rollbacks and allows
/// exactly `(strategy, model_id, version)` with that `manifest_sha256` at
/// `now_ms`. Where it goes back from (`grant.from_version`) and whether it
/// was used before is the consumer's to check: only it knows what it runs.
pub fn check(
    auth: &RollbackAuthorization,
    trust: &TrustStore,
    strategy: &str,
    model_id: &str,
    version: u64,
    manifest_sha256: &str,
    now_ms: u64,
) -> Result<(), String> {
    let key = trust
        .key_for(&auth.key_id, KeyPurpose::Rollback, now_ms)
        .map_err(|e: KeyRefusal| e.to_string())?;
    let sig_bytes: [u8; 64] = hex::decode(&auth.signature)
        .map_err(|e| format!("signature is not hex: {e}"))?
        .try_into()
        .map_err(|_| "signature must be 64 bytes".to_owned())?;
    key.verify(&canonical_bytes(&auth.grant)?, &Signature::from_bytes(&sig_bytes))
        .map_err(|_| "signature does not verify".to_owned())?;
    let g = &auth.grant;
    if g.strategy != strategy || g.model_id != model_id || g.version != version {
        return Err(format!(
            "it authorises {}/{} v{}, not {strategy}/{model_id} v{version}",
            g.strategy, g.model_id, g.version
        ));
    }
    if g.manifest_sha256 != manifest_sha256 {
        return Err(format!(
            "it authorises the manifest {}, this artifact's is {manifest_sha256}",
            g.manifest_sha256
        ));
    }
    if now_ms >= g.expires_at_ms {
        return Err(format!("it expired at {}", g.expires_at_ms));
    }
    Ok(())
}
