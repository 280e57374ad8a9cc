//! A running daemon's `/metrics`, read by the load generator and the
//! config-apply bench: the trigger → acknowledged histogram and the
//! counters at one instant, and quantiles of the difference of two.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;

use anyhow::Context;

/// The body of `GET /metrics` on `http` (`host:port`).
pub fn metrics(http: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(http).with_context(|| format!("connecting to {http}"))?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// `(le in µs, cumulative count)` buckets of a histogram.
pub type Buckets = Vec<(f64, u64)>;

/// The trigger → ack histogram and the counters, at one instant.
pub fn snapshot(http: &str) -> anyhow::Result<(Buckets, BTreeMap<String, u64>)> {
    let body = metrics(http)?;
    let mut buckets = Vec::new();
    let mut counters = BTreeMap::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else { continue };
        if series.contains("stage_latency_seconds_bucket") && series.contains("trigger_to_ack") {
            let le = series
                .split("le=\"")
                .nth(1)
                .and_then(|x| x.split('"').next())
                .unwrap_or("+Inf");
            let le_s: f64 = le.parse().unwrap_or(f64::INFINITY);
            buckets.push(((le_s * 1e6).round(), v as u64));
        }
        for name in [
            "decisions_total",
            "decisions_dropped_total",
            "signals_accepted_total",
            "model_swaps_total",
            "publish_dropped_total",
            "process_resident_memory_bytes",
        ] {
            // The standard process metrics are unprefixed.
            let prefixed = format!("ml_assets_core_{name}");
            if series.starts_with(&prefixed) || (name.starts_with("process_") && series.starts_with(name)) {
                counters.insert(name.to_owned(), v as u64);
            }
        }
    }
    Ok((buckets, counters))
}

/// The bucket bound at quantile `q` of the difference of two snapshots.
pub fn bucket_quantile(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> f64 {
    let diff: Vec<(f64, u64)> = after
        .iter()
        .zip(before)
        .map(|(a, b)| (a.0, a.1.saturating_sub(b.1)))
        .collect();
    let total = diff.last().map_or(0, |d| d.1);
    let want = (total as f64 * q).ceil() as u64;
    diff.iter()
        .find(|(_, c)| *c >= want)
        .map_or(f64::INFINITY, |(le, _)| *le)
}
