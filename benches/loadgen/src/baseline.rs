//! The publish baselines the load generator judges the daemon's latency
//! against: one decision's signals published through the guard by a plain
//! client, on an otherwise idle connection.
//!
//! Issue #5 words the baseline as "the round-trip of one decision's worth of
//! guarded publishes (32, pipelined) sent alone by a plain client": 32
//! single-signal guarded publishes in one pipeline, what a client that has
//! not folded its signals into one call sends ([`PublishBaseline::pipelined`]).
//! The daemon does better than that: it sends a decision as one guard call
//! ([`PublishBaseline::one_call`]), and folds queued decisions into one call.
//! The load generator measures both, one after the other (alternated call
//! by call, the one call read half again slower than alone), and prints a
//! verdict against each ([`Bounds`]): the issue's, and a stricter one
//! against the daemon's own form, which moves with every change that makes
//! that form cheaper.

use std::time::Duration;

use mlcore_benches::Percentiles;
use mlcore_contract::{Guard, Keys, ModeChange, OpsMode, PublishOutcome, Side, Signal, SignalBatch};

/// Publishes one decision's signals for one strategy under a namespace of
/// its own, remembering the first refusal or error: a refused publish costs
/// Redis less than an accepted one, so a baseline with one in it would
/// flatter the target, and the caller stops instead.
pub struct PublishBaseline {
    guard: Guard,
    namespace: String,
    conn: redis::Connection,
    seq: u64,
    /// Reused: the decision as one batch, and as single-signal batches.
    whole: Vec<SignalBatch>,
    singles: Vec<SignalBatch>,
    refused: Option<String>,
}

// By hand: the Redis connection has no `Debug`.
impl std::fmt::Debug for PublishBaseline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishBaseline")
            .field("namespace", &self.namespace)
            .field("seq", &self.seq)
            .field("refused", &self.refused)
            .finish_non_exhaustive()
    }
}

impl PublishBaseline {
    /// Loads the guard, sets `strategy` active under `namespace` (which
    /// must be the baseline's alone: [`PublishBaseline::clean`] deletes it)
    /// and prepares decisions of one long signal per symbol.
    pub fn new(
        mut conn: redis::Connection,
        namespace: &str,
        strategy: &str,
        symbols: &[String],
    ) -> Result<Self, mlcore_contract::ContractError> {
        let guard = Guard::new(Keys::new(namespace), 1000);
        Guard::load(&mut conn)?;
        let change = ModeChange {
            strategy,
            expected_version: guard.read_mode(&mut conn, strategy)?.version,
            mode: OpsMode::Active,
            reason: "loadgen baseline",
            actor: "loadgen",
            request_id: "loadgen",
        };
        guard.set_mode(&mut conn, &change)?;
        let seq = guard.high_water_mark(&mut conn, strategy)?;
        let signal = |symbol: &str| Signal {
            symbol: symbol.to_owned(),
            side: Side::Long,
            weight: 0.01,
            qty: 1e5,
            return_prob: 0.6,
            risk_score: 0.1,
        };
        let batch = |signals: Vec<Signal>| SignalBatch {
            strategy: strategy.to_owned(),
            seq: 0,
            generated_at_ms: 0,
            valid_until_ms: 0,
            model_id: "baseline".into(),
            model_version: 1,
            signals,
        };
        Ok(Self {
            whole: vec![batch(symbols.iter().map(|s| signal(s)).collect())],
            singles: symbols.iter().map(|s| batch(vec![signal(s)])).collect(),
            guard,
            namespace: namespace.to_owned(),
            conn,
            seq,
            refused: None,
        })
    }

    /// One decision as one guard call carrying all its signals: the form
    /// the daemon sends.
    pub fn one_call(&mut self) {
        self.publish(false);
    }

    /// One decision as single-signal guard calls, one per symbol, in one
    /// pipeline: the issue's "guarded publishes (32, pipelined)".
    pub fn pipelined(&mut self) {
        self.publish(true);
    }

    fn publish(&mut self, singles: bool) {
        if self.refused.is_some() {
            return;
        }
        self.seq += 1;
        let now = mlcore_daemon::clock::now_ms();
        let batches = if singles {
            &mut self.singles
        } else {
            &mut self.whole
        };
        for b in batches.iter_mut() {
            b.seq = self.seq;
            b.generated_at_ms = now;
            b.valid_until_ms = now + 60_000;
        }
        match self.guard.publish_many(&mut self.conn, batches) {
            Ok(outcomes) => {
                if let Some(other) = outcomes.into_iter().find_map(|o| match o {
                    Ok(PublishOutcome::Accepted { .. }) => None,
                    Ok(other) => Some(format!("{other:?}")),
                    Err(e) => Some(e.to_string()),
                }) {
                    self.refused = Some(other);
                }
            }
            Err(e) => self.refused = Some(e.to_string()),
        }
    }

