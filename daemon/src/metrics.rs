//! The daemon's Prometheus metrics: a collector over the counters and
//! merged histograms the hot threads already keep, read at scrape time, so
//! a scrape changes nothing on the hot path.
//!
//! Names are `<prefix>_<name>` (`metrics.yaml`; the encoder adds `_total`
//! to counters), latencies are `stage_latency_seconds{stage}`, kept in
//! nanoseconds and exposed in seconds at the configured bucket bounds.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use mlcore_telemetry::exposition::{encode_counter, encode_gauge, encode_histogram, Exposition};

use crate::http::Observed;
use crate::stats::{Outcome, Stage};
use crate::wire::WireError;

/// The daemon's registry: its metrics and the standard process metrics,
/// with `metrics.yaml`'s prefix and default labels.
pub fn exposition(observed: &Observed) -> Exposition {
    let m = &observed.metrics;
    let labels = m.default_labels.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    Exposition::new(
        &m.prefix,
        labels,
        vec![Box::new(DaemonCollector {
            observed: observed.clone(),
        })],
    )
}

#[derive(Debug)]
struct DaemonCollector {
    observed: Observed,
}

type NoLabels = [(&'static str, &'static str); 0];
const NONE: NoLabels = [];

impl Collector for DaemonCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let o = &self.observed;
        let c = &o.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        for (name, help, v) in [
            ("frames", "Frames decoded.", get(&c.frames)),
            ("quotes", "Quotes applied to features.", get(&c.quotes)),
            (
                "unknown_symbols",
                "Quotes for symbols outside the universe, dropped.",
                get(&c.unknown_symbols),
            ),
            (
                "unknown_strategies",
                "Triggers for strategies outside the universe, dropped.",
                get(&c.unknown_strategies),
            ),
            (
                "triggers_ahead",
                "Triggers stamped more than 5 s ahead of this host's clock, dropped (their seq would hold the strategy's high-water mark in the future).",
                get(&c.triggers_ahead),
            ),
            ("decisions", "Decisions made.", get(&c.decisions)),
            (
                "decisions_dropped",
                "Decisions refused by overload.",
                get(&c.decisions_dropped),
            ),
            (
                "decisions_without_model",
                "Triggers with no model serving.",
                get(&c.decisions_without_model),
            ),
            (
                "decisions_scoring_failed",
                "Decisions lost because ONNX Runtime failed to score the serving model.",
                get(&c.decisions_scoring_failed),
            ),
            (
                "publish_dropped",
                "Decided batches refused by the publish queue.",
                get(&c.publish_dropped),
            ),
            (
                "signals_accepted",
                "Signals accepted by the guard.",
                get(&c.signals_accepted),
            ),
            (
                "held_by_mode",
                "Batches held because of the ops mode.",
                get(&c.held_by_mode),
            ),
            (
                "publish_overlapped",
                "Guard pipelines sent while the previous one was still in Redis.",
                get(&c.publish_overlapped),
            ),
            (
                "redis_errors",
                "Redis connection or command errors.",
                get(&c.redis_errors),
            ),
            (
                "refused_artifacts",
                "Model artifacts refused.",
                get(&c.refused_artifacts),
            ),
            ("model_swaps", "Models activated.", get(&c.model_swaps)),
            (
                "native_fallbacks",
                "Model heads kept on ONNX Runtime because their native form was refused.",
                get(&c.native_fallbacks),
            ),
        ] {
            encode_counter(&mut e, name, help, [(NONE, v)])?;
        }
        encode_counter(
            &mut e,
            "wire_errors",
            "Connections closed for a malformed frame.",
            WireError::ALL.map(|w| ([("reason", w.label())], get(&c.wire_errors[w.index()]))),
        )?;
        encode_counter(
            &mut e,
            "batches",
            "Decided batches by publish outcome.",
            Outcome::ALL.map(|x| ([("outcome", x.label())], c.outcomes_of(x))),
        )?;
        let active = o.active.load();
        encode_gauge(
            &mut e,
            "model_version",
            "Version of the model serving each strategy.",
            active.iter().map(|(strategy, m)| {
                (
                    [("strategy", strategy.as_str()), ("model_id", m.model_id.as_str())],
                    m.version as f64,
                )
            }),
        )?;
        encode_gauge(
            &mut e,
            "ops_mode",
            "The ops mode each strategy is published under (1 for the mode in force).",
            o.universe.strategies.iter().enumerate().map(|(s, strat)| {
                (
                    [("strategy", strat.id.as_str()), ("mode", o.ops.mode(s).as_str())],
                    1.0,
                )
            }),
        )?;
        encode_gauge(
            &mut e,
            "ready",
            "1 when every strategy has a verified, warmed model and the guard is loaded.",
            [(NONE, if o.ready() { 1.0 } else { 0.0 })],
        )?;
        o.hists.drain();
        let Ok(merged) = o.hists.merged.lock() else {
            return Ok(());
        };
        let buckets = &o.metrics.latency_buckets_seconds;
        encode_histogram(
            &mut e,
            "stage_latency_seconds",
            "Latency per pipeline stage (trigger_to_ack: trigger decoded to the guard's reply read).",
            Stage::ALL.iter().filter_map(|stage| {
                let bounds = buckets.get(stage.label())?;
                Some((
                    [("stage", stage.label())],
                    &merged.stages[*stage as usize],
                    bounds.as_slice(),
                ))
            }),
        )
    }
}
