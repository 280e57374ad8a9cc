//! Ops routes: safety actions (`halt`, `reduce_only`) apply at once for an
//! operator; `flatten`, `resume` and `rollback` wait for a second principal
//! with `approver`. The mode changes are `crate::ops`'s, the waiting
//! requests `crate::approvals`'; every mutating request — refused ones
//! too — is audited.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use mlcore_config::{Role, Severity};
use mlcore_contract::OpsMode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{text_field, ApiError, ID_MAX, REASON_MAX};
use super::AppState;
use crate::approvals::{self, Verdict};
use crate::ops::{self, OpsAction, Scope, StrategyStatus};
use crate::registry::Activation;

/// Audit record type of ops requests.
const RECORD: &str = "ops_request";

/// `POST /v1/ops/requests` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpsRequestBody {
    /// `halt | reduce_only | flatten | resume | rollback`.
    #[schema(min_length = 1, max_length = 128, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub action: String,
    /// A strategy id or `global`.
    #[schema(min_length = 1, max_length = 128, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub scope: String,
    /// Why (not blank; no control characters but newlines and tabs).
    #[schema(
        min_length = 1,
        max_length = 2000,
        pattern = "^[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]*[^\\s\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F][^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]*$"
    )]
    pub reason: String,
}

/// A malformed body as `{code, message}`.
pub(crate) fn bad_json(r: JsonRejection) -> ApiError {
    let status = r.status();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "REQUEST_TOO_LARGE",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "REQUEST_NOT_JSON",
        _ => "REQUEST_MALFORMED",
    };
    ApiError::new(status, code, r.body_text())
}

/// Info alert for an applied mode change (fire and forget).
fn mode_alert(state: &AppState, scope: &str, mode: OpsMode, actor: &str, reason: &str) {
    state.services.alerts.raise(crate::alerts::Alert {
        severity: Severity::Info,
        kind: "ops_mode_change".into(),
        scope: scope.to_owned(),
        summary: format!("{scope} set to {mode} by {actor}: {reason}"),
        details: json!({"mode": mode.as_str(), "actor": actor}),
        resolve: false,
    });
}

/// The body checked: a known action, a scope of the universe, a reason.
fn checked(state: &AppState, body: &OpsRequestBody) -> Result<(OpsAction, Scope), ApiError> {
    text_field("action", &body.action, false, ID_MAX)?;
    text_field("scope", &body.scope, false, ID_MAX)?;
    text_field("reason", &body.reason, true, REASON_MAX)?;
    let action: OpsAction = body
        .action
        .parse()
        .map_err(|e: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "OPS_ACTION_UNKNOWN", e))?;
    let scope = Scope::parse(&state.services, &body.scope)?;
    if body.reason.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "OPS_REASON_MISSING",
            "a reason is required",
        ));
    }
    if action == OpsAction::Rollback && scope == Scope::Global {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "OPS_ROLLBACK_SCOPE",
            "rollback applies to one strategy, not global",
        ));
    }
    Ok((action, scope))
}

/// `POST /v1/ops/requests`.
#[utoipa::path(post, path = "/v1/ops/requests", request_body = OpsRequestBody, security(("bearer" = [])),
    responses(
        (status = 201, description = "halt / reduce_only applied at once (operator)"),
        (status = 202, description = "flatten / resume / rollback pending approval"),
        (status = 400, description = "a field with a control character", body = super::openapi::ErrorBody),
        (status = 401, description = "missing or unknown token", body = super::openapi::ErrorBody),
        (status = 403, description = "role lacking", body = super::openapi::ErrorBody),
        (status = 409, description = "compare-and-set conflict, or nothing to roll back to", body = super::openapi::ErrorBody),
        (status = 413, description = "body too large", body = super::openapi::ErrorBody),
        (status = 422, description = "unknown action or scope, missing reason", body = super::openapi::ErrorBody),
        (status = 429, description = "rate limited", body = super::openapi::ErrorBody),
        (status = 503, description = "Redis unavailable", body = super::openapi::ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<OpsRequestBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let p = state.mutating(&headers, &[Role::Operator])?;
    let Json(body) = body.map_err(bad_json)?;
    let id = approvals::new_id();
    let (action, scope) = match checked(&state, &body) {
        Ok(x) => x,
        Err(e) => {
            return Err(state
                .refused(RECORD, &p.name, &body.action, &body.scope, &id, e)
                .await)
        }
    };
    if action == OpsAction::Rollback {
        // Re-activates the previous active version: there must be one
        // (checked again on approval).
        if let Err(e) = crate::registry::rollback_target(&state.services, scope.as_str()).await {
            return Err(state
                .refused(RECORD, &p.name, action.as_str(), scope.as_str(), &id, e.into())
                .await);
        }
    }
    let Some(mode) = action.target_mode().filter(|_| action.applies_at_once()) else {
        return pending(&state, &p.name, action, &scope, &body.reason, &id).await;
    };
    // Safety actions: an operator applies them at once.
    let result = ops::apply(&state.services, &scope, mode, &body.reason, &p.name, &id)
        .await
        .map_err(ApiError::from);
    let (after, label) = match &result {
        Ok(v) => (json!(v), "ok".to_owned()),
        Err(e) => (e.details.clone(), format!("refused: {}", e.code)),
    };
    state
        .record(
            RECORD,
            &p.name,
            action.as_str(),
            scope.as_str(),
            after.clone(),
            &label,
            &id,
        )
        .await?;
    result?;
    mode_alert(&state, scope.as_str(), mode, &p.name, &body.reason);
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "status": "applied", "result": after})),
    ))
}

