//! The publisher: applies the ops mode, stamps `seq` and `valid_until`, and
//! writes each decision through the guard.
//!
//! - Decisions waiting in the queue (up to [`MAX_PIPELINE`]) go out
//!   together in one pipeline. Decisions already queued when a pipeline
//!   has just gone out go out at once in the next one, before the first
//!   one's replies are read (up to `MAX_IN_FLIGHT`, on the publisher's own
//!   connection, [`PublishPipe`]): Redis then finds them queued when it
//!   finishes instead of idling while the reply travels and the publisher
//!   wakes up. A decision that arrives while the publisher waits for a
//!   reply waits with it and may fold with others (waking the publisher
//!   for it was measured and did not help; docs/performance.md). Consecutive decisions of one strategy in a
//!   pipeline share one guard call (`Guard` folds up to
//!   `MAX_DECISIONS_PER_CALL`): each keeps its own outcome and stream entry,
//!   and Redis writes the signal hashes once for them. The more Redis falls
//!   behind, the more decisions wait and the cheaper each becomes. Nothing
//!   waits to fill a pipeline.
//! - A pipeline with a `reduce_only` decision goes out only after every
//!   reply is in (it clamps against the last accepted weights), and flat
//!   signals for `flatten` go out alone: both see the state the guard has.
//! - `seq` is the decision's identity: its trigger time in µs (the frame's
//!   `ts_ns`, or the timer tick's grid time), bumped to `last + 1` only when
//!   two decisions of one strategy share a µs. Two daemons fed the same
//!   frames (active-active) compute the same `seq` for the same decision:
//!   the guard takes the first and refuses the other, counted
//!   `duplicate`; a later decision wins whichever daemon made it. Never
//!   raised to the guard's high-water mark: a decision another daemon has
//!   overtaken is refused as `stale`, not republished as newer.
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

use crossbeam_channel::{Receiver, Sender};
use mlcore_config::RedisConfig;
use mlcore_contract::{ContractError, Guard, OpsMode, PublishOutcome, Side, Signal, SignalBatch};
use mlcore_market::Symbol;

use crate::clock::now_ms;
use crate::job::Job;
use crate::ops::OpsTable;
use crate::redis_io::{PublishPipe, MAX_IN_FLIGHT};
use crate::stats::{Counters, Histograms, LocalHist, Outcome, Stage};
use mlcore_decision::universe::Universe;

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
    /// The decision tables in force (a `flatten` order's TTL).
    pub live: Arc<crate::live::Live>,
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
    conn: Option<PublishPipe>,
    next_attempt: Instant,
    backoff: Duration,
    last_seq: Vec<Stamp>,
    weights: Vec<Vec<f64>>,
    flattened_version: Vec<Option<u64>>,
    /// Batches being built or sent: after warm-up a decision allocates
    /// nothing (the pipe reads replies into reused buffers).
    batches: BatchPool,
    /// Decisions taken from the queue, oldest first from `head`: the first
    /// `in_flight` were sent and wait for their replies.
    rounds: Vec<Round>,
    head: usize,
    in_flight: usize,
    publish_hist: LocalHist,
    ack_hist: LocalHist,
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Most decisions sent in one pipeline.
pub const MAX_PIPELINE: usize = 16;

/// Decisions taken from the queue together, sent in one pipeline, and
/// their batches.
struct Round {
    /// Boxed: jobs travel between threads and pools as boxes; unboxing here
    /// would move whole buffers.
    #[allow(clippy::vec_box)]
    jobs: Vec<Box<Job>>,
    /// The mode each job was decided under (read once per decision).
    modes: Vec<OpsMode>,
    labels: Vec<Option<Outcome>>,
    /// Batches waiting to be sent or for their replies.
    pending: Vec<Pending>,
    /// First batch slot of this round in the pool.
    base: usize,
    started: Instant,
}

/// A batch waiting to be sent, and where its outcome goes.
struct Pending {
    /// Index of its job in the round (and of its label).
    slot: usize,
    /// Strategy index.
    strategy: usize,
}

/// Runs the publisher until the stop flag is set, then reads the replies
/// of what it already sent.
pub fn run(p: PublisherParts) {
    let mut publisher = Publisher::new(p);
    while !publisher.p.shutdown.load(Ordering::Relaxed) {
        if !publisher.step() {
            break;
        }
    }
    publisher.drain();
}

