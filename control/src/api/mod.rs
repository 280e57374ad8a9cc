//! The control-plane HTTP API (axum, JSON, `/v1`). Deny by default: every
//! handler authenticates and states the roles it admits; mutating routes are
//! rate-limited per principal and audited.

pub mod auth;
pub mod error;
pub mod metrics;
pub mod models;
pub mod openapi;
pub mod ops;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use mlcore_config::AppConfig;
use mlcore_contract::{ContractError, Guard, Keys, RedisConn};
use sqlx::PgPool;

use self::auth::Principal;
use self::error::ApiError;

/// Per-principal token buckets for mutating routes.
#[derive(Debug)]
pub struct Limiter {
    per_minute: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Limiter {
    /// From `control.yaml`'s `rate_limit`.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self {
            per_minute: f64::from(per_minute),
            burst: f64::from(burst.max(1)),
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
        let entry = b.entry(who.to_owned()).or_insert((self.burst, now));
        let refill = now.duration_since(entry.1).as_secs_f64() * self.per_minute / 60.0;
        entry.0 = (entry.0 + refill).min(self.burst);
        entry.1 = now;
        if entry.0 >= 1.0 {
            entry.0 -= 1.0;
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                format!("{who} exceeded {} mutating requests per minute", self.per_minute),
            ))
        }
    }
}

/// Shared state of the handlers.
#[derive(Debug)]
pub struct AppState {
    /// Resolved configuration.
    pub config: Arc<AppConfig>,
    /// PostgreSQL.
    pub pool: PgPool,
    /// Callers.
    pub principals: Vec<Principal>,
    /// Guard client.
    pub guard: Guard,
    /// Rate limits.
    pub limiter: Limiter,
    /// Request and notification metrics.
    pub http: Arc<metrics::HttpMetrics>,
    /// The `/metrics` registry over them.
    pub exposition: mlcore_telemetry::exposition::Exposition,
    /// Alert delivery.
    pub notifier: crate::alerts::Notifier,
}

impl AppState {
    /// The caller of a mutating route: authenticated, holding one of
    /// `roles`, within its rate limit.
    pub fn mutating(
        &self,
        headers: &axum::http::HeaderMap,
        roles: &[mlcore_config::Role],
    ) -> Result<Principal, ApiError> {
        let p = auth::authenticate(headers, &self.principals)?;
        auth::require(&p, roles)?;
        self.limiter.check(&p.name)?;
        Ok(p)
    }

    /// Runs `f` on a fresh Redis connection, on the blocking pool (the
    /// `redis` client is synchronous); every failure comes back as text.
    pub async fn redis<T, F>(&self, f: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&mut RedisConn, &Keys) -> Result<T, ContractError> + Send + 'static,
    {
        let cfg = self.config.redis.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = RedisConn::connect(&(&cfg).into()).map_err(|e| e.to_string())?;
            f(&mut conn, &Keys::new(&cfg.namespace)).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("Redis task failed: {e}"))?
    }

    /// Raises `alert` in the background: delivery is counted and logged and
    /// never blocks or fails the request that raised it.
    pub fn alert(self: &Arc<Self>, alert: crate::alerts::Alert) {
        let state = Arc::clone(self);
        tokio::spawn(async move {
            for (_, d) in state.notifier.notify(&alert).await {
                let counter = match d {
                    crate::alerts::Delivery::Sent { .. } => &state.http.notifications_sent,
                    crate::alerts::Delivery::Failed { .. } => &state.http.notifications_failed,
                    crate::alerts::Delivery::Disabled => continue,
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
}

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.control.max_body_bytes;
    Router::new()
        .route("/healthz", get(metrics::healthz))
        .route("/readyz", get(metrics::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(openapi::document))
        .route("/v1/ops", get(ops::status))
        .route("/v1/ops/requests", post(ops::create))
        .route("/v1/ops/requests/{id}/{verdict}", post(ops::decide))
        .route("/v1/models", get(models::list).post(models::register))
        .route("/v1/models/{id}/activate", post(models::activate))
        .route("/v1/models/{id}/reject", post(models::reject))
        .route("/v1/models/pins/{strategy}/release", post(models::release_pin))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "ROUTE_NOT_FOUND", "no such route") })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            metrics::track,
        ))
        .with_state(state)
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// PostgreSQL.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    /// The HTTP client for alerts.
    #[error("alert client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Builds the state: pool (migrations must have run), principals, guard.
pub async fn state(config: AppConfig) -> Result<Arc<AppState>, StartError> {
    let pool = crate::db::connect(&config.database).await?;
    let notifier = crate::alerts::Notifier::new(config.notifications.clone())?;
    let http = Arc::new(metrics::HttpMetrics::default());
    Ok(Arc::new(AppState {
        principals: auth::principals(&config.control),
        guard: ops::guard_for(&config),
        limiter: Limiter::new(
            config.control.rate_limit.per_minute,
            config.control.rate_limit.burst,
        ),
        exposition: metrics::exposition(&config.metrics, Arc::clone(&http)),
        http,
        notifier,
        pool,
        config: Arc::new(config),
    }))
}
