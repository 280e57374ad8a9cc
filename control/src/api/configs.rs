//! Config change request routes (`/v1/configs/...`): operators propose,
//! edit, submit, merge, apply and roll back; approvers approve or reject
//! (with their second factor); viewers read requests, their diffs, and
//! which daemon runs which version. Every state change is audited by the
//! domain (`crate::config_changes`); refusals are audited here.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use mlcore_config::Role;
use serde::{Deserialize, Serialize};

use super::auth::Principal;
use super::error::{text_field, ApiError};
use super::ops::bad_json;
use super::AppState;
use crate::config_changes::{self as cc, Applied, ChangeRequest, Edit, Preview, Status, RECORD};

/// Longest title.
const TITLE_MAX: usize = 200;
/// Most edits in one request.
const EDITS_MAX: usize = 64;

/// `POST /v1/configs/changes` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// What the change does, in a line.
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub title: String,
    /// The edits (files, or keys within them).
    #[schema(max_items = 64)]
    pub edits: Vec<Edit>,
}

/// `PATCH /v1/configs/changes/{id}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditBody {
    /// More edits, on top of the request's current revision.
    #[schema(min_items = 1, max_items = 64)]
    pub edits: Vec<Edit>,
}

/// `GET /v1/configs/changes`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChangeList {
    /// Newest first.
    pub changes: Vec<ChangeRequest>,
}

fn checked_id(id: &str) -> Result<(), ApiError> {
    let ok = id
        .strip_prefix("cr-")
        .is_some_and(|n| !n.is_empty() && n.len() <= 19 && n.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(cc::ConfigChangeError::NotFound(super::error::printable(id)).into())
    }
}

fn check_edits(edits: &[Edit]) -> Result<(), ApiError> {
    if edits.len() > EDITS_MAX {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "CONFIG_CHANGE_EDIT_INVALID",
            format!("at most {EDITS_MAX} edits in one request"),
        ));
    }
    for e in edits {
        text_field("edits.file", &e.file, false, 128)?;
        if let Some(c) = &e.content {
            text_field("edits.content", c, true, cc::CONTENT_MAX)?;
        }
        if let Some(k) = &e.key {
            text_field("edits.key", k, false, 256)?;
        }
        if let Some(v) = &e.value {
            text_field("edits.value", v, false, 4096)?;
        }
    }
    Ok(())
}

/// Runs `f` for `p`; a refusal is audited (what succeeded the domain
/// audited itself).
async fn audited<T>(
    state: &AppState,
    p: &Principal,
    action: &str,
    id: &str,
    f: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    match f.await {
        Ok(v) => Ok(v),
        Err(e) => Err(state.refused(RECORD, &p.name, action, "global", id, e).await),
    }
}

/// `GET /v1/configs/changes`: every request, newest first.
#[utoipa::path(get, path = "/v1/configs/changes", security(("bearer" = [])),
    responses((status = 200, description = "requests with their state, risk and approvals (the newest 500)", body = ChangeList),
        (status = 403, description = "role lacking", body = super::openapi::ErrorBody)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<ChangeList>, ApiError> {
    state.reader(&headers)?;
    let changes = cc::list(&state.services).await?;
    Ok(Json(ChangeList { changes }))
}

/// `GET /v1/configs/changes/{id}`.
#[utoipa::path(get, path = "/v1/configs/changes/{id}", security(("bearer" = [])),
    params(("id" = String, Path, description = "request id (cr-<n>)")),
    responses((status = 200, description = "the request", body = ChangeRequest),
        (status = 403, description = "role lacking", body = super::openapi::ErrorBody),
        (status = 404, description = "no such request", body = super::openapi::ErrorBody)))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ChangeRequest>, ApiError> {
    state.reader(&headers)?;
    checked_id(&id)?;
    Ok(Json(cc::get(&state.services, &id).await?))
}

/// `GET /v1/configs/changes/{id}/diff`: each changed key with its old and
/// new value (secrets redacted), who takes it live and who must restart,
/// and the risk.
#[utoipa::path(get, path = "/v1/configs/changes/{id}/diff", security(("bearer" = [])),
    params(("id" = String, Path, description = "request id (cr-<n>)")),
    responses((status = 200, description = "the diff preview", body = Preview),
        (status = 403, description = "role lacking", body = super::openapi::ErrorBody),
        (status = 404, description = "no such request", body = super::openapi::ErrorBody),
        (status = 409, description = "it conflicts with the branch now", body = super::openapi::ErrorBody)))]