/// Stores an ops request that waits for a second principal, audited.
async fn pending(
    state: &AppState,
    who: &str,
    action: OpsAction,
    scope: &Scope,
    reason: &str,
    id: &str,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let expires = approvals::store(
        &state.services,
        id,
        action.as_str(),
        scope.as_str(),
        reason,
        who,
        None,
    )
    .await?;
    state
        .record(
            RECORD,
            who,
            action.as_str(),
            scope.as_str(),
            json!({"status": "pending"}),
            "pending approval",
            id,
        )
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "status": "pending", "expires_at_ms": expires})),
    ))
}

/// `POST /v1/ops/requests/{id}/approve` and `/reject`.
#[utoipa::path(post, path = "/v1/ops/requests/{id}/{verdict}", security(("bearer" = [])),
    params(("id" = String, Path, description = "request id"), ("verdict" = String, Path, description = "approve or reject"), ("x-mlcore-totp" = Option<String>, Header, description = "the caller's one-time code (TOTP), required where control.yaml second_factor.required")),
    responses(
        (status = 400, description = "a field with a control character", body = super::openapi::ErrorBody),
        (status = 200, description = "applied or rejected"),
        (status = 401, description = "missing or unknown token", body = super::openapi::ErrorBody),
        (status = 403, description = "self-approval, role lacking, or the one-time code missing, wrong or used (AUTH_TOTP_*)", body = super::openapi::ErrorBody),
        (status = 404, description = "no such request or verdict", body = super::openapi::ErrorBody),
        (status = 409, description = "already decided, expired, or conflict", body = super::openapi::ErrorBody),
        (status = 429, description = "rate limited", body = super::openapi::ErrorBody),
        (status = 503, description = "Redis unavailable", body = super::openapi::ErrorBody)))]
