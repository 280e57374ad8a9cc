//! The publisher: applies the ops mode, stamps `seq` and `valid_until`, and
//! writes each decision through the guard.
//!
//! - One round trip per decision when decisions arrive one at a time; when
//!   they queue up behind the round trip (load), up to [`MAX_PIPELINE`]
//!   waiting decisions go in one pipeline, so throughput is bound by Redis'
//!   work, not by the network round trip. Consecutive decisions of one
//!   strategy in it share one guard call (`Guard::publish_many_with` folds
//!   up to `MAX_DECISIONS_PER_CALL`): each keeps its own outcome and stream
//!   entry, and Redis writes the signal hashes once for them, which about
//!   halves its work per decision at 8. The more Redis falls behind, the
//!   more decisions wait and the cheaper each becomes. Nothing waits to
//!   fill a pipeline.
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
    ContractError, Guard, OpsMode, PublishBuffers, PublishOutcome, RedisConn, Side, Signal, SignalBatch,
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
    /// Batches being built or sent, and the guard client's encoding
    /// buffers: after warm-up a decision allocates only the Redis client's
    /// reply values.
    batches: BatchPool,
    bufs: PublishBuffers,
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Most decisions sent in one pipeline.
pub const MAX_PIPELINE: usize = 16;

/// Decisions taken from the queue together, and their batches.
struct Round {
    /// Boxed: jobs travel between threads and pools as boxes; unboxing here
    /// would move whole buffers.
    #[allow(clippy::vec_box)]
    jobs: Vec<Box<Job>>,
    labels: Vec<Option<&'static str>>,
    /// Batches waiting to be sent.
    pending: Vec<Pending>,
}

