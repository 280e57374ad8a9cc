//! What the daemons' own histograms say between two runs: each daemon's
//! `/metrics` exposes `<prefix>_stage_latency_seconds` (trigger decoded →
//! the guard's reply read, `stage="trigger_to_ack"`) as cumulative
//! buckets. A run keeps each target's buckets; the next run's difference
//! is the interval's histogram, whose quantiles are interpolated within
//! their bucket (as Prometheus' `histogram_quantile` does). A count that
//! went down means the daemon restarted: the whole current histogram is
//! the interval's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The stage the job reads.
pub const STAGE: &str = "trigger_to_ack";

/// Cumulative bucket counts by upper bound, as one scrape saw them (kept
/// in the job's state as JSON, which has no infinity: the `+Inf` bucket is
/// `count`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Buckets {
    /// `(le, cumulative count)` of the finite bounds, ascending `le`.
    pub cumulative: Vec<(f64, f64)>,
    /// Every observation (the `+Inf` bucket).
    pub count: f64,
}

/// Unescapes and splits `k="v",k2="v2"`.
fn labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        out.insert(key.trim().trim_start_matches(',').trim().to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',').trim();
    }
    Some(out)
}

/// The `trigger_to_ack` buckets of a Prometheus / OpenMetrics text
/// exposition (`None` when it has none).
pub fn parse(text: &str) -> Option<Buckets> {
    let mut cumulative = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let Some((name, rest)) = line.split_once('{') else {
            continue;
        };
        if !name.ends_with("stage_latency_seconds_bucket") {
            continue;
        }
        let Some((label_text, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let Some(l) = labels(label_text) else { continue };
        if l.get("stage").map(String::as_str) != Some(STAGE) {
            continue;
        }
        let le = match l.get("le").map(String::as_str) {
            Some("+Inf") => f64::INFINITY,
            Some(v) => match v.parse::<f64>() {
                Ok(v) => v,
                Err(_) => continue,
            },
            None => continue,
        };
        // The value may be followed by a timestamp or an exemplar.
        let Some(count) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        cumulative.push((le, count));
    }
    cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (le, count) = cumulative.pop()?;
    if le.is_finite() {
        // No +Inf bucket: not a Prometheus histogram.
        return None;
    }
    Some(Buckets { cumulative, count })
}

/// The interval's histogram: `now` minus `before` (all of `now` after a
/// restart, or when there is no `before` with the same bounds).
pub fn delta(now: &Buckets, before: Option<&Buckets>) -> Buckets {
    let same_bounds = |b: &&Buckets| {
        b.count <= now.count
            && b.cumulative.len() == now.cumulative.len()
            && b.cumulative
                .iter()
                .zip(&now.cumulative)
                .all(|(x, y)| x.0 == y.0 && x.1 <= y.1)
    };
    match before.filter(same_bounds) {
        Some(b) => Buckets {
            cumulative: now
                .cumulative
                .iter()
                .zip(&b.cumulative)
                .map(|(n, p)| (n.0, n.1 - p.1))
                .collect(),
            count: now.count - b.count,
        },
        None => now.clone(),
    }
}

impl Buckets {
    /// The `q`-quantile in seconds, interpolated within its bucket; the
    /// largest finite bound when it falls in `+Inf` (`None`: no
    /// observations).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count;
        if n <= 0.0 {
            return None;
        }
        let rank = q * n;
        let mut lower = (0.0, 0.0);
        for &(le, cum) in &self.cumulative {
            if cum >= rank {
                let in_bucket = cum - lower.1;
                let frac = if in_bucket > 0.0 {
                    (rank - lower.1) / in_bucket
                } else {
                    1.0
                };
                return Some(lower.0 + (le - lower.0) * frac);
            }
            lower = (le, cum);
        }
        Some(lower.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = r#"# HELP ml_assets_core_stage_latency_seconds Latency per pipeline stage.
# TYPE ml_assets_core_stage_latency_seconds histogram
ml_assets_core_stage_latency_seconds_bucket{environment="e2e",stage="decode",le="0.001"} 99
ml_assets_core_stage_latency_seconds_bucket{environment="e2e",stage="trigger_to_ack",le="0.0005"} 10
ml_assets_core_stage_latency_seconds_bucket{environment="e2e",stage="trigger_to_ack",le="0.001"} 90
ml_assets_core_stage_latency_seconds_bucket{environment="e2e",stage="trigger_to_ack",le="0.002"} 100
ml_assets_core_stage_latency_seconds_bucket{environment="e2e",stage="trigger_to_ack",le="+Inf"} 100
ml_assets_core_stage_latency_seconds_count{environment="e2e",stage="trigger_to_ack"} 100
# EOF
"#;

    #[test]
    fn buckets_parse_subtract_and_interpolate() {
        let b = parse(SCRAPE).unwrap();
        assert_eq!(b.cumulative.len(), 3, "only trigger_to_ack: {b:?}");
        assert_eq!(b.count, 100.0);
        // p50: rank 50 in (0.0005, 0.001] holding 80 → 0.0005 + 0.0005 × 40/80.
        assert!((b.quantile(0.5).unwrap() - 0.00075).abs() < 1e-12);
        assert!((b.quantile(0.95).unwrap() - 0.0015).abs() < 1e-12);
        let later = Buckets {
            cumulative: vec![(0.0005, 10.0), (0.001, 90.0), (0.002, 110.0)],
            count: 120.0,
        };
        let d = delta(&later, Some(&b));
        assert_eq!(d.count, 20.0);
        assert_eq!(d.quantile(0.99), Some(0.002), "in +Inf: the largest finite bound");
        // A restart (counts went down): the whole current histogram.
        let restarted = Buckets {
            cumulative: vec![(0.0005, 1.0), (0.001, 2.0), (0.002, 2.0)],
            count: 2.0,
        };
        assert_eq!(delta(&restarted, Some(&b)), restarted);
        assert_eq!(parse("up 1\n"), None);
        assert_eq!(Buckets::default().quantile(0.5), None);
        // The state file round-trips (JSON has no infinity).
        let json = serde_json::to_string(&later).unwrap();
        assert_eq!(serde_json::from_str::<Buckets>(&json).unwrap(), later);
    }
}