/// The publisher's state. [`run`] calls [`Publisher::step`] until stopped;
/// tests call it directly (the allocation test drives this very code).
pub struct Publisher {
    p: PublisherParts,
    st: State,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("connected", &self.st.conn.is_some())
            .field("in_flight", &self.st.in_flight)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher that connects on its first step.
    pub fn new(p: PublisherParts) -> Self {
        let n = p.universe.strategies.len();
        let st = State {
            conn: None,
            next_attempt: Instant::now(),
            backoff: Duration::from_millis(p.redis.reconnect.initial_ms.max(1)),
            last_seq: vec![Stamp::default(); n],
            weights: p
                .universe
                .strategies
                .iter()
                .map(|s| vec![0.0; s.symbols.len()])
                .collect(),
            flattened_version: vec![None; n],
            batches: BatchPool::new(n),
            rounds: (0..MAX_IN_FLIGHT)
                .map(|r| Round {
                    jobs: Vec::with_capacity(MAX_PIPELINE),
                    modes: Vec::with_capacity(MAX_PIPELINE),
                    labels: Vec::with_capacity(MAX_PIPELINE),
                    pending: Vec::with_capacity(MAX_PIPELINE),
                    base: r * MAX_PIPELINE,
                    started: Instant::now(),
                })
                .collect(),
            head: 0,
            in_flight: 0,
            publish_hist: p.hists.local(Stage::Publish),
            ack_hist: p.hists.local(Stage::TriggerToAck),
        };
        Self { p, st }
    }

    /// One turn: (re)connect and flatten when nothing is in flight, send
    /// the decisions that wait (up to `MAX_IN_FLIGHT` pipelines), or read
    /// the oldest reply. Waits up to 20 ms for a decision when idle.
    /// `false` once the decision queue is closed.
    pub fn step(&mut self) -> bool {
        let (p, st) = (&self.p, &mut self.st);
        if st.in_flight == 0 {
            ensure_connected(p, st);
            flatten_if_asked(p, st);
        } else if flatten_due(p, st) {
            // Flat signals go out alone, after what is in flight.
            while st.in_flight > 0 {
                receive(p, st);
            }
            return true;
        }
        // Send decisions that are already waiting, even while earlier ones
        // are still in Redis (up to MAX_IN_FLIGHT pipelines); otherwise wait
        // for the oldest reply.
        let sendable = st.in_flight < MAX_IN_FLIGHT && st.conn.as_ref().is_none_or(PublishPipe::overlaps);
        if st.in_flight == 0 || sendable {
            let wait = if st.in_flight == 0 {
                Duration::from_millis(20)
            } else {
                Duration::ZERO
            };
            match take(p, st, wait) {
                Taken::Some => {
                    start(p, st);
                    return true;
                }
                Taken::Disconnected => return false,
                Taken::None if st.in_flight == 0 => {
                    st.publish_hist.tick();
                    st.ack_hist.tick();
                    return true;
                }
                Taken::None => {}
            }
        }
        receive(p, st);
        true
    }

    /// Reads the replies of every pipeline still in flight.
    pub fn drain(&mut self) {
        while self.st.in_flight > 0 {
            receive(&self.p, &mut self.st);
        }
    }
}

enum Taken {
    /// The next round holds jobs.
    Some,
    None,
    Disconnected,
}

/// Takes waiting jobs into the next round (waiting up to `wait` for the
/// first).
fn take(p: &PublisherParts, st: &mut State, wait: Duration) -> Taken {
    let r = (st.head + st.in_flight) % MAX_IN_FLIGHT;
    let round = &mut st.rounds[r];
    let first = if wait.is_zero() {
        p.jobs.try_recv().map_err(|e| e.is_disconnected())
    } else {
        p.jobs.recv_timeout(wait).map_err(|e| e.is_disconnected())
    };
    match first {
        Ok(j) => round.jobs.push(j),
        Err(true) => return Taken::Disconnected,
        Err(false) => return Taken::None,
    }
    // Whatever else is already waiting rides along.
    while round.jobs.len() < MAX_PIPELINE {
        match p.jobs.try_recv() {
            Ok(j) => round.jobs.push(j),
            Err(_) => break,
        }
    }
    Taken::Some
}

