//! The control-plane HTTP API (axum, JSON, `/v1`): the transport over the
//! domain modules (`ops`, `approvals`, `registry`, `audit`). Handlers
//! authenticate (deny by default; each states the roles it admits), parse
//! requests into typed calls, audit, and map domain errors to responses
//! (`error`). Mutating routes are rate-limited per principal; failed
//! authentication is throttled per source address, and refusals the
//! handlers do not audit are audited in aggregate (`edge`). Serve it with
//! [`make_service`] so the edge sees source addresses.

pub mod analytics;
pub mod auth;
pub mod bucket;
pub mod configs;
pub mod edge;
pub mod error;
pub mod metrics;
pub mod models;
pub mod openapi;
pub mod ops;
pub mod retrain;
pub mod tls;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use mlcore_config::{AppConfig, Role};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::auth::Principal;
use self::error::ApiError;
use crate::audit::NewEvent;
use crate::services::Services;
pub use crate::services::StartError;

/// The header carrying the caller's one-time code (TOTP) for decisions.
pub const TOTP_HEADER: &str = "x-mlcore-totp";

/// Per-principal token buckets for mutating routes.
#[derive(Debug)]
pub struct Limiter {
    rate: bucket::Rate,
    buckets: Mutex<HashMap<String, bucket::Bucket>>,
}

impl Limiter {
    /// From `control.yaml`'s `rate_limit`.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self {
            rate: bucket::Rate::new(burst, per_minute),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `who`, or refuses with 429.
    pub fn check(&self, who: &str) -> Result<(), ApiError> {
        let mut b = self
            .buckets
            .lock()
            .map_err(|_| ApiError::internal("rate limiting"))?;
        let now = Instant::now();
        let entry = b.entry(who.to_owned()).or_insert_with(|| self.rate.full(now));
        if self.rate.take(entry, now) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                format!(
                    "{who} exceeded {} mutating requests per minute",
                    self.rate.per_minute
                ),
            ))
        }
    }
}

/// Shared state of the handlers: the domain's services, and what only
/// HTTP needs (who may call, rate limits, request metrics).
#[derive(Debug)]
pub struct AppState {
    /// The domain's dependencies.
    pub services: Arc<Services>,
    /// Callers.
    pub principals: Vec<Principal>,
    /// Rate limits.
    pub limiter: Limiter,
    /// Failed authentication per source, refusals to audit in aggregate.
    pub edge: edge::Edge,
    /// Request metrics.
    pub http: Arc<metrics::HttpMetrics>,
    /// The `/metrics` registry.
    pub exposition: mlcore_telemetry::exposition::Exposition,
    /// One-time codes for decisions (`control.yaml` `second_factor`).
    pub second_factor: crate::second_factor::SecondFactor,
}

impl AppState {
    /// The caller of a read-only route: authenticated, holding any role
    /// that reads (viewer, operator, approver; admin holds all).
    pub fn reader(&self, headers: &axum::http::HeaderMap) -> Result<Principal, ApiError> {
        let p = auth::authenticate(headers, &self.principals)?;
        auth::require(&p, &[Role::Viewer, Role::Operator, Role::Approver])?;
        Ok(p)
    }

    /// The caller of a mutating route: authenticated, holding one of
    /// `roles`, within its rate limit.
    pub fn mutating(&self, headers: &axum::http::HeaderMap, roles: &[Role]) -> Result<Principal, ApiError> {
        let p = auth::authenticate(headers, &self.principals)?;
        auth::require(&p, roles)?;
        self.limiter.check(&p.name)?;
        Ok(p)
    }

    /// The caller's second factor (header [`TOTP_HEADER`]) when the
    /// environment requires one for decisions: checked, then spent in
    /// Redis (once, shared with break-glass). A refusal is a 403 naming
    /// what was wrong (503 when its use cannot be recorded), audited by
    /// the caller as every refusal; a wrong code also raises a warning.
    pub async fn second_factor(
        &self,
        headers: &axum::http::HeaderMap,
        p: &Principal,
    ) -> Result<(), ApiError> {
        use crate::second_factor::SecondFactorError as E;
        let code = headers.get(TOTP_HEADER).and_then(|v| v.to_str().ok());
        let now_s = self.services.now_ms() / 1000;
        let checked = match self.second_factor.check(&p.name, code, now_s) {
            Ok(None) => return Ok(()),
            Ok(Some(step)) => match self.services.redis.spend_code(&p.name, step).await {
                Ok(mlcore_contract::CodeSpent::Spent) => return Ok(()),
                Ok(mlcore_contract::CodeSpent::Replayed { .. }) => E::Replayed,
                Err(e) => E::Unrecorded(e.to_string()),
            },
            Err(e) => e,
        };
        if checked == E::Invalid {
            self.services.alerts.raise(crate::alerts::Alert {
                severity: mlcore_config::Severity::Warning,
                kind: "second_factor_invalid".into(),
                scope: p.name.clone(),
                summary: format!("a wrong one-time code for {}", p.name),
                details: serde_json::json!({"principal": p.name}),
                resolve: false,
            });
        }
        let (status, code) = match checked {
            E::Missing => (StatusCode::FORBIDDEN, "AUTH_TOTP_MISSING"),
            E::NotEnrolled(_) => (StatusCode::FORBIDDEN, "AUTH_TOTP_NOT_ENROLLED"),
            E::Invalid => (StatusCode::FORBIDDEN, "AUTH_TOTP_INVALID"),
            E::Replayed => (StatusCode::FORBIDDEN, "AUTH_TOTP_REPLAYED"),
            E::Unrecorded(_) => (StatusCode::SERVICE_UNAVAILABLE, "AUTH_TOTP_UNRECORDED"),
        };
        Err(ApiError::new(status, code, checked.to_string()))
    }

