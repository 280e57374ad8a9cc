//! What the signal guard costs: guarded publishes (Redis Function with
//! validation, ordering, mode and expiry checks, stream append) versus plain
//! pipelined `HSET`s of the same fields, on the same server in the same run,
//! plus the round trip of one decision's batch.
//!
//! Run: `cargo bench -p mlcore-benches --bench guard` (after
//! `eval "$(bash scripts/services.sh)"`). Prints criterion timings, then a
//! summary with throughputs and the guard/plain ratio.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark binary: fail loudly, print figures

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, Throughput};
use mlcore_contract::{Guard, Keys, ModeChange, OpsMode, Side, Signal, SignalBatch};
use mlcore_testkit::{self as testutil, RedisNamespace};

const STRATEGY: &str = "bench";
const PIPELINE: usize = 256;
const DECISION_SYMBOLS: usize = 32;
/// Decisions per folded call (the guard client's limit).
const FOLD: usize = mlcore_contract::MAX_DECISIONS_PER_CALL;

struct Bench {
    guard: Guard,
    conn: redis::Connection,
    seq: u64,
    symbols: Vec<String>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

impl Bench {
    fn new(ns: &RedisNamespace) -> Self {
        let mut conn = testutil::redis_connection();
        Guard::load(&mut conn).unwrap();
        let guard = Guard::new(Keys::new(&ns.ns), 10_000);
        let change = ModeChange {
            strategy: STRATEGY,
            expected_version: 0,
            mode: OpsMode::Active,
            reason: "bench",
            actor: "bench",
            request_id: "bench",
        };
        guard.set_mode(&mut conn, &change).unwrap();
        let symbols = (0..DECISION_SYMBOLS).map(|i| format!("SYM{i:02}")).collect();
        Self {
            guard,
            conn,
            seq: 0,
            symbols,
        }
    }

    fn batch(&mut self, n: usize) -> SignalBatch {
        self.seq += 1;
        let now = now_ms();
        SignalBatch {
            strategy: STRATEGY.into(),
            seq: self.seq,
            generated_at_ms: now,
            valid_until_ms: now + 60_000,
            model_id: "bench".into(),
            model_version: 1,
            signals: self.symbols[..n]
                .iter()
                .enumerate()
                .map(|(i, s)| Signal {
                    symbol: s.clone(),
                    side: Side::Long,
                    weight: 0.01 + i as f64 * 1e-4,
                    qty: 10_000.0,
                    return_prob: 0.61,
                    risk_score: 0.2,
                })
                .collect(),
        }
    }

    /// `PIPELINE` single-signal guarded publishes in one pipeline.
    fn guarded_pipeline(&mut self) {
        let keys = self.guard.keys().strategy(STRATEGY);
        let mut pipe = redis::pipe();
        for _ in 0..PIPELINE {
            let b = self.batch(1);
            pipe.add_command(self.guard.publish_cmd(&keys, &b));
        }
        let replies: Vec<redis::Value> = pipe.query(&mut self.conn).unwrap();
        black_box(replies);
    }

    /// The same fields written with plain `HSET` + `PEXPIREAT`, no guard.
    fn plain_pipeline(&mut self) {
        let keys = self.guard.keys().strategy(STRATEGY);
        let mut pipe = redis::pipe();
        for _ in 0..PIPELINE {
            let b = self.batch(1);
            let s = &b.signals[0];
            let key = keys.sig(&s.symbol);
            pipe.cmd("HSET")
                .arg(&key)
                .arg("seq")
                .arg(b.seq)
                .arg("side")
                .arg(s.side.as_str())
                .arg("weight")
                .arg(s.weight.to_string())
                .arg("qty")
                .arg(s.qty.to_string())
                .arg("return_prob")
                .arg(s.return_prob.to_string())
                .arg("risk_score")
                .arg(s.risk_score.to_string())
                .arg("model_id")
                .arg(&b.model_id)
                .arg("model_version")
                .arg(b.model_version)
                .arg("generated_at_ms")
                .arg(b.generated_at_ms)
                .arg("valid_until_ms")
                .arg(b.valid_until_ms)
                .ignore()
                .cmd("PEXPIREAT")
                .arg(&key)
                .arg(b.valid_until_ms)
                .ignore();
        }
        pipe.query::<()>(&mut self.conn).unwrap();
    }

    /// One decision: a 32-signal batch, one round trip.
    fn decision_round_trip(&mut self) {
        let b = self.batch(DECISION_SYMBOLS);
        black_box(self.guard.publish(&mut self.conn, &b).unwrap());
    }

