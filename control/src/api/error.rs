//! One error type for every route: `{code, message, details}` with a stable
//! machine code and no internals.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. `OPS_APPROVAL_SELF`.
    pub code: &'static str,
    /// Human message.
    pub message: String,
    /// Extra structured detail.
    pub details: serde_json::Value,
    /// The handler audited this refusal (the edge then does not count it).
    pub audited: bool,
}

impl ApiError {
    /// An error without details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: serde_json::Value::Null,
            audited: false,
        }
    }

    /// An internal failure: logged by the caller, opaque to the client.
    pub fn internal(what: &str) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            format!("internal error while {what}"),
        )
    }
}

/// Longest id, scope or action a request may carry, in characters.
pub const ID_MAX: usize = 128;
/// Longest reason a request may carry, in characters.
pub const REASON_MAX: usize = 2000;

/// The control characters a multi-line field (a reason) may hold.
fn layout_char(c: char) -> bool {
    matches!(c, '\n' | '\t' | '\r')
}

/// Refuses a request's text field that holds a control character (NUL
/// above all: PostgreSQL cannot store it, and no id or reason needs one)
/// or is longer than `max` characters: `400 REQUEST_FIELD_INVALID` naming
/// the field, before anything is written. Multi-line fields (reasons) may
/// hold newlines and tabs.
pub fn text_field(field: &str, value: &str, multiline: bool, max: usize) -> Result<(), ApiError> {
    let invalid = |message: String| {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "REQUEST_FIELD_INVALID",
            message,
        ))
    };
    if let Some(c) = value
        .chars()
        .find(|c| c.is_control() && !(multiline && layout_char(*c)))
    {
        return invalid(format!(
            "`{field}` holds the control character U+{:04X}",
            u32::from(c)
        ));
    }
    if value.chars().count() > max {
        return invalid(format!("`{field}` is longer than {max} characters"));
    }
    Ok(())
}

/// `s` with every control character but newlines and tabs replaced, for
/// the audit log of a refused request (whose fields are not trusted).
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && !layout_char(c) {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"code": self.code, "message": self.message, "details": self.details});
        let mut resp = (self.status, Json(body)).into_response();
        resp.extensions_mut().insert(super::edge::ErrorCode(self.code));
        if self.audited {
            resp.extensions_mut().insert(super::edge::Audited);
        }
        resp
    }
}

impl From<crate::registry::RegistryError> for ApiError {
    fn from(e: crate::registry::RegistryError) -> Self {
        use crate::registry::{RegistryCode as C, RegistryError as E};
        match e {
            E::Refused {
                code,
                message,
                details,
            } => {
                let status = match code {
                    C::NotFound | C::ArtifactNotFound => StatusCode::NOT_FOUND,
                    C::StrategyUnknown
                    | C::ArtifactUnreadable
                    | C::VerifyFailed
                    | C::ArtifactMisplaced
                    | C::ChallengeLost => StatusCode::UNPROCESSABLE_ENTITY,
                    C::Exists
                    | C::NotActivatable
                    | C::Pinned
                    | C::NotRejectable
                    | C::NotPinned
                    | C::RollbackNothingActive
                    | C::RollbackNoPrevious => StatusCode::CONFLICT,
                    C::TrustUnusable | C::RollbackKeyUnusable => StatusCode::INTERNAL_SERVER_ERROR,
                };
                let mut err = Self::new(status, code.as_str(), message);
                err.details = details;
                err
            }
            E::Redis(e) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "MODEL_REDIS_UNAVAILABLE",
                format!("Redis: {e}; nothing was changed"),
            ),
            E::Db { during, source } => {
                tracing::error!(during, error = %source, "registry database error");
                Self::internal(during)
            }
            E::Task(during) => Self::internal(during),
        }
    }
}

