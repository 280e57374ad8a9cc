//! The shape of a latency tail: are the slow decisions scattered, or do they
//! come together?
//!
//! A tail the daemon makes (a lock, an allocation, a queue that fills) shows
//! as slow decisions spread over the run. A tail the machine makes — a
//! stretch of tens of milliseconds during which everything on it runs at half
//! speed — shows as bursts: consecutive decisions all slow, then all fast
//! again the moment it ends. The load generator prints which it saw, per
//! phase, so a missed target says where to look.

use std::time::Duration;

/// One decision as the load generator saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// When its trigger was sent, from the start of the load.
    pub sent: Duration,
    /// Trigger → visible in Redis.
    pub latency: Duration,
}

/// The decisions slower than a bound, grouped into bursts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bursts {
    /// Decisions seen.
    pub seen: usize,
    /// Decisions slower than the bound.
    pub slow: usize,
    /// Groups of slow decisions whose triggers were at most `gap` apart.
    pub bursts: usize,
    /// Slow decisions in the largest burst.
    pub largest: usize,
    /// From the largest burst's first trigger to its last.
    pub largest_span: Duration,
    /// Slow decisions in bursts of 5 or more.
    pub in_large: usize,
}

/// Bursts of `samples` (in the order their triggers were sent) slower than
/// `bound`: a slow decision whose trigger came within `gap` of the previous
/// slow one's joins its burst.
pub fn bursts(samples: &[Sample], bound: Duration, gap: Duration) -> Bursts {
    let mut out = Bursts {
        seen: samples.len(),
        ..Bursts::default()
    };
    // The current burst: first and last trigger, size.
    let mut cur: Option<(Duration, Duration, usize)> = None;
    fn close((first, last, n): (Duration, Duration, usize), out: &mut Bursts) {
        out.bursts += 1;
        if n >= 5 {
            out.in_large += n;
        }
        if n > out.largest {
            out.largest = n;
            out.largest_span = last.saturating_sub(first);
        }
    }
    for s in samples.iter().filter(|s| s.latency > bound) {
        out.slow += 1;
        cur = match cur {
            Some((first, last, n)) if s.sent.saturating_sub(last) <= gap => Some((first, s.sent, n + 1)),
            Some(done) => {
                close(done, &mut out);
                Some((s.sent, s.sent, 1))
            }
            None => Some((s.sent, s.sent, 1)),
        };
    }
    if let Some(done) = cur {
        close(done, &mut out);
    }
    out
}

impl Bursts {
    /// One line for the load generator's report, e.g. `933 of 20000 decisions
    /// over 1607 us, in 79 bursts (trigger gaps <= 5 ms); 71 % of them in
    /// bursts of 5 or more; the largest 56 decisions over 58.0 ms`.
    pub fn summary(&self, bound: Duration, gap: Duration) -> String {
        let mut line = format!(
            "{} of {} decisions over {} us",
            self.slow,
            self.seen,
            bound.as_micros()
        );
        if self.slow > 0 {
            line.push_str(&format!(
                ", in {} bursts (trigger gaps <= {} ms); {:.0} % of them in bursts of 5 or more; the largest {} decisions over {}",
                self.bursts,
                gap.as_millis(),
                100.0 * self.in_large as f64 / self.slow as f64,
                self.largest,
                span(self.largest_span)
            ));
        }
        line
    }
}

/// `58.0 ms`, or `30 us` below a millisecond (two triggers the load
/// generator sent back to back after a late wake-up).
fn span(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{} us", d.as_micros())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64, latency_us: u64) -> Sample {
        Sample {
            sent: Duration::from_millis(ms),
            latency: Duration::from_micros(latency_us),
        }
    }

    const BOUND: Duration = Duration::from_micros(1000);
    const GAP: Duration = Duration::from_millis(5);

    #[test]
    fn slow_decisions_close_together_form_one_burst_and_a_lone_one_its_own() {
        let mut s: Vec<Sample> = (0..100).map(|i| at(i, 500)).collect();
        // A stretch at 10..=17 ms (one fast decision inside it does not
        // split it), and a lone slow decision at 60 ms.
        for i in [10, 11, 12, 14, 15, 16, 17] {
            s[i] = at(i as u64, 1500);
        }
        s[60] = at(60, 2000);
        let b = bursts(&s, BOUND, GAP);
        assert_eq!(
            b,
            Bursts {
                seen: 100,
                slow: 8,
                bursts: 2,
                largest: 7,
                largest_span: Duration::from_millis(7),
                in_large: 7,
            }
        );
        assert_eq!(
            b.summary(BOUND, GAP),
            "8 of 100 decisions over 1000 us, in 2 bursts (trigger gaps <= 5 ms); 88 % of them in bursts of 5 or more; the largest 7 decisions over 7.0 ms"
        );
    }

    #[test]
    fn a_gap_longer_than_the_limit_splits_a_burst_and_the_bound_itself_is_not_slow() {
        let s = [at(0, 1001), at(5, 1001), at(11, 1001), at(12, 1000)];
        let b = bursts(&s, BOUND, GAP);
        assert_eq!((b.slow, b.bursts, b.largest, b.in_large), (3, 2, 2, 0));
        assert_eq!(b.largest_span, Duration::from_millis(5));
        let pair = [
            at(0, 1500),
            Sample {
                sent: Duration::from_micros(30),
                latency: Duration::from_micros(1500),
            },
        ];
        assert!(bursts(&pair, BOUND, GAP)
            .summary(BOUND, GAP)
            .ends_with("the largest 2 decisions over 30 us"));
    }

    #[test]
    fn no_slow_decision_is_said_plainly() {
        let b = bursts(&[at(0, 10), at(1, 20)], BOUND, GAP);
        assert_eq!((b.slow, b.bursts, b.largest), (0, 0, 0));
        assert_eq!(b.summary(BOUND, GAP), "0 of 2 decisions over 1000 us");
        assert_eq!(
            bursts(&[], BOUND, GAP).summary(BOUND, GAP),
            "0 of 0 decisions over 1000 us"
        );
    }
}
