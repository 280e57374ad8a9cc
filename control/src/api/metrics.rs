//! `/healthz`, `/readyz` and `/metrics` of the control plane.
//!
//! `/metrics` is Prometheus text through the Prometheus client: request
//! counts and latency (atomics updated by a middleware, no lock per
//! request), notifications, approvals pending and the audit log's head
//! (one indexed read each per scrape, never a `count(*)` over the log),
//! and the standard process metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use mlcore_telemetry::exposition::{encode_counter, encode_gauge, Exposition, CONTENT_TYPE};

use super::AppState;
use crate::alerts::Alerter;

/// Request latency bucket bounds, seconds.
const BUCKETS_S: [f64; 9] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// Request counters and a latency histogram (atomics: no lock per request),
/// and the gauges a scrape refreshes.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    by_class: [AtomicU64; 5],
    /// Requests per latency bucket (not cumulative; the encoder sums).
    buckets: [AtomicU64; BUCKETS_S.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
    /// Approval requests pending and not expired, at the last scrape.
    approvals_pending: AtomicU64,
    /// The audit log's newest `seq`, at the last scrape.
    audit_head_seq: AtomicU64,
}

impl HttpMetrics {
    fn observe(&self, status: StatusCode, started: Instant) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        let elapsed = started.elapsed();
        let s = elapsed.as_secs_f64();
        if let Some(b) = BUCKETS_S.iter().position(|bound| s <= *bound) {
            self.buckets[b].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

/// The control plane's registry (prefix `<metrics.yaml prefix>_control`).
pub fn exposition(
    cfg: &mlcore_config::MetricsConfig,
    http: Arc<HttpMetrics>,
    alerts: Arc<Alerter>,
) -> Exposition {
    let labels = cfg.default_labels.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    Exposition::new(
        &format!("{}_control", cfg.prefix),
        labels,
        vec![Box::new(ControlCollector { http, alerts })],
    )
}

#[derive(Debug)]
struct ControlCollector {
    http: Arc<HttpMetrics>,
    alerts: Arc<Alerter>,
}

impl Collector for ControlCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &self.http;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        encode_counter(
            &mut e,
            "requests",
            "API requests answered, by status class.",
            CLASSES
                .iter()
                .zip(&m.by_class)
                .map(|(class, c)| ([("class", *class)], get(c))),
        )?;
        let buckets: Vec<(f64, u64)> = BUCKETS_S
            .iter()
            .zip(&m.buckets)
            .map(|(b, c)| (*b, get(c)))
            .collect();
        let mut family = e.encode_descriptor(
            "request_duration_seconds",
            "API request latency, from the request read to the response written.",
            None,
            MetricType::Histogram,
        )?;
        family.encode_histogram::<NoLabelSet>(get(&m.sum_ns) as f64 / 1e9, get(&m.count), &buckets, None)?;
        let none: [(&str, &str); 0] = [];
        encode_counter(
            &mut e,
            "notifications_sent",
            "Alert notifications delivered.",
            [(none, self.alerts.sent())],
        )?;
        encode_counter(
            &mut e,
            "notifications_failed",
            "Alert notifications that failed after every retry.",
            [(none, self.alerts.failed())],
        )?;
        encode_gauge(
            &mut e,
            "approvals_pending",
            "Approval requests pending and not expired.",
            [(none, get(&m.approvals_pending) as f64)],
        )?;
        encode_gauge(
            &mut e,
            "audit_head_seq",
            "Sequence number of the newest audit event.",
            [(none, get(&m.audit_head_seq) as f64)],
        )
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
    let svc = &state.services;
    let db = sqlx::query("SELECT 1").execute(&svc.pool).await.is_ok();
    let redis = svc.redis.ping().await.is_ok();
    let body = Json(serde_json::json!({"ready": db && redis, "postgres": db, "redis": redis}));
    if db && redis {
        (StatusCode::OK, body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

/// `GET /metrics`: Prometheus text. The two database gauges are read
/// first (indexed reads), then everything is encoded from memory.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let svc = &state.services;
    let now = svc.now_ms() as i64;
    let pending: Option<i64> = sqlx::query_scalar(
        "SELECT count(*) FROM core.ops_requests WHERE status = 'pending' AND expires_at_ms > $1",
    )
    .bind(now)
    .fetch_one(&svc.pool)
    .await
    .ok();
    let head: Option<i64> = sqlx::query_scalar("SELECT seq FROM audit.events ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&svc.pool)
        .await
        .ok()
        .map(|s| s.unwrap_or(0));
    let m = &state.http;
    if let Some(n) = pending {
        m.approvals_pending
            .store(u64::try_from(n).unwrap_or(0), Ordering::Relaxed);
    }
    if let Some(n) = head {
        m.audit_head_seq
            .store(u64::try_from(n).unwrap_or(0), Ordering::Relaxed);
    }
    match state.exposition.encode() {
        Ok(text) => ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