impl From<crate::ops::OpsError> for ApiError {
    fn from(e: crate::ops::OpsError) -> Self {
        use crate::ops::OpsError as E;
        match e {
            E::UnknownScope(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "OPS_SCOPE_UNKNOWN",
                e.to_string(),
            ),
            E::Redis(e) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "OPS_REDIS_UNAVAILABLE",
                format!("Redis: {e}"),
            ),
            E::Conflict {
                ref applied,
                ref conflicts,
            } => {
                let mut err = Self::new(StatusCode::CONFLICT, "OPS_CONFLICT", e.to_string());
                let mut details = serde_json::Map::new();
                for (s, c) in applied {
                    details.insert(s.clone(), serde_json::to_value(c).unwrap_or_default());
                }
                for (s, v) in conflicts {
                    details.insert(s.clone(), serde_json::json!({ "conflict": v }));
                }
                err.details = serde_json::Value::Object(details);
                err
            }
        }
    }
}

impl From<crate::approvals::ApprovalError> for ApiError {
    fn from(e: crate::approvals::ApprovalError) -> Self {
        use crate::approvals::ApprovalError as E;
        match e {
            E::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "OPS_REQUEST_NOT_FOUND", e.to_string()),
            E::Decided { .. } => Self::new(StatusCode::CONFLICT, "OPS_REQUEST_DECIDED", e.to_string()),
            E::Expired(_) => Self::new(StatusCode::CONFLICT, "OPS_REQUEST_EXPIRED", e.to_string()),
            E::SelfApproval => Self::new(StatusCode::FORBIDDEN, "OPS_APPROVAL_SELF", e.to_string()),
            E::Db { during, source } => {
                tracing::error!(during, error = %source, "approvals database error");
                Self::internal(during)
            }
        }
    }
}

impl From<crate::retrain::RetrainError> for ApiError {
    fn from(e: crate::retrain::RetrainError) -> Self {
        use crate::retrain::RetrainError as E;
        match e {
            E::UnknownStrategy(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "RETRAIN_STRATEGY_UNKNOWN",
                e.to_string(),
            ),
            E::Busy(_) => Self::new(StatusCode::CONFLICT, "RETRAIN_BUSY", e.to_string()),
            E::NoRun(_) => Self::new(StatusCode::NOT_FOUND, "RETRAIN_NOT_FOUND", e.to_string()),
            E::Registry(r) => r.into(),
            E::Flow(f) => {
                // The server's state cannot serve the request (a missing
                // dataset, an unreadable key): a conflict with how it is
                // set up, named by the configuration key rather than a
                // server path (the log has the path).
                tracing::warn!(error = %f, "a retraining run could not start");
                Self::new(
                    StatusCode::CONFLICT,
                    "RETRAIN_UNAVAILABLE",
                    "retraining cannot start here: control.yaml retrain's dataset or signing key is unusable (the server log says which)",
                )
            }
        }
    }
}

impl From<crate::config_changes::ConfigChangeError> for ApiError {
    fn from(e: crate::config_changes::ConfigChangeError) -> Self {
        use crate::config_changes::ConfigChangeError as E;
        let status = match &e {
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::NotAuthor { .. } | E::SelfApproval => StatusCode::FORBIDDEN,
            E::Edit { .. } | E::NoChange | E::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            E::WrongState { .. }
            | E::AlreadyApproved(_)
            | E::WindowClosed { .. }
            | E::ApplyPending(_)
            | E::RiskChanged { .. }
            | E::Concurrent(_)
            | E::FastPathLost(_)
            | E::NotApplied { .. }
            | E::Store(crate::config_changes::StoreError::Conflict(_))
            | E::Store(crate::config_changes::StoreError::Seed { .. }) => StatusCode::CONFLICT,
            E::Store(_) | E::Deploy { .. } | E::Db { .. } | E::Audit(_) | E::Task(_) => {
                tracing::error!(error = %e, "config change request failed");
                return Self::internal("handling the config change request");
            }
        };
        let mut err = Self::new(status, e.code(), e.to_string());
        if let E::Invalid(problems) = &e {
            // Each problem with the loader's own CONFIG_* code, file and key.
            err.details = serde_json::json!({
                "problems": problems.iter().map(|p| serde_json::json!({
                    "code": p.code.as_str(),
                    "file": p.file.display().to_string(),
                    "key": p.key,
                    "message": p.message,
                })).collect::<Vec<_>>()
            });
        }
        err
    }
}
