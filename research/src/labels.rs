//! What each head is taught: the labels, from one symbol's log-mid path.
//!
//! All labels look only forward from an event (a decision time) and only as
//! far as its horizon; the volatility that scales the barriers looks only
//! backward (no look-ahead).
//!
//! - [`triple_barrier`] — ai1 (`return_prob`): López de Prado, *Advances in
//!   Financial Machine Learning*, ch. 3. From an event at step `i`, a
//!   profit-take barrier at `x[i] + pt·σ[i]`, a stop-loss barrier at
//!   `x[i] − sl·σ[i]`, and a vertical barrier `horizon` steps later; the
//!   first one touched ends the event. Documented choices: a step that
//!   reaches a horizontal barrier exactly counts as a touch; a vertical exit
//!   is labelled by the sign of the return at the horizon, and a zero
//!   return is "not up"; the binary label ai1 learns is "up" = profit-take,
//!   or a vertical exit with a positive return.
//! - [`adverse_excursion`] — ai2 (`risk_score`): whether the path went more
//!   than `k·σ[i]` against the side the trade takes before its exit. The
//!   side is the triple-barrier outcome's (long for an up label), so the
//!   label reads "even this trade's right side would have been a k·σ
//!   drawdown first". `k` must be below the stop-loss width: a path that
//!   far against the side ends the event at the barrier first.
//! - [`meta_label`] — ai3: whether acting on the primary model's side
//!   would have made money after costs, over the event's span. The daemon
//!   uses ai3's probability as its `meta` sizing input.
//! - [`uniqueness_weights`] — average uniqueness of overlapping events
//!   (ch. 4): a sample whose span is shared with many others weighs less.
//!
//! [`rolling_sigma`] gives the backward-looking volatility of the path.

/// How a triple-barrier event ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// The upper barrier first.
    ProfitTake,
    /// The lower barrier first.
    StopLoss,
    /// Neither within the horizon.
    Vertical,
}

/// One labelled event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    /// The step it started at.
    pub start: usize,
    /// The step it ended at (the touch, or the vertical barrier).
    pub end: usize,
    /// Which barrier ended it.
    pub touch: Touch,
    /// Log return from start to end.
    pub ret: f64,
}

impl Event {
    /// ai1's binary label: profit-take, or a vertical exit above the start.
    pub fn up(&self) -> bool {
        match self.touch {
            Touch::ProfitTake => true,
            Touch::StopLoss => false,
            Touch::Vertical => self.ret > 0.0,
        }
    }
}

/// Barrier widths in units of σ, and the vertical barrier in steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Barriers {
    /// Profit-take multiple of σ.
    pub profit_take: f64,
    /// Stop-loss multiple of σ.
    pub stop_loss: f64,
    /// Vertical barrier, steps after the event.
    pub horizon: usize,
}

/// The standard deviation of the last `window` log returns of `x` ending at
/// each step, scaled to `horizon` steps (×√horizon): the barrier unit.
/// `NaN` until `window` returns exist.
pub fn rolling_sigma(x: &[f64], window: usize, horizon: usize) -> Vec<f64> {
    let mut out = vec![f64::NAN; x.len()];
    if window < 2 {
        return out;
    }
    let scale = (horizon.max(1) as f64).sqrt();
    let (mut sum, mut sum_sq) = (0.0, 0.0);
    for i in 1..x.len() {
        let r = x[i] - x[i - 1];
        sum += r;
        sum_sq += r * r;
        if i > window {
            let old = x[i - window] - x[i - window - 1];
            sum -= old;
            sum_sq -= old * old;
        }
        if i >= window {
            let n = window as f64;
            let var = ((sum_sq - sum * sum / n) / (n - 1.0)).max(0.0);
            out[i] = var.sqrt() * scale;
        }
    }
    out
}

/// The triple-barrier outcome of each event step in `events` on path `x`
/// with barrier unit `sigma`; `None` where σ is unknown or zero, or the
/// horizon runs past the path.
pub fn triple_barrier(x: &[f64], sigma: &[f64], events: &[usize], b: &Barriers) -> Vec<Option<Event>> {
    events
        .iter()
        .map(|&i| {
            let s = *sigma.get(i)?;
            let last = i.checked_add(b.horizon)?;
            if !(s.is_finite() && s > 0.0) || last >= x.len() || !x[i].is_finite() {
                return None;
            }
            let (up, down) = (x[i] + b.profit_take * s, x[i] - b.stop_loss * s);
            for (j, &v) in x.iter().enumerate().take(last + 1).skip(i + 1) {
                if !v.is_finite() {
                    return None;
                }
                let touch = if v >= up {
                    Touch::ProfitTake
                } else if v <= down {
                    Touch::StopLoss
                } else {
                    continue;
                };
                return Some(Event {
                    start: i,
                    end: j,
                    touch,
                    ret: v - x[i],
                });
            }
            Some(Event {
                start: i,
                end: last,
                touch: Touch::Vertical,
                ret: x[last] - x[i],
            })
        })
        .collect()
}

/// ai2's label for each event: whether, before its end, the path went more
/// than `k·σ` against the event's side (long when [`Event::up`]).
pub fn adverse_excursion(x: &[f64], sigma: &[f64], events: &[Event], k: f64) -> Vec<bool> {
    events
        .iter()
        .map(|e| {
            let limit = k * sigma[e.start];
            let start = x[e.start];
            let long = e.up();
            x[e.start + 1..=e.end].iter().any(|&v| {
                if long {
                    start - v > limit
                } else {
                    v - start > limit
                }
            })
        })
        .collect()
}

