//! Counters and latency histograms.
//!
//! Hot threads only touch relaxed atomics and their own thread-local
//! [`LocalHist`]s. A `LocalHist` owns two histograms: it records into one
//! and, every [`FLUSH_EVERY`], hands it to the aggregator and goes on with
//! the other, which the aggregator has merged, cleared and put back in the
//! `LocalHist`'s [`Mailbox`] — so steady state allocates nothing, takes no
//! lock and never waits for the aggregator (a side thread, preempted at any
//! moment). The aggregator merges them into cumulative histograms that
//! `/metrics` renders.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use hdrhistogram::Histogram;

use crate::mailbox::Mailbox;
use crate::wire::WireError;

/// How often a thread hands its histogram over.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// Pipeline stages with a latency histogram (µs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Frame decode.
    Decode = 0,
    /// Feature update + matrix for a decision.
    Features = 1,
    /// ONNX Runtime, all heads.
    Inference = 2,
    /// θ gate, sizing, portfolio.
    Portfolio = 3,
    /// Guard round trip.
    Publish = 4,
    /// Trigger decoded → acknowledged by Redis.
    TriggerToAck = 5,
}

impl Stage {
    /// Every stage.
    pub const ALL: [Stage; 6] = [
        Self::Decode,
        Self::Features,
        Self::Inference,
        Self::Portfolio,
        Self::Publish,
        Self::TriggerToAck,
    ];

    /// Label (matches `metrics.yaml` bucket keys).
    pub const fn label(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::Features => "features",
            Self::Inference => "inference",
            Self::Portfolio => "portfolio",
            Self::Publish => "publish",
            Self::TriggerToAck => "trigger_to_ack",
        }
    }
}

/// What became of a decided batch: the guard's answer, or why it never
/// got one. Counted per outcome (`Counters::outcomes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Written by the guard.
    Accepted,
    /// A symbol already held a later `seq`.
    Stale,
    /// Another daemon published this very decision (same `seq`) first.
    Duplicate,
    /// Past `valid_until` by Redis' clock.
    Expired,
    /// Refused by the strategy's mode.
    Halted,
    /// Past `valid_until` before it could be sent: never sent.
    ExpiredBeforeSend,
    /// Redis unreachable or failing: nothing can be said of the batch.
    RedisError,
    /// Refused as malformed (by the client's checks or the guard's).
    BadInput,
}

impl Outcome {
    /// Every outcome, in counter order.
    pub const ALL: [Self; 8] = [
        Self::Accepted,
        Self::Stale,
        Self::Duplicate,
        Self::Expired,
        Self::Halted,
        Self::ExpiredBeforeSend,
        Self::RedisError,
        Self::BadInput,
    ];

    /// The metrics label.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Stale => "stale",
            Self::Duplicate => "duplicate",
            Self::Expired => "expired",
            Self::Halted => "halted",
            Self::ExpiredBeforeSend => "expired_before_send",
            Self::RedisError => "redis_error",
            Self::BadInput => "bad_input",
        }
    }

    /// The guard's answer as an outcome.
    pub fn of(answer: &mlcore_contract::PublishOutcome) -> Self {
        use mlcore_contract::PublishOutcome as P;
        match answer {
            P::Accepted { .. } => Self::Accepted,
            P::Stale { .. } => Self::Stale,
            P::Expired { .. } => Self::Expired,
            P::Halted { .. } => Self::Halted,
        }
    }
}

/// Process-wide counters (relaxed atomics) and health flags.
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames decoded.
    pub frames: AtomicU64,
    /// Quotes applied.
    pub quotes: AtomicU64,
    /// Quotes for symbols not in the universe (dropped).
    pub unknown_symbols: AtomicU64,
    /// Triggers for unknown strategies (dropped).
    pub unknown_strategies: AtomicU64,
    /// Triggers stamped too far ahead of this host's clock, dropped.
    pub triggers_ahead: AtomicU64,
    /// Connections closed for a malformed frame, per `WireError::index`.
    pub wire_errors: [AtomicU64; 4],
    /// Decisions made by workers.
    pub decisions: AtomicU64,
    /// Decisions refused at the decision queue (overload).
    pub decisions_dropped: AtomicU64,
    /// Decisions skipped because no model was loaded.
    pub decisions_without_model: AtomicU64,
    /// Decisions lost because ONNX Runtime failed to score the loaded model.
    pub decisions_scoring_failed: AtomicU64,
    /// Decided batches refused at the publish queue (overload).
    pub publish_dropped: AtomicU64,
    /// Batches by outcome, indexed by `Outcome as usize`.
    pub outcomes: [AtomicU64; Outcome::ALL.len()],
    /// Signals accepted by the guard.
    pub signals_accepted: AtomicU64,
    /// Batches not published because the strategy is halted (daemon side).
    pub held_by_mode: AtomicU64,
    /// Guard pipelines sent while another was still in Redis.
    pub publish_overlapped: AtomicU64,
    /// Redis errors (connection, command).
    pub redis_errors: AtomicU64,
    /// Artifacts refused by verification or loading.
    pub refused_artifacts: AtomicU64,
    /// Model swaps done.
    pub model_swaps: AtomicU64,
    /// Heads of a loaded model kept on ONNX Runtime because their native
    /// form was refused (once per head and worker).
    pub native_fallbacks: AtomicU64,
    /// Last decision time, ms since the epoch.
    pub last_decision_ms: AtomicU64,
    /// Redis reachable and guard loaded (publisher's view).
    pub redis_ok: AtomicBool,
    /// At least one verified, warmed model is serving.
    pub model_ready: AtomicBool,
}

