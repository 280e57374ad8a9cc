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
}

impl ApiError {
    /// An error without details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: serde_json::Value::Null,
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"code": self.code, "message": self.message, "details": self.details});
        (self.status, Json(body)).into_response()
    }
}
