//! The ingress thread: a mio event loop that decodes frames, applies quotes
//! to the per-strategy feature engines, and turns triggers into decision jobs.
//!
//! Quotes never queue: each one updates its symbol's fixed-size state on this
//! thread, which is the conflation policy (the latest quote per symbol is
//! what a decision sees). A trigger takes a job buffer from its strategy's
//! pool, fills the feature matrix and pushes it to the workers; if no buffer
//! is free or the queue is full, the decision is dropped and counted.
//! A malformed frame closes that connection only (counted, one log line).

use std::io::{ErrorKind, Read};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use mlcore_features::FeatureEngine;
use mlcore_market::Quote;

use crate::job::Job;
use crate::live::Live;
use crate::stats::{Counters, Histograms, LocalHist, Stage};
use crate::wire::{self, Frame};
use mlcore_decision::universe::Universe;

const LISTENER: Token = Token(usize::MAX);
const READ_BUF: usize = 64 * 1024;

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    buf: Vec<u8>,
    len: usize,
}

/// Everything the ingress thread owns.
pub struct Ingress {
    listener: TcpListener,
    poll: Poll,
    conns: Vec<Option<Conn>>,
    engines: Vec<FeatureEngine>,
    universe: Arc<Universe>,
    live: Arc<Live>,
    pools: Vec<Receiver<Box<Job>>>,
    pool_returns: Vec<Sender<Box<Job>>>,
    decisions: Sender<Box<Job>>,
    counters: Arc<Counters>,
    decode_hist: LocalHist,
    features_hist: LocalHist,
    max_frame: usize,
    timer: bool,
    shutdown: Arc<AtomicBool>,
}

impl std::fmt::Debug for Ingress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingress")
            .field("conns", &self.conns.iter().flatten().count())
            .finish()
    }
}

/// Construction parameters.
#[derive(Debug)]
pub struct IngressParts {
    /// Bound listener.
    pub listener: std::net::TcpListener,
    /// Resolved universe: the routes and the strategies' shape.
    pub universe: Arc<Universe>,
    /// The decision tables in force and the timer's period (changed live).
    pub live: Arc<Live>,
    /// Job pools (take side), one per strategy.
    pub pools: Vec<Receiver<Box<Job>>>,
    /// Job pools (return side), one per strategy.
    pub pool_returns: Vec<Sender<Box<Job>>>,
    /// To the workers.
    pub decisions: Sender<Box<Job>>,
    /// Counters.
    pub counters: Arc<Counters>,
    /// Histogram pools.
    pub hists: Histograms,
    /// `ingress.max_connections`.
    pub max_connections: usize,
    /// `ingress.max_frame_bytes`.
    pub max_frame: usize,
    /// Timer mode (the period is [`Live::timer_ms`]).
    pub timer: bool,
    /// Stop flag.
    pub shutdown: Arc<AtomicBool>,
}

/// Timer mode's ticks sit on a grid of the wall clock — multiples of the
/// period since the epoch — so that every daemon names a tick alike: its
/// identity (the trigger time, hence the published `seq`) is the grid time
/// nearest the moment it fires, and two daemons of one strategy
/// (active-active) publish each tick once between them. Returns that tick
/// time and the next grid time to fire at, both in ms. Ticks missed while
/// the thread could not run are skipped, not fired back to back: a
/// decision is made from the market as it is now.
fn grid_tick(now_ms: u64, period_ms: u64) -> (u64, u64) {
    let period = period_ms.max(1);
    let tick = (now_ms + period / 2) / period * period;
    let next = ((now_ms / period + 1) * period).max(tick + period);
    (tick, next)
}

/// How far ahead of this host's clock a trigger may be stamped (feeds on
/// other hosts, clock skew).
const MAX_TRIGGER_AHEAD_NS: i64 = 5_000_000_000;

/// The instant at which the wall clock reads `target_ms` (now if past).
fn at_wall(target_ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(target_ms.saturating_sub(crate::clock::now_ms()))
}

