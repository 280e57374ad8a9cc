//! Ops requests: safety actions (`halt`, `reduce_only`) apply at once for an
//! operator; `flatten`, `resume` and `rollback` wait for a second principal
//! with `approver`. Applied through the guard's compare-and-set; every
//! mutating request — refused ones too — is audited.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use mlcore_config::Role;
use mlcore_contract::{Guard, Heartbeat, Keys, ModeChange, OpsMode, SetModeOutcome};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Row;

use super::auth::{authenticate, require};
use super::error::ApiError;
use super::AppState;
use crate::audit::{self, NewEvent};

/// Audit record type of ops requests.
const RECORD: &str = "ops_request";

/// `POST /v1/ops/requests` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpsRequestBody {
    /// `halt | reduce_only | flatten | resume | rollback`.
    pub action: String,
    /// A strategy id or `global`.
    pub scope: String,
    /// Why.
    pub reason: String,
}

fn now_ms() -> u64 {
    crate::commands::now_ms()
}

pub(crate) fn bad_json(r: JsonRejection) -> ApiError {
    let status = r.status();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "REQUEST_TOO_LARGE",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "REQUEST_NOT_JSON",
        _ => "REQUEST_MALFORMED",
    };
    ApiError::new(status, code, r.body_text())
}

/// Audits one mutating request of `record_type` (critical: kept 5 years).
/// `after` holds what changed (for ops: per strategy, the mode before and
/// after, `from` and `to`).
#[allow(clippy::too_many_arguments)] // one audit row's fields
pub(crate) async fn record(
    state: &AppState,
    record_type: &str,
    who: &str,
    action: &str,
    scope: &str,
    after: Value,
    result: &str,
    request_id: &str,
) -> Result<(), ApiError> {
    let e = NewEvent {
        at_ms: now_ms(),
        record_type: record_type.into(),
        critical: true,
        actor: who.into(),
        action: action.into(),
        scope: scope.into(),
        before: Value::Null,
        after,
        result: result.into(),
        request_id: request_id.into(),
    };
    audit::append(&state.pool, &state.config.storage.worm_root, e)
        .await
        .map(|_| ())
        .map_err(|_| ApiError::internal("writing the audit log"))
}

/// Info alert for an applied mode change (fire and forget).
fn mode_alert(state: &Arc<AppState>, scope: &str, mode: OpsMode, actor: &str, reason: &str) {
    state.alert(crate::alerts::Alert {
        severity: mlcore_config::Severity::Info,
        kind: "ops_mode_change".into(),
        scope: scope.to_owned(),
        summary: format!("{scope} set to {mode} by {actor}: {reason}"),
        details: json!({"mode": mode.as_str(), "actor": actor}),
        resolve: false,
    });
}

/// Audits a refused request of `record_type` and hands the error back.
pub(crate) async fn refused(
    state: &AppState,
    record_type: &str,
    who: &str,
    action: &str,
    scope: &str,
    request_id: &str,
    err: ApiError,
) -> ApiError {
    let result = format!("refused: {}", err.code);
    match record(
        state,
        record_type,
        who,
        action,
        scope,
        Value::Null,
        &result,
        request_id,
    )
    .await
    {
        Ok(()) => err,
        Err(audit_failure) => audit_failure,
    }
}

fn target_mode(action: &str) -> Option<OpsMode> {
    match action {
        "halt" => Some(OpsMode::Halted),
        "reduce_only" => Some(OpsMode::ReduceOnly),
        "flatten" => Some(OpsMode::Flatten),
        "resume" => Some(OpsMode::Active),
        _ => None,
    }
}

/// Applies `mode` to every strategy of `scope`; the per-strategy results.
async fn apply(
    state: &Arc<AppState>,
    scope: &str,
    mode: OpsMode,
    reason: &str,
    actor: &str,
    request_id: &str,
) -> Result<Value, ApiError> {
    let strategies: Vec<String> = if scope == "global" {
        state
            .config
            .universe
            .strategies
            .iter()
            .map(|s| s.id.to_string())
            .collect()
    } else {
        vec![scope.to_owned()]
    };
    let guard = state.guard.clone();
    let (reason, actor, request_id) = (reason.to_owned(), actor.to_owned(), request_id.to_owned());
    let outcome = state
        .redis(move |conn, _| {
            let mut out = serde_json::Map::new();
            for s in &strategies {
                let current = guard.read_mode(conn, s)?;
                let change = ModeChange {
                    strategy: s,
                    expected_version: current.version,
                    mode,
                    reason: &reason,
                    actor: &actor,
                    request_id: &request_id,
                };
                match guard.set_mode(conn, &change)? {
                    SetModeOutcome::Applied { version } => {
                        out.insert(
                            s.clone(),
                            json!({"from": current.mode.as_str(), "to": mode.as_str(), "version": version}),
                        );
                    }
                    SetModeOutcome::Conflict { current_version } => {
                        out.insert(s.clone(), json!({"conflict": current_version}));
                    }
                }
            }
            Ok(Value::Object(out))
        })
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "OPS_REDIS_UNAVAILABLE",
                format!("Redis: {e}"),
            )
        })?;
    if outcome
        .as_object()
        .is_some_and(|m| m.values().any(|v| v.get("conflict").is_some()))
    {
        let mut e = ApiError::new(
            StatusCode::CONFLICT,
            "OPS_CONFLICT",
            "another change to the mode won the compare-and-set",
        );
        e.details = outcome;
        return Err(e);
    }
    Ok(outcome)
}

