//! Stress scenarios: the same market, made harder, replayed through the
//! same features, model and decisions as the base case.
//!
//! - `spread_x3`: every quote's spread three times as wide around its mid.
//! - `vol_shock`: from the middle of the window to its end, each symbol's
//!   log mid gets an extra random walk with twice its own per-quote
//!   volatility (unpredictable: the model's edge is diluted, its sizes
//!   react to the measured volatility).
//! - `price_gap`: at the middle of the window every symbol jumps by
//!   −1 % × its β (a risk-off gap through every open position).
//! - `stale_data`: no quote for a tenth of the window from its middle:
//!   decisions keep firing on features that stopped moving, then the
//!   market is back where it went meanwhile.

use mlcore_market::Quote;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::synth::standard_normal;

/// One scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// Spreads ×3.
    SpreadX3,
    /// Volatility shock.
    VolShock,
    /// A −1 %·β gap.
    PriceGap,
    /// A stretch without quotes.
    StaleData,
}

impl Scenario {
    /// Every scenario, in report order.
    pub const ALL: [Scenario; 4] = [
        Scenario::SpreadX3,
        Scenario::VolShock,
        Scenario::PriceGap,
        Scenario::StaleData,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::SpreadX3 => "spread_x3",
            Scenario::VolShock => "vol_shock",
            Scenario::PriceGap => "price_gap",
            Scenario::StaleData => "stale_data",
        }
    }

    /// `quotes` under this scenario; `window` is the measured part
    /// `[from, to)`, `betas` each symbol's β. Deterministic.
    pub fn apply(self, quotes: &[Quote], window: (i64, i64), betas: &[f64]) -> Vec<Quote> {
        let (from, to) = window;
        let mid_t = from + (to - from) / 2;
        match self {
            Scenario::SpreadX3 => quotes.iter().map(|q| widen(q, 3.0)).collect(),
            Scenario::PriceGap => quotes
                .iter()
                .map(|q| {
                    if q.ts_ns < mid_t {
                        return *q;
                    }
                    let beta = betas.get(usize::from(q.symbol)).copied().unwrap_or(1.0);
                    scale(q, (-0.01 * beta).exp())
                })
                .collect(),
            Scenario::StaleData => {
                let end = mid_t + (to - from) / 10;
                quotes
                    .iter()
                    .filter(|q| q.ts_ns < mid_t || q.ts_ns >= end)
                    .copied()
                    .collect()
            }
            Scenario::VolShock => vol_shock(quotes, mid_t, to),
        }
    }
}

fn widen(q: &Quote, k: f64) -> Quote {
    let mid = 0.5 * (q.bid + q.ask);
    let half = 0.5 * (q.ask - q.bid) * k;
    Quote {
        bid: mid - half,
        ask: mid + half,
        ..*q
    }
}

fn scale(q: &Quote, f: f64) -> Quote {
    Quote {
        bid: q.bid * f,
        ask: q.ask * f,
        ..*q
    }
}

fn vol_shock(quotes: &[Quote], from: i64, to: i64) -> Vec<Quote> {
    let n = quotes
        .iter()
        .map(|q| usize::from(q.symbol) + 1)
        .max()
        .unwrap_or(0);
    // Each symbol's per-quote volatility before the shock: the median
    // absolute log return, scaled to a standard deviation.
    let mut last = vec![0.0f64; n];
    let mut moves: Vec<Vec<f64>> = vec![Vec::new(); n];
    for q in quotes.iter().filter(|q| q.ts_ns < from) {
        let i = usize::from(q.symbol);
        let m = (0.5 * (q.bid + q.ask)).ln();
        if last[i] != 0.0 {
            moves[i].push((m - last[i]).abs());
        }
        last[i] = m;
    }
    let sigma: Vec<f64> = moves
        .iter_mut()
        .map(|v| {
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(1e-5) * 1.4826
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(0x005e_ed0f_5704);
    let mut walk = vec![0.0f64; n];
    quotes
        .iter()
        .map(|q| {
            if q.ts_ns < from || q.ts_ns >= to {
                return *q;
            }
            let i = usize::from(q.symbol);
            walk[i] += 2.0 * sigma[i] * standard_normal(&mut rng);
            scale(q, walk[i].exp())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotes() -> Vec<Quote> {
        (0..1000)
            .map(|k| {
                let mid = 1.0 + 1e-4 * ((k as f64) * 0.37).sin();
                Quote {
                    ts_ns: k * 1_000,
                    symbol: (k % 2) as u16,
                    bid: mid - 1e-5,
                    ask: mid + 1e-5,
                    bid_size: 1.0,
                    ask_size: 1.0,
                }
            })
            .collect()
    }

    #[test]
    fn each_scenario_does_what_it_says_and_only_in_its_stretch() {
        let q = quotes();
        let w = (0, 1_000_000);
        let spread = |q: &Quote| q.ask - q.bid;
        let wide = Scenario::SpreadX3.apply(&q, w, &[1.0, 1.0]);
        assert!((spread(&wide[3]) - 3.0 * spread(&q[3])).abs() < 1e-15);
        let gap = Scenario::PriceGap.apply(&q, w, &[1.0, -0.5]);
        assert_eq!(gap[499], q[499]);
        assert!((gap[600].bid / q[600].bid - (-0.01f64).exp()).abs() < 1e-12);
        assert!((gap[601].bid / q[601].bid - 0.005f64.exp()).abs() < 1e-12);
        let stale = Scenario::StaleData.apply(&q, w, &[]);
        assert_eq!(stale.len(), 900);
        assert!(!stale.iter().any(|x| (500_000..600_000).contains(&x.ts_ns)));
        let shock = Scenario::VolShock.apply(&q, w, &[]);
        assert_eq!(shock[..500], q[..500]);
        let moved = shock[500..]
            .iter()
            .zip(&q[500..])
            .filter(|(a, b)| a.bid != b.bid)
            .count();
        assert_eq!(moved, 500);
        assert_eq!(Scenario::VolShock.apply(&q, w, &[]), shock, "deterministic");
    }
}
