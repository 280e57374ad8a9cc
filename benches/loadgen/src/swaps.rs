//! Whether the daemon stays flat across many model swaps: its memory and
//! the latency of its decisions, window by window through a swap phase.
//!
//! The issue asks that memory and latency stay flat across 1,000 swaps.
//! Something kept per swap (a retired session, a model's buffers, a
//! histogram) shows as resident memory that keeps growing once the
//! allocator has warmed up; a cost that accumulates (something scanned per
//! decision that grows per swap) shows as latency that climbs. Comparing
//! the phase's start with its end would mix both with the allocator's
//! warm-up (the first few hundred swaps grow the heap by a few MiB, then it
//! stays put), so the two halves of the swaps are compared: memory over the
//! second half, and the median latency of the decisions triggered in each
//! half. The median, not the tail: the tail is the machine's (its slow
//! stretches come and go, see [`mlcore_host::bursts`]), a cost that builds up per
//! swap moves every decision.

use std::time::Duration;

use mlcore_benches::Percentiles;
use mlcore_host::bursts::Sample;

/// Resident memory the second half of the swaps may add: a leak of 2 KiB
/// per swap over 500 swaps. A retired model leaking would add hundreds of
/// KiB per swap.
pub const MEMORY_SLACK_BYTES: u64 = 1024 * 1024;

/// How much slower the second half's median latency may be than the
/// first's (this machine's speed wanders by ±20 % between seconds).
pub const LATENCY_SLACK: f64 = 1.25;

/// The swaps the issue asks to be measured across.
pub const SWAPS_ASKED: u64 = 1_000;

/// The daemon as the load generator read it from `/metrics` during a swap
/// phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// When it was read, from the start of the load (the clock of
    /// [`Sample::sent`]).
    pub at: Duration,
    /// Models swapped in since the daemon started.
    pub swaps: u64,
    /// Its resident memory.
    pub rss_bytes: u64,
}

/// The decisions triggered between two readings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// The earlier reading's time.
    pub from: Duration,
    /// The later reading's time.
    pub to: Duration,
    /// Swaps between the two readings.
    pub swaps: u64,
    /// Resident memory at the later reading.
    pub rss_bytes: u64,
    /// Trigger → visible of the decisions triggered in the window.
    pub latency: Option<Percentiles>,
}

/// Latencies of the samples triggered in `[from, to)`.
fn latencies(samples: &[Sample], from: Duration, to: Duration) -> Option<Percentiles> {
    Percentiles::of(
        samples
            .iter()
            .filter(|s| s.sent >= from && s.sent < to)
            .map(|s| s.latency)
            .collect(),
    )
}

/// One window per pair of consecutive readings (in time order).
pub fn windows(readings: &[Reading], samples: &[Sample]) -> Vec<Window> {
    readings
        .windows(2)
        .map(|w| Window {
            from: w[0].at,
            to: w[1].at,
            swaps: w[1].swaps.saturating_sub(w[0].swaps),
            rss_bytes: w[1].rss_bytes,
            latency: latencies(samples, w[0].at, w[1].at),
        })
        .collect()
}

/// The two halves of a swap phase compared.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Flatness {
    /// Swaps between the first and the last reading.
    pub swaps: u64,
    /// Resident memory at the first reading, at the first reading with
    /// half of the swaps done, and at the last.
    pub rss_start: u64,
    /// See `rss_start`.
    pub rss_mid: u64,
    /// See `rss_start`.
    pub rss_end: u64,
    /// Swaps done at the middle reading (from the first).
    pub swaps_mid: u64,
    /// Trigger → visible of the decisions triggered before the middle
    /// reading, and after it.
    pub first_half: Option<Percentiles>,
    /// See `first_half`.
    pub second_half: Option<Percentiles>,
}

impl Flatness {
    /// Compares the halves of the swaps in `readings` (in time order);
    /// `None` without two readings or without a swap between them.
    pub fn of(readings: &[Reading], samples: &[Sample]) -> Option<Self> {
        let (first, last) = (readings.first()?, readings.last()?);
        let swaps = last.swaps.checked_sub(first.swaps).filter(|&s| s > 0)?;
        let half = first.swaps + swaps.div_ceil(2);
        let mid = readings.iter().find(|r| r.swaps >= half)?;
        Some(Self {
            swaps,
            rss_start: first.rss_bytes,
            rss_mid: mid.rss_bytes,
            rss_end: last.rss_bytes,
            swaps_mid: mid.swaps - first.swaps,
            first_half: latencies(samples, first.at, mid.at),
            second_half: latencies(samples, mid.at, last.at),
        })
    }

    /// Memory grew by at most [`MEMORY_SLACK_BYTES`] over the second half.
    pub fn memory_flat(&self) -> bool {
        self.rss_end.saturating_sub(self.rss_mid) <= MEMORY_SLACK_BYTES
    }