    /// Audits one request of `record_type` (critical: kept 5 years).
    /// `after` holds what changed.
    #[allow(clippy::too_many_arguments)] // one audit row's fields
    pub async fn record(
        &self,
        record_type: &str,
        who: &str,
        action: &str,
        scope: &str,
        after: serde_json::Value,
        result: &str,
        request_id: &str,
    ) -> Result<(), ApiError> {
        let e = NewEvent {
            at_ms: self.services.now_ms(),
            record_type: record_type.into(),
            critical: true,
            actor: who.into(),
            action: error::printable(action),
            scope: error::printable(scope),
            before: serde_json::Value::Null,
            after,
            result: result.into(),
            request_id: error::printable(request_id),
        };
        self.services.audit(e).await.map(|_| ()).map_err(|e| {
            tracing::error!(error = %e, "audit log write failed");
            ApiError::internal("writing the audit log")
        })
    }

    /// Audits a refused request of `record_type` and hands the error back
    /// (or the audit failure, which is worse).
    pub async fn refused(
        &self,
        record_type: &str,
        who: &str,
        action: &str,
        scope: &str,
        request_id: &str,
        err: ApiError,
    ) -> ApiError {
        let result = format!("refused: {}", err.code);
        match self
            .record(
                record_type,
                who,
                action,
                scope,
                serde_json::Value::Null,
                &result,
                request_id,
            )
            .await
        {
            Ok(()) => ApiError { audited: true, ..err },
            Err(audit_failure) => audit_failure,
        }
    }
}

/// Every route of the API under `/v1`, each with its OpenAPI
/// description: one list builds both the router and the document.
fn api_routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(ops::status))
        .routes(routes!(ops::create))
        .routes(routes!(ops::decide))
        .routes(routes!(models::list, models::register))
        .routes(routes!(models::activate))
        .routes(routes!(models::reject))
        .routes(routes!(models::release_pin))
        .routes(routes!(retrain::list, retrain::start))
        .routes(routes!(retrain::show))
        .routes(routes!(retrain::report))
        .routes(routes!(configs::list, configs::create))
        .routes(routes!(configs::show, configs::edit))
        .routes(routes!(configs::diff))
        .routes(routes!(configs::submit))
        .routes(routes!(configs::approve))
        .routes(routes!(configs::reject))
        .routes(routes!(configs::cancel))
        .routes(routes!(configs::merge))
        .routes(routes!(configs::apply))
        .routes(routes!(configs::rollback))
        .routes(routes!(configs::status))
        .routes(routes!(analytics::latency))
        .routes(routes!(analytics::portfolio))
        .routes(routes!(analytics::runs))
        .routes(routes!(analytics::weekly_report))
        .routes(routes!(analytics::data_quality_report))
}

/// The OpenAPI document of [`router`]'s `/v1` routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api_routes().into_openapi();
    openapi::add_edge_responses(&mut doc);
    doc
}

/// The router: the `/v1` API, its document at `/openapi.json`, health,
/// readiness and metrics.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.services.config.control.max_body_bytes;
    let (api, mut doc) = api_routes().split_for_parts();
    openapi::add_edge_responses(&mut doc);
    let strategies: Vec<String> = state
        .services
        .config
        .universe
        .strategies
        .iter()
        .map(|s| s.id.to_string())
        .collect();
    openapi::enumerate_known(&mut doc, &strategies);
    let doc = Arc::new(doc);
    api.route("/healthz", get(metrics::healthz))
        .route("/readyz", get(metrics::readyz))
        .route("/metrics", get(metrics::metrics))
        .route(
            "/openapi.json",
            get(move || std::future::ready(Json(Arc::clone(&doc)))),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "ROUTE_NOT_FOUND", "no such route") })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            edge::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            metrics::track,
        ))
        .with_state(state)
}

/// The router as a service that knows each connection's address (the
/// edge throttles failed authentication per address).
pub fn make_service(
    state: Arc<AppState>,
) -> axum::extract::connect_info::IntoMakeServiceWithConnectInfo<Router, std::net::SocketAddr> {
    router(state).into_make_service_with_connect_info::<std::net::SocketAddr>()
}

/// Builds the state: the services (migrations must have run), principals,
/// limits and metrics.
pub async fn state(config: AppConfig) -> Result<Arc<AppState>, StartError> {
    let services = Services::connect(config).await?;
    let http = Arc::new(metrics::HttpMetrics::default());
    let cfg = &services.config;
    Ok(Arc::new(AppState {
        principals: auth::principals(&cfg.control),
        limiter: Limiter::new(cfg.control.rate_limit.per_minute, cfg.control.rate_limit.burst),
        edge: edge::Edge::new(cfg.control.failed_auth.clone()),
        exposition: metrics::exposition(&cfg.metrics, Arc::clone(&http), Arc::clone(&services.alerts)),
        second_factor: crate::second_factor::SecondFactor::new(
            cfg.control.second_factor.required,
            &cfg.control.principals,
        )?,
        http,
        services,
    }))
}
