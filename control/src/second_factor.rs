//! The second factor of approvals and break-glass: a one-time code (RFC
//! 6238 TOTP — HMAC-SHA-1, 6 digits, 30 s steps, one step of clock skew
//! either way) from the secret each deciding principal enrolled
//! (`control.yaml` `principals[].totp`). Verified server-side; each code
//! is accepted once per principal: the step it matched is spent in Redis
//! through the guard (`mlcore_spend_code_v2`, atomic, shared by the API
//! and break-glass, surviving restarts), and a replayed or older code is
//! refused.

use std::collections::HashMap;

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
    /// Its use cannot be recorded (Redis): refused, as it could be replayed.
    #[error("the one-time code's use cannot be recorded ({0}): refused")]
    Unrecorded(String),
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

/// The enrolled secrets.
#[derive(Debug)]
pub struct SecondFactor {
    required: bool,
    enrolled: HashMap<String, Totp>,
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
        Ok(Self { required, enrolled })
    }

    /// For a process that did not resolve `control.yaml`'s secrets (the
    /// break-glass CLI): `principal`'s secret read from the variable its
    /// `totp` reference names.
    pub fn for_principal(
        required: bool,
        principal: &Principal,
        vars: &dyn EnvSource,
    ) -> Result<Self, EnrolmentError> {
        let secret = principal.totp.as_ref().and_then(|s| {
            if s.is_resolved() {
                Some(s.clone())
            } else {
                s.reference()
                    .and_then(|var| vars.var(var))
                    .map(|v| mlcore_config::Secret::literal(&v))
            }
        });
        let resolved = Principal {
            totp: secret,
            ..principal.clone()
        };
        Self::new(required, std::slice::from_ref(&resolved))
    }

    /// Whether the environment requires a second factor.
    pub fn required(&self) -> bool {
        self.required
    }

    /// Checks `code` for `principal` at `now_s` (seconds since the epoch):
    /// the time step it matched, which the caller must spend (once) before
    /// acting; `None` when the environment does not require a code.
    pub fn check(
        &self,
        principal: &str,
        code: Option<&str>,
        now_s: u64,
    ) -> Result<Option<u64>, SecondFactorError> {
        if !self.required {
            return Ok(None);
        }
        let code = code
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .ok_or(SecondFactorError::Missing)?;
        let totp = self
            .enrolled
            .get(principal)
            .ok_or_else(|| SecondFactorError::NotEnrolled(principal.to_owned()))?;
        totp.check(code, now_s)
            .map(Some)
            .ok_or(SecondFactorError::Invalid)
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
    fn rfc_6238_vectors_give_their_steps() {
        let sf = SecondFactor::new(true, &[principal("ann", Some(RFC_SECRET))]).unwrap();
        // RFC 6238 appendix B, SHA-1, the last 6 digits of the 8-digit codes.
        assert_eq!(sf.check("ann", Some("287082"), 59), Ok(Some(1)));
        assert_eq!(
            sf.check("ann", Some("081804"), 1_111_111_109),
            Ok(Some(37_037_036))
        );
        // One step late is still accepted, and names its own step.
        assert_eq!(
            sf.check("ann", Some("050471"), 1_111_111_111 + 30),
            Ok(Some(37_037_037))
        );
        assert_eq!(
            sf.check("ann", Some("050471"), 1_111_111_111 + 90),
            Err(SecondFactorError::Invalid)
        );
        assert_eq!(
            sf.check("ann", Some("000000"), 1_234_567_890),
            Err(SecondFactorError::Invalid)
        );
        assert_eq!(
            sf.check("ann", None, 1_234_567_890),
            Err(SecondFactorError::Missing)
        );
        assert_eq!(
            sf.check("bob", Some("005924"), 1_234_567_890),
            Err(SecondFactorError::NotEnrolled("bob".into()))
        );
    }

    #[test]
    fn not_required_checks_nothing_and_bad_secrets_are_named() {
        let sf = SecondFactor::new(false, &[]).unwrap();
        assert_eq!(sf.check("anyone", None, 0), Ok(None));
        let err = SecondFactor::new(true, &[principal("ann", Some("not base32!"))]).unwrap_err();
        assert!(
            err.to_string().contains("`ann`") && err.to_string().contains("base32"),
            "{err}"
        );
        let short = SecondFactor::new(true, &[principal("ann", Some("GEZDGNBV"))]).unwrap_err();
        assert!(short.to_string().contains("cannot be used"), "{short}");
    }
}