    /// The second half's median latency is at most [`LATENCY_SLACK`] times
    /// the first's; not flat when either half saw no decision.
    pub fn latency_flat(&self) -> bool {
        match (self.first_half, self.second_half) {
            (Some(a), Some(b)) => b.p50.as_secs_f64() <= a.p50.as_secs_f64() * LATENCY_SLACK,
            _ => false,
        }
    }

    /// One line on memory.
    pub fn memory_summary(&self) -> String {
        let mib = |b: u64| b as f64 / 1_048_576.0;
        format!(
            "RSS {:.1} MiB at the start, {:.1} MiB after {} swaps, {:.1} MiB after {}: {:+.1} MiB over the second half (limit +{:.0} MiB)",
            mib(self.rss_start),
            mib(self.rss_mid),
            self.swaps_mid,
            mib(self.rss_end),
            self.swaps,
            mib(self.rss_end) - mib(self.rss_mid),
            mib(MEMORY_SLACK_BYTES)
        )
    }

    /// One line on latency.
    pub fn latency_summary(&self) -> String {
        let show = |p: Option<Percentiles>| {
            p.map_or("no decision seen".to_owned(), |p| {
                format!("p50 {:.3?} (p99 {:.3?})", p.p50, p.p99)
            })
        };
        format!(
            "trigger -> visible {} over the first half, {} over the second (limit: second half's p50 <= {LATENCY_SLACK} x the first's)",
            show(self.first_half),
            show(self.second_half)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn reading(at_ms: u64, swaps: u64, rss_mib: u64) -> Reading {
        Reading {
            at: ms(at_ms),
            swaps,
            rss_bytes: rss_mib * 1_048_576,
        }
    }

    /// One decision every 10 ms from 0 to `to_ms`, its latency from `f`.
    fn samples(to_ms: u64, f: impl Fn(u64) -> u64) -> Vec<Sample> {
        (0..to_ms / 10)
            .map(|i| Sample {
                sent: ms(i * 10),
                latency: Duration::from_micros(f(i * 10)),
            })
            .collect()
    }

    #[test]
    fn windows_hold_the_decisions_triggered_between_readings() {
        let r = [reading(0, 10, 50), reading(100, 12, 51), reading(300, 20, 52)];
        let s = samples(300, |t| if t < 100 { 500 } else { 900 });
        let w = windows(&r, &s);
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].from, w[0].to, w[0].swaps), (ms(0), ms(100), 2));
        assert_eq!((w[1].swaps, w[1].rss_bytes), (8, 52 * 1_048_576));
        let first = w[0].latency.expect("decisions in the first window");
        let second = w[1].latency.expect("decisions in the second window");
        assert_eq!(first.p50, Duration::from_micros(500));
        assert_eq!(second.p50, Duration::from_micros(900));
        // A window without a decision says so.
        let w = windows(&[reading(400, 20, 52), reading(500, 21, 52)], &s);
        assert_eq!(w[0].latency.map(|p| p.p50), None);
    }

    #[test]
    fn warm_up_growth_in_the_first_half_is_flat_growth_in_the_second_is_not() {
        let s = samples(400, |_| 600);
        // 1,000 swaps; the heap grows over the first 500, then stays.
        let warm = [
            reading(0, 0, 48),
            reading(100, 250, 51),
            reading(200, 500, 52),
            reading(400, 1000, 52),
        ];
        let f = Flatness::of(&warm, &s).expect("swaps");
        assert_eq!((f.swaps, f.swaps_mid), (1000, 500));
        assert!(f.memory_flat(), "{}", f.memory_summary());
        // The same, growing 2 MiB over the second half: a leak.
        let leak = [reading(0, 0, 48), reading(200, 500, 52), reading(400, 1000, 54)];
        let f = Flatness::of(&leak, &s).expect("swaps");
        assert!(!f.memory_flat(), "{}", f.memory_summary());
    }

    #[test]
    fn latency_that_climbs_with_the_swaps_is_not_flat() {
        let r = [reading(0, 0, 50), reading(200, 500, 50), reading(400, 1000, 50)];
        let steady =
            Flatness::of(&r, &samples(400, |t| if t % 30 == 0 { 5_000 } else { 600 })).expect("swaps");
        assert!(steady.latency_flat(), "{}", steady.latency_summary());
        // Every decision of the second half 40 % slower.
        let climbing = Flatness::of(&r, &samples(400, |t| if t < 200 { 600 } else { 840 })).expect("swaps");
        assert!(!climbing.latency_flat(), "{}", climbing.latency_summary());
        // A half without decisions is no evidence of flatness.
        let none = Flatness::of(&r, &samples(200, |_| 600)).expect("swaps");
        assert!(!none.latency_flat());
    }

    #[test]
    fn no_swap_or_no_readings_give_nothing_to_compare() {
        let s = samples(100, |_| 600);
        assert_eq!(Flatness::of(&[], &s), None);
        assert_eq!(Flatness::of(&[reading(0, 7, 50)], &s), None);
        assert_eq!(Flatness::of(&[reading(0, 7, 50), reading(100, 7, 50)], &s), None);
    }
}