    /// `FOLD` 32-signal decisions in one round trip: `FOLD` separate guard
    /// calls pipelined, or (`folded`) one `mlcore_publish_many_v2` call, as
    /// the daemon sends them when decisions queue up.
    fn decisions(&mut self, folded: bool) {
        let batches: Vec<SignalBatch> = (0..FOLD).map(|_| self.batch(DECISION_SYMBOLS)).collect();
        if folded {
            black_box(self.guard.publish_many(&mut self.conn, &batches).unwrap());
        } else {
            let keys = self.guard.keys().strategy(STRATEGY);
            let mut pipe = redis::pipe();
            for b in &batches {
                pipe.add_command(self.guard.publish_cmd(&keys, b));
            }
            black_box(pipe.query::<Vec<redis::Value>>(&mut self.conn).unwrap());
        }
    }

    /// Redis' own time in `FCALL` so far, µs.
    fn fcall_usec(&mut self) -> u64 {
        testutil::command_stats(&mut self.conn, "fcall").usec
    }

    /// One signal, one round trip.
    fn single_round_trip(&mut self) {
        let b = self.batch(1);
        black_box(self.guard.publish(&mut self.conn, &b).unwrap());
    }
}

fn median(mut f: impl FnMut(), runs: usize) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn main() {
    let ns = RedisNamespace::new();
    let mut b = Bench::new(&ns);
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3));
    {
        let mut g = c.benchmark_group("guard_pipeline");
        g.throughput(Throughput::Elements(PIPELINE as u64));
        g.bench_function("guarded_publish", |x| x.iter(|| b.guarded_pipeline()));
        g.bench_function("plain_hset", |x| x.iter(|| b.plain_pipeline()));
        g.finish();
    }
    {
        let mut g = c.benchmark_group("guard_round_trip");
        g.bench_function("single_signal", |x| x.iter(|| b.single_round_trip()));
        g.throughput(Throughput::Elements(DECISION_SYMBOLS as u64));
        g.bench_function("decision_32_signals", |x| x.iter(|| b.decision_round_trip()));
        g.throughput(Throughput::Elements(FOLD as u64));
        g.bench_function("decisions_separate_calls", |x| x.iter(|| b.decisions(false)));
        g.bench_function("decisions_folded", |x| x.iter(|| b.decisions(true)));
        g.finish();
    }
    c.final_summary();

    // Same-run summary: medians of interleaved runs, so both sides see the
    // same server state and machine load.
    let runs = 41;
    let mut guarded = Vec::new();
    let mut plain = Vec::new();
    for _ in 0..runs {
        guarded.push(median(|| b.guarded_pipeline(), 1));
        plain.push(median(|| b.plain_pipeline(), 1));
    }
    guarded.sort();
    plain.sort();
    let (g, p) = (guarded[runs / 2], plain[runs / 2]);
    let single = median(|| b.single_round_trip(), 201);
    let decision = median(|| b.decision_round_trip(), 201);
    let per_sec = |d: Duration| PIPELINE as f64 / d.as_secs_f64();
    println!(
        "\n== guard summary (Redis {}, pipeline of {PIPELINE}) ==",
        testutil::redis_url()
    );
    println!(
        "guarded publish: {:>9.0} signals/s  ({:?} per pipeline)",
        per_sec(g),
        g
    );
    println!(
        "plain HSET:      {:>9.0} signals/s  ({:?} per pipeline)",
        per_sec(p),
        p
    );
    println!(
        "guard cost ratio (guarded time / plain time): {:.2}",
        g.as_secs_f64() / p.as_secs_f64()
    );
    println!("single-signal round trip p50: {single:?}");
    println!("32-signal decision round trip p50: {decision:?}");

    // Folding, interleaved: round trip and Redis' own FCALL time (INFO
    // commandstats; other clients' FCALLs on a shared server would count
    // too) per decision.
    let (mut rt, mut server) = ([Vec::new(), Vec::new()], [0u64, 0u64]);
    for _ in 0..runs {
        for (i, folded) in [false, true].into_iter().enumerate() {
            let before = b.fcall_usec();
            rt[i].push(median(|| b.decisions(folded), 1));
            server[i] += b.fcall_usec() - before;
        }
    }
    for (i, what) in ["separate calls", "one folded call"].iter().enumerate() {
        rt[i].sort();
        println!(
            "{FOLD} decisions x 32 signals, {what:<15}: round trip p50 {:?} ({:?} per decision), Redis FCALL time {} us per decision",
            rt[i][runs / 2],
            rt[i][runs / 2] / FOLD as u32,
            server[i] / (runs * FOLD) as u64
        );
    }
}
