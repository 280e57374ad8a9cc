//! The second factor of approvals and break-glass: a one-time code (RFC
//! 6238 TOTP — HMAC-SHA-1, 6 digits, 30 s steps, one step of clock skew
//! either way) from the secret each deciding principal enrolled
//! (`control.yaml` `principals[].totp`). Verified server-side; each code
//! is accepted once per principal (a replayed code, or an older one, is
//! refused), so a code read over a shoulder is spent once used.

use std::collections::HashMap;
use std::sync::Mutex;

use mlcore_config::{EnvSource, Principal};
use totp_rs::{Builder, Secret, Totp};

/// Why a second factor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecondFactorError {
    /// No code came with the request.
    #[error("this action needs a one-time code (TOTP) from your enrolled authenticator")]
    Missing,
    /// The principal has no enrolled secret.
    #[error("`{0}` has no TOTP secret enrolled")]
    NotEnrolled(String),
    /// The code is not the current one (nor one step either side).
    #[error("the one-time code is wrong or expired")]
    Invalid,
    /// The code (or a newer one) was used already.
    #[error("the one-time code was used already: wait for the next one")]
    Replayed,
}

/// An enrolled secret that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("principal `{principal}`: TOTP secret {reason}")]
pub struct EnrolmentError {
    /// Who.
    pub principal: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The enrolled secrets and the last step each principal used.
#[derive(Debug)]
pub struct SecondFactor {
    required: bool,
    enrolled: HashMap<String, Totp>,
    last_step: Mutex<HashMap<String, u64>>,
}

/// A TOTP of `base32` (at least 128 bits, as RFC 4226 asks).
fn totp(principal: &str, base32: &str) -> Result<Totp, EnrolmentError> {
    let bad = |reason: String| EnrolmentError {
        principal: principal.to_owned(),
        reason,
    };
    let bytes = Secret::try_from_base32(base32.trim()).map_err(|_| bad("is not base32 (RFC 4648)".into()))?;
    Builder::new()
        .with_secret(bytes)
        .build()
        .map_err(|e| bad(format!("cannot be used: {e}")))
}

impl SecondFactor {
    /// From `control.yaml`: `required`, and each principal's resolved
    /// `totp` secret.
    pub fn new(required: bool, principals: &[Principal]) -> Result<Self, EnrolmentError> {
        let mut enrolled = HashMap::new();
        for p in principals {
            if let Some(secret) = p.totp.as_ref().filter(|s| s.is_resolved()) {
                enrolled.insert(p.name.clone(), totp(&p.name, secret.expose())?);
            }
        }
        Ok(Self {
            required,
            enrolled,
            last_step: Mutex::new(HashMap::new()),
        })
    }

    /// For a process that did not resolve `control.yaml`'s secrets (the
    /// break-glass CLI): `principal`'s secret read from the variable its
    /// `totp` reference names.
    pub fn for_principal(
        required: bool,
        principal: &Principal,
        vars: &dyn EnvSource,
    ) -> Result<Self, EnrolmentError> {
        let mut enrolled = HashMap::new();
        let secret = principal.totp.as_ref().and_then(|s| {
            if s.is_resolved() {
                Some(s.expose().to_owned())
            } else {
                s.reference().and_then(|var| vars.var(var))
            }
        });
        if let Some(secret) = secret {
            enrolled.insert(principal.name.clone(), totp(&principal.name, &secret)?);
        }
        Ok(Self {
            required,
            enrolled,
            last_step: Mutex::new(HashMap::new()),
        })
    }

    /// Whether the environment requires a second factor.
    pub fn required(&self) -> bool {
        self.required
    }

    /// The newest step `principal` used (what a process that starts anew
    /// must remember elsewhere to refuse a replay).
    pub fn last_step(&self, principal: &str) -> Option<u64> {
        let last = self
            .last_step
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        last.get(principal).copied()
    }

    /// Remembers that `principal` used `step` (read back from where a
    /// previous process kept it).
    pub fn seed(&self, principal: &str, step: u64) {
        let mut last = self
            .last_step
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = last.entry(principal.to_owned()).or_insert(step);
        *entry = (*entry).max(step);
    }

    /// Checks `code` for `principal` at `now_s` (seconds since the epoch);
    /// `Ok` without a check when the environment does not require one.
    pub fn verify(&self, principal: &str, code: Option<&str>, now_s: u64) -> Result<(), SecondFactorError> {
        if !self.required {
            return Ok(());
        }
        let code = code
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .ok_or(SecondFactorError::Missing)?;
        let totp = self
            .enrolled
            .get(principal)
            .ok_or_else(|| SecondFactorError::NotEnrolled(principal.to_owned()))?;
        let step = totp.check(code, now_s).ok_or(SecondFactorError::Invalid)?;
        let mut last = self
            .last_step
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.get(principal).is_some_and(|used| step <= *used) {
            return Err(SecondFactorError::Replayed);
        }
        last.insert(principal.to_owned(), step);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B's SHA-1 secret ("12345678901234567890"), base32.
    const RFC_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    fn principal(name: &str, totp: Option<&str>) -> Principal {
        Principal {
            name: name.into(),
            roles: vec![mlcore_config::Role::Approver],
            credential: mlcore_config::Credential::Sha256 {
                value: "00".repeat(32),
            },
            totp: totp.map(mlcore_config::Secret::literal),
        }
    }

    #[test]
    fn rfc_6238_vectors_once_each_and_never_older() {
        let sf = SecondFactor::new(true, &[principal("ann", Some(RFC_SECRET))]).unwrap();
        // RFC 6238 appendix B, SHA-1, the last 6 digits of the 8-digit codes.
        assert_eq!(sf.verify("ann", Some("287082"), 59), Ok(()));
        assert_eq!(
            sf.verify("ann", Some("287082"), 59),
            Err(SecondFactorError::Replayed)
        );
        assert_eq!(sf.verify("ann", Some("081804"), 1_111_111_109), Ok(()));
        // One step late is still accepted; an older step than one used is not.
        assert_eq!(sf.verify("ann", Some("050471"), 1_111_111_111 + 30), Ok(()));
        assert_eq!(
            sf.verify("ann", Some("081804"), 1_111_111_111),
            Err(SecondFactorError::Replayed)
        );
        assert_eq!(
            sf.verify("ann", Some("000000"), 1_234_567_890),
            Err(SecondFactorError::Invalid)
        );
        assert_eq!(
            sf.verify("ann", None, 1_234_567_890),
            Err(SecondFactorError::Missing)
        );
        assert_eq!(
            sf.verify("bob", Some("005924"), 1_234_567_890),
            Err(SecondFactorError::NotEnrolled("bob".into()))
        );
    }

    #[test]
    fn not_required_checks_nothing_and_bad_secrets_are_named() {
        let sf = SecondFactor::new(false, &[]).unwrap();
        assert_eq!(sf.verify("anyone", None, 0), Ok(()));
        let err = SecondFactor::new(true, &[principal("ann", Some("not base32!"))]).unwrap_err();
        assert!(
            err.to_string().contains("`ann`") && err.to_string().contains("base32"),
            "{err}"
        );
        let short = SecondFactor::new(true, &[principal("ann", Some("GEZDGNBV"))]).unwrap_err();
        assert!(short.to_string().contains("cannot be used"), "{short}");
    }
}
