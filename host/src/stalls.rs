//! How much of a core a running thread loses to stalls it did not cause.
//!
//! A thread that only reads the monotonic clock in a loop sees consecutive
//! readings a few tens of nanoseconds apart; a larger gap is time the core
//! was taken from it: another task, an interrupt, or — in a virtual machine —
//! the host running something else on the physical CPU. The load generator
//! runs this probe on each core before it loads the daemon, so every run
//! prints how noisy its machine was next to its latencies: a decision that
//! waits behind Redis on a core that stalls for milliseconds a few times a
//! second shows in the p99 whatever the daemon does.

use std::time::{Duration, Instant};

/// Gaps at or below this are the probe's own loop and cache misses.
pub const STALL_FLOOR: Duration = Duration::from_micros(20);

/// Upper bounds of the stall buckets; the last bucket is everything above.
const BOUNDS_US: [u64; 6] = [50, 100, 250, 500, 1_000, 2_000];

/// Stalls seen by one probe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stalls {
    /// Stalls per bucket: ≤ 50 µs, ≤ 100, ≤ 250, ≤ 500, ≤ 1 ms, ≤ 2 ms, more.
    pub counts: [u64; BOUNDS_US.len() + 1],
    /// Time lost to stalls (the sum of the gaps above [`STALL_FLOOR`]).
    pub lost: Duration,
    /// The longest stall.
    pub longest: Duration,
    /// How long the probe ran.
    pub span: Duration,
}

impl Stalls {
    /// Counts one gap between two clock readings (ignored at or below
    /// [`STALL_FLOOR`]).
    pub fn record(&mut self, gap: Duration) {
        if gap <= STALL_FLOOR {
            return;
        }
        let us = gap.as_micros();
        let bucket = BOUNDS_US
            .iter()
            .position(|&b| us <= u128::from(b))
            .unwrap_or(BOUNDS_US.len());
        self.counts[bucket] += 1;
        self.lost += gap;
        self.longest = self.longest.max(gap);
    }

    /// Stalls longer than 1 ms.
    pub fn over_1ms(&self) -> u64 {
        self.counts[BOUNDS_US.len() - 1..].iter().sum()
    }

    /// Share of the span lost to stalls, in percent.
    pub fn lost_percent(&self) -> f64 {
        if self.span.is_zero() {
            return 0.0;
        }
        100.0 * self.lost.as_secs_f64() / self.span.as_secs_f64()
    }

    /// One line: what a spinning thread lost on `core`.
    pub fn summary(&self, core: usize) -> String {
        format!(
            "core {core}: a spinning thread lost {:.2} % of {:.1} s to stalls > {} us ({} stalls, {} > 1 ms, longest {:.2} ms)",
            self.lost_percent(),
            self.span.as_secs_f64(),
            STALL_FLOOR.as_micros(),
            self.counts.iter().sum::<u64>(),
            self.over_1ms(),
            self.longest.as_secs_f64() * 1e3
        )
    }
}

/// Spins on the calling thread for `span`, reading the clock, and reports
/// the stalls it saw. Pin the thread first to probe one core.
pub fn probe(span: Duration) -> Stalls {
    let start = Instant::now();
    let mut stalls = Stalls::default();
    let mut last = start;
    loop {
        let now = Instant::now();
        stalls.record(now - last);
        last = now;
        if now - start >= span {
            stalls.span = now - start;
            return stalls;
        }
    }
}

/// Probes every core at once (one pinned thread per core, so no probe
/// takes another's core), for `span`; `(core, stalls)` in core order.
pub fn probe_cores(span: Duration) -> Vec<(usize, Stalls)> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    std::thread::scope(|scope| {
        let handles: Vec<_> = cores
            .iter()
            .map(|&core| {
                scope.spawn(move || {
                    let pinned = core_affinity::set_for_current(core);
                    (core.id, pinned.then(|| probe(span)))
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().ok())
            .filter_map(|(core, stalls)| Some((core, stalls?)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_land_in_their_buckets_and_short_ones_are_ignored() {
        let mut s = Stalls::default();
        for us in [1, 20, 21, 50, 51, 100, 250, 499, 1_000, 1_001, 2_000, 7_000] {
            s.record(Duration::from_micros(us));
        }
        // 1 and 20 µs are the probe's own noise.
        assert_eq!(s.counts, [2, 2, 1, 1, 1, 2, 1]);
        assert_eq!(s.over_1ms(), 3);
        assert_eq!(s.longest, Duration::from_millis(7));
        let lost_us = 21 + 50 + 51 + 100 + 250 + 499 + 1_000 + 1_001 + 2_000 + 7_000;
        assert_eq!(s.lost, Duration::from_micros(lost_us));
    }

    #[test]
    fn the_lost_share_is_of_the_probe_span() {
        let mut s = Stalls {
            span: Duration::from_secs(2),
            ..Stalls::default()
        };
        s.record(Duration::from_millis(50));
        assert!((s.lost_percent() - 2.5).abs() < 1e-9);
        assert_eq!(Stalls::default().lost_percent(), 0.0);
        let line = s.summary(1);
        assert!(
            line.starts_with("core 1: a spinning thread lost 2.50 % of 2.0 s"),
            "{line}"
        );
        assert!(line.contains("1 > 1 ms, longest 50.00 ms"), "{line}");
    }

    #[test]
    fn a_probe_runs_for_its_span_and_loses_no_more_than_it_ran() {
        let s = probe(Duration::from_millis(30));
        assert!(s.span >= Duration::from_millis(30));
        assert!(s.lost <= s.span);
        assert!(s.longest <= s.lost);
    }
}