pub(crate) fn new_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "ops-{:x}-{:x}-{}",
        now_ms(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// `POST /v1/ops/requests`.
#[utoipa::path(post, path = "/v1/ops/requests", request_body = OpsRequestBody, security(("bearer" = [])),
    responses(
        (status = 201, description = "halt / reduce_only applied at once (operator)"),
        (status = 202, description = "flatten / resume pending approval"),
        (status = 400, description = "malformed JSON", body = super::openapi::ErrorBody),
        (status = 401, description = "missing or unknown token", body = super::openapi::ErrorBody),
        (status = 403, description = "role lacking", body = super::openapi::ErrorBody),
        (status = 409, description = "compare-and-set conflict", body = super::openapi::ErrorBody),
        (status = 413, description = "body too large", body = super::openapi::ErrorBody),
        (status = 422, description = "unknown action or scope", body = super::openapi::ErrorBody),
        (status = 429, description = "rate limited", body = super::openapi::ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<OpsRequestBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let p = state.mutating(&headers, &[Role::Operator])?;
    let Json(body) = body.map_err(bad_json)?;
    let id = new_id();
    let valid_scope = body.scope == "global" || state.config.strategy(&body.scope).is_some();
    let known = ["halt", "reduce_only", "flatten", "resume", "rollback"].contains(&body.action.as_str());
    if !known || !valid_scope || body.reason.trim().is_empty() {
        let (code, msg) = if !known {
            (
                "OPS_ACTION_UNKNOWN",
                format!(
                    "unknown action `{}` (halt, reduce_only, flatten, resume, rollback)",
                    body.action
                ),
            )
        } else if !valid_scope {
            (
                "OPS_SCOPE_UNKNOWN",
                format!("unknown scope `{}` (a strategy id or global)", body.scope),
            )
        } else {
            ("OPS_REASON_MISSING", "a reason is required".to_owned())
        };
        let err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, msg);
        return Err(refused(&state, RECORD, &p.name, &body.action, &body.scope, &id, err).await);
    }
    if body.action == "rollback" {
        // Re-activates the previous active version: one strategy, and there
        // must be something to go back to (checked again on approval).
        let checked = if body.scope == "global" {
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "OPS_ROLLBACK_SCOPE",
                "rollback applies to one strategy, not global",
            ))
        } else {
            crate::registry::rollback_target(&state, &body.scope)
                .await
                .map(|_| ())
        };
        if let Err(err) = checked {
            return Err(refused(&state, RECORD, &p.name, "rollback", &body.scope, &id, err).await);
        }
        return pending(&state, &p.name, &body, &id).await;
    }
    let Some(mode) = target_mode(&body.action) else {
        return Err(ApiError::internal("mapping the action"));
    };
    if matches!(mode, OpsMode::Halted | OpsMode::ReduceOnly) {
        // Safety actions: an operator applies them at once.
        let result = apply(&state, &body.scope, mode, &body.reason, &p.name, &id).await;
        let (after, label) = match &result {
            Ok(v) => (v.clone(), "ok".to_owned()),
            Err(e) => (e.details.clone(), format!("refused: {}", e.code)),
        };
        record(
            &state,
            RECORD,
            &p.name,
            &body.action,
            &body.scope,
            after.clone(),
            &label,
            &id,
        )
        .await?;
        result?;
        mode_alert(&state, &body.scope, mode, &p.name, &body.reason);
        return Ok((
            StatusCode::CREATED,
            Json(json!({"id": id, "status": "applied", "result": after})),
        ));
    }
    pending(&state, &p.name, &body, &id).await
}

/// Stores a request that waits for a second principal (`target`: the model
/// an `activate` names); returns when it expires.
pub(crate) async fn store_pending(
    state: &AppState,
    id: &str,
    action: &str,
    scope: &str,
    reason: &str,
    who: &str,
    target: Option<&str>,
) -> Result<u64, ApiError> {
    let expires = now_ms() + state.config.control.approvals.ttl_s * 1000;
    sqlx::query("INSERT INTO core.ops_requests (id, action, scope, reason, requested_by, requested_at_ms, expires_at_ms, status, target) VALUES ($1,$2,$3,$4,$5,$6,$7,'pending',$8)")
        .bind(id)
        .bind(action)
        .bind(scope)
        .bind(reason)
        .bind(who)
        .bind(now_ms() as i64)
        .bind(expires as i64)
        .bind(target)
        .execute(&state.pool)
        .await
        .map_err(|_| ApiError::internal("storing the request"))?;
    Ok(expires)
}

