//! Refused requests at the edge of the API, before and after the handlers:
//!
//! - **Failed authentication is throttled per source address.** Each
//!   address has a bucket of `failed_auth.burst` failures refilling at
//!   `per_minute`; while it is empty every `/v1` request from that address
//!   gets `429 AUTH_THROTTLED` (with `Retry-After`) without its token being
//!   looked at, so guessing tokens costs a minute per `per_minute` guesses.
//!   `alert_after` failures from one address within a minute raise a
//!   warning alert (`auth_failures_burst`), once per address and minute.
//! - **Every refused request is audited.** Handlers audit the refusals they
//!   decide themselves and mark the response [`Audited`]; what is left
//!   (401, a 404 route, malformed bodies, 413, 429, 403 before a handler
//!   could audit) is counted here per source, route template, status and
//!   code, and written as one `refused_requests` audit row per key and
//!   window (`refused_audit_window_s`) — a flood of unauthenticated
//!   requests costs rows per window, not per request. Keys are bounded:
//!   past [`MAX_KEYS`] new ones are counted under one overflow key.
//!
//! Only routes under `/v1` are guarded and counted (health, readiness,
//! metrics and the OpenAPI document need no token).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mlcore_config::{FailedAuthConfig, Severity};
use serde_json::json;

use super::bucket::{Bucket, Rate};
use super::error::ApiError;
use super::AppState;
use crate::alerts::Alert;
use crate::audit::NewEvent;

/// Marks a response whose refusal the handler audited itself.
#[derive(Debug, Clone, Copy)]
pub struct Audited;

/// The stable code of an error response, for the aggregate.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

/// Most distinct (source, route, status, code) keys kept per window.
pub const MAX_KEYS: usize = 10_000;
/// Most source addresses tracked for failed authentication; idle ones with
/// a full bucket are forgotten first.
const MAX_SOURCES: usize = 100_000;

#[derive(Debug)]
struct Source {
    bucket: Bucket,
    window_start: Instant,
    failures_in_window: u32,
    alerted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    source: String,
    action: String,
    route: String,
    status: u16,
    code: &'static str,
}

#[derive(Debug, Clone, Copy)]
struct Tally {
    count: u64,
    first_ms: u64,
    last_ms: u64,
}

/// Failed-authentication buckets per source and the refusals waiting to
/// be audited.
#[derive(Debug)]
pub struct Edge {
    cfg: FailedAuthConfig,
    rate: Rate,
    sources: Mutex<HashMap<IpAddr, Source>>,
    pending: Mutex<HashMap<Key, Tally>>,
}

impl Edge {
    /// From `control.yaml`'s `failed_auth`.
    pub fn new(cfg: FailedAuthConfig) -> Self {
        Self {
            rate: Rate::new(cfg.burst, cfg.per_minute),
            cfg,
            sources: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// How long `ip` must wait before its next request, while throttled.
    fn throttled(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let mut sources = self.sources.lock().ok()?;
        self.rate.wait(&mut sources.get_mut(&ip)?.bucket, now)
    }

    /// Records a failed authentication from `ip`; returns the failures in
    /// the current minute when they just reached `alert_after`.
    fn failed(&self, ip: IpAddr, now: Instant) -> Option<u32> {
        let mut sources = self.sources.lock().ok()?;
        if sources.len() >= MAX_SOURCES && !sources.contains_key(&ip) {
            let rate = self.rate;
            sources.retain(|_, s| {
                !rate.is_full(&s.bucket)
                    && now.duration_since(Rate::last(&s.bucket)) < Duration::from_secs(600)
            });
        }
        let s = sources.entry(ip).or_insert_with(|| Source {
            bucket: self.rate.full(now),
            window_start: now,
            failures_in_window: 0,
            alerted: false,
        });
        self.rate.spend(&mut s.bucket, now);
        if now.duration_since(s.window_start) >= Duration::from_secs(60) {
            (s.window_start, s.failures_in_window, s.alerted) = (now, 0, false);
        }
        s.failures_in_window += 1;
        if s.failures_in_window >= self.cfg.alert_after && !s.alerted {
            s.alerted = true;
            return Some(s.failures_in_window);
        }
        None
    }

    fn count(&self, key: Key, at_ms: u64) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        let key = if pending.len() >= MAX_KEYS && !pending.contains_key(&key) {
            Key {
                source: "*".into(),
                action: "*".into(),
                route: "*".into(),
                status: 0,
                code: "OVERFLOW",
            }
        } else {
            key
        };
        let t = pending.entry(key).or_insert(Tally {
            count: 0,
            first_ms: at_ms,
            last_ms: at_ms,
        });
        t.count += 1;
        t.last_ms = at_ms;
    }

    /// Takes the refusals counted so far, as audit rows.
    pub fn drain(&self) -> Vec<NewEvent> {
        let taken = match self.pending.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => return Vec::new(),
        };
        taken
            .into_iter()
            .map(|(k, t)| NewEvent {
                at_ms: t.last_ms,
                record_type: "refused_requests".into(),
                critical: false,
                actor: format!("source:{}", k.source),
                action: k.action,
                scope: k.route,
                before: serde_json::Value::Null,
                after: json!({
                    "status": k.status,
                    "code": k.code,
                    "count": t.count,
                    "first_at_ms": t.first_ms,
                    "last_at_ms": t.last_ms,
                }),
                result: format!("refused: {}", k.code),
                request_id: crate::approvals::new_id(),
            })
            .collect()
    }
}

/// Writes what [`Edge`] counted to the audit log. A row that cannot be
/// written is logged, not retried: the chain never waits on it.
pub async fn flush(state: &AppState) -> usize {
    let mut written = 0;
    for e in state.edge.drain() {
        match state.services.audit(e).await {
            Ok(_) => written += 1,
            Err(e) => tracing::error!(error = %e, "aggregated refusals not audited"),
        }
    }
    written
}

/// The middleware: throttles sources that failed authentication too
/// often, and counts every refusal a handler did not audit.
pub async fn guard(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/v1") {
        return next.run(req).await;
    }
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = req.method().clone();
    let now = Instant::now();
    let resp = match ip.and_then(|ip| state.edge.throttled(ip, now)) {
        Some(wait) => {
            let mut resp = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "AUTH_THROTTLED",
                format!(
                    "too many failed authentications from this address; retry in {} s",
                    wait.as_secs()
                ),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&wait.as_secs().to_string()) {
                resp.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
            resp
        }
        None => next.run(req).await,
    };
    let status = resp.status();
    if status == StatusCode::UNAUTHORIZED {
        if let Some(ip) = ip {
            if let Some(n) = state.edge.failed(ip, now) {
                state.services.alerts.raise(Alert {
                    severity: Severity::Warning,
                    kind: "auth_failures_burst".into(),
                    scope: ip.to_string(),
                    summary: format!("{n} failed authentications from {ip} within a minute"),
                    details: json!({"source": ip.to_string(), "failures": n}),
                    resolve: false,
                });
            }
        }
    }
    let refused = status.is_client_error();
    let mutating = method != Method::GET && method != Method::HEAD;
    let counted = mutating || status == StatusCode::UNAUTHORIZED || status == StatusCode::TOO_MANY_REQUESTS;
    if refused && counted && resp.extensions().get::<Audited>().is_none() {
        let code = resp.extensions().get::<ErrorCode>().map_or("HTTP_ERROR", |c| c.0);
        state.edge.count(
            Key {
                source: ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()),
                action: format!("{method} {route}"),
                route,
                status: status.as_u16(),
                code,
            },
            state.services.now_ms(),
        );
    }
    resp
}
