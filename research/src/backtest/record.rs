//! Phase one of a backtest: the market replayed through the daemon's own
//! feature engine, trigger preparation and ONNX Runtime scoring, each
//! decision's inputs kept. What does not depend on θ or costs is done once;
//! [`super::simulate`] then decides and fills as often as a θ search asks.

use mlcore_decision::universe::Strategy;
use mlcore_decision::{SymbolInput, SymbolParams};
use mlcore_features::{FeatureEngine, N_FEATURES};
use mlcore_market::Quote;
use mlcore_models::scoring::ModelScorer;

use super::BacktestError;
use crate::replay::Event;

/// Every decision's inputs, and the quotes between them.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Symbols per decision.
    pub n: usize,
    /// The quotes replayed, in order.
    pub quotes: Vec<Quote>,
    /// Each decision's trigger time, ns.
    pub trigger_ts: Vec<i64>,
    /// How many of `quotes` came before each decision.
    pub trigger_at: Vec<usize>,
    /// Model outputs and volatilities, `n` per decision.
    pub inputs: Vec<SymbolInput>,
    /// Parameters (β estimated where rolling), `n` per decision.
    pub params: Vec<SymbolParams>,
    /// Quotes of symbols the strategy does not trade (skipped).
    pub foreign_quotes: usize,
    /// Each symbol's notional per unit of weight (`qty / notional` is a
    /// position's weight).
    pub notional: Vec<f64>,
}

impl Recorded {
    /// Decisions.
    pub fn decisions(&self) -> usize {
        self.trigger_ts.len()
    }

    /// Decision `k`'s inputs and parameters.
    pub fn decision(&self, k: usize) -> (&[SymbolInput], &[SymbolParams]) {
        let r = k * self.n..(k + 1) * self.n;
        (&self.inputs[r.clone()], &self.params[r])
    }
}

/// Replays `events` through the feature engine, [`mlcore_decision::prepare`]
/// and `scorer` — what the daemon's ingress and worker do with the same
/// frames.
pub fn record(
    events: impl IntoIterator<Item = Event>,
    strategy: &Strategy,
    scorer: &mut ModelScorer,
) -> Result<Recorded, BacktestError> {
    let n = strategy.symbols.len();
    let mut engine = FeatureEngine::new(n, strategy.benchmark);
    let mut features = vec![0f32; n * N_FEATURES];
    let mut inputs = vec![SymbolInput::NOT_READY; n];
    let mut params = strategy.params.clone();
    let mut rec = Recorded {
        n,
        quotes: Vec::new(),
        trigger_ts: Vec::new(),
        trigger_at: Vec::new(),
        inputs: Vec::new(),
        params: Vec::new(),
        foreign_quotes: 0,
        notional: strategy.params.iter().map(|p| p.notional).collect(),
    };
    for e in events {
        match e {
            Event::Quote(q) => {
                if usize::from(q.symbol) >= n {
                    rec.foreign_quotes += 1;
                    continue;
                }
                engine.update(&q);
                rec.quotes.push(q);
            }
            Event::Trigger(ts) => {
                mlcore_decision::prepare(strategy, &engine, ts, &mut features, &mut inputs, &mut params);
                let scores = scorer
                    .score(&features, n)
                    .map_err(|e| BacktestError::Scoring(e.to_string()))?;
                mlcore_decision::apply_scores(&mut inputs, scores.ai1, scores.ai2, scores.ai3);
                rec.trigger_ts.push(ts);
                rec.trigger_at.push(rec.quotes.len());
                rec.inputs.extend_from_slice(&inputs);
                rec.params.extend_from_slice(&params);
            }
        }
    }
    Ok(rec)
}
