//! Bearer tokens → principals, compared in constant time; roles per route.

use axum::http::{HeaderMap, StatusCode};
use mlcore_config::{ControlConfig, Credential, Role};
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// A caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Name recorded in the audit log.
    pub name: String,
    /// Roles held.
    pub roles: Vec<Role>,
    digest: [u8; 32],
}

impl Principal {
    /// Whether the principal holds any of `roles` (admin holds all).
    pub fn has_any(&self, roles: &[Role]) -> bool {
        self.roles.contains(&Role::Admin) || self.roles.iter().any(|r| roles.contains(r))
    }
}

/// Principals from `control.yaml`, tokens kept only as sha256 digests.
pub fn principals(cfg: &ControlConfig) -> Vec<Principal> {
    cfg.principals
        .iter()
        .filter_map(|p| {
            let digest: [u8; 32] = match &p.credential {
                Credential::Token { value } => Sha256::digest(value.expose().as_bytes()).into(),
                Credential::Sha256 { value } => hex::decode(value).ok()?.try_into().ok()?,
            };
            Some(Principal {
                name: p.name.clone(),
                roles: p.roles.clone(),
                digest,
            })
        })
        .collect()
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The principal whose token is in `Authorization: Bearer ...`. Every
/// principal is compared, so timing does not reveal which one matched.
pub fn authenticate(headers: &HeaderMap, all: &[Principal]) -> Result<Principal, ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "AUTH_MISSING", "missing bearer token"))?;
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let mut found = None;
    for p in all {
        if ct_eq(&p.digest, &digest) {
            found = Some(p.clone());
        }
    }
    found.ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "AUTH_INVALID", "unknown bearer token"))
}

/// Refuses unless `p` holds one of `roles`.
pub fn require(p: &Principal, roles: &[Role]) -> Result<(), ApiError> {
    if p.has_any(roles) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "AUTH_FORBIDDEN",
            format!("{} lacks a role this route requires", p.name),
        ))
    }
}