pub async fn diff(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Preview>, ApiError> {
    state.reader(&headers)?;
    checked_id(&id)?;
    Ok(Json(cc::preview(&state.services, &id).await?))
}

/// `GET /v1/configs/status`: the deployed version and each daemon's.
#[utoipa::path(get, path = "/v1/configs/status", security(("bearer" = [])),
    responses((status = 200, description = "deployed version, branch head, and the version each daemon runs, what waits for its restart, what it refused", body = Status),
        (status = 403, description = "role lacking", body = super::openapi::ErrorBody)))]
pub async fn status(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Status>, ApiError> {
    state.reader(&headers)?;
    Ok(Json(cc::status(&state.services).await?))
}

/// `POST /v1/configs/changes`: proposes a change (a draft).
#[utoipa::path(post, path = "/v1/configs/changes", request_body = CreateBody, security(("bearer" = [])),
    responses((status = 201, description = "the draft", body = ChangeRequest),
        (status = 400, description = "malformed JSON, or a field with a control character", body = super::openapi::ErrorBody),
        (status = 403, description = "role lacking", body = super::openapi::ErrorBody),
        (status = 422, description = "an edit is not applicable (CONFIG_CHANGE_EDIT_INVALID) or changes nothing (CONFIG_CHANGE_EMPTY)", body = super::openapi::ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> Result<(StatusCode, Json<ChangeRequest>), ApiError> {
    let p = state.mutating(&headers, &[Role::Operator])?;
    let work = async {
        let Json(body) = body.map_err(bad_json)?;
        text_field("title", &body.title, false, TITLE_MAX)?;
        if body.title.trim().is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "REQUEST_FIELD_INVALID",
                "`title` is empty",
            ));
        }
        check_edits(&body.edits)?;
        Ok(cc::create(&state.services, &p.name, &body.title, body.edits).await?)
    };
    let cr = audited(&state, &p, "create", "", work).await?;
    Ok((StatusCode::CREATED, Json(cr)))
}

/// `PATCH /v1/configs/changes/{id}`: more edits (its author); approvals of
/// the earlier revision are revoked.
#[utoipa::path(patch, path = "/v1/configs/changes/{id}", request_body = EditBody, security(("bearer" = [])),
    params(("id" = String, Path, description = "request id (cr-<n>)")),
    responses((status = 200, description = "the request at its new revision", body = ChangeRequest),
        (status = 400, description = "malformed JSON", body = super::openapi::ErrorBody),
        (status = 403, description = "not its author, or role lacking", body = super::openapi::ErrorBody),
        (status = 404, description = "no such request", body = super::openapi::ErrorBody),
        (status = 409, description = "merged or closed", body = super::openapi::ErrorBody),
        (status = 422, description = "an edit is not applicable, or the result is refused by the loader (details.problems with CONFIG_* codes)", body = super::openapi::ErrorBody)))]
pub async fn edit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<EditBody>, JsonRejection>,
) -> Result<Json<ChangeRequest>, ApiError> {
    let p = state.mutating(&headers, &[Role::Operator])?;
    let work = async {
        checked_id(&id)?;
        let Json(body) = body.map_err(bad_json)?;
        check_edits(&body.edits)?;
        Ok(cc::edit(&state.services, &p.name, &id, body.edits).await?)
    };
    Ok(Json(audited(&state, &p, "edit", &id, work).await?))
}

/// The state changes that take no body.
#[derive(Debug, Clone, Copy)]
enum Op {
    Submit,
    Approve,
    Merge,
    Rollback,
}