impl Ingress {
    /// Registers the listener.
    pub fn new(p: IngressParts) -> std::io::Result<Self> {
        p.listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(p.listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let engines = p
            .universe
            .strategies
            .iter()
            .map(|s| FeatureEngine::new(s.symbols.len(), s.benchmark))
            .collect();
        Ok(Self {
            listener,
            poll,
            conns: (0..p.max_connections).map(|_| None).collect(),
            engines,
            universe: p.universe,
            live: p.live,
            pools: p.pools,
            pool_returns: p.pool_returns,
            decisions: p.decisions,
            counters: p.counters,
            decode_hist: p.hists.local(Stage::Decode),
            features_hist: p.hists.local(Stage::Features),
            max_frame: p.max_frame,
            timer: p.timer,
            shutdown: p.shutdown,
        })
    }

    /// Runs until the stop flag is set.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let period = |live: &Live| live.timer_ms().max(1);
        let mut next_timer = self
            .timer
            .then(|| period(&self.live))
            .map(|p| at_wall((crate::clock::now_ms() / p + 1) * p));
        while !self.shutdown.load(Ordering::Relaxed) {
            let timeout = match next_timer {
                Some(t) => t
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(50)),
                None => Duration::from_millis(50),
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    tracing::error!(error = %e, "ingress poll failed");
                }
                continue;
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    Token(i) => self.read(i),
                }
            }
            self.decode_hist.tick();
            self.features_hist.tick();
            if let Some(t) = next_timer {
                let now = Instant::now();
                if now >= t {
                    // The period in force now: a live change takes effect
                    // from the next tick.
                    let (tick_ms, next_ms) = grid_tick(crate::clock::now_ms(), period(&self.live));
                    let tick_ns = i64::try_from(tick_ms).unwrap_or(i64::MAX / 1_000_000) * 1_000_000;
                    for s in 0..self.engines.len() {
                        self.trigger(s as u16, tick_ns, now);
                    }
                    next_timer = Some(at_wall(next_ms));
                }
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
                    let Some(slot) = self.conns.iter().position(Option::is_none) else {
                        tracing::warn!(peer = %peer, "connection refused: max_connections reached");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, Token(slot), Interest::READABLE)
                        .is_ok()
                    {
                        self.conns[slot] = Some(Conn {
                            stream,
                            peer,
                            buf: vec![0; READ_BUF],
                            len: 0,
                        });
                        tracing::info!(peer = %peer, "feed connected");
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    return;
                }
            }
        }
    }

    fn close(&mut self, i: usize, reason: &str) {
        if let Some(mut c) = self.conns[i].take() {
            let _ = self.poll.registry().deregister(&mut c.stream);
            tracing::info!(peer = %c.peer, reason = reason, "feed connection closed");
        }
    }

    fn read(&mut self, i: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) else {
                return;
            };
            if conn.len == conn.buf.len() {
                // A full buffer that holds no complete frame cannot happen
                // with max_frame < READ_BUF; treat it as a protocol error.
                self.counters.wire_error(wire::WireError::TooLarge);
                self.close(i, "buffer full");
                return;
            }
            match conn.stream.read(&mut conn.buf[conn.len..]) {
                Ok(0) => {
                    self.close(i, "eof");
                    return;
                }
                Ok(n) => {
                    conn.len += n;
                    if let Err(e) = self.drain(i) {
                        self.counters.wire_error(e);
                        self.close(i, e.label());
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close(i, &e.to_string());
                    return;
                }
            }
        }
    }

    /// Decodes and applies every complete frame buffered on connection `i`.
    fn drain(&mut self, i: usize) -> Result<(), wire::WireError> {
        let Some(conn) = self.conns[i].as_mut() else {
            return Ok(());
        };
        // Taken out while the frames are applied (an empty `Vec` in its
        // place allocates nothing), put back after.
        let (buf, len) = (std::mem::take(&mut conn.buf), conn.len);
        let fed = self.feed(&buf[..len]);
        if let Some(conn) = self.conns[i].as_mut() {
            conn.buf = buf;
            if let Ok(used) = fed {
                conn.buf.copy_within(used..len, 0);
                conn.len = len - used;
            }
        }
        fed.map(|_| ())
    }

    /// Decodes and applies every complete frame at the start of `bytes`
    /// (quotes update the features, triggers become jobs for the workers);
    /// how many bytes that was. What a connection's reads go through; the
    /// allocation test drives it directly.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<usize, wire::WireError> {
        let mut offset = 0;
        loop {
            let started = Instant::now();
            let Some((frame, used)) = wire::decode(&bytes[offset..], self.max_frame)? else {
                return Ok(offset);
            };
            offset += used;
            self.decode_hist.record(started.elapsed());
            Counters::inc(&self.counters.frames);
            self.apply(frame, started);
        }
    }

    fn apply(&mut self, frame: Frame, decoded_at: Instant) {
        match frame {
            Frame::Quote {
                ts_ns,
                symbol_id,
                bid,
                ask,
                bid_size,
                ask_size,
            } => {
                let Some(routes) = self.universe.routes.get(&symbol_id) else {
                    Counters::inc(&self.counters.unknown_symbols);
                    return;
                };
                for &(s, sym) in routes {
                    let q = Quote {
                        ts_ns,
                        symbol: sym,
                        bid,
                        ask,
                        bid_size,
                        ask_size,
                    };
                    self.engines[usize::from(s)].update(&q);
                }
                Counters::inc(&self.counters.quotes);
            }
            Frame::Trigger { ts_ns, strategy } => self.trigger(strategy, ts_ns, decoded_at),
            Frame::Heartbeat { .. } => {}
        }
    }

    fn trigger(&mut self, strategy: u16, ts_ns: i64, decoded_at: Instant) {
        // A trigger's time becomes the decision's `seq`, and a high-water
        // mark never goes back: one stamped in the future (a feed's bad
        // clock, a forged frame) would make every later decision of the
        // strategy stale. Refused, counted.
        if ts_ns > crate::clock::now_ms().saturating_mul(1_000_000) as i64 + MAX_TRIGGER_AHEAD_NS {
            Counters::inc(&self.counters.triggers_ahead);
            return;
        }
        let s = usize::from(strategy);
        let (Some(engine), Some(pool)) = (self.engines.get(s), self.pools.get(s)) else {
            Counters::inc(&self.counters.unknown_strategies);
            return;
        };
        let Ok(mut job) = pool.try_recv() else {
            // Every buffer of this strategy is still in flight: overload.
            Counters::inc(&self.counters.decisions_dropped);
            return;
        };
        let started = Instant::now();
        // One configuration for the whole decision: the job carries it.
        let tables = self.live.snapshot();
        let strat = &tables.strategies[s];
        job.strategy = strategy;
        job.trigger_ts_ns = ts_ns;
        job.decoded_at = decoded_at;
        job.model = None;
        let Job {
            features,
            inputs,
            params,
            ..
        } = &mut *job;
        mlcore_decision::prepare(strat, engine, ts_ns, features, inputs, params);
        job.tables = Some(tables);
        self.features_hist.record(started.elapsed());
        if let Err(e) = self.decisions.try_send(job) {
            Counters::inc(&self.counters.decisions_dropped);
            let _ = self.pool_returns[s].try_send(e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_named_by_the_nearest_grid_time_and_skip_what_was_missed() {
        // On time, a little early or a little late: the same tick.
        assert_eq!(grid_tick(1_000, 100), (1_000, 1_100));
        assert_eq!(grid_tick(999, 100), (1_000, 1_100));
        assert_eq!(grid_tick(1_030, 100), (1_000, 1_100));
        // Stalled for 350 ms after the tick due at 1000: the ticks at
        // 1100..1300 are gone; this one is 1400's (nearest), the next 1500.
        assert_eq!(grid_tick(1_350, 100), (1_400, 1_500));
        // Always a future grid time, whatever the period.
        let (tick, next) = grid_tick(3_600_000 + 3, 7);
        assert!(tick % 7 == 0 && next % 7 == 0 && next > 3_600_003 && next <= 3_600_003 + 7);
        assert_eq!(grid_tick(5, 0), (5, 6), "a zero period is one ms");
    }
}
