//! The configuration resolved once into indexed tables: what the daemon
//! reads on its hot threads and the backtester replays with, without
//! lookups by name.

use std::collections::HashMap;

use mlcore_config::{AppConfig, BetaSource};
use mlcore_market::{StrategyId, Symbol};

use crate::{Policy, SymbolParams};

/// One strategy, ready for the hot path.
#[derive(Debug, Clone)]
pub struct Strategy {
    /// Strategy id.
    pub id: StrategyId,
    /// Symbols in universe order.
    pub symbols: Vec<Symbol>,
    /// Per-symbol portfolio parameters.
    pub params: Vec<SymbolParams>,
    /// Symbols whose β is estimated (rolling window), by index.
    pub rolling_beta: Vec<Option<usize>>,
    /// Index of the benchmark symbol.
    pub benchmark: usize,
    /// θ set for this strategy by the configuration (`theta.per_strategy`):
    /// it replaces the model's θ when present.
    pub theta: Option<(f64, f64)>,
}

impl Strategy {
    /// The θ to decide with: the configuration's for this strategy when it
    /// sets one, else the model's.
    #[inline]
    pub fn theta_or(&self, model: (f64, f64)) -> (f64, f64) {
        self.theta.unwrap_or(model)
    }
}

/// All strategies and the wire-id routing table.
#[derive(Debug, Clone)]
pub struct Universe {
    /// Strategies in `universe.yaml` order (the trigger frame's index).
    pub strategies: Vec<Strategy>,
    /// Wire symbol id → every (strategy, symbol index) that trades it.
    pub routes: HashMap<u32, Vec<(u16, u16)>>,
    /// Portfolio policy (θ replaced by the model's at decision time).
    pub policy: Policy,
    /// Signal lifetime.
    pub ttl_ms: u64,
}

impl Universe {
    /// Resolves the configuration.
    pub fn from_config(cfg: &AppConfig) -> Self {
        let p = &cfg.core_policy;
        let policy = crate::policy(p);
        let mut routes: HashMap<u32, Vec<(u16, u16)>> = HashMap::new();
        let strategies = cfg
            .universe
            .strategies
            .iter()
            .enumerate()
            .map(|(si, s)| {
                let params = crate::symbol_params(cfg, s);
                for (i, sym) in s.symbols.iter().enumerate() {
                    routes.entry(sym.id).or_default().push((si as u16, i as u16));
                }
                Strategy {
                    id: s.id.clone(),
                    symbols: s.symbols.iter().map(|x| x.symbol.clone()).collect(),
                    params,
                    rolling_beta: s
                        .symbols
                        .iter()
                        .map(|x| match x.beta {
                            BetaSource::Rolling { window } => Some(window as usize),
                            BetaSource::Static { .. } => None,
                        })
                        .collect(),
                    benchmark: s
                        .symbols
                        .iter()
                        .position(|x| x.symbol == s.benchmark)
                        .unwrap_or(0),
                    theta: p.theta.for_strategy(s.id.as_str()).map(|t| (t.theta1, t.theta2)),
                }
            })
            .collect();
        Self {
            strategies,
            routes,
            policy,
            ttl_ms: p.signal.ttl_ms,
        }
    }
}