/// Prepares the round just taken and sends it; a round with a
/// `reduce_only` decision goes out only after everything in flight
/// (it clamps against the last accepted weights) and waits for its own
/// replies.
fn start(p: &PublisherParts, st: &mut State) {
    let r = (st.head + st.in_flight) % MAX_IN_FLIGHT;
    let round = &mut st.rounds[r];
    round.started = Instant::now();
    round.labels.clear();
    round.labels.resize(round.jobs.len(), None);
    round.modes.clear();
    round
        .modes
        .extend(round.jobs.iter().map(|j| p.ops.mode(usize::from(j.strategy))));
    if round.modes.contains(&OpsMode::ReduceOnly) {
        while st.in_flight > 0 {
            receive(p, st);
        }
        // Nothing in flight: the round now sits at the head.
        let r = st.head;
        for i in 0..st.rounds[r].jobs.len() {
            let alone = st.rounds[r].modes[i] == OpsMode::ReduceOnly;
            if alone {
                flush_now(p, st, r);
            }
            prepare_into(p, st, r, i);
            if alone {
                flush_now(p, st, r);
            }
        }
        flush_now(p, st, r);
        return finish(p, st, r);
    }
    for i in 0..st.rounds[r].jobs.len() {
        prepare_into(p, st, r, i);
    }
    if st.rounds[r].pending.is_empty() {
        return finish(p, st, r);
    }
    let (head, before) = (st.head, st.in_flight);
    match send(p, st, r) {
        Sent::InFlight => {}
        Sent::Refused => finish(p, st, r),
        // Every round that was in flight, and this one, has its labels.
        Sent::Lost => {
            for k in 0..=before {
                finish(p, st, (head + k) % MAX_IN_FLIGHT);
            }
        }
    }
}

/// What became of a round `send` was asked to send.
enum Sent {
    /// Sent; its replies come with `receive`.
    InFlight,
    /// Not sent (no connection, or refused before sending): it alone has
    /// its labels; what was in flight still is.
    Refused,
    /// The connection was lost: it and every round that was in flight have
    /// their labels, and nothing is in flight.
    Lost,
}

/// Fills job `i` of round `r` into the round's next batch slot, or labels it.
fn prepare_into(p: &PublisherParts, st: &mut State, r: usize, i: usize) {
    let State {
        rounds,
        batches,
        last_seq,
        weights,
        ..
    } = st;
    let round = &mut rounds[r];
    let job = &round.jobs[i];
    let s = usize::from(job.strategy);
    let idx = round.base + round.pending.len();
    match prepare(p, last_seq, weights, batches, job, round.modes[i], idx) {
        Prepared::Done(label) => round.labels[i] = label,
        Prepared::Ready => round.pending.push(Pending { slot: i, strategy: s }),
    }
}

/// Sends round `r`'s pending batches without waiting.
fn send(p: &PublisherParts, st: &mut State, r: usize) -> Sent {
    let round = &mut st.rounds[r];
    let batches = &st.batches.slots[round.base..round.base + round.pending.len()];
    let Some(conn) = st.conn.as_mut() else {
        Counters::inc(&p.counters.redis_errors);
        label_all(round, Outcome::RedisError);
        return Sent::Refused;
    };
    match conn.send(&p.guard, batches) {
        Ok(()) => {
            if st.in_flight > 0 {
                Counters::inc(&p.counters.publish_overlapped);
            }
            st.in_flight += 1;
            Sent::InFlight
        }
        // Checked before anything was written: the connection is fine.
        Err(e @ ContractError::Invalid { .. }) => {
            refused_before_sending(&e);
            label_all(round, Outcome::BadInput);
            Sent::Refused
        }
        Err(e) => {
            st.in_flight += 1;
            lost(p, st, &e);
            Sent::Lost
        }
    }
}

/// Sends round `r`'s pending batches and waits for their outcomes; nothing
/// else may be in flight. The round stays taken (`finish` returns its jobs).
fn flush_now(p: &PublisherParts, st: &mut State, r: usize) {
    let round = &st.rounds[r];
    if round.pending.is_empty() {
        return;
    }
    let sent = &st.batches.slots[round.base..round.base + round.pending.len()];
    let result = match st.conn.as_mut() {
        Some(c) => c.send(&p.guard, sent),
        None => Err(not_connected()),
    }
    .and_then(|()| read_outcomes(p, st, r));
    match result {
        Ok(()) => {}
        Err(e @ ContractError::Invalid { .. }) => {
            refused_before_sending(&e);
            label_all(&mut st.rounds[r], Outcome::BadInput);
        }
        Err(e) => {
            label_all(&mut st.rounds[r], Outcome::RedisError);
            if st.conn.is_some() {
                disconnect(p, st, &e);
            } else {
                Counters::inc(&p.counters.redis_errors);
            }
        }
    }
    st.rounds[r].pending.clear();
}

/// Reads the oldest round's outcomes and finishes it (or, when the
/// connection is lost, every round that was in flight).
fn receive(p: &PublisherParts, st: &mut State) {
    let (head, before) = (st.head, st.in_flight);
    if receive_outcomes(p, st) {
        finish(p, st, head);
    } else {
        for k in 0..before {
            finish(p, st, (head + k) % MAX_IN_FLIGHT);
        }
    }
}