/// A batch waiting to be sent, and where its outcome goes.
struct Pending {
    /// Index of its job in the round (and of its label).
    slot: usize,
    /// Strategy index.
    strategy: usize,
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
        batches: BatchPool::new(n),
        bufs: PublishBuffers::default(),
    };
    let mut publish_hist = p.hists.local(Stage::Publish);
    let mut ack_hist = p.hists.local(Stage::TriggerToAck);
    let mut round = Round {
        jobs: Vec::with_capacity(MAX_PIPELINE),
        labels: Vec::with_capacity(MAX_PIPELINE),
        pending: Vec::with_capacity(MAX_PIPELINE),
    };
    while !p.shutdown.load(Ordering::Relaxed) {
        ensure_connected(&p, &mut st);
        flatten_if_asked(&p, &mut st);
        match p.jobs.recv_timeout(Duration::from_millis(20)) {
            Ok(j) => round.jobs.push(j),
            Err(RecvTimeoutError::Timeout) => {
                publish_hist.tick();
                ack_hist.tick();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // Whatever else is already waiting rides along.
        while round.jobs.len() < MAX_PIPELINE {
            match p.jobs.try_recv() {
                Ok(j) => round.jobs.push(j),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        round.labels.clear();
        round.labels.resize(round.jobs.len(), None);
        for i in 0..round.jobs.len() {
            let s = usize::from(round.jobs[i].strategy);
            // reduce_only clamps against the last accepted weights: send what
            // is pending first, and this batch alone.
            // One read of the mode per decision: the flush choice and the
            // clamping below must agree.
            let mode = p.ops.mode(s);
            let alone = mode == OpsMode::ReduceOnly;
            if alone {
                flush(&p, &mut st, &mut round);
            }
            match prepare(&p, &mut st, &round.jobs[i], mode, round.pending.len()) {
                Prepared::Done(label) => round.labels[i] = label,
                Prepared::Ready => round.pending.push(Pending { slot: i, strategy: s }),
            }
            if alone {
                flush(&p, &mut st, &mut round);
            }
        }
        flush(&p, &mut st, &mut round);
        let done = Instant::now();
        for (job, label) in round.jobs.drain(..).zip(&round.labels) {
            if let Some(label) = *label {
                p.counters.outcome(label);
                if label == "accepted" {
                    publish_hist.record(done - started);
                    ack_hist.record(done - job.decoded_at);
                }
            }
            let _ = p.pool_returns[usize::from(job.strategy)].try_send(job);
        }
    }
}

/// Sends the pending batches of `round` in one pipeline and records their
/// outcomes.
fn flush(p: &PublisherParts, st: &mut State, round: &mut Round) {
    if !round.pending.is_empty() {
        send(p, st, &round.pending, &mut round.labels);
        round.pending.clear();
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

/// Sends `pending` in one pipeline; writes each outcome label to
/// `labels[slot]`.
fn send(p: &PublisherParts, st: &mut State, pending: &[Pending], labels: &mut [Option<&'static str>]) {
    let mut label_all = |label| {
        for x in pending {
            labels[x.slot] = Some(label);
        }
    };
    let Some(conn) = st.conn.as_mut() else {
        Counters::inc(&p.counters.redis_errors);
        return label_all("redis_error");
    };
    let outcomes = match p
        .guard
        .publish_many_with(conn, &st.batches.slots[..pending.len()], &mut st.bufs)
    {
        Ok(o) => o,
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
            return label_all("redis_error");
        }
    };
    for ((x, outcome), batch) in pending.iter().zip(outcomes).zip(&st.batches.slots) {
        let s = x.strategy;
        labels[x.slot] = Some(match outcome {
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
                log("warn", "publish failed", &[("error", e.to_string().into())]);
                "redis_error"
            }
        });
    }
}

/// What `prepare` made of a decided job.
enum Prepared {
    /// Its batch is filled and goes out with the next flush.
    Ready,
    /// Nothing to send: the outcome label (`None`: none to count).
    Done(Option<&'static str>),
}

/// The batches being built or sent, reused decision after decision (slot i
/// belongs to the round's i-th pending entry), and spare batches per
/// strategy: a slot taken by another strategy swaps its batch for one of
/// that strategy's instead of rebuilding it, so interleaved strategies
/// allocate nothing once every strategy has had its batches built.
struct BatchPool {
    slots: Vec<SignalBatch>,
    /// Strategy index each slot is shaped for.
    owners: Vec<Option<usize>>,
    /// Per strategy index.
    spares: Vec<Vec<SignalBatch>>,
}

impl BatchPool {
    fn new(strategies: usize) -> Self {
        Self {
            slots: Vec::with_capacity(MAX_PIPELINE),
            owners: Vec::with_capacity(MAX_PIPELINE),
            spares: (0..strategies)
                .map(|_| Vec::with_capacity(MAX_PIPELINE))
                .collect(),
        }
    }

    /// Slot `idx`, shaped for strategy `s` (`id`, `symbols`); afterwards only
    /// its values change.
    fn slot(&mut self, idx: usize, s: usize, id: &str, symbols: &[String]) -> &mut SignalBatch {
        while self.slots.len() <= idx {
            self.slots.push(SignalBatch::default());
            self.owners.push(None);
        }
        if self.owners[idx] != Some(s) {
            let fresh = self.spares[s].pop().unwrap_or_else(|| SignalBatch {
                strategy: id.to_owned(),
                signals: symbols.iter().map(Signal::flat).collect(),
                ..SignalBatch::default()
            });
            let old = std::mem::replace(&mut self.slots[idx], fresh);
            if let Some(o) = self.owners[idx] {
                self.spares[o].push(old);
            }
            self.owners[idx] = Some(s);
        }
        &mut self.slots[idx]
    }
}

/// Fills pooled batch `idx` from a decided job, unless there is nothing to
/// send.
fn prepare(p: &PublisherParts, st: &mut State, job: &Job, mode: OpsMode, idx: usize) -> Prepared {
    let s = usize::from(job.strategy);
    let Some(meta) = job.model.as_ref() else {
        return Prepared::Done(None); // no model yet
    };
    if matches!(mode, OpsMode::Halted | OpsMode::Flatten) {
        Counters::inc(&p.counters.held_by_mode);
        return Prepared::Done(None);
    }
    let valid_until_ms = (job.trigger_ts_ns / 1_000_000).max(0) as u64 + p.universe.ttl_ms;
    if valid_until_ms <= now_ms() {
        return Prepared::Done(Some("expired_before_send"));
    }
    let strat = &p.universe.strategies[s];
    let seq = next_seq(st, s);
    let batch = st.batches.slot(idx, s, &strat.id, &strat.symbols);
    for (i, sig) in batch.signals.iter_mut().enumerate() {
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
        sig.side = Side::of_weight(weight);
        sig.weight = weight;
        sig.qty = qty;
        sig.return_prob = job.inputs[i].prob_up.clamp(0.0, 1.0);
        sig.risk_score = job.inputs[i].risk;
    }
    batch.seq = seq;
    batch.generated_at_ms = (job.trigger_ts_ns / 1_000_000).max(0) as u64;
    batch.valid_until_ms = valid_until_ms;
    batch.model_id.clone_from(&meta.model_id);
    batch.model_version = meta.version;
    Prepared::Ready
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
        let seq = next_seq(st, s);
        // Between rounds: no batch is pending, so slot 0 is free.
        let batch = st.batches.slot(0, s, &strat.id, &strat.symbols);
        for sig in &mut batch.signals {
            (sig.side, sig.weight, sig.qty) = (Side::Flat, 0.0, 0.0);
            (sig.return_prob, sig.risk_score) = (0.5, 0.0);
        }
        (batch.seq, batch.generated_at_ms, batch.valid_until_ms) = (seq, now, now + p.universe.ttl_ms);
        batch.model_id.clear();
        batch.model_id.push_str("flatten");
        batch.model_version = 0;
        let flat = Pending { slot: 0, strategy: s };
        let mut labels = [None];
        send(p, st, std::slice::from_ref(&flat), &mut labels);
        let label = labels[0].unwrap_or("redis_error");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_strategies_reuse_their_batches() {
        let symbols = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let (fx, eq) = (symbols(&["EURUSD", "USDJPY"]), symbols(&["SPY", "QQQ", "IWM"]));
        let mut pool = BatchPool::new(2);
        // Two rounds of three slots, strategies alternating differently, so
        // every slot changes strategy.
        let rounds = [[0, 1, 0], [1, 0, 1]];
        // Each batch built is marked (its first signal's qty), as a
        // rebuilt one would not be.
        let mut marks = 0.0;
        for round in rounds {
            for (idx, s) in round.into_iter().enumerate() {
                let (id, syms) = if s == 0 { ("fx", &fx) } else { ("eq", &eq) };
                marks += 1.0;
                pool.slot(idx, s, id, syms).signals[0].qty = marks;
            }
        }
        // From now on every slot gets one of those batches, rightly shaped.
        for _ in 0..10 {
            for round in rounds {
                for (idx, s) in round.into_iter().enumerate() {
                    let (id, syms) = if s == 0 { ("fx", &fx) } else { ("eq", &eq) };
                    let b = pool.slot(idx, s, id, syms);
                    assert_eq!(b.strategy, id);
                    let names: Vec<&str> = b.signals.iter().map(|x| x.symbol.as_str()).collect();
                    assert_eq!(names, *syms);
                    let mark = b.signals[0].qty;
                    assert!(mark >= 1.0 && mark <= marks, "a batch was rebuilt");
                }
            }
        }
    }
}
