//! Model registry routes. Registering verifies the artifact; activation is a
//! two-person action (an `activate` ops request an approver decides through
//! `/v1/ops/requests/{id}/approve`); approvers reject models and release
//! rollback pins. Every mutating request, refused ones too, is audited.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use mlcore_config::Role;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{text_field, ApiError, ID_MAX, REASON_MAX};
use super::ops::bad_json;
use super::AppState;
use crate::approvals::{self, new_id};
use crate::registry::{self, Listing, PinReleased, Registered, Rejected};

const RECORD: &str = "model_registry";

/// `POST /v1/models` body: the artifact at `models_root/<strategy>/v<version>/`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// Strategy id.
    #[schema(min_length = 1, max_length = 128, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub strategy: String,
    /// Artifact version: a whole number (`7` or `7.0`, as JSON Schema's
    /// `integer` allows) up to 2^53, where every whole number is exact.
    #[schema(minimum = 1, maximum = 9_007_199_254_740_992_u64)]
    #[serde(deserialize_with = "whole_number")]
    pub version: u64,
}

/// JSON Schema counts `7.0` as an integer; serde's `u64` does not. Accepts
/// both, refusing fractions, negatives and what an f64 cannot hold exactly.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct Whole;
    impl serde::de::Visitor<'_> for Whole {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a whole number from 0 to 2^53")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
            if v <= 1 << 53 {
                Ok(v)
            } else {
                Err(E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
                .and_then(|v| self.visit_u64(v))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<u64, E> {
            const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
            if v.fract() == 0.0 && (0.0..=EXACT).contains(&v) {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // whole, 0..=2^53
                Ok(v as u64)
            } else {
                Err(E::invalid_value(serde::de::Unexpected::Float(v), &self))
            }
        }
    }
    d.deserialize_any(Whole)
}

/// Body of activate, reject and release.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    /// Why (not blank; no control characters but newlines and tabs).
    #[schema(
        min_length = 1,
        max_length = 2000,
        pattern = "^[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]*[^\\s\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F][^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]*$"
    )]
    pub reason: String,
}

pub(crate) fn reason_of(body: Result<Json<ReasonBody>, JsonRejection>) -> Result<String, ApiError> {
    let Json(b) = body.map_err(bad_json)?;
    text_field("reason", &b.reason, true, REASON_MAX)?;
    if b.reason.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "MODEL_REASON_MISSING",
            "a reason is required",
        ));
    }
    Ok(b.reason)
}

/// Audits a registry request's result (or its refusal) and hands it back.
async fn audited<T: serde::Serialize>(
    state: &AppState,
    who: &str,
    action: &str,
    scope: &str,
    request_id: &str,
    result: Result<T, ApiError>,
) -> Result<T, ApiError> {
    match result {
        Ok(v) => {
            let after = serde_json::to_value(&v).unwrap_or(Value::Null);
            state
                .record(RECORD, who, action, scope, after, "ok", request_id)
                .await?;
            Ok(v)
        }
        Err(e) => Err(state.refused(RECORD, who, action, scope, request_id, e).await),
    }
}

/// `GET /v1/models`.
#[utoipa::path(get, path = "/v1/models", security(("bearer" = [])),
    responses((status = 200, description = "every version with status, and what each daemon reports as loaded", body = Listing),
        (status = 401, description = "missing or unknown token", body = super::openapi::ErrorBody),
        (status = 403, description = "role lacking", body = super::openapi::ErrorBody)))]
pub async fn list(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<Listing>, ApiError> {
    state.reader(&headers)?;
    Ok(Json(registry::list(&state.services).await?))
}

/// `POST /v1/models`: register (verify) an artifact as a candidate.
#[utoipa::path(post, path = "/v1/models", request_body = RegisterBody, security(("bearer" = [])),
    responses(
        (status = 400, description = "malformed JSON, or a field with a control character", body = super::openapi::ErrorBody),
        (status = 201, description = "registered as candidate", body = Registered),
        (status = 403, description = "role lacking", body = super::openapi::ErrorBody),
        (status = 404, description = "no artifact folder for this version under models_root", body = super::openapi::ErrorBody),
        (status = 409, description = "already registered", body = super::openapi::ErrorBody),
        (status = 422, description = "unknown strategy, unreadable or refused artifact", body = super::openapi::ErrorBody)))]
pub async fn register(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<RegisterBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Registered>), ApiError> {
    let p = state.mutating(&headers, &[Role::Operator])?;
    let Json(body) = body.map_err(bad_json)?;
    let id = new_id();
    let scope = format!("{}/v{}", body.strategy, body.version);
    if let Err(e) = text_field("strategy", &body.strategy, false, ID_MAX) {
        return Err(state.refused(RECORD, &p.name, "register", &scope, &id, e).await);
    }
    let result = registry::register(&state.services, &p.name, &body.strategy, body.version, &id)
        .await
        .map_err(ApiError::from);
    let v = audited(&state, &p.name, "register", &scope, &id, result).await?;
    Ok((StatusCode::CREATED, Json(v)))
}

