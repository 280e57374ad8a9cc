//! The analytics API (viewer and up): latency rollups, the portfolio's
//! backtests, retraining runs, the weekly report and the data quality of
//! the dataset in use, read from the files the observability jobs and the
//! retraining flow write. Answers are cached in Redis for
//! `observability.analytics_cache_ttl_s` under the cache's generation,
//! which every job that writes new data increments: a cached answer is
//! never older than the data it was built from. `x-mlcore-cache` says
//! `hit`, `miss` or `off` (Redis unavailable: answered uncached).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use mlcore_observe::latency::{rollup, slo};
use mlcore_observe::time::{midnight, parse, rfc3339};
use mlcore_observe::{files, inputs, weekly, Layout};
use serde::Serialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;

type Params = Query<BTreeMap<String, String>>;

/// The cache header.
pub const CACHE_HEADER: &str = "x-mlcore-cache";

fn layout(state: &AppState) -> Layout {
    let s = &state.services.config.storage;
    Layout::new(&s.ops_root, &s.out_root, &s.runs_root)
}

fn bad_query(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "ANALYTICS_BAD_QUERY", message)
}

fn only(q: &BTreeMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    match q.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(bad_query(format!(
            "unknown query parameter `{}`; this route takes {}",
            super::error::printable(k),
            if allowed.is_empty() {
                "none".to_owned()
            } else {
                allowed.join(", ")
            }
        ))),
        None => Ok(()),
    }
}

fn time_param(q: &BTreeMap<String, String>, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(v) = q.get(name) else { return Ok(None) };
    parse(v)
        .or_else(|| NaiveDate::parse_from_str(v, "%Y-%m-%d").ok().map(midnight))
        .map(Some)
        .ok_or_else(|| {
            bad_query(format!(
                "`{name}` must be an RFC 3339 time or a date (YYYY-MM-DD), got `{}`",
                super::error::printable(v)
            ))
        })
}

/// `from`/`to` of the query (defaults: the last `default_days` up to now).
/// A window that ends before it starts is empty, not an error: the
/// answer says which window it covered.
fn window(
    q: &BTreeMap<String, String>,
    default_days: i64,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let to = time_param(q, "to")?.unwrap_or_else(Utc::now);
    let from = time_param(q, "from")?.unwrap_or(to - Duration::days(default_days));
    Ok((from, to))
}

/// The query of `GET /v1/metrics/latency`, for the OpenAPI document (the
/// handlers read the query as a map, to name unknown parameters).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // describes the query for the document only
pub struct LatencyQuery {
    /// Window start, RFC 3339 (a date, `YYYY-MM-DD`, is taken as its
    /// midnight UTC); default: 24 h before `to`.
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// Window end, exclusive; default: now.
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
}

/// A run's final status.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // describes the query for the document only
pub enum RunStatusFilter {
    /// Registered.
    #[schema(rename = "succeeded")]
    Succeeded,
    /// Lost its challenge.
    #[schema(rename = "rejected")]
    Rejected,
    /// A step failed.
    #[schema(rename = "failed")]
    Failed,
}

/// The query of `GET /v1/metrics/runs`.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // describes the query for the document only
pub struct RunsQuery {
    /// Window start (of the runs' finish), RFC 3339 or a date; default:
    /// 30 days before `to`.
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// Window end, exclusive; default: now.
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    /// One strategy.
    strategy: Option<String>,
    /// One final status.
    #[param(inline)]
    status: Option<RunStatusFilter>,
}

/// The query of `GET /v1/reports/weekly`.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // describes the query for the document only
pub struct WeeklyQuery {
    /// The week's Monday; default: the newest report kept.
    #[param(value_type = Option<String>, format = Date)]
    week_start: Option<String>,
}

fn failed(what: &'static str) -> impl FnOnce(mlcore_observe::ObserveError) -> ApiError {
    move |e| {
        tracing::error!(error = %e, "analytics: {what} failed");
        // The file and line go to the log, not to the caller.
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ANALYTICS_INPUT",
            format!("{what} failed; the control plane's log says why"),
        )
    }
}

/// What the answer is built from, as it is now: each file's (or
/// folder's) size and modification time. Part of the cache key, so an
/// answer cached before a file changed — a run finished, a partition was
/// quarantined — is never served after.
fn fingerprint(inputs: &[PathBuf]) -> String {
    let mut text = String::new();
    for p in inputs {
        let stamp = std::fs::metadata(p).ok().map(|m| {
            (
                m.len(),
                m.modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()),
            )
        });
        text.push_str(&format!("{}={stamp:?};", p.display()));
    }
    files::sha256_hex(text.as_bytes())
}

