//! Retraining routes: start (or resume) a run (operator), list and show
//! runs, and serve a run's report (viewer and up). Starting is audited;
//! the run announces its own outcome (`crate::retrain`).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mlcore_config::Role;
use mlcore_retrain::run::{valid_run_id, RunManifest, RunStatus};
use mlcore_retrain::Flow;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{text_field, ApiError, ID_MAX};
use super::ops::bad_json;
use super::AppState;
use crate::approvals::new_id;
use crate::retrain::{self, RetrainError, RECORD};

/// `POST /v1/retrain` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrainBody {
    /// Strategy id.
    #[schema(min_length = 1, max_length = 128, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub strategy: String,
    /// Resume this run (interrupted or failed) instead of starting one.
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_-]+$")]
    pub resume: Option<String>,
}

/// A run, in brief.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunSummary {
    /// Run id.
    pub run_id: String,
    /// Strategy.
    pub strategy: String,
    /// The version the model gets if adopted.
    pub version: u64,
    /// `running`, `interrupted` (nobody works on it: resume it),
    /// `succeeded`, `rejected` or `failed`.
    pub status: String,
    /// The step running now.
    pub current_step: Option<String>,
    /// Steps finished.
    pub steps_done: usize,
    /// Steps in all.
    pub steps_total: usize,
    /// Started, ms since the epoch.
    pub started_at_ms: u64,
    /// Finished, ms since the epoch.
    pub finished_at_ms: Option<u64>,
    /// What it concluded.
    pub verdict: Option<String>,
    /// The registered model.
    pub model_id: Option<String>,
    /// `cli`, `api` or `schedule`.
    pub trigger: String,
    /// Who started it.
    pub actor: String,
    /// The report, once the run finished without failing.
    pub report_url: Option<String>,
}

/// `GET /v1/retrain`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunList {
    /// Newest first.
    pub runs: Vec<RunSummary>,
}

/// `GET /v1/retrain/{run_id}`: the summary and the run's manifest (every
/// step with its key, inputs, outputs and timing).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunDetail {
    /// In brief.
    pub run: RunSummary,
    /// `runs/<run_id>/manifest.json`.
    #[schema(value_type = Object)]
    pub manifest: Value,
}

fn summary(flow: &Flow<'_>, m: &RunManifest) -> RunSummary {
    let (done, total) = m.progress();
    let report = flow.root().join(&m.run_id).join("report.html");
    RunSummary {
        run_id: m.run_id.clone(),
        strategy: m.spec.strategy.clone(),
        version: m.spec.version,
        status: retrain::status_of(flow, m).to_owned(),
        current_step: m.current_step.clone(),
        steps_done: done,
        steps_total: total,
        started_at_ms: m.started_at_ms,
        finished_at_ms: m.finished_at_ms,
        verdict: m.verdict.clone(),
        model_id: m.model_id.clone(),
        trigger: m.spec.trigger.clone(),
        actor: m.spec.actor.clone(),
        // A failed resume of a once-finished run left its old report:
        // not this run's outcome.
        report_url: (m.status != RunStatus::Failed && report.exists())
            .then(|| format!("/v1/retrain/{}/report", m.run_id)),
    }
}

fn not_found(run_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "RETRAIN_NOT_FOUND",
        format!("no run `{run_id}`"),
    )
}

/// Loads a run on a blocking thread (manifests are files).
async fn load(state: &AppState, run_id: &str) -> Result<(RunManifest, RunSummary), ApiError> {
    if !valid_run_id(run_id) {
        return Err(not_found(run_id));
    }
    let svc = Arc::clone(&state.services);
    let id = run_id.to_owned();
    tokio::task::spawn_blocking(move || {
        let flow = Flow::new(&svc.config);
        let m = flow.load(&id).map_err(|_| not_found(&id))?;
        let s = summary(&flow, &m);
        Ok((m, s))
    })
    .await
    .map_err(|_| ApiError::internal("reading the run"))?
}

/// `GET /v1/retrain`: every run, newest first.
#[utoipa::path(get, path = "/v1/retrain", security(("bearer" = [])),
    responses((status = 200, description = "every run with its status and progress", body = RunList),
        (status = 401, description = "missing or unknown token", body = super::openapi::ErrorBody),
        (status = 403, description = "role lacking", body = super::openapi::ErrorBody)))]
pub async fn list(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<RunList>, ApiError> {
    state.reader(&headers)?;
    let svc = Arc::clone(&state.services);
    let runs = tokio::task::spawn_blocking(move || {
        let flow = Flow::new(&svc.config);
        flow.list()
            .map(|runs| runs.iter().map(|m| summary(&flow, m)).collect())
    })
    .await
    .map_err(|_| ApiError::internal("listing runs"))?
    .map_err(|e| {
        tracing::error!(error = %e, "listing retraining runs failed");
        ApiError::internal("listing runs")
    })?;
    Ok(Json(RunList { runs }))
}

/// `GET /v1/retrain/{run_id}`: status, current step, progress, manifest.
#[utoipa::path(get, path = "/v1/retrain/{run_id}", security(("bearer" = [])),
    params(("run_id" = String, Path, description = "run id")),
    responses((status = 200, description = "the run", body = RunDetail),
        (status = 403, description = "role lacking", body = super::openapi::ErrorBody),
        (status = 404, description = "no such run", body = super::openapi::ErrorBody)))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
) -> Result<Json<RunDetail>, ApiError> {
    state.reader(&headers)?;
    let (m, run) = load(&state, &run_id).await?;
    Ok(Json(RunDetail {
        run,
        manifest: serde_json::to_value(&m).unwrap_or(Value::Null),
    }))
}