impl Counters {
    /// Adds one to `c`.
    #[inline]
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refused frame.
    #[inline]
    pub fn wire_error(&self, e: WireError) {
        Self::inc(&self.wire_errors[e.index()]);
    }

    /// Counts a batch outcome.
    #[inline]
    pub fn outcome(&self, o: Outcome) {
        Self::inc(&self.outcomes[o as usize]);
    }

    /// How many batches had outcome `o`.
    pub fn outcomes_of(&self, o: Outcome) -> u64 {
        self.outcomes[o as usize].load(Ordering::Relaxed)
    }
}

type Hist = Histogram<u64>;

#[allow(clippy::expect_used)] // constant bounds that hdrhistogram accepts (low ≥ 1, high ≥ 2·low, sigfig ≤ 5)
fn new_hist() -> Hist {
    // 1 ns .. 60 s, 3 significant digits: sub-microsecond stages (decode,
    // features, portfolio) keep their shape instead of all reading 1 µs.
    // Only called when a thread takes its `LocalHist`: histograms are
    // recycled, never allocated on a hot thread.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// A hot thread's histogram for one stage.
#[derive(Debug)]
pub struct LocalHist {
    stage: Stage,
    hist: Box<Hist>,
    last_flush: Instant,
    to_agg: Sender<Handed>,
    /// Where the aggregator puts the histogram back, cleared.
    back: Arc<Mailbox<Hist>>,
}

/// A histogram handed to the aggregator, and where to put it back.
type Handed = (Stage, Box<Hist>, Arc<Mailbox<Hist>>);

impl LocalHist {
    /// Records `d` in nanoseconds (saturating at the histogram's bounds).
    #[inline]
    pub fn record(&mut self, d: Duration) {
        self.hist
            .saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1));
        self.tick();
    }

    /// Hands the histogram over if it holds samples and [`FLUSH_EVERY`] has
    /// passed. Hot threads call it when idle too, so the last samples before
    /// traffic stops reach `/metrics` within `FLUSH_EVERY` rather than with
    /// the next decision (which would count them in the next load's window).
    #[inline]
    pub fn tick(&mut self) {
        // Emptiness first: an idle thread with nothing to hand over reads
        // no clock.
        if !self.hist.is_empty() && self.last_flush.elapsed() >= FLUSH_EVERY {
            self.flush();
        }
    }

    /// Hands the histogram over, if the other one is back to continue with
    /// (else it keeps recording into this one until it is).
    pub fn flush(&mut self) {
        self.last_flush = Instant::now();
        if let Some(fresh) = self.back.take() {
            let full = std::mem::replace(&mut self.hist, fresh);
            if let Err(e) = self.to_agg.try_send((self.stage, full, Arc::clone(&self.back))) {
                // The aggregator's queue is full (sized for every
                // LocalHist, so only with more than `Histograms::new` was
                // told): keep the samples for the next flush rather than
                // drop them (and free memory) here.
                let (_, full, _) = e.into_inner();
                let _ = self.back.put(full);
            }
        }
    }
}

/// Cumulative histograms per stage, read by `/metrics`.
#[derive(Debug)]
pub struct Aggregated {
    /// One per `Stage::ALL`.
    pub stages: Vec<Hist>,
}

/// Where local histograms come from and merge into.
#[derive(Debug, Clone)]
pub struct Histograms {
    to_agg: Sender<Handed>,
    from_threads: Receiver<Handed>,
    /// Merged histograms (locked only by the side threads).
    pub merged: Arc<Mutex<Aggregated>>,
}

impl Histograms {
    /// Room for up to `locals` thread-local histograms in flight at once.
    pub fn new(locals: usize) -> Self {
        // A LocalHist has at most one histogram with the aggregator.
        let (to_agg, from_threads) = crossbeam_channel::bounded(locals * 2 + 8);
        let merged = Arc::new(Mutex::new(Aggregated {
            stages: Stage::ALL.iter().map(|_| new_hist()).collect(),
        }));
        Self {
            to_agg,
            from_threads,
            merged,
        }
    }

    /// A histogram for a hot thread (allocates its two; call before the
    /// thread's hot loop).
    pub fn local(&self, stage: Stage) -> LocalHist {
        LocalHist {
            stage,
            hist: Box::new(new_hist()),
            last_flush: Instant::now(),
            to_agg: self.to_agg.clone(),
            back: Arc::new(Mailbox::with(Box::new(new_hist()))),
        }
    }

    /// Merges what threads handed over and puts each histogram back,
    /// cleared, in its thread's mailbox. Call from a side thread.
    pub fn drain(&self) {
        while let Ok((stage, mut h, back)) = self.from_threads.try_recv() {
            if let Ok(mut m) = self.merged.lock() {
                let _ = m.stages[stage as usize].add(&*h);
            }
            h.reset();
            // Nothing else is in that mailbox: its thread took the other
            // histogram out before handing this one over.
            let _ = back.put(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged_count(h: &Histograms, stage: Stage) -> u64 {
        h.drain();
        h.merged
            .lock()
            .map(|m| m.stages[stage as usize].len())
            .unwrap_or(0)
    }

    #[test]
    fn an_idle_thread_hands_over_its_last_samples() {
        let h = Histograms::new(1);
        let mut local = h.local(Stage::Publish);
        local.record(Duration::from_micros(300));
        std::thread::sleep(FLUSH_EVERY + Duration::from_millis(10));
        local.tick(); // no new sample: the thread is idle
        assert_eq!(merged_count(&h, Stage::Publish), 1);
        std::thread::sleep(FLUSH_EVERY + Duration::from_millis(10));
        local.tick(); // nothing new: nothing handed over
        assert_eq!(merged_count(&h, Stage::Publish), 1);
    }
}