/// Answers from the cache, or builds the answer on a blocking thread (the
/// inputs are files) and caches it. The key holds the cache's generation
/// (jobs bump it), the query (JSON: no two queries share a key) and the
/// inputs' fingerprint.
async fn cached<I, F>(
    state: &AppState,
    route: &str,
    q: &BTreeMap<String, String>,
    inputs: I,
    build: F,
) -> Result<Response, ApiError>
where
    I: FnOnce() -> Vec<PathBuf> + Send + 'static,
    F: FnOnce() -> Result<Value, ApiError> + Send + 'static,
{
    let redis = &state.services.redis;
    let query = serde_json::to_string(q).unwrap_or_default();
    let stamp = tokio::task::spawn_blocking(move || fingerprint(&inputs()))
        .await
        .map_err(|_| ApiError::internal("reading the inputs"))?;
    let key = match redis.analytics_generation().await {
        Ok(gen) => Some(redis.keys().analytics_entry(
            gen,
            &format!(
                "{route}:{}",
                files::sha256_hex(format!("{query}\n{stamp}").as_bytes())
            ),
        )),
        Err(e) => {
            tracing::warn!(error = %e, "analytics cache unavailable; answering uncached");
            None
        }
    };
    if let Some(k) = &key {
        if let Ok(Some(body)) = redis.cache_get(k).await {
            return Ok(respond(body, "hit"));
        }
    }
    let value = tokio::task::spawn_blocking(build)
        .await
        .map_err(|_| ApiError::internal("building the answer"))??;
    let body = value.to_string();
    let status = match &key {
        Some(k) => {
            let ttl = state.services.config.control.observability.analytics_cache_ttl_s;
            match redis.cache_put(k, &body, ttl).await {
                Ok(()) => "miss",
                Err(e) => {
                    tracing::warn!(error = %e, "analytics answer not cached");
                    "off"
                }
            }
        }
        None => "off",
    };
    Ok(respond(body, status))
}

fn respond(body: String, cache: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::HeaderName::from_static(CACHE_HEADER), cache),
        ],
        body,
    )
        .into_response()
}

/// `GET /v1/metrics/latency`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LatencyMetrics {
    /// Window start, RFC 3339.
    pub from: String,
    /// Window end (exclusive), RFC 3339.
    pub to: String,
    /// The SLO: p95 above this breaches, ms.
    pub slo_p95_ms: f64,
    /// Hourly rollups in the window (`hour_utc`, `samples`, `p50_ms`,
    /// `p95_ms`, `p99_ms`, `breach_flag`), oldest first.
    #[schema(value_type = Vec<Object>)]
    pub hours: Vec<Value>,
    /// Hours that breached.
    pub breaches: usize,
    /// The worst hour's p95, ms.
    pub worst_p95_ms: Option<f64>,
    /// The latency job's heartbeat (`next_run_at`, `last_breach_at`, ...).
    #[schema(value_type = Option<Object>)]
    pub heartbeat: Option<Value>,
}

/// `GET /v1/metrics/latency`: the hourly rollups in a window.
#[utoipa::path(get, path = "/v1/metrics/latency", security(("bearer" = [])),
    params(LatencyQuery),
    responses((status = 200, description = "the rollups, the SLO and the job's heartbeat", body = LatencyMetrics),
        (status = 400, description = "a bad or unknown query parameter (ANALYTICS_BAD_QUERY)", body = super::openapi::ErrorBody),
        (status = 403, description = "role lacking", body = super::openapi::ErrorBody)))]
pub async fn latency(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, ApiError> {
    state.reader(&headers)?;
    only(&q, &["from", "to"])?;
    let (from, to) = window(&q, 1)?;
    let (l, slo_p95_ms) = (
        layout(&state),
        state.services.config.control.observability.latency.slo_p95_ms,
    );
    let inputs = {
        let files = vec![l.rollup_csv(), l.latency_heartbeat()];
        move || files
    };
    cached(&state, "latency", &q.clone(), inputs, move || {
        let hours: Vec<rollup::Rollup> = rollup::read(&l.rollup_csv())
            .map_err(failed("reading the rollups"))?
            .into_iter()
            .filter(|r| r.hour().is_some_and(|h| h >= from && h < to))
            .collect();
        let heartbeat = if l.latency_heartbeat().exists() {
            Some(
                files::read_json::<slo::Heartbeat>(&l.latency_heartbeat())
                    .map_err(failed("reading the heartbeat"))?,
            )
        } else {
            None
        };
        let m = LatencyMetrics {
            from: rfc3339(from),
            to: rfc3339(to),
            slo_p95_ms,
            breaches: hours.iter().filter(|r| r.breach_flag).count(),
            worst_p95_ms: hours.iter().map(|r| r.p95_ms).reduce(f64::max),
            hours: hours.iter().map(|r| json!(r)).collect(),
            heartbeat: heartbeat.map(|h| json!(h)),
        };
        Ok(json!(m))
    })
    .await
}

/// `GET /v1/metrics/portfolio`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PortfolioMetrics {
    /// Per strategy, its newest backtest (`strategy`, `run_id`,
    /// `finished_at`, `model_id`, `budget_status`, `drawdown_pct`,
    /// `sharpe`, `sharpe_lo`, `total_return`, `win_rate`, `fills`,
    /// `turnover_per_day`, `slippage_bps`, `window_days`).
    #[schema(value_type = Vec<Object>)]
    pub strategies: Vec<Value>,
    /// The drawdown budget, %.
    pub drawdown_budget_pct: f64,
}