/// `POST /v1/models/{id}/activate`: asks for activation; an approver other
/// than the requester decides it through `/v1/ops/requests/{id}/approve`.
#[utoipa::path(post, path = "/v1/models/{id}/activate", request_body = ReasonBody, security(("bearer" = [])),
    params(("id" = String, Path, description = "model id")),
    responses(
        (status = 400, description = "malformed JSON, or a field with a control character", body = super::openapi::ErrorBody),
        (status = 202, description = "activation pending approval"),
        (status = 404, description = "no such model", body = super::openapi::ErrorBody),
        (status = 409, description = "not activatable, or the strategy is pinned", body = super::openapi::ErrorBody)))]
pub async fn activate(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(model_id): Path<String>,
    body: Result<Json<ReasonBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let p = state.mutating(&headers, &[Role::Operator])?;
    let id = new_id();
    if let Err(e) = text_field("id", &model_id, false, ID_MAX) {
        return Err(state
            .refused(RECORD, &p.name, "activate", &model_id, &id, e)
            .await);
    }
    let checked = async {
        let reason = reason_of(body)?;
        let model = registry::get(&state.services, &model_id).await?;
        registry::check_activatable(&state.services, &model).await?;
        Ok::<_, ApiError>((reason, model))
    }
    .await;
    let (reason, model) = match checked {
        Ok(x) => x,
        Err(e) => {
            return Err(state
                .refused(RECORD, &p.name, "activate", &model_id, &id, e)
                .await)
        }
    };
    let expires = approvals::store(
        &state.services,
        &id,
        "activate",
        &model.strategy,
        &reason,
        &p.name,
        Some(&model.id),
    )
    .await?;
    state
        .record(
            RECORD,
            &p.name,
            "activate",
            &model.id,
            json!({"status": "pending", "strategy": model.strategy, "version": model.version}),
            "pending approval",
            &id,
        )
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "status": "pending", "model_id": model.id, "expires_at_ms": expires})),
    ))
}

/// `POST /v1/models/{id}/reject` (approver).
#[utoipa::path(post, path = "/v1/models/{id}/reject", request_body = ReasonBody, security(("bearer" = [])),
    params(("id" = String, Path, description = "model id"), ("x-mlcore-totp" = Option<String>, Header, description = "the caller's one-time code (TOTP), required where control.yaml second_factor.required")),
    responses(
        (status = 400, description = "malformed JSON, or a field with a control character", body = super::openapi::ErrorBody),
        (status = 200, description = "rejected", body = Rejected),
        (status = 403, description = "role lacking, or the one-time code missing, wrong or used (AUTH_TOTP_*)", body = super::openapi::ErrorBody),
        (status = 404, description = "no such model", body = super::openapi::ErrorBody),
        (status = 409, description = "active, retired or already rejected", body = super::openapi::ErrorBody)))]
pub async fn reject(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(model_id): Path<String>,
    body: Result<Json<ReasonBody>, JsonRejection>,
) -> Result<Json<Rejected>, ApiError> {
    let p = state.mutating(&headers, &[Role::Approver])?;
    let id = new_id();
    if let Err(e) = text_field("id", &model_id, false, ID_MAX) {
        return Err(state.refused(RECORD, &p.name, "reject", &model_id, &id, e).await);
    }
    let result = async {
        state.second_factor(&headers, &p).await?;
        let reason = reason_of(body)?;
        Ok(registry::reject(&state.services, &model_id, &p.name, &reason, &id).await?)
    }
    .await;
    audited(&state, &p.name, "reject", &model_id, &id, result)
        .await
        .map(Json)
}

/// `POST /v1/models/pins/{strategy}/release` (approver): lets activations
/// through again after a rollback.
#[utoipa::path(post, path = "/v1/models/pins/{strategy}/release", request_body = ReasonBody, security(("bearer" = [])),
    params(("strategy" = String, Path, description = "strategy id"), ("x-mlcore-totp" = Option<String>, Header, description = "the caller's one-time code (TOTP), required where control.yaml second_factor.required")),
    responses(
        (status = 400, description = "malformed JSON, or a field with a control character", body = super::openapi::ErrorBody),
        (status = 200, description = "released", body = PinReleased),
        (status = 403, description = "role lacking, or the one-time code missing, wrong or used (AUTH_TOTP_*)", body = super::openapi::ErrorBody),
        (status = 409, description = "not pinned", body = super::openapi::ErrorBody)))]
pub async fn release_pin(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(strategy): Path<String>,
    body: Result<Json<ReasonBody>, JsonRejection>,
) -> Result<Json<PinReleased>, ApiError> {
    let p = state.mutating(&headers, &[Role::Approver])?;
    let id = new_id();
    if let Err(e) = text_field("strategy", &strategy, false, ID_MAX) {
        return Err(state
            .refused(RECORD, &p.name, "release_pin", &strategy, &id, e)
            .await);
    }
    let result = async {
        state.second_factor(&headers, &p).await?;
        reason_of(body)?;
        Ok(registry::release_pin(&state.services, &strategy, &id).await?)
    }
    .await;
    audited(&state, &p.name, "release_pin", &strategy, &id, result)
        .await
        .map(Json)
}