/// Stores an ops request that waits for a second principal, audited.
async fn pending(
    state: &AppState,
    who: &str,
    body: &OpsRequestBody,
    id: &str,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let expires = store_pending(state, id, &body.action, &body.scope, &body.reason, who, None).await?;
    record(
        state,
        RECORD,
        who,
        &body.action,
        &body.scope,
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

/// Claims a pending request for `who`'s verdict, atomically: a replayed
/// or concurrent decision finds it decided (the refusal to return).
async fn claim(state: &AppState, id: &str, verdict: &str, who: &str) -> Result<Option<ApiError>, ApiError> {
    let new_status = if verdict == "approve" {
        "applying"
    } else {
        "rejected"
    };
    let claimed = sqlx::query(
        "UPDATE core.ops_requests SET status=$2, decided_by=$3, decided_at_ms=$4 WHERE id=$1 AND status='pending'",
    )
    .bind(id)
    .bind(new_status)
    .bind(who)
    .bind(now_ms() as i64)
    .execute(&state.pool)
    .await
    .map_err(|_| ApiError::internal("claiming the request"))?
    .rows_affected();
    Ok((claimed == 0).then(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "OPS_REQUEST_DECIDED",
            format!("request {id} was decided concurrently"),
        )
    }))
}

/// `POST /v1/ops/requests/{id}/approve` and `/reject`.
#[utoipa::path(post, path = "/v1/ops/requests/{id}/{verdict}", security(("bearer" = [])),
    params(("id" = String, Path, description = "request id"), ("verdict" = String, Path, description = "approve or reject")),
    responses(
        (status = 200, description = "applied or rejected"),
        (status = 403, description = "self-approval or role lacking", body = super::openapi::ErrorBody),
        (status = 404, description = "no such request", body = super::openapi::ErrorBody),
        (status = 409, description = "already decided, expired, or conflict", body = super::openapi::ErrorBody)))]
pub async fn decide(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, verdict)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let p = state.mutating(&headers, &[Role::Approver])?;
    if verdict != "approve" && verdict != "reject" {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ROUTE_NOT_FOUND",
            "use /approve or /reject",
        ));
    }
    let row = sqlx::query("SELECT action, scope, reason, requested_by, expires_at_ms, status, target FROM core.ops_requests WHERE id = $1")
        .bind(&id)
        .fetch_optional(&state.pool)
        .await
        .map_err(|_| ApiError::internal("reading the request"))?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "OPS_REQUEST_NOT_FOUND", format!("no request {id}")))?;
    let get = |c: &str| row.try_get::<String, _>(c).unwrap_or_default();
    let (action, scope, reason, requester, status) = (
        get("action"),
        get("scope"),
        get("reason"),
        get("requested_by"),
        get("status"),
    );
    let expires: i64 = row.try_get("expires_at_ms").unwrap_or(0);
    let target: Option<String> = row.try_get("target").ok().flatten();
    let refuse = |status: StatusCode, code: &'static str, msg: String| ApiError::new(status, code, msg);
    let refusal = if status != "pending" {
        Some(refuse(
            StatusCode::CONFLICT,
            "OPS_REQUEST_DECIDED",
            format!("request {id} is already {status}"),
        ))
    } else if now_ms() as i64 >= expires {
        let _ = sqlx::query("UPDATE core.ops_requests SET status='expired' WHERE id=$1 AND status='pending'")
            .bind(&id)
            .execute(&state.pool)
            .await;
        Some(refuse(
            StatusCode::CONFLICT,
            "OPS_REQUEST_EXPIRED",
            format!("request {id} expired"),
        ))
    } else if requester == p.name {
        Some(refuse(
            StatusCode::FORBIDDEN,
            "OPS_APPROVAL_SELF",
            "the requester cannot approve or reject their own request".into(),
        ))
    } else {
        claim(&state, &id, &verdict, &p.name).await?
    };
    if let Some(err) = refusal {
        let what = format!("{verdict} {action}");
        return Err(refused(&state, RECORD, &p.name, &what, &scope, &id, err).await);
    }
    if verdict == "reject" {
        record(
            &state,
            RECORD,
            &p.name,
            &format!("reject {action}"),
            &scope,
            json!({"status": "rejected"}),
            "ok",
            &id,
        )
        .await?;
        return Ok(Json(json!({"id": id, "status": "rejected"})));
    }
    let actor = format!("{requester}+{}", p.name);
    let mode = target_mode(&action);
    let result = match (action.as_str(), mode) {
        ("activate", _) => activate_target(&state, target.as_deref(), &p.name, &actor, &id).await,
        ("rollback", _) => rollback(&state, &scope, &actor, &id).await,
        (_, Some(mode)) => apply(&state, &scope, mode, &reason, &actor, &id).await,
        (_, None) => Err(ApiError::internal("mapping the action")),
    };
    let (final_status, after, label) = match &result {
        Ok(v) => ("applied", v.clone(), "ok".to_owned()),
        Err(e) => ("failed", e.details.clone(), format!("refused: {}", e.code)),
    };
    let _ = sqlx::query("UPDATE core.ops_requests SET status=$2, result=$3 WHERE id=$1")
        .bind(&id)
        .bind(final_status)
        .bind(after.to_string())
        .execute(&state.pool)
        .await;
    record(
        &state,
        RECORD,
        &p.name,
        &format!("approve {action}"),
        &scope,
        after.clone(),
        &label,
        &id,
    )
    .await?;
    result?;
    match mode {
        Some(mode) => mode_alert(&state, &scope, mode, &actor, &reason),
        None => model_alert(&state, &scope, &action, &actor, &reason, &after),
    }
    Ok(Json(json!({"id": id, "status": "applied", "result": after})))
}

