//! `/metrics` (Prometheus text), `/healthz`, `/readyz`, served by axum on
//! the side runtime (never on a hot core when the machine has others).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;

use mlcore_config::MetricsConfig;

use crate::loader::ActiveModels;
use crate::ops::OpsTable;
use crate::stats::{Counters, Histograms, Outcome, Stage};
use crate::universe::Universe;
use crate::wire::WireError;

/// What the endpoints report on.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Counters.
    pub counters: Arc<Counters>,
    /// Histograms.
    pub hists: Histograms,
    /// Active models.
    pub active: Arc<ActiveModels>,
    /// Ops modes.
    pub ops: Arc<OpsTable>,
    /// Universe.
    pub universe: Arc<Universe>,
    /// `metrics.yaml`.
    pub metrics: MetricsConfig,
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
                .all(|s| active.contains_key(&s.id))
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

    /// The Prometheus exposition.
    pub fn render(&self) -> String {
        let p = &self.metrics.prefix;
        // Default labels end with a comma so per-series labels can follow.
        let labels: String = self
            .metrics
            .default_labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\","))
            .collect();
        let c = &self.counters;
        let mut out = String::new();
        let mut families = std::collections::BTreeSet::new();
        let mut counter = |name: &str, help: &str, v: u64, extra: &str| {
            if families.insert(name.to_owned()) {
                let _ = writeln!(out, "# HELP {p}{name} {help}\n# TYPE {p}{name} counter");
            }
            let set = format!("{labels}{extra}");
            let _ = writeln!(out, "{p}{name}{{{}}} {v}", set.trim_end_matches(','));
        };
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        counter("frames_total", "Frames decoded.", get(&c.frames), "");
        counter("quotes_total", "Quotes applied to features.", get(&c.quotes), "");
        counter(
            "unknown_symbols_total",
            "Quotes for symbols outside the universe, dropped.",
            get(&c.unknown_symbols),
            "",
        );
        counter("decisions_total", "Decisions made.", get(&c.decisions), "");
        counter(
            "decisions_dropped_total",
            "Decisions refused by overload.",
            get(&c.decisions_dropped),
            "",
        );
        counter(
            "decisions_without_model_total",
            "Triggers with no model serving.",
            get(&c.decisions_without_model),
            "",
        );
        counter(
            "decisions_scoring_failed_total",
            "Decisions lost because ONNX Runtime failed to score the serving model.",
            get(&c.decisions_scoring_failed),
            "",
        );
        counter(
            "publish_dropped_total",
            "Decided batches refused by the publish queue.",
            get(&c.publish_dropped),
            "",
        );
        counter(
            "signals_accepted_total",
            "Signals accepted by the guard.",
            get(&c.signals_accepted),
            "",
        );
        counter(
            "held_by_mode_total",
            "Batches held because of the ops mode.",
            get(&c.held_by_mode),
            "",
        );
        counter(
            "publish_overlapped_total",
            "Guard pipelines sent while the previous one was still in Redis.",
            get(&c.publish_overlapped),
            "",
        );
        counter(
            "redis_errors_total",
            "Redis connection or command errors.",
            get(&c.redis_errors),
            "",
        );
        counter(
            "refused_artifacts_total",
            "Model artifacts refused.",
            get(&c.refused_artifacts),
            "",
        );
        counter("model_swaps_total", "Models activated.", get(&c.model_swaps), "");
        for e in WireError::ALL {
            counter(
                "wire_errors_total",
                "Connections closed for a malformed frame.",
                get(&c.wire_errors[e.index()]),
                &format!("reason=\"{}\"", e.label()),
            );
        }
        for o in Outcome::ALL {
            counter(
                "batches_total",
                "Decided batches by publish outcome.",
                c.outcomes_of(o),
                &format!("outcome=\"{}\"", o.label()),
            );
        }
        let _ = writeln!(out, "# TYPE {p}model_version gauge");
        for (strategy, m) in self.active.load().iter() {
            let _ = writeln!(
                out,
                "{p}model_version{{{labels}strategy=\"{strategy}\",model_id=\"{}\"}} {}",
                m.model_id, m.version
            );
        }
        if let Some(rss) = resident_bytes() {
            let _ = writeln!(
                out,
                "# HELP {p}process_resident_memory_bytes Resident set size (for flat-memory checks across model swaps).\n# TYPE {p}process_resident_memory_bytes gauge\n{p}process_resident_memory_bytes{{{}}} {rss}",
                labels.trim_end_matches(',')
            );
        }
        let _ = writeln!(out, "# TYPE {p}ops_mode gauge");
        for (s, strat) in self.universe.strategies.iter().enumerate() {
            let mode = self.ops.mode(s);
            let _ = writeln!(
                out,
                "{p}ops_mode{{{labels}strategy=\"{}\",mode=\"{mode}\"}} 1",
                strat.id
            );
        }
        self.hists.drain();
        if let Ok(merged) = self.hists.merged.lock() {
            let _ = writeln!(out, "# HELP {p}stage_latency_microseconds Latency per pipeline stage.\n# TYPE {p}stage_latency_microseconds histogram");
            for stage in Stage::ALL {
                let h = &merged.stages[stage as usize];
                let Some(buckets) = self.metrics.latency_buckets_us.get(stage.label()) else {
                    continue;
                };
                let l = format!("{labels}stage=\"{}\"", stage.label());
                for b in buckets {
                    let _ = writeln!(
                        out,
                        "{p}stage_latency_microseconds_bucket{{{l},le=\"{b}\"}} {}",
                        h.count_between(0, *b as u64)
                    );
                }
                let _ = writeln!(
                    out,
                    "{p}stage_latency_microseconds_bucket{{{l},le=\"+Inf\"}} {}",
                    h.len()
                );
                let sum: f64 = h
                    .iter_recorded()
                    .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64)
                    .sum();
                let _ = writeln!(out, "{p}stage_latency_microseconds_sum{{{l}}} {sum}\n{p}stage_latency_microseconds_count{{{l}}} {}", h.len());
            }
        }
        out
    }
}

/// The routes.
pub fn router(observed: Observed) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(observed)
}

async fn metrics(State(o): State<Observed>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], o.render())
}

async fn healthz(State(o): State<Observed>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"status\":\"{}\"}}", o.status()),
    )
}

async fn readyz(State(o): State<Observed>) -> impl IntoResponse {
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
        crate::log::log(
            "error",
            "metrics endpoint stopped",
            &[("error", e.to_string().into())],
        );
    }
}

/// This process's resident set size, from `/proc/self/status` (Linux).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}