/// `GET /v1/retrain/{run_id}/report`: the run's self-contained HTML report.
#[utoipa::path(get, path = "/v1/retrain/{run_id}/report", security(("bearer" = [])),
    params(("run_id" = String, Path, description = "run id")),
    responses((status = 200, description = "report.html (plots embedded)", content_type = "text/html", body = String),
        (status = 403, description = "role lacking", body = super::openapi::ErrorBody),
        (status = 404, description = "no such run, or it has no report (running or failed)", body = super::openapi::ErrorBody)))]
pub async fn report(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(run_id): Path<String>,
) -> Result<Response, ApiError> {
    state.reader(&headers)?;
    let (_, run) = load(&state, &run_id).await?;
    if run.report_url.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "RETRAIN_NO_REPORT",
            format!("run `{run_id}` has no report ({})", run.status),
        ));
    }
    let path = retrain::run_dir(&state.services, &run_id).join("report.html");
    let html = tokio::fs::read(&path).await.map_err(|e| {
        tracing::error!(path = %path.display(), error = %e, "reading a report failed");
        ApiError::internal("reading the report")
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Inline styles and data: images only; nothing runs.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
            ),
        ],
        html,
    )
        .into_response())
}

/// `POST /v1/retrain`: starts (or resumes) a run in the background.
#[utoipa::path(post, path = "/v1/retrain", request_body = RetrainBody, security(("bearer" = [])),
    responses(
        (status = 202, description = "the run started; follow it at /v1/retrain/{run_id}", body = RunSummary),
        (status = 400, description = "malformed JSON, or a field with a control character", body = super::openapi::ErrorBody),
        (status = 403, description = "role lacking", body = super::openapi::ErrorBody),
        (status = 404, description = "no such run to resume", body = super::openapi::ErrorBody),
        (status = 409, description = "the strategy is being retrained already (RETRAIN_BUSY), or retraining cannot start here: control.yaml retrain's dataset or signing key is unusable (RETRAIN_UNAVAILABLE)", body = super::openapi::ErrorBody),
        (status = 422, description = "unknown strategy, or a run of another strategy to resume", body = super::openapi::ErrorBody)))]
pub async fn start(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<RetrainBody>, JsonRejection>,
) -> Result<(StatusCode, Json<RunSummary>), ApiError> {
    let p = state.mutating(&headers, &[Role::Operator])?;
    let Json(body) = body.map_err(bad_json)?;
    let id = new_id();
    let scope = body.strategy.clone();
    let checked = text_field("strategy", &body.strategy, false, ID_MAX).and_then(|()| match &body.resume {
        Some(r) if !valid_run_id(r) => Err(not_found(r)),
        _ => Ok(()),
    });
    if let Err(e) = checked {
        return Err(state.refused(RECORD, &p.name, "start", &scope, &id, e).await);
    }
    let result = begin(&state, &body, &p.name).await;
    match result {
        Ok(run) => {
            let after = serde_json::to_value(&run).unwrap_or(Value::Null);
            state
                .record(RECORD, &p.name, "start", &scope, after, "ok", &id)
                .await?;
            Ok((StatusCode::ACCEPTED, Json(run)))
        }
        Err(e) => Err(state.refused(RECORD, &p.name, "start", &scope, &id, e).await),
    }
}

/// Creates (or loads) the run under its strategy's lock, then runs it in
/// the background (`retrain::start`).
async fn begin(state: &AppState, body: &RetrainBody, actor: &str) -> Result<RunSummary, ApiError> {
    let svc = Arc::clone(&state.services);
    if svc.config.strategy(&body.strategy).is_none() {
        return Err(RetrainError::UnknownStrategy(body.strategy.clone()).into());
    }
    let (spec, resume) = match &body.resume {
        Some(id) => {
            let (run, _) = load(state, id).await?;
            if run.spec.strategy != body.strategy {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "RETRAIN_STRATEGY_MISMATCH",
                    format!("run {id} retrains {}, not {}", run.spec.strategy, body.strategy),
                ));
            }
            (run.spec.clone(), Some(run))
        }
        None => (retrain::spec(&svc, &body.strategy, "api", actor).await?, None),
    };
    let run = retrain::start(Arc::clone(&svc), spec, resume).await?;
    let flow = Flow::new(&svc.config);
    Ok(RunSummary {
        status: "running".into(),
        ..summary(&flow, &run)
    })
}