/// Reads the oldest round's outcomes into its labels. `false` when the
/// connection was lost: every round that was in flight has its labels.
fn receive_outcomes(p: &PublisherParts, st: &mut State) -> bool {
    let r = st.head;
    match read_outcomes(p, st, r) {
        Ok(()) => {
            st.rounds[r].pending.clear();
            st.in_flight -= 1;
            st.head = (st.head + 1) % MAX_IN_FLIGHT;
            true
        }
        Err(e) => {
            lost(p, st, &e);
            false
        }
    }
}

/// Reads the connection's oldest pipeline's outcomes into round `r`'s
/// labels (the round that pipeline carried).
fn read_outcomes(p: &PublisherParts, st: &mut State, r: usize) -> Result<(), ContractError> {
    let State {
        conn,
        rounds,
        batches,
        weights,
        ..
    } = st;
    let outcomes = conn.as_mut().ok_or_else(not_connected)?.recv()?;
    let round = &mut rounds[r];
    let sent = &batches.slots[round.base..];
    for ((x, o), batch) in round.pending.iter().zip(outcomes).zip(sent) {
        round.labels[x.slot] = Some(apply(p, weights, x.strategy, o, batch));
    }
    Ok(())
}

/// Logs a batch the guard client refused before writing anything (the
/// connection is fine).
fn refused_before_sending(e: &ContractError) {
    tracing::error!(error = %e, "a batch was refused before sending");
}

fn not_connected() -> ContractError {
    ContractError::Protocol("not connected to Redis".into())
}

/// What an outcome means for the publisher's state, and the outcome counted.
fn apply(
    p: &PublisherParts,
    weights: &mut [Vec<f64>],
    s: usize,
    outcome: &Result<PublishOutcome, ContractError>,
    batch: &SignalBatch,
) -> Outcome {
    match outcome {
        Ok(PublishOutcome::Accepted { count }) => {
            p.counters
                .signals_accepted
                .fetch_add(*count as u64, Ordering::Relaxed);
            for (w, sig) in weights[s].iter_mut().zip(&batch.signals) {
                *w = sig.weight;
            }
            Outcome::Accepted
        }
        // The same decision, published first by another daemon (the same
        // frames and model: what it stored is what this batch holds), so
        // `reduce_only` clamps against it next as against an own one.
        Ok(PublishOutcome::Stale { stored_seq, .. }) if *stored_seq == batch.seq => {
            for (w, sig) in weights[s].iter_mut().zip(&batch.signals) {
                *w = sig.weight;
            }
            Outcome::Duplicate
        }
        Ok(PublishOutcome::Stale { .. }) => Outcome::Stale,
        Ok(other) => Outcome::of(other),
        Err(ContractError::BadInput(msg)) => {
            tracing::error!(error = %msg, "guard refused a batch as malformed");
            Outcome::BadInput
        }
        Err(e) => {
            Counters::inc(&p.counters.redis_errors);
            tracing::warn!(error = %e, "publish failed");
            Outcome::RedisError
        }
    }
}

/// The connection is lost with rounds in flight: each is labelled
/// `redis_error` (nothing can be said of them) and left for the caller to
/// `finish`; nothing is in flight afterwards, and the head is the round
/// after them.
fn lost(p: &PublisherParts, st: &mut State, e: &ContractError) {
    disconnect(p, st, e);
    for k in 0..st.in_flight {
        let round = &mut st.rounds[(st.head + k) % MAX_IN_FLIGHT];
        label_all(round, Outcome::RedisError);
        round.pending.clear();
    }
    // The next round goes after them (the caller finishes them from the
    // old head).
    st.head = (st.head + st.in_flight) % MAX_IN_FLIGHT;
    st.in_flight = 0;
}

/// Drops the connection; the next attempt comes after the backoff.
fn disconnect(p: &PublisherParts, st: &mut State, e: &ContractError) {
    Counters::inc(&p.counters.redis_errors);
    p.counters.redis_ok.store(false, Ordering::Relaxed);
    tracing::warn!(error = %e, "publish failed; reconnecting");
    st.conn = None;
    st.next_attempt = Instant::now() + st.backoff;
}

fn label_all(round: &mut Round, label: Outcome) {
    for x in &round.pending {
        round.labels[x.slot] = Some(label);
    }
}

/// Counts round `r`'s outcomes, records its latencies and returns its jobs
/// to their pools.
fn finish(p: &PublisherParts, st: &mut State, r: usize) {
    let done = Instant::now();
    let round = &mut st.rounds[r];
    round.pending.clear();
    for (job, label) in round.jobs.drain(..).zip(&round.labels) {
        if let Some(label) = *label {
            p.counters.outcome(label);
            if label == Outcome::Accepted {
                st.publish_hist.record(done - round.started);
                st.ack_hist.record(done - job.decoded_at);
            }
        }
        let _ = p.pool_returns[usize::from(job.strategy)].try_send(job);
    }
}

