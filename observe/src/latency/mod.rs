//! Signal latency monitoring's files: raw samples and their rotation
//! ([`samples`]), hourly rollups ([`rollup`]), the SLO's consecutive-breach
//! count and the job's heartbeat ([`slo`]), and what the daemons' own
//! histograms say between two runs ([`histogram`]).
//!
//! Latencies are milliseconds with microsecond resolution (`0.412`): the
//! Python design wrote whole milliseconds, which would round this
//! product's sub-millisecond trigger → Redis latency to 0.

pub mod histogram;
pub mod rollup;
pub mod samples;
pub mod slo;

/// The `q`-quantile (0..=1) of sorted values, nearest rank (`None` when
/// empty).
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// `v` rounded to microseconds (3 decimals of a millisecond).
pub fn round_us(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.95), Some(95.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&[7.0], 0.95), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