async fn transition(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    op: Op,
) -> Result<Json<ChangeRequest>, ApiError> {
    let (roles, action): (&[Role], &str) = match op {
        Op::Submit => (&[Role::Operator], "submit"),
        Op::Approve => (&[Role::Approver], "approve"),
        Op::Merge => (&[Role::Operator], "merge"),
        Op::Rollback => (&[Role::Operator], "rollback"),
    };
    let p = state.mutating(headers, roles)?;
    let work = async {
        checked_id(id)?;
        let svc = &state.services;
        Ok(match op {
            Op::Submit => cc::submit(svc, &p.name, id).await?,
            Op::Approve => {
                state.second_factor(headers, &p).await?;
                cc::approve(svc, &p.name, id).await?
            }
            Op::Merge => cc::merge(svc, &p.name, id).await?,
            Op::Rollback => cc::rollback(svc, &p.name, id).await?,
        })
    };
    Ok(Json(audited(state, &p, action, id, work).await?))
}

/// `POST /v1/configs/changes/{id}/submit`: validates the merged result for
/// every environment and scores its risk (its author).
#[utoipa::path(post, path = "/v1/configs/changes/{id}/submit", security(("bearer" = [])),
    params(("id" = String, Path, description = "request id (cr-<n>)")),
    responses((status = 200, description = "pr_created, with its risk and the approvals it needs", body = ChangeRequest),
        (status = 403, description = "not its author, or role lacking", body = super::openapi::ErrorBody),
        (status = 404, description = "no such request", body = super::openapi::ErrorBody),
        (status = 409, description = "not a draft, or it conflicts with the branch", body = super::openapi::ErrorBody),
        (status = 422, description = "the merged configuration is refused by the loader (details.problems with CONFIG_* codes), or it changes nothing", body = super::openapi::ErrorBody)))]
pub async fn submit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ChangeRequest>, ApiError> {
    transition(&state, &headers, &id, Op::Submit).await
}

/// `POST /v1/configs/changes/{id}/approve`: an approver's approval (never
/// the author's); approved once as many approvers as its risk needs agree.
#[utoipa::path(post, path = "/v1/configs/changes/{id}/approve", security(("bearer" = [])),
    params(("id" = String, Path, description = "request id (cr-<n>)"),
        ("x-mlcore-totp" = Option<String>, Header, description = "the approver's one-time code (TOTP), where control.yaml second_factor.required")),
    responses((status = 200, description = "the approval recorded", body = ChangeRequest),
        (status = 403, description = "its author (CONFIG_CHANGE_SELF_APPROVAL), role lacking, or the one-time code missing, wrong or used", body = super::openapi::ErrorBody),
        (status = 404, description = "no such request", body = super::openapi::ErrorBody),
        (status = 409, description = "not waiting for approval, or approved by this approver already", body = super::openapi::ErrorBody)))]
pub async fn approve(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ChangeRequest>, ApiError> {
    transition(&state, &headers, &id, Op::Approve).await
}

/// `POST /v1/configs/changes/{id}/merge`: merges an approved request into
/// the environment's branch.
#[utoipa::path(post, path = "/v1/configs/changes/{id}/merge", security(("bearer" = [])),
    params(("id" = String, Path, description = "request id (cr-<n>)")),
    responses((status = 200, description = "merged", body = ChangeRequest),
        (status = 403, description = "role lacking", body = super::openapi::ErrorBody),
        (status = 404, description = "no such request", body = super::openapi::ErrorBody),
        (status = 409, description = "not approved, another merged request waits to be applied, a conflict with the branch, or its risk rose on the current configuration", body = super::openapi::ErrorBody),
        (status = 422, description = "the merged configuration is refused by the loader", body = super::openapi::ErrorBody)))]
pub async fn merge(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ChangeRequest>, ApiError> {
    transition(&state, &headers, &id, Op::Merge).await
}

/// `POST /v1/configs/changes/{id}/rollback`: proposes and submits the
/// revert of an applied request; returns the new request.
#[utoipa::path(post, path = "/v1/configs/changes/{id}/rollback", security(("bearer" = [])),
    params(("id" = String, Path, description = "the applied request to roll back (cr-<n>)")),
    responses((status = 200, description = "the rollback request, submitted (fast_path: it only restores the version deployed before, one approver, any time)", body = ChangeRequest),
        (status = 403, description = "role lacking", body = super::openapi::ErrorBody),
        (status = 404, description = "no such request", body = super::openapi::ErrorBody),
        (status = 409, description = "not applied, or its revert conflicts with later changes", body = super::openapi::ErrorBody),
        (status = 422, description = "the reverted configuration is refused by the loader", body = super::openapi::ErrorBody)))]
