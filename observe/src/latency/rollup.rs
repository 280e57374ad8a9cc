//! `signal_latency_rollup.csv`: per UTC hour, the samples' count, p50,
//! p95, p99 and whether the hour's p95 breached the SLO. A run recomputes
//! the hours its samples fall in from every live sample of those hours,
//! replaces them, and drops rows older than the rollup retention.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::samples::Sample;
use super::{quantile, round_us};
use crate::time::{from_ms, hour_start, parse, rfc3339};
use crate::ObserveError;

/// The header.
pub const HEADER: &str = "hour_utc,samples,p50_ms,p95_ms,p99_ms,breach_flag";

/// One hour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    /// The hour's start, RFC 3339.
    pub hour_utc: String,
    /// Samples in the hour.
    pub samples: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// The hour's p95 exceeded the SLO.
    pub breach_flag: bool,
}

impl Rollup {
    /// The hour's start.
    pub fn hour(&self) -> Option<DateTime<Utc>> {
        parse(&self.hour_utc)
    }
}

/// Percentiles of `latencies` (any order): p50, p95, p99.
pub fn percentiles(latencies: &mut [f64]) -> Option<(f64, f64, f64)> {
    latencies.sort_by(f64::total_cmp);
    Some((
        round_us(quantile(latencies, 0.50)?),
        round_us(quantile(latencies, 0.95)?),
        round_us(quantile(latencies, 0.99)?),
    ))
}

/// One rollup per UTC hour of `samples`, oldest first.
pub fn aggregate(samples: &[Sample], slo_p95_ms: f64) -> Vec<Rollup> {
    let mut hours: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for s in samples {
        hours
            .entry(hour_start(from_ms(s.at_ms)).timestamp_millis())
            .or_default()
            .push(s.latency_ms);
    }
    hours
        .into_iter()
        .filter_map(|(hour, mut v)| {
            let (p50_ms, p95_ms, p99_ms) = percentiles(&mut v)?;
            Some(Rollup {
                hour_utc: rfc3339(from_ms(hour)),
                samples: v.len(),
                p50_ms,
                p95_ms,
                p99_ms,
                breach_flag: p95_ms > slo_p95_ms,
            })
        })
        .collect()
}

/// Every rollup of the file (none when it does not exist).
pub fn read(path: &Path) -> Result<Vec<Rollup>, ObserveError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut r = csv::Reader::from_path(path).map_err(|e| ObserveError::input(path, e.to_string()))?;
    let mut out = Vec::new();
    for (i, row) in r.deserialize::<Rollup>().enumerate() {
        let row = row.map_err(|e| ObserveError::input(path, format!("row {}: {e}", i + 1)))?;
        if row.hour().is_none() {
            return Err(ObserveError::input(
                path,
                format!("row {}: hour_utc `{}` is not RFC 3339", i + 1, row.hour_utc),
            ));
        }
        out.push(row);
    }
    Ok(out)
}

/// Replaces the hours of `new` in the file, drops rows older than
/// `retention_days` before `now`, and writes it back (atomically, oldest
/// first). Returns the rows written.
pub fn merge(
    path: &Path,
    new: &[Rollup],
    now: DateTime<Utc>,
    retention_days: u32,
) -> Result<Vec<Rollup>, ObserveError> {
    let cutoff = now - Duration::days(i64::from(retention_days));
    let mut by_hour: BTreeMap<String, Rollup> =
        read(path)?.into_iter().map(|r| (r.hour_utc.clone(), r)).collect();
    for r in new {
        by_hour.insert(r.hour_utc.clone(), r.clone());
    }
    let rows: Vec<Rollup> = by_hour
        .into_values()
        .filter(|r| r.hour().is_some_and(|h| h >= cutoff))
        .collect();
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in &rows {
        w.serialize(r)
            .map_err(|e| ObserveError::input(path, e.to_string()))?;
    }
    let mut bytes = w
        .into_inner()
        .map_err(|e| ObserveError::input(path, e.to_string()))?;
    if rows.is_empty() {
        bytes = format!("{HEADER}\n").into_bytes();
    }
    crate::files::write_atomic(path, &bytes)?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: &str) -> i64 {
        parse(t).unwrap().timestamp_millis()
    }

    #[test]
    fn hours_aggregate_with_their_breach_flag_and_old_rows_expire() {
        let mut samples: Vec<Sample> = (1..=100)
            .map(|i| Sample {
                at_ms: at("2026-06-27T10:00:00Z") + i * 1000,
                source: "s".into(),
                latency_ms: f64::from(i as u32) / 100.0,
            })
            .collect();
        samples.push(Sample {
            at_ms: at("2026-06-27T11:30:00Z"),
            source: "s".into(),
            latency_ms: 0.2,
        });
        let r = aggregate(&samples, 0.9);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].hour_utc, "2026-06-27T10:00:00Z");
        assert_eq!(
            (r[0].samples, r[0].p50_ms, r[0].p95_ms, r[0].p99_ms),
            (100, 0.5, 0.95, 0.99)
        );
        assert!(r[0].breach_flag, "0.95 > 0.9");
        assert!(!r[1].breach_flag);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollup.csv");
        let now = parse("2026-06-27T12:00:00Z").unwrap();
        merge(&path, &r, now, 90).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(HEADER), "{text}");
        assert!(
            text.contains("2026-06-27T10:00:00Z,100,0.5,0.95,0.99,true"),
            "{text}"
        );
        // The same hour again replaces it; 91 days on, both rows expire.
        let mut again = r[1].clone();
        again.samples = 2;
        assert_eq!(merge(&path, &[again], now, 90).unwrap()[1].samples, 2);
        assert!(merge(&path, &[], now + Duration::days(91), 90)
            .unwrap()
            .is_empty());
        assert_eq!(read(&path).unwrap(), vec![]);
    }
}
