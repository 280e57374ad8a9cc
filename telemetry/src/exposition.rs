//! Prometheus exposition: a registry with the process's prefix and default
//! labels, the standard process metrics at its root, and the text format
//! Prometheus scrapes (version 0.0.4).
//!
//! The processes keep their hot-path counters as plain atomics and their
//! latencies as hdrhistograms merged off the hot path; they expose them
//! through [`Collector`]s that read those on each scrape, so nothing on the
//! hot path changes for a scrape. Names follow Prometheus' rules: base
//! units in names and values (`_seconds`, `_bytes`), counters end in
//! `_total` (the encoder adds it), every family has HELP and TYPE, and label
//! values are escaped by the encoder (a model id with a quote or a newline
//! cannot break the exposition).

use std::borrow::Cow;

use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A registry for one process.
#[derive(Debug)]
pub struct Exposition {
    registry: Registry,
}

impl Exposition {
    /// Metrics named `<prefix>_<name>` with `labels` on every series, plus
    /// the unprefixed `process_*` metrics (with the same labels).
    pub fn new<'a>(
        prefix: &str,
        labels: impl IntoIterator<Item = (&'a str, &'a str)>,
        collectors: Vec<Box<dyn Collector>>,
    ) -> Self {
        let labels: Vec<(Cow<'static, str>, Cow<'static, str>)> = labels
            .into_iter()
            .map(|(k, v)| (Cow::Owned(k.to_owned()), Cow::Owned(v.to_owned())))
            .collect();
        let mut registry = Registry::with_labels(labels.into_iter());
        registry.register_collector(Box::new(crate::process::ProcessCollector::new()));
        let ours = registry.sub_registry_with_prefix(prefix);
        for c in collectors {
            ours.register_collector(c);
        }
        Self { registry }
    }

    /// The text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Writes a counter family with one series per `(labels, value)`.
pub fn encode_counter<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        family
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
    }
    Ok(())
}

/// Writes a gauge family with one series per `(labels, value)`.
pub fn encode_gauge<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        family.encode_family(&labels)?.encode_gauge(&v)?;
    }
    Ok(())
}

/// The samples of `hist` (values in nanoseconds) in each bucket up to the
/// `bounds` (seconds; the encoder accumulates them, Prometheus' buckets
/// being cumulative), its sum in seconds and its count: what a Prometheus
/// histogram carries.
pub fn histogram_of(hist: &Histogram<u64>, bounds_s: &[f64]) -> (f64, u64, Vec<(f64, u64)>) {
    let mut below = 0;
    let buckets = bounds_s
        .iter()
        .map(|&b| {
            let ns = (b * 1e9).round().max(0.0) as u64;
            let upto = hist.count_between(0, ns);
            let in_bucket = upto.saturating_sub(below);
            below = below.max(upto);
            (b, in_bucket)
        })
        .collect();
    let sum_ns: f64 = hist
        .iter_recorded()
        .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64)
        .sum();
    (sum_ns / 1e9, hist.len(), buckets)
}

/// Writes a histogram family with one series per `(labels, histogram)`,
/// each kept in nanoseconds and exposed in seconds at `bounds_s`.
pub fn encode_histogram<'h, L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, &'h Histogram<u64>, &'h [f64])>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, hist, bounds) in series {
        let (sum, count, buckets) = histogram_of(hist, bounds);
        family
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Sample;

    impl Collector for Sample {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            encode_counter(
                &mut encoder,
                "frames",
                "Frames decoded.",
                [(Vec::<(&str, &str)>::new(), 7)],
            )?;
            encode_gauge(
                &mut encoder,
                "model_version",
                "Version of the serving model.",
                [([("model_id", "evil\"id\nwith\\stuff")], 3.0)],
            )?;
            let mut h =
                Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(|_| std::fmt::Error)?;
            h.record(400).map_err(|_| std::fmt::Error)?; // 400 ns
            h.record(2_000_000).map_err(|_| std::fmt::Error)?; // 2 ms
            let bounds = [1e-6, 1e-3, 1e-2];
            encode_histogram(
                &mut encoder,
                "stage_latency_seconds",
                "Latency per stage.",
                [([("stage", "decode")], &h, &bounds[..])],
            )
        }
    }

    #[test]
    fn families_carry_help_type_units_and_escaped_labels() {
        let e = Exposition::new(
            "ml_assets_core",
            [("service", "ml-assets-core")],
            vec![Box::new(Sample)],
        );
        let text = e.encode().unwrap();
        assert!(
            text.contains("# HELP ml_assets_core_frames_total Frames decoded."),
            "{text}"
        );
        assert!(
            text.contains("# TYPE ml_assets_core_frames_total counter"),
            "{text}"
        );
        assert!(
            text.contains(r#"ml_assets_core_frames_total{service="ml-assets-core"} 7"#),
            "{text}"
        );
        assert!(text.contains(r#"model_id="evil\"id\nwith\\stuff""#), "{text}");
        // Sub-microsecond samples land in the first bucket, not below it.
        let bucket = |le: &str, n: u64| {
            format!(
                r#"ml_assets_core_stage_latency_seconds_bucket{{service="ml-assets-core",stage="decode",le="{le}"}} {n}"#
            )
        };
        for (le, n) in [("1e-06", 1), ("0.001", 1), ("0.01", 2), ("+Inf", 2)] {
            assert!(text.contains(&bucket(le, n)), "{le}: {text}");
        }
        assert!(
            text.contains("ml_assets_core_stage_latency_seconds_count"),
            "{text}"
        );
        // The process metrics, unprefixed.
        assert!(
            text.contains("# TYPE process_resident_memory_bytes gauge"),
            "{text}"
        );
        assert!(text.contains("process_cpu_seconds_total"), "{text}");
    }
}