pub async fn rollback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ChangeRequest>, ApiError> {
    transition(&state, &headers, &id, Op::Rollback).await
}

/// `POST /v1/configs/changes/{id}/reject`.
#[utoipa::path(post, path = "/v1/configs/changes/{id}/reject", request_body = super::models::ReasonBody, security(("bearer" = [])),
    params(("id" = String, Path, description = "request id (cr-<n>)"),
        ("x-mlcore-totp" = Option<String>, Header, description = "the approver's one-time code (TOTP), where control.yaml second_factor.required")),
    responses((status = 200, description = "rejected", body = ChangeRequest),
        (status = 400, description = "malformed JSON", body = super::openapi::ErrorBody),
        (status = 403, description = "role lacking, its author, or the one-time code missing or wrong", body = super::openapi::ErrorBody),
        (status = 404, description = "no such request", body = super::openapi::ErrorBody),
        (status = 409, description = "not waiting for approval", body = super::openapi::ErrorBody)))]
pub async fn reject(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<super::models::ReasonBody>, JsonRejection>,
) -> Result<Json<ChangeRequest>, ApiError> {
    let p = state.mutating(&headers, &[Role::Approver])?;
    let work = async {
        checked_id(&id)?;
        let reason = super::models::reason_of(body)?;
        state.second_factor(&headers, &p).await?;
        Ok(cc::reject(&state.services, &p.name, &id, &reason).await?)
    };
    Ok(Json(audited(&state, &p, "reject", &id, work).await?))
}

/// `POST /v1/configs/changes/{id}/cancel`: its author (or an admin)
/// withdraws it; a merged one that was never applied is reverted on the
/// branch.
#[utoipa::path(post, path = "/v1/configs/changes/{id}/cancel", request_body = super::models::ReasonBody, security(("bearer" = [])),
    params(("id" = String, Path, description = "request id (cr-<n>)")),
    responses((status = 200, description = "cancelled", body = ChangeRequest),
        (status = 400, description = "malformed JSON", body = super::openapi::ErrorBody),
        (status = 403, description = "not its author (nor an admin), or role lacking", body = super::openapi::ErrorBody),
        (status = 404, description = "no such request", body = super::openapi::ErrorBody),
        (status = 409, description = "applied or closed", body = super::openapi::ErrorBody)))]
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<super::models::ReasonBody>, JsonRejection>,
) -> Result<Json<ChangeRequest>, ApiError> {
    let p = state.mutating(&headers, &[Role::Operator, Role::Admin])?;
    let work = async {
        checked_id(&id)?;
        let reason = super::models::reason_of(body)?;
        let admin = p.roles.contains(&Role::Admin);
        Ok(cc::cancel(&state.services, &p.name, &id, &reason, admin).await?)
    };
    Ok(Json(audited(&state, &p, "cancel", &id, work).await?))
}

/// `POST /v1/configs/changes/{id}/apply`: deploys a merged request and
/// waits for every running daemon to take it; a refusal (or silence past
/// `apply_timeout_ms`) reverts it and the request ends `failed`.
#[utoipa::path(post, path = "/v1/configs/changes/{id}/apply", security(("bearer" = [])),
    params(("id" = String, Path, description = "request id (cr-<n>)")),
    responses((status = 200, description = "applied, or failed and reverted (request.state says which; daemons says who did what)", body = Applied),
        (status = 403, description = "role lacking", body = super::openapi::ErrorBody),
        (status = 404, description = "no such request", body = super::openapi::ErrorBody),
        (status = 409, description = "not merged, or high risk outside the change window (CONFIG_CHANGE_WINDOW_CLOSED)", body = super::openapi::ErrorBody)))]
pub async fn apply(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Applied>, ApiError> {
    let p = state.mutating(&headers, &[Role::Operator])?;
    let work = async {
        checked_id(&id)?;
        Ok(cc::apply(&state.services, &p.name, &id).await?)
    };
    Ok(Json(audited(&state, &p, "apply", &id, work).await?))
}
