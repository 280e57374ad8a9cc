//! `/healthz`, `/readyz` and `/metrics` of the control plane.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::AppState;

/// Request latency bucket bounds, ms.
const BUCKETS_MS: [f64; 9] = [1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0];

/// Request counters and a latency histogram (atomics: no lock per request).
#[derive(Debug, Default)]
pub struct HttpMetrics {
    by_class: [AtomicU64; 5],
    buckets: [AtomicU64; BUCKETS_MS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
    /// Notifications delivered.
    pub notifications_sent: AtomicU64,
    /// Notifications that failed after every retry.
    pub notifications_failed: AtomicU64,
}

impl HttpMetrics {
    fn observe(&self, status: StatusCode, started: Instant) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        for (b, bound) in self.buckets.iter().zip(BUCKETS_MS) {
            if ms <= bound {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add((ms * 1000.0) as u64, Ordering::Relaxed);
    }
}

/// Middleware: times every request.
pub async fn track(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let resp = next.run(req).await;
    state.http.observe(resp.status(), started);
    resp
}

/// `GET /healthz`: the process answers.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: PostgreSQL and Redis answer.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let db = sqlx::query("SELECT 1").execute(&state.pool).await.is_ok();
    let redis = state.redis(|_, _| Ok(())).await.is_ok();
    let body = Json(serde_json::json!({"ready": db && redis, "postgres": db, "redis": redis}));
    if db && redis {
        (StatusCode::OK, body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let p = "ml_assets_core_control_";
    let m = &state.http;
    let mut out = String::new();
    let _ = writeln!(out, "# TYPE {p}requests_total counter");
    for (i, c) in m.by_class.iter().enumerate() {
        let _ = writeln!(
            out,
            "{p}requests_total{{class=\"{}xx\"}} {}",
            i + 1,
            c.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(out, "# TYPE {p}request_duration_ms histogram");
    for (b, bound) in m.buckets.iter().zip(BUCKETS_MS) {
        let _ = writeln!(
            out,
            "{p}request_duration_ms_bucket{{le=\"{bound}\"}} {}",
            b.load(Ordering::Relaxed)
        );
    }
    let count = m.count.load(Ordering::Relaxed);
    let _ = writeln!(out, "{p}request_duration_ms_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(
        out,
        "{p}request_duration_ms_sum {}",
        m.sum_us.load(Ordering::Relaxed) as f64 / 1000.0
    );
    let _ = writeln!(out, "{p}request_duration_ms_count {count}");
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM core.ops_requests WHERE status = 'pending'")
        .fetch_one(&state.pool)
        .await
        .unwrap_or(-1);
    let chain: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.events")
        .fetch_one(&state.pool)
        .await
        .unwrap_or(-1);
    let _ = writeln!(
        out,
        "# TYPE {p}approvals_pending gauge\n{p}approvals_pending {pending}"
    );
    let _ = writeln!(
        out,
        "# TYPE {p}audit_chain_length gauge\n{p}audit_chain_length {chain}"
    );
    let _ = writeln!(
        out,
        "# TYPE {p}notifications_sent_total counter\n{p}notifications_sent_total {}",
        m.notifications_sent.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# TYPE {p}notifications_failed_total counter\n{p}notifications_failed_total {}",
        m.notifications_failed.load(Ordering::Relaxed)
    );
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}
