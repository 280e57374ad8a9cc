//! Phase two of a backtest: each recorded decision through the decision
//! crate ([`mlcore_decision::decide`]: θ gate, sizing, cost check,
//! β-neutral portfolio, lot rounding), then orders filled against the
//! market and marked to it.
//!
//! - A decision sends, per symbol, an order for the difference between its
//!   target and the position; a newer decision replaces an unfilled one.
//! - The order fills at the symbol's first quote at or after the decision
//!   time plus the latency: buys at `mid · (1 + h + s)`, sells at
//!   `mid · (1 − h − s)`, with `h` the larger of the quote's half-spread
//!   and half the cost table's spread, and `s` the slippage model
//!   (`fixed_bps + impact_bps_per_million · |qty| / 1e6`); commission on
//!   the traded notional.
//! - P&L is in units of capital, where a weight of 1 is the whole capital
//!   (`qty / notional_per_unit_weight`): a position of weight `w` earns
//!   `w · (mid'/mid − 1)` between marks, so symbols quoted in different
//!   currencies add up without conversion.

use mlcore_config::Slippage;
use mlcore_decision::{decide, Policy, Scratch, Summary, Target};

use super::record::Recorded;

/// What a fill of one symbol costs beyond the mid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FillCost {
    /// Half the cost table's spread: the least a fill crosses, bps.
    pub half_spread_floor_bps: f64,
    /// Commission on the traded notional, bps.
    pub commission_bps: f64,
}

/// How to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Policy with the θ under test.
    pub policy: Policy,
    /// Per symbol, in universe order.
    pub costs: Vec<FillCost>,
    /// The slippage model.
    pub slippage: Slippage,
    /// From decision to order at the market, ns.
    pub latency_ns: i64,
    /// Decisions before this time warm up only (no orders, not measured).
    pub measure_from_ns: i64,
    /// Keep every decision's targets (for `positions.csv` and parity).
    pub keep_targets: bool,
}

/// What a simulation produced, per measured decision.
#[derive(Debug, Clone, Default)]
pub struct Simulation {
    /// Trigger times of the measured decisions.
    pub ts: Vec<i64>,
    /// Cumulative P&L (units of capital) at each measured decision, and
    /// one last value after the final quote.
    pub equity: Vec<f64>,
    /// Each measured decision's portfolio summary (targets).
    pub summaries: Vec<Summary>,
    /// Σ|w| of the positions held at each decision (before its orders fill).
    pub held_gross: Vec<f64>,
    /// Σw of the positions held at each decision.
    pub held_net: Vec<f64>,
    /// Σwβ of the positions held at each decision.
    pub held_beta: Vec<f64>,
    /// Targets of every measured decision (`n` each), when kept.
    pub targets: Vec<Target>,
    /// Fills.
    pub fills: usize,
    /// Σ|Δw| filled.
    pub traded_weight: f64,
    /// Σ |Δw| · (fill price vs the mid at the decision, against the
    /// order's side) in bps: realised slippage, weighted.
    pub slippage_weighted_bps: f64,
    /// Σ costs paid (spread crossed, slippage, commission), capital units.
    pub costs_paid: f64,
}

#[derive(Debug, Clone, Copy)]
struct Order {
    target_qty: f64,
    due_ns: i64,
    decision_mid: f64,
}

/// Runs every recorded decision with `cfg`.
pub fn simulate(rec: &Recorded, cfg: &SimConfig) -> Simulation {
    let n = rec.n;
    let mut scratch = Scratch::new(n);
    let mut sim = Simulation::default();
    let mut qty = vec![0.0f64; n];
    let mut mark = vec![0.0f64; n];
    let mut orders: Vec<Option<Order>> = vec![None; n];
    let mut pnl = 0.0f64;
    let mut next_quote = 0usize;
    let notional = &rec.notional;
    let on_quote = |q: &mlcore_market::Quote,
                    qty: &mut [f64],
                    mark: &mut [f64],
                    orders: &mut [Option<Order>],
                    pnl: &mut f64,
                    sim: &mut Simulation| {
        // What the feature engine ignores (crossed, not positive) neither
        // marks nor fills.
        if !q.is_sane() {
            return;
        }
        let i = usize::from(q.symbol);
        let mid = 0.5 * (q.bid + q.ask);
        if mark[i] > 0.0 {
            *pnl += qty[i] / notional[i] * (mid / mark[i] - 1.0);
        }
        mark[i] = mid;
        let Some(o) = orders[i] else { return };
        if q.ts_ns < o.due_ns {
            return;
        }
        orders[i] = None;
        let dq = o.target_qty - qty[i];
        if dq == 0.0 {
            return;
        }
        let c = cfg.costs[i];
        let half = (0.5 * (q.ask - q.bid) / mid * 1e4).max(c.half_spread_floor_bps);
        let slip = cfg.slippage.fixed_bps + cfg.slippage.impact_bps_per_million * dq.abs() / 1e6;
        let side = dq.signum();
        let price = mid * (1.0 + side * (half + slip) * 1e-4);
        let dw = dq / notional[i];
        let commission = dw.abs() * c.commission_bps * 1e-4;
        let crossing = dw * (mid / price - 1.0);
        *pnl += crossing - commission;
        sim.costs_paid += commission - crossing;
        sim.fills += 1;
        sim.traded_weight += dw.abs();
        if o.decision_mid > 0.0 {
            sim.slippage_weighted_bps += dw.abs() * side * (price / o.decision_mid - 1.0) * 1e4;
        }
        qty[i] = o.target_qty;
    };
    for k in 0..rec.decisions() {
        for q in &rec.quotes[next_quote..rec.trigger_at[k]] {
            on_quote(q, &mut qty, &mut mark, &mut orders, &mut pnl, &mut sim);
        }
        next_quote = rec.trigger_at[k];
        let ts = rec.trigger_ts[k];
        if ts < cfg.measure_from_ns {
            continue;
        }
        let (inputs, params) = rec.decision(k);
        let summary = decide(&cfg.policy, params, inputs, &mut scratch);
        sim.ts.push(ts);
        sim.equity.push(pnl);
        sim.summaries.push(summary);
        let (mut gross, mut net, mut beta) = (0.0, 0.0, 0.0);
        for i in 0..n {
            let w = qty[i] / params[i].notional;
            gross += w.abs();
            net += w;
            beta += w * params[i].beta;
        }
        sim.held_gross.push(gross);
        sim.held_net.push(net);
        sim.held_beta.push(beta);
        if cfg.keep_targets {
            sim.targets.extend_from_slice(&scratch.targets);
        }
        for (i, t) in scratch.targets.iter().enumerate() {
            orders[i] = (t.qty != qty[i] || orders[i].is_some()).then_some(Order {
                target_qty: t.qty,
                due_ns: ts.saturating_add(cfg.latency_ns),
                decision_mid: mark[i],
            });
        }
    }
    for q in &rec.quotes[next_quote..] {
        on_quote(q, &mut qty, &mut mark, &mut orders, &mut pnl, &mut sim);
    }
    sim.equity.push(pnl);
    sim
}
