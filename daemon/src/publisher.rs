//! The publisher: applies the ops mode, stamps `seq` and `valid_until`, and
//! writes each decision through the guard in one round trip.
//!
//! - `seq` per strategy = max(last + 1, now in µs), starting above the guard's
//!   high-water mark: monotonic across restarts without local state.
//! - `valid_until` = trigger time + `signal.ttl_ms`; a batch already past it
//!   is never sent (counted `expired_before_send`).
//! - Modes: `halted` publishes nothing; `reduce_only` clamps each target to
//!   the last accepted weight (no growth, no flip); `flatten` publishes flat
//!   signals for every symbol once per mode version, then holds.
//! - Redis down: decisions keep coming and are counted as `redis_error`;
//!   reconnects back off exponentially; `/healthz` says degraded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mlcore_models::config::RedisConfig;
use mlcore_models::contract::{
    ContractError, Guard, OpsMode, PublishOutcome, RedisConn, Side, Signal, SignalBatch,
};

use crate::job::Job;
use crate::log::{log, now_ms};
use crate::ops::OpsTable;
use crate::stats::{Counters, Histograms, Stage};
use crate::universe::Universe;

/// What the publisher needs.
#[derive(Debug)]
pub struct PublisherParts {
    /// Decided jobs.
    pub jobs: Receiver<Box<Job>>,
    /// Job pools (return side), per strategy.
    pub pool_returns: Vec<Sender<Box<Job>>>,
    /// Redis settings.
    pub redis: RedisConfig,
    /// Guard client.
    pub guard: Guard,
    /// Universe.
    pub universe: Arc<Universe>,
    /// Ops modes.
    pub ops: Arc<OpsTable>,
    /// Counters.
    pub counters: Arc<Counters>,
    /// Histogram pools.
    pub hists: Histograms,
    /// Stop flag.
    pub shutdown: Arc<AtomicBool>,
}