fn ensure_connected(p: &PublisherParts, st: &mut State) {
    if st.conn.is_some() || Instant::now() < st.next_attempt {
        return;
    }
    let may_install = p.redis.guard_install.may_install();
    let attempt = PublishPipe::connect(&p.redis).and_then(|c| {
        let mut c = c.installing(may_install);
        Guard::ensure(&mut c, may_install, p.guard.contract())?;
        p.guard.check_engine(&mut c)?;
        Ok(c)
    });
    match attempt {
        Ok(c) => {
            st.conn = Some(c);
            st.backoff = Duration::from_millis(p.redis.reconnect.initial_ms.max(1));
            p.counters.redis_ok.store(true, Ordering::Relaxed);
            tracing::info!(
                contract = ?p.guard.contract(),
                guard_engine = ?p.guard.engine(),
                "publisher connected; guard answers"
            );
        }
        Err(e) => {
            Counters::inc(&p.counters.redis_errors);
            p.counters.redis_ok.store(false, Ordering::Relaxed);
            tracing::warn!(error = %e, backoff_ms = (st.backoff.as_millis() as u64), "publisher cannot reach Redis; will retry");
            st.next_attempt = Instant::now() + st.backoff;
            st.backoff = (st.backoff * 2).min(Duration::from_millis(p.redis.reconnect.max_ms.max(1)));
        }
    }
}

/// A strategy's last trigger time and the last `seq` this daemon gave.
#[derive(Debug, Clone, Copy, Default)]
struct Stamp {
    trigger_us: u64,
    seq: u64,
}

/// The `seq` of strategy `s`'s decision triggered at `trigger_us`: its
/// identity; one more than the last when this daemon saw the same trigger
/// time already (two triggers in one µs, numbered in arrival order as
/// every daemon fed the same frames numbers them); `None` for a decision
/// older than one already stamped (workers finishing out of order): a
/// newer one went out, this one is stale.
fn next_seq(last: &mut [Stamp], s: usize, trigger_us: u64) -> Option<u64> {
    let st = &mut last[s];
    let seq = match trigger_us.cmp(&st.trigger_us) {
        std::cmp::Ordering::Less => return None,
        std::cmp::Ordering::Equal => st.seq + 1,
        std::cmp::Ordering::Greater => trigger_us.max(st.seq + 1),
    };
    *st = Stamp { trigger_us, seq };
    Some(seq)
}

/// What `prepare` made of a decided job.
enum Prepared {
    /// Its batch is filled and goes out with the next flush.
    Ready,
    /// Nothing to send: the outcome (`None`: none to count).
    Done(Option<Outcome>),
}

