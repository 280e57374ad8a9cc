//! `/metrics` (Prometheus text), `/healthz`, `/readyz`, served by axum on
//! the side runtime (never on a hot core when the machine has others).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;

use mlcore_config::MetricsConfig;
use mlcore_telemetry::exposition::{Exposition, CONTENT_TYPE};

use crate::loader::ActiveModels;
use crate::ops::OpsTable;
use crate::stats::{Counters, Histograms};
use mlcore_decision::universe::Universe;

/// What the endpoints report on.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Counters.
    pub counters: Arc<Counters>,
    /// Histograms.
    pub hists: Histograms,
    /// Active models.
    pub active: Arc<ActiveModels>,
    /// The last refused artifact per strategy.
    pub refusals: Arc<crate::loader::Refusals>,
    /// Ops modes.
    pub ops: Arc<OpsTable>,
    /// Universe.
    pub universe: Arc<Universe>,
    /// `metrics.yaml`.
    pub metrics: MetricsConfig,
    /// The configuration version in force (`crate::live`).
    pub config: Arc<arc_swap::ArcSwap<mlcore_contract::heartbeat::ConfigReport>>,
}

impl Observed {
    /// Ready: a verified, warmed model for every strategy and the guard loaded.
    pub fn ready(&self) -> bool {
        let active = self.active.load();
        self.counters.redis_ok.load(Ordering::Relaxed)
            && self
                .universe
                .strategies
                .iter()
                .all(|s| active.contains_key(s.id.as_str()))
    }

    /// `ok` or `degraded`.
    pub fn status(&self) -> &'static str {
        if self.counters.redis_ok.load(Ordering::Relaxed) && self.counters.model_ready.load(Ordering::Relaxed)
        {
            "ok"
        } else {
            "degraded"
        }
    }
}

/// What the routes share: what is observed, and the registry over it.
#[derive(Debug, Clone)]
struct Endpoints {
    observed: Observed,
    exposition: Arc<Exposition>,
}

/// The routes.
pub fn router(observed: Observed) -> axum::Router {
    let exposition = Arc::new(crate::metrics::exposition(&observed));
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Endpoints { observed, exposition })
}

async fn metrics(State(s): State<Endpoints>) -> axum::response::Response {
    match s.exposition.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn healthz(State(Endpoints { observed: o, .. }): State<Endpoints>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"status\":\"{}\"}}", o.status()),
    )
}

async fn readyz(State(Endpoints { observed: o, .. }): State<Endpoints>) -> impl IntoResponse {
    let ready = o.ready();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"ready\":{ready}}}"),
    )
}

/// Serves until `shutdown` is set (checked every 50 ms), then lets
/// in-flight requests finish.
pub async fn serve(listener: tokio::net::TcpListener, observed: Observed, shutdown: Arc<AtomicBool>) {
    let stop = async move {
        while !shutdown.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if let Err(e) = axum::serve(listener, router(observed))
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(error = %e, "metrics endpoint stopped");
    }
}