    /// The first refusal or error, if any publish was not accepted.
    pub fn refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    /// Deletes every key of the baseline's namespace, and hands its
    /// connection back for the rest of the run.
    pub fn clean(mut self) -> redis::RedisResult<redis::Connection> {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.namespace))
            .query(&mut self.conn)?;
        if !keys.is_empty() {
            redis::cmd("UNLINK").arg(&keys).query::<()>(&mut self.conn)?;
        }
        Ok(self.conn)
    }
}

/// The p99 target's bounds from a run's baselines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The issue's: 2 × (the pipelined form's p99 + ONNX Runtime's p99).
    pub issue: Duration,
    /// The stricter one: the one call's p99 in the pipelined form's place.
    pub stricter: Duration,
}

impl Bounds {
    /// Both bounds from the two publish baselines and ONNX Runtime's.
    pub fn of(pipelined: &Percentiles, one_call: &Percentiles, ort: &Percentiles) -> Self {
        Self {
            issue: 2 * (pipelined.p99 + ort.p99),
            stricter: 2 * (one_call.p99 + ort.p99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlcore_testkit::{redis_connection, RedisNamespace};

    fn symbols(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("SYM{i}")).collect()
    }

    #[test]
    fn the_issue_s_bound_is_made_of_the_pipelined_form_and_the_stricter_of_the_one_call() {
        let p = |p99_us: u64| Percentiles {
            p50: Duration::from_micros(p99_us / 2),
            p99: Duration::from_micros(p99_us),
            p999: Duration::from_micros(p99_us * 2),
        };
        let b = Bounds::of(&p(2_000), &p(600), &p(70));
        assert_eq!(b.issue, Duration::from_micros(4_140));
        assert_eq!(b.stricter, Duration::from_micros(1_340));
    }

    #[test]
    fn both_forms_publish_every_signal_through_the_guard() {
        let ns = RedisNamespace::new();
        let names = symbols(32);
        let mut b = PublishBaseline::new(redis_connection(), &ns.ns, "base", &names).expect("baseline");
        let mut conn = redis_connection();
        let guard = Guard::new(Keys::new(&ns.ns), 1000);
        let entries = |conn: &mut redis::Connection| -> usize {
            redis::cmd("XLEN")
                .arg(Keys::new(&ns.ns).strategy("base").signals)
                .query(conn)
                .expect("XLEN")
        };

        b.one_call();
        assert_eq!(b.refused(), None);
        // One call: one stream entry for the decision.
        assert_eq!(entries(&mut conn), 1);
        b.pipelined();
        assert_eq!(b.refused(), None);
        // 32 single-signal calls: one stream entry each.
        assert_eq!(entries(&mut conn), 33);
        for s in &names {
            let sig = guard
                .read(&mut conn, "base", s)
                .expect("read")
                .expect("a valid signal");
            assert_eq!(sig.seq, 2, "{s} carries the pipelined decision's seq");
        }
        b.one_call();
        assert_eq!(entries(&mut conn), 34);
        b.clean().expect("clean");
        assert_eq!(entries(&mut conn), 0);
    }

    #[test]
    fn a_refused_publish_is_remembered_and_stops_the_baseline() {
        let ns = RedisNamespace::new();
        let names = symbols(4);
        let mut b = PublishBaseline::new(redis_connection(), &ns.ns, "base", &names).expect("baseline");
        b.one_call();
        assert_eq!(b.refused(), None);
        // Someone halts the strategy: the next publish is refused, and
        // nothing after it is sent.
        let mut conn = redis_connection();
        let guard = Guard::new(Keys::new(&ns.ns), 1000);
        let version = guard.read_mode(&mut conn, "base").expect("mode").version;
        let halt = ModeChange {
            strategy: "base",
            expected_version: version,
            mode: OpsMode::Halted,
            reason: "test",
            actor: "test",
            request_id: "test",
        };
        guard.set_mode(&mut conn, &halt).expect("halt");
        b.pipelined();
        let why = b.refused().expect("refused").to_owned();
        assert!(why.contains("Halted") || why.contains("halted"), "{why}");
        b.one_call();
        assert_eq!(b.refused(), Some(why.as_str()), "the first refusal is kept");
        let entries: usize = redis::cmd("XLEN")
            .arg(Keys::new(&ns.ns).strategy("base").signals)
            .query(&mut conn)
            .expect("XLEN");
        assert_eq!(entries, 1, "only the accepted decision is in the stream");
    }
}