/// Approves and activates the model an `activate` request names.
async fn activate_target(
    state: &Arc<AppState>,
    target: Option<&str>,
    approver: &str,
    actor: &str,
    request_id: &str,
) -> Result<Value, ApiError> {
    let model_id = target.ok_or_else(|| ApiError::internal("reading the request's model"))?;
    let model = crate::registry::get(state, model_id).await?;
    crate::registry::check_activatable(state, &model).await?;
    crate::registry::approve(state, &model, approver, request_id).await?;
    crate::registry::activate(
        state,
        &model,
        actor,
        request_id,
        crate::registry::Activation::Normal,
    )
    .await
}

/// Re-activates the previous active version of `strategy`, pinned.
async fn rollback(
    state: &Arc<AppState>,
    strategy: &str,
    actor: &str,
    request_id: &str,
) -> Result<Value, ApiError> {
    let (_, previous) = crate::registry::rollback_target(state, strategy).await?;
    crate::registry::activate(
        state,
        &previous,
        actor,
        request_id,
        crate::registry::Activation::Rollback,
    )
    .await
}

/// Alert for a model activation (info) or rollback (warning).
fn model_alert(state: &Arc<AppState>, scope: &str, action: &str, actor: &str, reason: &str, after: &Value) {
    let severity = if action == "rollback" {
        mlcore_config::Severity::Warning
    } else {
        mlcore_config::Severity::Info
    };
    state.alert(crate::alerts::Alert {
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
    responses((status = 200, description = "modes and daemon reports"), (status = 401, description = "missing or unknown token", body = super::openapi::ErrorBody)))]
pub async fn status(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let p = authenticate(&headers, &state.principals)?;
    require(&p, &[Role::Viewer, Role::Operator, Role::Approver])?;
    let (cfg, guard) = (state.config.clone(), state.guard.clone());
    let missing_after = cfg.control.heartbeat_missing_after_ms;
    let out = state
        .redis(move |conn, keys| {
            let heartbeats = Heartbeat::read_all(conn, keys)?;
            let now = now_ms();
            let mut strategies = Vec::new();
            for s in &cfg.universe.strategies {
                let st = guard.read_mode(conn, &s.id)?;
                let reports: Vec<Value> = heartbeats
                    .iter()
                    .map(|(inst, _, hb)| match hb {
                        Some(hb) => {
                            let seen = hb.modes.get(s.id.as_str()).cloned().unwrap_or_default();
                            json!({"instance": inst, "mode": seen, "model": hb.models.get(s.id.as_str()), "disagrees": seen != st.mode.as_str(),
                                   "silent": now.saturating_sub(hb.at_ms) > missing_after})
                        }
                        None => json!({"instance": inst, "silent": true}),
                    })
                    .collect();
                strategies.push(json!({"strategy": s.id, "mode": st.mode.as_str(), "version": st.version, "actor": st.actor,
                                       "reason": st.reason, "request_id": st.request_id, "updated_at_ms": st.updated_at_ms,
                                       "fail_closed": st.fail_closed, "daemons": reports}));
            }
            Ok(json!({"strategies": strategies}))
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "OPS_REDIS_UNAVAILABLE", format!("Redis: {e}")))?;
    Ok(Json(out))
}

/// Keeps `Guard` in the signature set used by the router.
pub fn guard_for(cfg: &mlcore_config::AppConfig) -> Guard {
    Guard::new(Keys::new(&cfg.redis.namespace), cfg.redis.stream_maxlen)
}