/// ai3's label for each event: whether taking `long[i]`'s side at the start
/// and leaving at the end made more than `cost` (a log return: spread and
/// commission of the round trip).
pub fn meta_label(events: &[Event], long: &[bool], cost: f64) -> Vec<bool> {
    events
        .iter()
        .zip(long)
        .map(|(e, &l)| pays(e.ret, l, cost))
        .collect()
}

/// Whether a position on the long (or short) side over a move of log
/// return `ret` made more than `cost`: ai3's label of one event.
pub fn pays(ret: f64, long: bool, cost: f64) -> bool {
    (if long { ret } else { -ret }) > cost
}

/// Average uniqueness of each event: the mean, over the steps it spans
/// (start exclusive, end inclusive), of 1 / (number of events spanning that
/// step). One for an event that overlaps nothing.
pub fn uniqueness_weights(events: &[Event], n_steps: usize) -> Vec<f64> {
    let mut concurrency = vec![0u32; n_steps + 1];
    for e in events {
        for c in &mut concurrency[e.start + 1..=e.end.min(n_steps)] {
            *c += 1;
        }
    }
    events
        .iter()
        .map(|e| {
            let span = &concurrency[e.start + 1..=e.end.min(n_steps)];
            if span.is_empty() {
                return 1.0;
            }
            span.iter().map(|&c| 1.0 / f64::from(c.max(1))).sum::<f64>() / span.len() as f64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Barriers = Barriers {
        profit_take: 1.0,
        stop_loss: 1.0,
        horizon: 3,
    };

    #[test]
    fn the_first_barrier_touched_ends_the_event() {
        let sigma = vec![1.0; 8];
        // Up by 1.0 at step 2: profit-take there, not the later fall.
        let x = [0.0, 0.5, 1.0, -5.0, 0.0, 0.0, 0.0, 0.0];
        let e = triple_barrier(&x, &sigma, &[0], &B)[0].unwrap();
        assert_eq!((e.touch, e.end, e.ret), (Touch::ProfitTake, 2, 1.0));
        assert!(e.up());
        // Down first.
        let x = [0.0, -1.2, 3.0, 0.0, 0.0];
        let e = triple_barrier(&x, &sigma, &[0], &B)[0].unwrap();
        assert_eq!((e.touch, e.end), (Touch::StopLoss, 1));
        assert!(!e.up());
        // Neither within 3 steps: vertical, labelled by the sign; zero is not up.
        let x = [0.0, 0.2, -0.3, 0.4, 9.0];
        let e = triple_barrier(&x, &sigma, &[0], &B)[0].unwrap();
        assert_eq!((e.touch, e.end), (Touch::Vertical, 3));
        assert!(e.up());
        let x = [0.0, 0.2, -0.3, 0.0, 9.0];
        assert!(!triple_barrier(&x, &sigma, &[0], &B)[0].unwrap().up());
        // Past the path's end, or σ unknown: no label.
        assert_eq!(triple_barrier(&x, &sigma, &[3], &B)[0], None);
        assert_eq!(triple_barrier(&x, &[f64::NAN; 5], &[0], &B)[0], None);
    }

    #[test]
    fn sigma_looks_only_backward() {
        let x: Vec<f64> = (0..10).map(|i| if i % 2 == 0 { 0.0 } else { 1.0 }).collect();
        let s = rolling_sigma(&x, 4, 1);
        assert!(s[3].is_nan() && s[4].is_finite());
        // Changing the future leaves σ at step 5 as it was.
        let mut later = x.clone();
        later[8] = 100.0;
        assert_eq!(rolling_sigma(&later, 4, 1)[5], s[5]);
        // Returns ±1 alternating over 4 steps: sample std of [1,-1,1,-1].
        assert!((s[4] - (4.0_f64 / 3.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn adverse_excursion_is_against_the_events_side() {
        let sigma = vec![1.0; 6];
        // A long (profit-take at step 3) that first fell 1.5σ.
        let x = [0.0, -1.5, 0.2, 1.0, 0.0, 0.0];
        let e = triple_barrier(&x, &sigma, &[0], &Barriers { stop_loss: 2.0, ..B })[0].unwrap();
        assert!(e.up());
        assert_eq!(adverse_excursion(&x, &sigma, &[e], 1.0), vec![true]);
        assert_eq!(adverse_excursion(&x, &sigma, &[e], 2.0), vec![false]);
    }

    #[test]
    fn meta_labels_pay_costs_and_weights_share_overlaps() {
        let e = |start, end, ret| Event {
            start,
            end,
            touch: Touch::Vertical,
            ret,
        };
        let events = [e(0, 2, 0.01), e(1, 3, -0.02), e(5, 6, 0.0)];
        assert_eq!(
            meta_label(&events, &[true, true, false], 0.005),
            vec![true, false, false]
        );
        assert_eq!(
            meta_label(&events, &[false, false, false], 0.005),
            vec![false, true, false]
        );
        let w = uniqueness_weights(&events, 7);
        // Steps 1..=2 for the first (1 alone, 2 shared), 2..=3 for the second.
        assert!(
            (w[0] - 0.75).abs() < 1e-12 && (w[1] - 0.75).abs() < 1e-12,
            "{w:?}"
        );
        assert!((w[2] - 1.0).abs() < 1e-12);
    }
}