/// `GET /v1/metrics/portfolio`: each strategy's newest backtest against
/// the drawdown budget.
#[utoipa::path(get, path = "/v1/metrics/portfolio", security(("bearer" = [])),
    params(("strategy" = Option<String>, Query, description = "one strategy (default: all)")),
    responses((status = 200, description = "per strategy, its newest backtest", body = PortfolioMetrics),
        (status = 400, description = "a bad or unknown query parameter (ANALYTICS_BAD_QUERY)", body = super::openapi::ErrorBody),
        (status = 403, description = "role lacking", body = super::openapi::ErrorBody)))]
pub async fn portfolio(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, ApiError> {
    state.reader(&headers)?;
    only(&q, &["strategy"])?;
    let l = layout(&state);
    let wr = state.services.config.control.observability.weekly_report.clone();
    let params = weekly::Params {
        now: Utc::now(),
        week_start: mlcore_observe::time::week_start(Utc::now()),
        slo_p95_ms: 0.0,
        drawdown_budget: wr.drawdown_budget,
        warning_fraction: wr.drawdown_warning_fraction,
    };
    let only_strategy = q.get("strategy").cloned();
    let inputs = {
        let files = vec![l.runs.join("index.csv")];
        move || files
    };
    cached(&state, "portfolio", &q, inputs, move || {
        let ledger = inputs::ledger(&l.runs).map_err(failed("reading runs/index.csv"))?;
        let latest = inputs::latest_portfolios(&l.runs, &ledger).map_err(failed("reading the backtests"))?;
        let strategies = latest
            .into_iter()
            .filter(|(s, _)| only_strategy.as_ref().is_none_or(|o| o == s))
            .map(|(strategy, (row, p))| {
                json!({
                    "strategy": strategy,
                    "run_id": row.run_id,
                    "finished_at": row.finished_at,
                    "model_id": p.model_id,
                    "budget_status": weekly::budget_status(p.base.max_drawdown, &params),
                    "drawdown_pct": p.base.max_drawdown * 100.0,
                    "sharpe": p.base.sharpe,
                    "sharpe_lo": p.base.sharpe_ci90[0],
                    "total_return": p.base.total_return,
                    "win_rate": p.base.win_rate,
                    "fills": p.base.fills,
                    "turnover_per_day": p.base.turnover_per_day,
                    "slippage_bps": p.base.realised_slippage_bps,
                    "window_days": p.window_days(),
                })
            })
            .collect();
        Ok(json!(PortfolioMetrics {
            strategies,
            drawdown_budget_pct: params.drawdown_budget * 100.0,
        }))
    })
    .await
}

/// `GET /v1/metrics/runs`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunsMetrics {
    /// Window start, RFC 3339.
    pub from: String,
    /// Window end (exclusive), RFC 3339.
    pub to: String,
    /// Runs finished in the window, as `runs/index.csv` records them,
    /// newest first.
    #[schema(value_type = Vec<Object>)]
    pub runs: Vec<Value>,
    /// Runs per status.
    #[schema(value_type = Object)]
    pub by_status: BTreeMap<String, usize>,
}

/// `GET /v1/metrics/runs`: finished retraining runs in a window.
#[utoipa::path(get, path = "/v1/metrics/runs", security(("bearer" = [])),
    params(RunsQuery),
    responses((status = 200, description = "the runs", body = RunsMetrics),
        (status = 400, description = "a bad or unknown query parameter (ANALYTICS_BAD_QUERY)", body = super::openapi::ErrorBody),
        (status = 403, description = "role lacking", body = super::openapi::ErrorBody)))]