struct State {
    conn: Option<RedisConn>,
    next_attempt: Instant,
    backoff: Duration,
    last_seq: Vec<u64>,
    weights: Vec<Vec<f64>>,
    flattened_version: Vec<Option<u64>>,
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Runs the publisher until the stop flag is set.
pub fn run(p: PublisherParts) {
    let n = p.universe.strategies.len();
    let mut st = State {
        conn: None,
        next_attempt: Instant::now(),
        backoff: Duration::from_millis(p.redis.reconnect.initial_ms.max(1)),
        last_seq: vec![0; n],
        weights: p
            .universe
            .strategies
            .iter()
            .map(|s| vec![0.0; s.symbols.len()])
            .collect(),
        flattened_version: vec![None; n],
    };
    let mut publish_hist = p.hists.local(Stage::Publish);
    let mut ack_hist = p.hists.local(Stage::TriggerToAck);
    while !p.shutdown.load(Ordering::Relaxed) {
        ensure_connected(&p, &mut st);
        flatten_if_asked(&p, &mut st);
        let job = match p.jobs.recv_timeout(Duration::from_millis(20)) {
            Ok(j) => j,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let s = usize::from(job.strategy);
        let started = Instant::now();
        let outcome = publish_job(&p, &mut st, &job);
        if let Some(label) = outcome {
            p.counters.outcome(label);
            if label == "accepted" {
                publish_hist.record(started.elapsed());
                ack_hist.record(job.decoded_at.elapsed());
            }
        }
        let _ = p.pool_returns[s].try_send(job);
    }
}

fn ensure_connected(p: &PublisherParts, st: &mut State) {
    if st.conn.is_some() || Instant::now() < st.next_attempt {
        return;
    }
    let attempt = RedisConn::connect(&p.redis)
        .map_err(ContractError::from)
        .and_then(|mut c| {
            Guard::load(&mut c)?;
            for (s, strat) in p.universe.strategies.iter().enumerate() {
                let hwm = p.guard.high_water_mark(&mut c, &strat.id)?;
                st.last_seq[s] = st.last_seq[s].max(hwm);
            }
            Ok(c)
        });
    match attempt {
        Ok(c) => {
            st.conn = Some(c);
            st.backoff = Duration::from_millis(p.redis.reconnect.initial_ms.max(1));
            p.counters.redis_ok.store(true, Ordering::Relaxed);
            log("info", "publisher connected; guard loaded", &[]);
        }
        Err(e) => {
            Counters::inc(&p.counters.redis_errors);
            p.counters.redis_ok.store(false, Ordering::Relaxed);
            log(
                "warn",
                "publisher cannot reach Redis; will retry",
                &[
                    ("error", e.to_string().into()),
                    ("backoff_ms", (st.backoff.as_millis() as u64).into()),
                ],
            );
            st.next_attempt = Instant::now() + st.backoff;
            st.backoff = (st.backoff * 2).min(Duration::from_millis(p.redis.reconnect.max_ms.max(1)));
        }
    }
}

fn next_seq(st: &mut State, s: usize) -> u64 {
    let seq = (st.last_seq[s] + 1).max(now_us());
    st.last_seq[s] = seq;
    seq
}

/// Sends a batch; returns the outcome label.
fn send(p: &PublisherParts, st: &mut State, s: usize, batch: &SignalBatch) -> &'static str {
    let Some(conn) = st.conn.as_mut() else {
        Counters::inc(&p.counters.redis_errors);
        return "redis_error";
    };
    match p.guard.publish(conn, batch) {
        Ok(PublishOutcome::Accepted { count }) => {
            p.counters
                .signals_accepted
                .fetch_add(count as u64, Ordering::Relaxed);
            for (w, sig) in st.weights[s].iter_mut().zip(&batch.signals) {
                *w = sig.weight;
            }
            "accepted"
        }
        Ok(PublishOutcome::Stale { stored_seq, .. }) => {
            st.last_seq[s] = st.last_seq[s].max(stored_seq);
            "stale"
        }
        Ok(other) => other.label(),
        Err(ContractError::BadInput(msg)) => {
            log(
                "error",
                "guard refused a batch as malformed",
                &[("error", msg.into())],
            );
            "bad_input"
        }
        Err(e) => {
            Counters::inc(&p.counters.redis_errors);
            p.counters.redis_ok.store(false, Ordering::Relaxed);
            log(
                "warn",
                "publish failed; reconnecting",
                &[("error", e.to_string().into())],
            );
            st.conn = None;
            st.next_attempt = Instant::now() + st.backoff;
            "redis_error"
        }
    }
}

fn publish_job(p: &PublisherParts, st: &mut State, job: &Job) -> Option<&'static str> {
    let s = usize::from(job.strategy);
    let meta = job.model.as_ref()?;
    let mode = p.ops.mode(s);
    if matches!(mode, OpsMode::Halted | OpsMode::Flatten) {
        Counters::inc(&p.counters.held_by_mode);
        return None;
    }
    let valid_until_ms = (job.trigger_ts_ns / 1_000_000).max(0) as u64 + p.universe.ttl_ms;
    if valid_until_ms <= now_ms() {
        return Some("expired_before_send");
    }
    let strat = &p.universe.strategies[s];
    let signals = strat
        .symbols
        .iter()
        .enumerate()
        .map(|(i, sym)| {
            let t = job.scratch.targets[i];
            let (mut weight, mut qty) = (t.weight, t.qty);
            if mode == OpsMode::ReduceOnly {
                let cur = st.weights[s][i];
                let grows = weight.abs() > cur.abs();
                let flips = weight != 0.0 && (weight > 0.0) != (cur > 0.0);
                if flips || cur == 0.0 {
                    (weight, qty) = (0.0, 0.0);
                } else if grows {
                    let notional = strat.params[i].notional;
                    (weight, qty) = (cur, cur * notional);
                }
            }
            Signal {
                symbol: sym.clone(),
                side: Side::of_weight(weight),
                weight,
                qty,
                return_prob: job.inputs[i].prob_up.clamp(0.0, 1.0),
                risk_score: job.inputs[i].risk,
            }
        })
        .collect();
    let batch = SignalBatch {
        strategy: strat.id.clone(),
        seq: next_seq(st, s),
        generated_at_ms: (job.trigger_ts_ns / 1_000_000).max(0) as u64,
        valid_until_ms,
        model_id: meta.model_id.clone(),
        model_version: meta.version,
        signals,
    };
    Some(send(p, st, s, &batch))
}

fn flatten_if_asked(p: &PublisherParts, st: &mut State) {
    for (s, strat) in p.universe.strategies.iter().enumerate() {
        if p.ops.mode(s) != OpsMode::Flatten {
            continue;
        }
        let version = p.ops.version(s);
        if st.flattened_version[s] == Some(version) || st.conn.is_none() {
            continue;
        }
        let now = now_ms();
        let batch = SignalBatch {
            strategy: strat.id.clone(),
            seq: next_seq(st, s),
            generated_at_ms: now,
            valid_until_ms: now + p.universe.ttl_ms,
            model_id: "flatten".into(),
            model_version: 0,
            signals: strat
                .symbols
                .iter()
                .map(|sym| Signal {
                    symbol: sym.clone(),
                    side: Side::Flat,
                    weight: 0.0,
                    qty: 0.0,
                    return_prob: 0.5,
                    risk_score: 0.0,
                })
                .collect(),
        };
        let label = send(p, st, s, &batch);
        p.counters.outcome(label);
        if label == "accepted" {
            st.flattened_version[s] = Some(version);
            log(
                "info",
                "flattened",
                &[
                    ("strategy", strat.id.clone().into()),
                    ("ops_version", version.into()),
                ],
            );
        }
    }
}