pub async fn decide(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, verdict)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let p = state.mutating(&headers, &[Role::Approver])?;
    if let Err(e) = text_field("id", &id, false, ID_MAX) {
        let what = format!("{verdict} ?");
        return Err(state.refused(RECORD, &p.name, &what, "?", &id, e).await);
    }
    let Ok(verdict) = verdict.parse::<Verdict>() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ROUTE_NOT_FOUND",
            "use /approve or /reject",
        ));
    };
    let svc = &state.services;
    let req = approvals::get(svc, &id).await?;
    let what = format!("{} {}", verdict.as_str(), req.action);
    if let Err(e) = state.second_factor(&headers, &p).await {
        return Err(state.refused(RECORD, &p.name, &what, &req.scope, &id, e).await);
    }
    if let Err(e) = approvals::claim(svc, &req, verdict, &p.name).await {
        return Err(state
            .refused(RECORD, &p.name, &what, &req.scope, &id, e.into())
            .await);
    }
    if verdict == Verdict::Reject {
        state
            .record(
                RECORD,
                &p.name,
                &what,
                &req.scope,
                json!({"status": "rejected"}),
                "ok",
                &id,
            )
            .await?;
        return Ok(Json(json!({"id": id, "status": "rejected"})));
    }
    let actor = format!("{}+{}", req.requested_by, p.name);
    let action = req.action.parse::<OpsAction>().ok();
    let result: Result<Value, ApiError> = match (req.action.as_str(), action) {
        ("activate", _) => activate_target(&state, req.target.as_deref(), &p.name, &actor, &id).await,
        (_, Some(OpsAction::Rollback)) => rollback(&state, &req.scope, &actor, &id).await,
        (_, Some(a)) => match (a.target_mode(), Scope::parse(svc, &req.scope)) {
            (Some(mode), Ok(scope)) => ops::apply(svc, &scope, mode, &req.reason, &actor, &id)
                .await
                .map(|v| json!(v))
                .map_err(ApiError::from),
            (_, Err(e)) => Err(e.into()),
            (None, _) => Err(ApiError::internal("mapping the action")),
        },
        (_, None) => Err(ApiError::internal("mapping the action")),
    };
    let (after, label) = match &result {
        Ok(v) => (v.clone(), "ok".to_owned()),
        Err(e) => (e.details.clone(), format!("refused: {}", e.code)),
    };
    // The audit record below matters more than the request's own row: a
    // failure here is logged, never a reason to leave the change unaudited.
    if let Err(e) = approvals::finish(svc, &id, result.is_ok(), &after).await {
        tracing::error!(request = %id, error = %e, "could not record how an approved request ended");
    }
    state
        .record(
            RECORD,
            &p.name,
            &format!("approve {}", req.action),
            &req.scope,
            after.clone(),
            &label,
            &id,
        )
        .await?;
    result?;
    match action.and_then(OpsAction::target_mode) {
        Some(mode) => mode_alert(&state, &req.scope, mode, &actor, &req.reason),
        None => model_alert(&state, &req.scope, &req.action, &actor, &req.reason, &after),
    }
    Ok(Json(json!({"id": id, "status": "applied", "result": after})))
}

/// Approves and activates the model an `activate` request names.
async fn activate_target(
    state: &AppState,
    target: Option<&str>,
    approver: &str,
    actor: &str,
    request_id: &str,
) -> Result<Value, ApiError> {
    let svc = &state.services;
    let model_id = target.ok_or_else(|| ApiError::internal("reading the request's model"))?;
    let model = crate::registry::get(svc, model_id).await?;
    crate::registry::check_activatable(svc, &model).await?;
    crate::registry::approve(svc, &model, approver, request_id).await?;
    let done = crate::registry::activate(svc, &model, actor, request_id, Activation::Normal).await?;
    Ok(json!(done))
}

/// Re-activates the previous active version of `strategy`, pinned.
async fn rollback(
    state: &AppState,
    strategy: &str,
    actor: &str,
    request_id: &str,
) -> Result<Value, ApiError> {
    let svc = &state.services;
    let (_, previous) = crate::registry::rollback_target(svc, strategy).await?;
    let done = crate::registry::activate(svc, &previous, actor, request_id, Activation::Rollback).await?;
    Ok(json!(done))
}

/// Alert for a model activation (info) or rollback (warning).
fn model_alert(state: &AppState, scope: &str, action: &str, actor: &str, reason: &str, after: &Value) {
    let severity = if action == "rollback" {
        Severity::Warning
    } else {
        Severity::Info
    };
    state.services.alerts.raise(crate::alerts::Alert {
        severity,
        kind: format!("model_{action}"),
        scope: scope.to_owned(),
        summary: format!(
            "{scope}: {action} to {} by {actor}: {reason}",
            after["model_id"].as_str().unwrap_or("?")
        ),
        details: after.clone(),
        resolve: false,
    });
}

/// `GET /v1/ops`: each strategy's mode and what the daemons report.
#[utoipa::path(get, path = "/v1/ops", security(("bearer" = [])),
    responses((status = 200, description = "modes and daemon reports", body = OpsStatusBody),
        (status = 401, description = "missing or unknown token", body = super::openapi::ErrorBody),
        (status = 403, description = "role lacking", body = super::openapi::ErrorBody),
        (status = 503, description = "Redis unavailable", body = super::openapi::ErrorBody)))]
pub async fn status(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<OpsStatusBody>, ApiError> {
    state.reader(&headers)?;
    let strategies = ops::status(&state.services).await?;
    Ok(Json(OpsStatusBody { strategies }))
}

/// `GET /v1/ops` answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct OpsStatusBody {
    /// Every strategy of the universe.
    pub strategies: Vec<StrategyStatus>,
}