pub async fn runs(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, ApiError> {
    state.reader(&headers)?;
    only(&q, &["from", "to", "strategy", "status"])?;
    let (from, to) = window(&q, 30)?;
    if let Some(s) = q.get("status") {
        if !["succeeded", "rejected", "failed"].contains(&s.as_str()) {
            return Err(bad_query(format!(
                "`status` must be succeeded, rejected or failed, got `{}`",
                super::error::printable(s)
            )));
        }
    }
    let (l, strategy, status) = (
        layout(&state),
        q.get("strategy").cloned(),
        q.get("status").cloned(),
    );
    let inputs = {
        let files = vec![l.runs.join("index.csv")];
        move || files
    };
    cached(&state, "runs", &q, inputs, move || {
        let mut rows: Vec<inputs::LedgerRow> = inputs::ledger(&l.runs)
            .map_err(failed("reading runs/index.csv"))?
            .into_iter()
            .filter(|r| r.finished().is_some_and(|t| t >= from && t < to))
            .filter(|r| strategy.as_ref().is_none_or(|s| *s == r.strategy))
            .filter(|r| status.as_ref().is_none_or(|s| *s == r.status))
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.finished()));
        let mut by_status = BTreeMap::new();
        for r in &rows {
            *by_status.entry(r.status.clone()).or_insert(0) += 1;
        }
        Ok(json!(RunsMetrics {
            from: rfc3339(from),
            to: rfc3339(to),
            runs: rows.iter().map(|r| json!(r)).collect(),
            by_status,
        }))
    })
    .await
}

/// `GET /v1/reports/weekly`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WeeklyReport {
    /// The report as signed (observe/schemas/observability_weekly_report.schema.json).
    #[schema(value_type = Object)]
    pub report: Value,
    /// Its `X-OBS-Signature` (`sha256=<hex>`).
    pub signature: String,
}

/// `GET /v1/reports/weekly`: a kept weekly report with its signature.
#[utoipa::path(get, path = "/v1/reports/weekly", security(("bearer" = [])),
    params(WeeklyQuery),
    responses((status = 200, description = "the report and its signature", body = WeeklyReport),
        (status = 400, description = "a bad or unknown query parameter (ANALYTICS_BAD_QUERY)", body = super::openapi::ErrorBody),
        (status = 403, description = "role lacking", body = super::openapi::ErrorBody),
        (status = 404, description = "no report kept for that week (REPORT_NOT_FOUND)", body = super::openapi::ErrorBody)))]
pub async fn weekly_report(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, ApiError> {
    state.reader(&headers)?;
    only(&q, &["week_start"])?;
    let week = match q.get("week_start") {
        Some(w) => Some(NaiveDate::parse_from_str(w, "%Y-%m-%d").map_err(|_| {
            bad_query(format!(
                "`week_start` must be a date (YYYY-MM-DD), got `{}`",
                super::error::printable(w)
            ))
        })?),
        None => None,
    };
    let dir = layout(&state).weekly_history();
    let inputs = {
        let files = vec![dir.clone()];
        move || files
    };
    cached(&state, "weekly", &q, inputs, move || {
        match weekly::load(&dir, week).map_err(failed("reading the report"))? {
            Some((report, signature)) => Ok(json!(WeeklyReport { report, signature })),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "REPORT_NOT_FOUND",
                match week {
                    Some(w) => format!("no weekly report kept for the week of {w}"),
                    None => "no weekly report kept yet".to_owned(),
                },
            )),
        }
    })
    .await
}

/// `GET /v1/reports/dq`: the data quality of the dataset in use.
#[utoipa::path(get, path = "/v1/reports/dq", security(("bearer" = [])),
    responses((status = 200, description = "quarantined partitions and the index's checks", body = crate::observability::dq::DataQuality),
        (status = 400, description = "an unknown query parameter (ANALYTICS_BAD_QUERY)", body = super::openapi::ErrorBody),
        (status = 403, description = "role lacking", body = super::openapi::ErrorBody)))]
pub async fn data_quality_report(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Params,
) -> Result<Response, ApiError> {
    state.reader(&headers)?;
    only(&q, &[])?;
    let cfg = &state.services.config;
    let name = cfg.control.retrain.dataset.clone();
    let root: PathBuf = cfg.storage.datasets_root.join(&name);
    let inputs = {
        let root = root.clone();
        move || crate::observability::dq::inputs(&root)
    };
    cached(&state, "dq", &q, inputs, move || {
        Ok(json!(crate::observability::dq::report(
            &root,
            &name.display().to_string()
        )))
    })
    .await
}
