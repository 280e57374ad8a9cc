//! What a decision sees at its trigger: the feature matrix, each symbol's
//! readiness and volatility, β (the rolling estimate where the universe
//! asks for one), and — once a model has scored the matrix — its outputs.
//!
//! The daemon's ingress and worker and the backtester call these same
//! functions, so a replay computes exactly what the daemon would publish
//! (`docs/research.md`, replay parity). Allocation-free.

use mlcore_features::FeatureEngine;

use crate::universe::Strategy;
use crate::{Policy, SymbolInput, SymbolParams};

/// Fills one decision's buffers from `engine`'s state at trigger time
/// `ts_ns`: the row-major feature matrix, each symbol's readiness and
/// realised volatilities, and its parameters (the strategy's, with β
/// replaced by the rolling estimate against the benchmark where the
/// universe asks for one and its window has filled). Model outputs are
/// left for [`apply_scores`].
pub fn prepare(
    strategy: &Strategy,
    engine: &FeatureEngine,
    ts_ns: i64,
    features: &mut [f32],
    inputs: &mut [SymbolInput],
    params: &mut [SymbolParams],
) {
    engine.write_matrix(ts_ns, features);
    params.copy_from_slice(&strategy.params);
    let bench = engine.state(strategy.benchmark);
    for (i, input) in inputs.iter_mut().enumerate() {
        let state = engine.state(i);
        input.ready = engine.is_ready(i);
        if let Some(st) = state {
            (input.rvol_20_bps, input.rvol_100_bps) = st.rvols_bps();
        }
        if let (Some(window), Some(st), Some(bench)) = (strategy.rolling_beta[i], state, bench) {
            if let Some(beta) = st.beta_against(bench, window) {
                params[i].beta = beta;
            }
        }
    }
}

/// Writes a model's outputs into the inputs: ai1 → `prob_up`, ai2 →
/// `risk`, ai3 → `meta` (1 when the model has no ai3 head).
pub fn apply_scores(inputs: &mut [SymbolInput], ai1: &[f32], ai2: &[f32], ai3: Option<&[f32]>) {
    for (i, input) in inputs.iter_mut().enumerate() {
        input.prob_up = ai1.get(i).map_or(f64::NAN, |&p| f64::from(p));
        input.risk = ai2.get(i).map_or(f64::NAN, |&r| f64::from(r));
        input.meta = ai3.map_or(1.0, |m| m.get(i).map_or(f64::NAN, |&v| f64::from(v)));
    }
}

impl Policy {
    /// This policy with a model's θ (a model carries the θ it was
    /// searched with; the configured one is only the default).
    pub fn with_theta(self, theta1: f64, theta2: f64) -> Self {
        Self {
            theta1,
            theta2,
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decide, Scratch};
    use mlcore_features::N_FEATURES;
    use mlcore_market::Quote;

    fn strategy(rolling: Option<usize>) -> Strategy {
        let p = SymbolParams {
            beta: 0.5,
            max_weight: 0.1,
            lot_size: 1000.0,
            min_qty: 1000.0,
            notional: 1e7,
            cost_bps: 0.8,
        };
        Strategy {
            id: "s".parse().expect("id"),
            symbols: vec!["AAAAAA".parse().expect("sym"), "BBBBBB".parse().expect("sym")],
            params: vec![p; 2],
            rolling_beta: vec![None, rolling],
            benchmark: 0,
            theta: None,
        }
    }

    fn engine(quotes: usize) -> FeatureEngine {
        let mut e = FeatureEngine::new(2, 0);
        for k in 0..quotes {
            for s in 0..2u16 {
                // Symbol 1 moves twice as much as the benchmark.
                let x = ((k as f64) * 0.7).sin() * 1e-4 * f64::from(s + 1);
                let mid = 1.0 + x;
                e.update(&Quote {
                    ts_ns: k as i64 * 5_000_000_000,
                    symbol: s,
                    bid: mid - 5e-5,
                    ask: mid + 5e-5,
                    bid_size: 1e6,
                    ask_size: 1e6,
                });
            }
        }
        e
    }

    #[test]
    fn a_rolling_beta_replaces_the_static_one_once_its_window_fills() {
        let (mut x, mut inputs) = (vec![0.0; 2 * N_FEATURES], vec![input(); 2]);
        let mut params = vec![strategy(None).params[0]; 2];
        let e = engine(400);
        prepare(
            &strategy(Some(256)),
            &e,
            400 * 5_000_000_000,
            &mut x,
            &mut inputs,
            &mut params,
        );
        assert!(inputs.iter().all(|i| i.ready && i.rvol_20_bps > 0.0));
        assert_eq!(params[0].beta, 0.5, "static β stays");
        assert!(
            (params[1].beta - 2.0).abs() < 0.05,
            "estimated β {}",
            params[1].beta
        );
        // Under 20 returns: no estimate, the strategy's β again (the
        // previous decision's estimate does not linger in reused buffers).
        let e = engine(15);
        prepare(&strategy(Some(256)), &e, 0, &mut x, &mut inputs, &mut params);
        assert_eq!(params[1].beta, 0.5);
    }

    #[test]
    fn scores_land_in_the_inputs_and_a_missing_one_decides_nothing() {
        let mut inputs = vec![input(); 2];
        apply_scores(&mut inputs, &[0.9, 0.1], &[0.2, 0.3], None);
        assert_eq!((inputs[0].prob_up as f32, inputs[1].risk as f32), (0.9, 0.3));
        assert_eq!(inputs[0].meta, 1.0);
        apply_scores(&mut inputs, &[0.9], &[0.2], Some(&[0.5]));
        assert!(inputs[1].prob_up.is_nan() && inputs[1].meta.is_nan());
        let s = strategy(None);
        let policy = crate::portfolio::tests::policy().with_theta(0.6, 0.5);
        assert_eq!((policy.theta1, policy.theta2), (0.6, 0.5));
        let mut scratch = Scratch::new(2);
        decide(&policy, &s.params, &inputs, &mut scratch);
        assert_eq!(scratch.targets[1].qty, 0.0, "a symbol without scores stays flat");
    }

    fn input() -> SymbolInput {
        SymbolInput {
            prob_up: 0.5,
            risk: 1.0,
            meta: 1.0,
            rvol_20_bps: 5.0,
            rvol_100_bps: 10.0,
            ready: true,
        }
    }
}
