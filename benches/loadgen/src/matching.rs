//! Matching the daemon's stream entries to the load generator's triggers.
//!
//! The daemon stamps each decision with its trigger's time in ms
//! (`generated_at_ms`); the guard stamps the entry with Redis' clock when it
//! was written (`written_at_us`). The load generator records every trigger
//! (its time in µs on the same clock, and when it was written on its own
//! monotonic clock) before writing it, so a trigger is always known by the
//! time its entry can be read. Triggers whose decision never shows (dropped,
//! refused) are passed over; several triggers within one ms are matched in
//! order.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mlcore_host::bursts::Sample;

/// A trigger the load generator sent.
#[derive(Clone, Copy, Debug)]
pub struct Trigger {
    /// The load's phase it belongs to.
    pub phase: usize,
    /// Its time, µs since the epoch (`CLOCK_REALTIME`); in ms, the
    /// decision's `generated_at_ms`.
    pub ts_us: u64,
    /// Just before its frame was written, on the load generator's clock.
    pub at: Instant,
}

/// A decision matched to its trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Matched {
    /// The trigger's phase.
    pub phase: usize,
    /// When the trigger was sent (from the load's start) and trigger →
    /// `written_at_us`: the decision visible in Redis.
    pub visible: Sample,
    /// Trigger → the reader got the entry: the same plus the reader's lag.
    pub read: Duration,
}

/// Triggers awaiting their entries, oldest first.
#[derive(Debug)]
pub struct Matcher {
    pending: VecDeque<Trigger>,
    last_seq: Option<String>,
    load_start: Instant,
}

impl Matcher {
    /// Sample times are reported from `load_start`.
    pub fn new(load_start: Instant) -> Self {
        Self {
            pending: VecDeque::new(),
            last_seq: None,
            load_start,
        }
    }

    /// A trigger was sent (in order).
    pub fn sent(&mut self, t: Trigger) {
        self.pending.push_back(t);
    }

    /// An entry read at `read_at`: its trigger, if it has one not matched
    /// yet. An entry repeating the previous entry's `seq` is not a new
    /// decision and matches nothing.
    pub fn entry(
        &mut self,
        seq: &str,
        generated_ms: u64,
        written_us: u64,
        read_at: Instant,
    ) -> Option<Matched> {
        if self.last_seq.as_deref() == Some(seq) {
            return None;
        }
        self.last_seq = Some(seq.to_owned());
        while let Some(&t) = self.pending.front() {
            let ts_ms = t.ts_us / 1000;
            if ts_ms > generated_ms {
                return None;
            }
            self.pending.pop_front();
            if ts_ms == generated_ms {
                return Some(Matched {
                    phase: t.phase,
                    visible: Sample {
                        sent: t.at.saturating_duration_since(self.load_start),
                        latency: Duration::from_micros(written_us.saturating_sub(t.ts_us)),
                    },
                    read: read_at.saturating_duration_since(t.at),
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: fn(u64) -> Duration = Duration::from_micros;

    /// Triggers at these µs (sent at `start` + the same offset), phase 0.
    fn matcher(start: Instant, at_us: &[u64]) -> Matcher {
        let mut m = Matcher::new(start);
        for &us in at_us {
            m.sent(Trigger {
                phase: 0,
                ts_us: 1_000_000_000 + us,
                at: start + US(us),
            });
        }
        m
    }

    #[test]
    fn an_entry_matches_its_trigger_and_measures_to_written_at_and_to_the_read() {
        let start = Instant::now();
        let mut m = matcher(start, &[2_300]);
        let got = m.entry("1", 1_000_002, 1_000_002_750, start + US(3_000));
        assert_eq!(
            got,
            Some(Matched {
                phase: 0,
                visible: Sample {
                    sent: US(2_300),
                    latency: US(450)
                },
                read: US(700),
            })
        );
        assert_eq!(
            m.entry("2", 1_000_002, 1_000_003_000, start + US(3_100)),
            None,
            "no trigger left"
        );
    }

    #[test]
    fn triggers_whose_decision_never_showed_are_passed_over() {
        let start = Instant::now();
        let mut m = matcher(start, &[10_000, 11_000, 12_000]);
        let got = m
            .entry("1", 1_000_011, 1_000_011_400, start + US(11_500))
            .unwrap();
        assert_eq!(got.visible.sent, US(11_000));
        // The 10 ms trigger's decision, if it came now, finds no trigger.
        assert_eq!(m.entry("2", 1_000_010, 1_000_012_000, start + US(12_100)), None);
        let got = m
            .entry("3", 1_000_012, 1_000_012_300, start + US(12_400))
            .unwrap();
        assert_eq!(got.visible.latency, US(300));
    }

    #[test]
    fn several_triggers_in_one_ms_match_in_order_and_a_repeated_seq_matches_nothing() {
        let start = Instant::now();
        let mut m = matcher(start, &[5_100, 5_600]);
        let first = m.entry("7", 1_000_005, 1_000_005_500, start + US(5_550)).unwrap();
        assert_eq!(m.entry("7", 1_000_005, 1_000_005_500, start + US(5_560)), None);
        let second = m.entry("8", 1_000_005, 1_000_005_900, start + US(5_950)).unwrap();
        assert_eq!(
            (first.visible.latency, second.visible.latency),
            (US(400), US(300))
        );
    }

    #[test]
    fn an_entry_newer_than_every_trigger_leaves_later_ones_waiting() {
        let start = Instant::now();
        let mut m = matcher(start, &[1_000]);
        m.sent(Trigger {
            phase: 1,
            ts_us: 1_000_000_000 + 9_000,
            at: start + US(9_000),
        });
        assert_eq!(m.entry("1", 1_000_005, 1_000_005_100, start + US(5_200)), None);
        let got = m.entry("2", 1_000_009, 1_000_009_200, start + US(9_300)).unwrap();
        assert_eq!((got.phase, got.visible.latency), (1, US(200)));
    }
}