/// The batches being built or sent, reused decision after decision (slot
/// `base + i` belongs to the i-th pending entry of the round at `base`), and spare batches per
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
            slots: Vec::with_capacity(MAX_IN_FLIGHT * MAX_PIPELINE),
            owners: Vec::with_capacity(MAX_IN_FLIGHT * MAX_PIPELINE),
            spares: (0..strategies)
                .map(|_| Vec::with_capacity(MAX_PIPELINE))
                .collect(),
        }
    }

    /// Slot `idx`, shaped for strategy `s` (`id`, `symbols`); afterwards only
    /// its values change.
    fn slot(&mut self, idx: usize, s: usize, id: &str, symbols: &[Symbol]) -> &mut SignalBatch {
        while self.slots.len() <= idx {
            self.slots.push(SignalBatch::default());
            self.owners.push(None);
        }
        if self.owners[idx] != Some(s) {
            let fresh = self.spares[s].pop().unwrap_or_else(|| SignalBatch {
                strategy: id.to_owned(),
                signals: symbols.iter().map(|x| Signal::flat(x.as_str())).collect(),
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
fn prepare(
    p: &PublisherParts,
    last_seq: &mut [Stamp],
    weights: &[Vec<f64>],
    batches: &mut BatchPool,
    job: &Job,
    mode: OpsMode,
    idx: usize,
) -> Prepared {
    let s = usize::from(job.strategy);
    let Some(meta) = job.model.as_ref() else {
        return Prepared::Done(None); // no model yet
    };
    if matches!(mode, OpsMode::Halted | OpsMode::Flatten) {
        Counters::inc(&p.counters.held_by_mode);
        return Prepared::Done(None);
    }
    let tables = job.tables.as_deref().unwrap_or(&*p.universe);
    let valid_until_ms = (job.trigger_ts_ns / 1_000_000).max(0) as u64 + tables.ttl_ms;
    if valid_until_ms <= now_ms() {
        return Prepared::Done(Some(Outcome::ExpiredBeforeSend));
    }
    let strat = &p.universe.strategies[s];
    let Some(seq) = next_seq(last_seq, s, (job.trigger_ts_ns / 1_000).max(0) as u64) else {
        return Prepared::Done(Some(Outcome::Stale));
    };
    let batch = batches.slot(idx, s, &strat.id, &strat.symbols);
    for (i, sig) in batch.signals.iter_mut().enumerate() {
        let t = job.scratch.targets[i];
        let (mut weight, mut qty) = (t.weight, t.qty);
        if mode == OpsMode::ReduceOnly {
            let cur = weights[s][i];
            let grows = weight.abs() > cur.abs();
            let flips = weight != 0.0 && (weight > 0.0) != (cur > 0.0);
            if flips || cur == 0.0 {
                (weight, qty) = (0.0, 0.0);
            } else if grows {
                let notional = tables.strategies[s].params[i].notional;
                (weight, qty) = (cur, cur * notional);
            }
        }
        sig.set_decision(weight, qty, job.inputs[i].prob_up, job.inputs[i].risk);
    }
    batch.seq = seq;
    batch.generated_at_ms = (job.trigger_ts_ns / 1_000_000).max(0) as u64;
    batch.valid_until_ms = valid_until_ms;
    batch.model_id.clone_from(&meta.model_id);
    batch.model_version = meta.version;
    Prepared::Ready
}

/// Whether a strategy waits for its flat signals.
fn flatten_due(p: &PublisherParts, st: &State) -> bool {
    (0..p.universe.strategies.len())
        .any(|s| p.ops.mode(s) == OpsMode::Flatten && st.flattened_version[s] != Some(p.ops.version(s)))
}

/// Publishes flat signals once per `flatten` order (nothing in flight: the
/// head round is free and carries them).
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
        // No trigger: the flat signals of a `flatten` order, stamped now.
        let Some(seq) = next_seq(&mut st.last_seq, s, now_us()) else {
            continue; // the clock went back; the next pass flattens
        };
        let r = st.head;
        let batch = st.batches.slot(st.rounds[r].base, s, &strat.id, &strat.symbols);
        for sig in &mut batch.signals {
            (sig.side, sig.weight, sig.qty) = (Side::Flat, 0.0, 0.0);
            (sig.return_prob, sig.risk_score) = (0.5, 0.0);
        }
        (batch.seq, batch.generated_at_ms, batch.valid_until_ms) = (seq, now, now + p.live.snapshot().ttl_ms);
        batch.model_id.clear();
        batch.model_id.push_str("flatten");
        batch.model_version = 0;
        let round = &mut st.rounds[r];
        round.labels.clear();
        round.labels.push(None);
        round.pending.push(Pending { slot: 0, strategy: s });
        flush_now(p, st, r);
        let label = st.rounds[r].labels.pop().flatten().unwrap_or(Outcome::RedisError);
        p.counters.outcome(label);
        if label == Outcome::Accepted {
            st.flattened_version[s] = Some(version);
            tracing::info!(strategy = %strat.id, ops_version = version, "flattened");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_is_the_trigger_time_numbered_within_a_microsecond_and_never_back() {
        let mut last = vec![Stamp::default(); 2];
        assert_eq!(next_seq(&mut last, 0, 1_000), Some(1_000));
        // Two more triggers in the same µs: numbered in arrival order.
        assert_eq!(next_seq(&mut last, 0, 1_000), Some(1_001));
        assert_eq!(next_seq(&mut last, 0, 1_000), Some(1_002));
        // The next µs stays above what was given.
        assert_eq!(next_seq(&mut last, 0, 1_001), Some(1_003));
        assert_eq!(next_seq(&mut last, 0, 5_000), Some(5_000));
        // A decision older than one already stamped is stale, and changes
        // nothing; strategies are apart.
        assert_eq!(next_seq(&mut last, 0, 4_999), None);
        assert_eq!(next_seq(&mut last, 0, 5_001), Some(5_001));
        assert_eq!(next_seq(&mut last, 1, 10), Some(10));
    }

    #[test]
    fn interleaved_strategies_reuse_their_batches() {
        let symbols = |names: &[&str]| names.iter().map(|n| Symbol::new(n).unwrap()).collect::<Vec<_>>();
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
                    let expected: Vec<&str> = syms.iter().map(|x| x.as_str()).collect();
                    assert_eq!(names, expected);
                    let mark = b.signals[0].qty;
                    assert!(mark >= 1.0 && mark <= marks, "a batch was rebuilt");
                }
            }
        }
    }

    /// The publisher against a private Redis: a burst of decisions sent
    /// with pipelines in flight lands whole and in order; decisions that
    /// queue up while Redis is busy go out in pipelines, one sent before
    /// the previous one's replies; `reduce_only`
    /// clamps what would grow or flip (the guard would refuse it);
    /// `flatten` publishes flat signals once and holds; a Redis restart
    /// counts errors, reconnects, reloads the guard and publishes again.
    #[test]
    fn publishes_in_order_applies_modes_and_survives_a_redis_restart() {
        use mlcore_contract::Keys;
        use mlcore_testkit::{RedisNamespace, RedisServer};

        use crate::job::ModelMeta;

        use mlcore_decision::universe::Strategy;
        use mlcore_decision::{Policy, SymbolParams};

        let mut server = RedisServer::start_with(&["--enable-debug-command", "yes"]);
        let ns = RedisNamespace::on(&server.url());
        let mut admin = server.connection();
        let guard = Guard::new(Keys::new(&ns.ns), 1000);
        let symbols = vec![Symbol::new("EURUSD").unwrap(), Symbol::new("USDJPY").unwrap()];
        let params: Vec<SymbolParams> = (0..2)
            .map(|_| SymbolParams {
                beta: 1.0,
                max_weight: 0.1,
                lot_size: 1.0,
                min_qty: 0.0,
                notional: 1e6,
                cost_bps: 0.0,
            })
            .collect();
        let universe = Arc::new(Universe {
            strategies: vec![Strategy {
                id: mlcore_market::StrategyId::new("fx").unwrap(),
                symbols: symbols.clone(),
                params: params.clone(),
                rolling_beta: vec![None, None],
                benchmark: 0,
                theta: None,
            }],
            routes: std::collections::HashMap::new(),
            policy: Policy {
                theta1: 0.5,
                theta2: 0.9,
                target_annual_vol: 0.1,
                periods_per_year: 1e6,
                max_gross: 1.0,
                beta_tolerance: 0.01,
                min_edge_over_cost_bps: 0.0,
                use_ai3: false,
            },
            ttl_ms: 60_000,
        });
        let ops = Arc::new(OpsTable::new(1));
        let counters = Arc::new(Counters::default());
        let shutdown = Arc::new(AtomicBool::new(false));
        let (jobs_tx, jobs_rx) = crossbeam_channel::bounded::<Box<Job>>(64);
        let (done_tx, done_rx) = crossbeam_channel::bounded::<Box<Job>>(64);
        let mut redis_cfg = mlcore_config::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs"),
            mlcore_config::Environment::Dev,
            &mlcore_config::MapEnv::new()
                .with("MLCORE_REDIS_URL", &server.url())
                .with("MLCORE_PG_DSN", &mlcore_testkit::pg_dsn()),
        )
        .unwrap()
        .redis;
        redis_cfg.namespace.clone_from(&ns.ns);
        redis_cfg.reconnect.initial_ms = 50;
        redis_cfg.reconnect.max_ms = 200;
        let parts = PublisherParts {
            jobs: jobs_rx,
            pool_returns: vec![done_tx],
            redis: redis_cfg,
            guard: guard.clone(),
            live: Arc::new(crate::live::Live::new(Arc::clone(&universe), 1000)),
            universe,
            ops: Arc::clone(&ops),
            counters: Arc::clone(&counters),
            hists: Histograms::new(2),
            shutdown: Arc::clone(&shutdown),
        };
        let publisher = std::thread::spawn(move || run(parts));

        let set_mode = |conn: &mut redis::Connection, mode: OpsMode| {
            ops.set(0, mode, mlcore_testkit::set_mode(&guard, conn, "fx", mode));
        };
        let meta = Arc::new(ModelMeta {
            model_id: "fx-v1".into(),
            version: 1,
            manifest_sha256: String::new(),
            theta1: 0.5,
            theta2: 0.9,
        });
        let job = |weights: [f64; 2]| {
            let mut j = Box::new(Job::new(0, &params));
            j.model = Some(Arc::clone(&meta));
            j.trigger_ts_ns = (now_ms() * 1_000_000) as i64;
            for (t, w) in j.scratch.targets.iter_mut().zip(weights) {
                (t.weight, t.qty) = (w, w * 1e6);
            }
            j
        };
        let outcome = |label: &str| {
            let i = Outcome::ALL.iter().position(|o| o.label() == label).unwrap();
            counters.outcomes[i].load(Ordering::Relaxed)
        };
        let queue = |w: [f64; 2]| jobs_tx.send(job(w)).unwrap();
        let publish = |batch: &[[f64; 2]]| {
            for w in batch {
                queue(*w);
            }
            for _ in batch {
                done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
            }
        };
        let stored = |conn: &mut redis::Connection| -> Vec<(f64, String)> {
            symbols
                .iter()
                .map(|s| {
                    let sig = guard.read(conn, "fx", s).unwrap().unwrap();
                    (sig.weight, sig.model_id)
                })
                .collect()
        };

        set_mode(&mut admin, OpsMode::Active);
        // A burst: rounds queue behind each other with pipelines in flight.
        let burst: Vec<[f64; 2]> = (1..=40).map(|i| [0.001 * f64::from(i), -0.05]).collect();
        publish(&burst);
        assert_eq!(outcome("accepted"), 40);
        let seqs: Vec<u64> = redis::cmd("XRANGE")
            .arg(guard.keys().strategy("fx").signals)
            .arg("-")
            .arg("+")
            .query::<redis::streams::StreamRangeReply>(&mut admin)
            .unwrap()
            .ids
            .iter()
            .map(|e| e.get::<u64>("seq").unwrap())
            .collect();
        assert_eq!(seqs.len(), 40, "one stream entry per decision");
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
        assert_eq!(
            stored(&mut admin)[0].0,
            0.04,
            "the last decision is what is stored"
        );

        // A decision whose valid_until (trigger + ttl, 60 s here) has passed
        // when it reaches the publisher is never sent, and says so.
        let mut late = job([0.07, -0.05]);
        late.trigger_ts_ns = ((now_ms() - 61_000) * 1_000_000) as i64;
        jobs_tx.send(late).unwrap();
        done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!((outcome("expired_before_send"), outcome("accepted")), (1, 40));
        assert_eq!(stored(&mut admin)[0].0, 0.04, "nothing of it written");

        // Decisions that queue up while a pipeline is in Redis (asleep
        // here) go out 16 to a pipeline, the next pipeline before the
        // previous one's replies.
        let overlapped = || counters.publish_overlapped.load(Ordering::Relaxed);
        let before = overlapped();
        let url = server.url();
        let sleeper = std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            redis::cmd("DEBUG").arg("SLEEP").arg("0.3").exec(&mut c).unwrap();
        });
        std::thread::sleep(Duration::from_millis(100));
        let queued: Vec<[f64; 2]> = (1..=20).map(|i| [0.04 + 0.0001 * f64::from(i), -0.05]).collect();
        queue(queued[0]);
        std::thread::sleep(Duration::from_millis(50));
        for w in &queued[1..] {
            queue(*w);
        }
        for _ in &queued {
            done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        sleeper.join().unwrap();
        assert_eq!(
            overlapped(),
            before + 1,
            "1 + 16 + 3: the third pipeline went out before the second's replies"
        );
        assert_eq!(outcome("accepted"), 60);
        assert_eq!(
            stored(&mut admin)[0].0,
            0.042,
            "the last decision is what is stored"
        );

        // reduce_only: growing EURUSD and flipping USDJPY are clamped to the
        // last accepted weight and to flat, so the guard accepts.
        set_mode(&mut admin, OpsMode::ReduceOnly);
        publish(&[[0.08, 0.02], [0.01, -0.01]]);
        assert_eq!((outcome("accepted"), outcome("halted")), (62, 0));
        assert_eq!(
            stored(&mut admin),
            [(0.01, "fx-v1".into()), (0.0, "fx-v1".into())]
        );

        // flatten: flat signals once, then nothing.
        set_mode(&mut admin, OpsMode::Flatten);
        let deadline = Instant::now() + Duration::from_secs(5);
        while stored(&mut admin)[0].1 != "flatten" {
            assert!(Instant::now() < deadline, "no flat signals");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            stored(&mut admin),
            [(0.0, "flatten".into()), (0.0, "flatten".into())]
        );
        publish(&[[0.05, 0.05]]);
        assert_eq!(counters.held_by_mode.load(Ordering::Relaxed), 1);
        assert_eq!(outcome("accepted"), 63, "40 + 20 + 2 + the flat batch");

        // Redis restarts empty: errors are counted, the publisher reconnects,
        // reloads the guard and publishes again.
        server.restart();
        // What the ops watcher does when it finds the ops state gone.
        ops.force_halted(0);
        let mut admin = server.connection();
        set_mode(&mut admin, OpsMode::Active);
        let deadline = Instant::now() + Duration::from_secs(10);
        while outcome("accepted") == 63 {
            assert!(Instant::now() < deadline, "never published again");
            publish(&[[0.03, -0.03]]);
        }
        assert!(counters.redis_errors.load(Ordering::Relaxed) >= 1);
        assert!(outcome("redis_error") >= 1);
        assert!(counters.redis_ok.load(Ordering::Relaxed));
        assert_eq!(stored(&mut admin)[0], (0.03, "fx-v1".into()));

        shutdown.store(true, Ordering::Relaxed);
        publisher.join().unwrap();
    }
}
