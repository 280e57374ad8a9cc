//! The module against the Lua function it stands in for, on a private
//! Redis that has both: every step of each scenario is sent to the function
//! under one namespace and to the module under another, and the replies and
//! every key of the strategy must come out the same (stream entries but for
//! their IDs and `written_at_us`, which are the clock's). The scenarios walk
//! every guarantee of contract v3: acceptance, order and the mark taken over
//! from v2, expiry, each mode and its failing closed, each refusal of bad
//! input, keys of the wrong type, garbled marks, a stream out of IDs, calls
//! of several decisions. Then the client: a `Guard` publishing through the
//! module, its version check, and a replica without the module that still
//! receives every write.

#![allow(clippy::unwrap_used)] // fixture helpers outside #[test] fns: a broken fixture should panic

use mlcore_contract::guard::{ContractVersion, RECORD_BYTES};
use mlcore_contract::{ContractError, Guard, GuardEngine, Keys, PublishOutcome, SignalBatch, StrategyKeys};
use mlcore_testkit::signals::{now_ms, signal, S};
use mlcore_testkit::RedisServer;
use redis::Value;

fn module_path() -> String {
    mlcore_testkit::guard_module().to_string_lossy().into_owned()
}

/// A private Redis with the module and the guard libraries loaded.
fn server() -> RedisServer {
    let s = RedisServer::start_with(&["--loadmodule", &module_path()]);
    Guard::load(&mut s.connection()).unwrap();
    s
}

fn record(weight: f64, qty: f64, prob: f32, risk: f32) -> Vec<u8> {
    let mut r = weight.to_le_bytes().to_vec();
    r.extend_from_slice(&qty.to_le_bytes());
    r.extend_from_slice(&prob.to_le_bytes());
    r.extend_from_slice(&risk.to_le_bytes());
    r
}

fn records(weights: &[f64]) -> Vec<u8> {
    weights
        .iter()
        .flat_map(|&w| record(w, w * 1e6, 0.6, 0.2))
        .collect()
}

/// One decision's six arguments.
fn decision(seq: &str, valid_until_ms: u64, recs: &[u8]) -> Vec<Vec<u8>> {
    vec![
        seq.into(),
        now_ms().to_string().into(),
        valid_until_ms.to_string().into(),
        b"m1".to_vec(),
        b"7".to_vec(),
        recs.to_vec(),
    ]
}

fn live() -> u64 {
    now_ms() + 60_000
}

/// Arguments after the keys: strategy, symbols, maxlen, count, decisions.
fn call(symbols: &str, decisions: &[Vec<Vec<u8>>]) -> Vec<Vec<u8>> {
    let mut a: Vec<Vec<u8>> = vec![
        S.into(),
        symbols.into(),
        b"1000".to_vec(),
        decisions.len().to_string().into(),
    ];
    for d in decisions {
        a.extend(d.iter().cloned());
    }
    a
}

/// What a step does, to each side alike.
enum Step {
    /// Raw commands on the strategy's keys (`{ops}`, `{snap}`, `{seq}`,
    /// `{stream}`, `{hwm}` in an argument stand for the side's key).
    Setup(Vec<Vec<&'static str>>),
    /// A publish call: arguments after the keys.
    Publish(Vec<Vec<u8>>),
    /// A publish call with the keys rearranged (`[i]` = which of the five
    /// goes in position i; 5 = the ops key of strategy `OTHER`).
    PublishKeys([usize; 5], Vec<Vec<u8>>),
}

fn five(k: &StrategyKeys) -> [String; 5] {
    [
        k.ops.clone(),
        k.snapshot.clone(),
        k.seq.clone(),
        k.stream_v3.clone(),
        k.hwm.clone(),
    ]
}

struct Side {
    engine: GuardEngine,
    keys: StrategyKeys,
}

impl Side {
    fn new(engine: GuardEngine, ns: &str) -> Self {
        Self {
            engine,
            keys: Keys::new(ns).strategy(S),
        }
    }

    fn publish(
        &self,
        conn: &mut redis::Connection,
        keys: [String; 5],
        args: &[Vec<u8>],
    ) -> Result<Value, String> {
        let mut cmd = match self.engine {
            GuardEngine::Function => {
                let mut c = redis::cmd("FCALL");
                c.arg("mlcore_publish_v3").arg(5);
                c
            }
            GuardEngine::Module => redis::cmd("mlcore.publish_v3"),
        };
        cmd.arg(&keys).arg(args);
        // Refusals name keys: the side's namespace is left out of the
        // comparison.
        let ns = format!("{}:", self.keys.ops.split(':').next().unwrap_or_default());
        cmd.query::<Value>(conn)
            .map_err(|e| e.to_string().replace(&ns, "NS:"))
    }

    fn run(&self, conn: &mut redis::Connection, step: &Step) -> Result<Value, String> {
        let keys = five(&self.keys);
        match step {
            Step::Setup(cmds) => {
                for c in cmds {
                    let mut cmd = redis::cmd(c[0]);
                    for a in &c[1..] {
                        let named = ["{ops}", "{snap}", "{seq}", "{stream}", "{hwm}"]
                            .iter()
                            .position(|n| n == a);
                        match named {
                            Some(i) => cmd.arg(&keys[i]),
                            None => cmd.arg(*a),
                        };
                    }
                    cmd.query::<Value>(conn)
                        .map_err(|e| format!("setup {c:?}: {e}"))
                        .unwrap();
                }
                Ok(Value::Nil)
            }
            Step::Publish(args) => self.publish(conn, keys, args),
            Step::PublishKeys(order, args) => {
                let other = Keys::new(self.keys.ops.split(':').next().unwrap()).strategy("OTHER");
                let pick = |i: usize| {
                    if i == 5 {
                        other.ops.clone()
                    } else {
                        keys[i].clone()
                    }
                };
                self.publish(conn, order.map(pick), args)
            }
        }
    }

    /// The strategy's keys as they stand: type, value (`DUMP`, or a
    /// stream's entries without their IDs and `written_at_us`), expiry;
    /// and the stream entries' `written_at_us`, apart (the clock's).
    fn state(&self, conn: &mut redis::Connection) -> (Vec<(String, Value, i64)>, Vec<u64>) {
        let written: Vec<u64> = {
            let k = &self.keys.stream_v3;
            let kind: String = redis::cmd("TYPE").arg(k).query(conn).unwrap();
            if kind == "stream" {
                let entries: redis::streams::StreamRangeReply =
                    redis::cmd("XRANGE").arg(k).arg("-").arg("+").query(conn).unwrap();
                entries
                    .ids
                    .iter()
                    .filter_map(|e| e.get::<u64>("written_at_us"))
                    .collect()
            } else {
                Vec::new()
            }
        };
        let keys = five(&self.keys)
            .iter()
            .map(|k| {
                let kind: String = redis::cmd("TYPE").arg(k).query(conn).unwrap();
                let value: Value = if kind == "stream" {
                    let entries: redis::streams::StreamRangeReply =
                        redis::cmd("XRANGE").arg(k).arg("-").arg("+").query(conn).unwrap();
                    let fields: Vec<Value> = entries
                        .ids
                        .iter()
                        .map(|e| {
                            let mut m: Vec<(String, Value)> = e
                                .map
                                .iter()
                                .filter(|(f, _)| f.as_str() != "written_at_us")
                                .map(|(f, v)| (f.clone(), v.clone()))
                                .collect();
                            m.sort_by(|a, b| a.0.cmp(&b.0));
                            Value::Array(
                                m.into_iter()
                                    .flat_map(|(f, v)| [Value::BulkString(f.into_bytes()), v])
                                    .collect(),
                            )
                        })
                        .collect();
                    Value::Array(fields)
                } else {
                    redis::cmd("DUMP").arg(k).query(conn).unwrap()
                };
                let expiry: i64 = redis::cmd("PEXPIRETIME").arg(k).query(conn).unwrap();
                (kind, value, expiry)
            })
            .collect();
        (keys, written)
    }
}

/// `{'expired', now}` with `now` zeroed: the two sides read the clock at
/// different instants.
fn clockless(v: Value) -> Value {
    match v {
        Value::Array(items) => {
            if matches!(items.first(), Some(Value::BulkString(l)) if l == b"expired") {
                return Value::Array(vec![items[0].clone(), Value::Int(0)]);
            }
            Value::Array(items.into_iter().map(clockless).collect())
        }
        other => other,
    }
}

/// Every `now_ms` of the `expired` replies in `v`.
fn expired_at(v: &Value) -> Vec<u64> {
    match v {
        Value::Array(items) => match items.as_slice() {
            [Value::BulkString(l), Value::Int(now)] if l == b"expired" => vec![*now as u64],
            _ => items.iter().flat_map(expired_at).collect(),
        },
        _ => Vec::new(),
    }
}

/// Runs `steps` on both sides and checks each step's replies and state.
fn twins(steps: &[Step]) -> Vec<Result<Value, String>> {
    let server = server();
    let mut conn = server.connection();
    let lua = Side::new(GuardEngine::Function, "lua");
    let module = Side::new(GuardEngine::Module, "mod");
    let mut replies = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let a = lua.run(&mut conn, step).map(clockless);
        let before = now_ms();
        let b = module.run(&mut conn, step);
        let after = now_ms();
        // The module reads Redis' clock itself: what it says must be now.
        if let Ok(v) = &b {
            for now in expired_at(v) {
                assert!(
                    (before..=after).contains(&now),
                    "step {i}: expired at {now}, not in {before}..={after}"
                );
            }
        }
        let b = b.map(clockless);
        assert_eq!(b, a, "step {i}: the module's reply (left) against the function's");
        let ((keys_b, written_b), (keys_a, written_a)) = (module.state(&mut conn), lua.state(&mut conn));
        assert_eq!(
            keys_b, keys_a,
            "step {i}: the keys after the module's call (left) against the function's"
        );
        assert_eq!(written_b.len(), written_a.len(), "step {i}");
        for (b, a) in written_b.iter().zip(&written_a) {
            assert!(
                b.abs_diff(*a) < 2_000_000 && (1_000_000_000_000_000..10_000_000_000_000_000).contains(b),
                "step {i}: written_at_us {b} against the function's {a}"
            );
        }
        replies.push(a);
    }
    replies
}

fn active() -> Step {
    Step::Setup(vec![vec!["HSET", "{ops}", "mode", "active"]])
}

const SYMBOLS: &str = "EURUSD,USDJPY,GBPUSD";

fn one(seq: &str, weights: &[f64]) -> Step {
    Step::Publish(call(SYMBOLS, &[decision(seq, live(), &records(weights))]))
}

fn ok(r: &Result<Value, String>) -> bool {
    matches!(r, Ok(Value::Array(v)) if v.first() == Some(&Value::BulkString(b"ok".to_vec())))
}

#[test]
fn order_expiry_and_several_decisions_per_call_match_the_function() {
    let expired = call(
        SYMBOLS,
        &[decision("9", now_ms() - 1, &records(&[0.1, 0.0, 0.0]))],
    );
    let several = call(
        SYMBOLS,
        &[
            decision("10", live(), &records(&[0.1, 0.0, 0.0])),
            decision("10", live(), &records(&[0.2, 0.0, 0.0])),
            decision("8", live(), &records(&[0.3, 0.0, 0.0])),
            decision("11", now_ms() - 5, &records(&[0.4, 0.0, 0.0])),
            decision("12", live(), &records(&[-0.5, 0.0, 0.25])),
        ],
    );
    let replies = twins(&[
        // No ops state at all: halted.
        one("1", &[0.1, 0.0, 0.0]),
        active(),
        one("1", &[0.05, -0.03, 0.0]),
        one("1", &[0.05, -0.03, 0.0]),
        one("2", &[0.0, 0.0, 0.0]),
        Step::Publish(expired),
        Step::Publish(several),
        // Another symbol list replaces the snapshot whole.
        Step::Publish(call("AUDUSD", &[decision("13", live(), &records(&[0.01]))])),
        // v2's marks are taken over when v3 has none.
        Step::Setup(vec![
            vec!["DEL", "{seq}"],
            vec!["HSET", "{hwm}", "EURUSD", "20", "USDJPY", "25"],
        ]),
        one("24", &[0.0, 0.0, 0.0]),
        one("26", &[0.0, 0.0, 0.0]),
        // Numbers as Lua reads them: 2^53 + 1 is 2^53.
        one("9007199254740993", &[0.0, 0.0, 0.0]),
        one("9007199254740992", &[0.0, 0.0, 0.0]),
    ]);
    assert!(ok(&replies[2]), "{:?}", replies[2]);
    assert!(matches!(&replies[6], Ok(Value::Array(v)) if v.len() == 5));
    assert!(ok(&replies[10]), "{:?}", replies[10]);
    assert!(ok(&replies[11]), "{:?}", replies[11]);
    assert!(!ok(&replies[12]), "{:?}", replies[12]);
}

#[test]
fn modes_match_the_function_and_fail_closed() {
    let reduce = |seq: &str, w: [f64; 3]| one(seq, &w);
    let replies = twins(&[
        active(),
        reduce("1", [0.05, -0.03, 0.0]),
        Step::Setup(vec![vec!["HSET", "{ops}", "mode", "reduce_only"]]),
        reduce("2", [0.02, -0.03, 0.0]),
        reduce("3", [0.03, -0.03, 0.0]),
        reduce("4", [0.01, 0.01, 0.0]),
        reduce("5", [0.0, 0.0, 0.01]),
        // Several decisions judged in order against the weights just accepted.
        Step::Publish(call(
            SYMBOLS,
            &[
                decision("6", live(), &records(&[0.01, -0.01, 0.0])),
                decision("7", live(), &records(&[0.02, -0.01, 0.0])),
                decision("8", live(), &records(&[0.0, -0.01, 0.0])),
            ],
        )),
        // An expired snapshot holds nothing: every weight counts from 0.
        Step::Setup(vec![vec!["PEXPIREAT", "{snap}", "1"]]),
        reduce("9", [0.0, -0.01, 0.0]),
        reduce("10", [0.0, 0.0, 0.0]),
        Step::Setup(vec![vec!["HSET", "{ops}", "mode", "flatten"]]),
        reduce("11", [0.0, 0.0, 0.01]),
        reduce("11", [0.0, -0.01, 0.0]),
        reduce("12", [0.0, 0.0, 0.0]),
        Step::Setup(vec![vec!["HSET", "{ops}", "mode", "halted"]]),
        reduce("13", [0.0, 0.0, 0.0]),
        Step::Setup(vec![vec!["HSET", "{ops}", "mode", "sideways"]]),
        reduce("14", [0.0, 0.0, 0.0]),
        Step::Setup(vec![vec!["DEL", "{ops}"]]),
        reduce("15", [0.0, 0.0, 0.0]),
    ]);
    assert!(ok(&replies[3]), "{:?}", replies[3]);
    assert!(!ok(&replies[4]), "{:?}", replies[4]);
    assert!(!ok(&replies[13]), "{:?}", replies[13]);
    assert!(ok(&replies[14]), "{:?}", replies[14]);
}

#[test]
fn every_refusal_of_bad_input_reads_as_the_functions_and_writes_nothing() {
    let good = records(&[0.1, 0.0, 0.0]);
    let with = |f: &dyn Fn(&mut Vec<Vec<u8>>)| {
        let mut a = call(SYMBOLS, &[decision("5", live(), &good)]);
        f(&mut a);
        Step::Publish(a)
    };
    let rec = |w: f64, q: f64, p: f32, r: f32| {
        let mut v = record(w, q, p, r);
        v.extend(records(&[0.0, 0.0]));
        with(&move |a: &mut Vec<Vec<u8>>| a[9] = v.clone())
    };
    let mut steps = vec![active(), one("1", &[0.1, 0.2, 0.0])];
    let bad: Vec<Step> = vec![
        with(&|a| a[0] = Vec::new()),
        with(&|a| a[0] = b"OTHER".to_vec()),
        with(&|a| a[1] = Vec::new()),
        with(&|a| a[1] = b"EURUSD,eurusd".to_vec()),
        with(&|a| a[1] = b"EURUSD,USDJPY,".to_vec()),
        with(&|a| a[1] = b"EURUSD,USDJPY,EURUSD".to_vec()),
        with(&|a| a[1] = b"USDJPY,EURUSD,EURUSD,USDJPY,usd".to_vec()),
        with(&|a| a[1] = b"EURUSD,usd,EURUSD".to_vec()),
        with(&|a| a[1] = b"ABCDEFGHIJKLMNOPQ,B,C".to_vec()),
        with(&|a| a[2] = b"0".to_vec()),
        with(&|a| a[2] = b"x".to_vec()),
        with(&|a| a[3] = b"0".to_vec()),
        with(&|a| a[3] = b"65".to_vec()),
        with(&|a| a[3] = b"2".to_vec()),
        with(&|a| a[3] = b"01".to_vec()),
        with(&|a| {
            a.pop();
        }),
        with(&|a| a[4] = b"0".to_vec()),
        with(&|a| a[4] = b"07".to_vec()),
        with(&|a| a[4] = b"99999999999999999".to_vec()),
        with(&|a| a[5] = b"soon".to_vec()),
        with(&|a| a[6] = b"-1".to_vec()),
        with(&|a| a[7] = Vec::new()),
        with(&|a| a[8] = b"7.5".to_vec()),
        with(&|a| a[9].truncate(3 * RECORD_BYTES - 1)),
        rec(f64::NAN, 1.0, 0.6, 0.1),
        rec(f64::NEG_INFINITY, 1.0, 0.6, 0.1),
        rec(0.5, f64::INFINITY, 0.6, 0.1),
        rec(0.5, 1.0, 1.5, 0.1),
        rec(0.5, 1.0, -0.25, 0.1),
        rec(0.5, 1.0, f32::NAN, 0.1),
        rec(0.5, 1.0, 0.6, f32::INFINITY),
        // The second decision's signal 3.
        Step::Publish(call(
            SYMBOLS,
            &[
                decision("5", live(), &good),
                decision("6", live(), &records(&[0.0, 0.0, f64::NAN])),
            ],
        )),
        // Keys that are not the strategy's.
        Step::PublishKeys([5, 1, 2, 3, 4], call(SYMBOLS, &[decision("5", live(), &good)])),
        Step::PublishKeys([0, 2, 1, 3, 4], call(SYMBOLS, &[decision("5", live(), &good)])),
        Step::PublishKeys([0, 1, 2, 4, 3], call(SYMBOLS, &[decision("5", live(), &good)])),
    ];
    let n_bad = bad.len();
    steps.extend(bad);
    let replies = twins(&steps);
    for (i, r) in replies[2..].iter().enumerate() {
        match r {
            Err(e) => assert!(e.contains("BADINPUT"), "case {i}: {e}"),
            Ok(v) => panic!("case {i} was accepted: {v:?}"),
        }
    }
    assert_eq!(replies.len(), 2 + n_bad);
}

#[test]
fn keys_of_the_wrong_type_garbled_marks_and_a_stream_out_of_ids_match_the_function() {
    let two = || {
        Step::Publish(call(
            SYMBOLS,
            &[
                decision("50", live(), &records(&[0.0, 0.0, 0.0])),
                decision("51", live(), &records(&[0.0, 0.0, 0.0])),
            ],
        ))
    };
    let replies = twins(&[
        active(),
        one("1", &[0.1, 0.0, 0.0]),
        // Each key of the wrong type, then put back.
        Step::Setup(vec![vec!["RENAME", "{ops}", "{hwm}"], vec!["SET", "{ops}", "x"]]),
        one("2", &[0.0, 0.0, 0.0]),
        Step::Setup(vec![vec!["DEL", "{ops}"], vec!["RENAME", "{hwm}", "{ops}"]]),
        Step::Setup(vec![vec!["DEL", "{seq}"], vec!["HSET", "{seq}", "f", "1"]]),
        one("3", &[0.0, 0.0, 0.0]),
        Step::Setup(vec![vec!["DEL", "{seq}"], vec!["LPUSH", "{hwm}", "1"]]),
        one("4", &[0.0, 0.0, 0.0]),
        Step::Setup(vec![vec!["DEL", "{hwm}"], vec!["SET", "{seq}", "4"]]),
        Step::Setup(vec![
            vec!["RENAME", "{snap}", "{hwm}"],
            vec!["SET", "{snap}", "x"],
        ]),
        one("5", &[0.0, 0.0, 0.0]),
        Step::Setup(vec![vec!["DEL", "{snap}"], vec!["RENAME", "{hwm}", "{snap}"]]),
        Step::Setup(vec![
            vec!["RENAME", "{stream}", "{hwm}"],
            vec!["SET", "{stream}", "x"],
        ]),
        one("6", &[0.0, 0.0, 0.0]),
        two(),
        Step::Setup(vec![vec!["DEL", "{stream}"], vec!["RENAME", "{hwm}", "{stream}"]]),
        // Garbled marks fail closed, v3's and v2's.
        Step::Setup(vec![vec!["SET", "{seq}", "garbage"]]),
        one("7", &[0.0, 0.0, 0.0]),
        Step::Setup(vec![vec!["DEL", "{seq}"], vec!["HSET", "{hwm}", "EURUSD", "x"]]),
        one("8", &[0.0, 0.0, 0.0]),
        Step::Setup(vec![vec!["DEL", "{hwm}"]]),
        one("9", &[0.0, 0.0, 0.0]),
        // A stream at the very last ID: one decision's write fails first,
        // several are refused before any write.
        Step::Setup(vec![vec![
            "XADD",
            "{stream}",
            "18446744073709551615-18446744073709551615",
            "f",
            "v",
        ]]),
        one("10", &[0.0, 0.0, 0.0]),
        two(),
        // An empty stream one ID short of the end (only XSETID by hand
        // makes it): the check finds no entry, the first write takes the
        // last ID and the second fails, as in the function.
        Step::Setup(vec![
            vec!["DEL", "{stream}"],
            vec!["XADD", "{stream}", "1-1", "f", "v"],
            vec!["XDEL", "{stream}", "1-1"],
            vec!["XSETID", "{stream}", "18446744073709551615-18446744073709551614"],
        ]),
        two(),
    ]);
    for i in [3, 6, 8, 11, 14, 15, 18, 20, 24, 25] {
        assert!(
            matches!(&replies[i], Err(e) if e.contains("nothing was written")),
            "step {i}: {:?}",
            replies[i]
        );
    }
    assert!(ok(&replies[22]), "{:?}", replies[22]);
    assert!(
        matches!(&replies[27], Err(e) if !e.contains("BADINPUT")),
        "{:?}",
        replies[27]
    );
}

#[test]
fn a_snapshot_expiry_that_is_not_a_number_fails_reduce_only_calls_in_both() {
    let server = server();
    let mut conn = server.connection();
    for side in [
        Side::new(GuardEngine::Function, "lua"),
        Side::new(GuardEngine::Module, "mod"),
    ] {
        side.run(&mut conn, &active()).unwrap();
        assert!(ok(&side.run(&mut conn, &one("1", &[0.1, 0.0, 0.0]))));
        side.run(
            &mut conn,
            &Step::Setup(vec![
                vec!["HSET", "{ops}", "mode", "reduce_only"],
                vec!["HSET", "{snap}", "valid_until_ms", "soon"],
            ]),
        )
        .unwrap();
        let before = side.state(&mut conn);
        let r = side.run(&mut conn, &one("2", &[0.0, 0.0, 0.0]));
        assert!(r.is_err(), "{:?}: {r:?}", side.engine);
        assert_eq!(side.state(&mut conn), before, "{:?} wrote", side.engine);
        if side.engine == GuardEngine::Module {
            let e = r.unwrap_err();
            assert!(
                e.contains("valid_until_ms is not a number: nothing was written"),
                "{e}"
            );
        }
    }
}

#[test]
fn the_module_answers_the_revision_of_the_lua_library_it_stands_in_for() {
    let v3 = &mlcore_contract::guard::LIBRARIES[1];
    assert_eq!(
        (mlcore_guard_module::CONTRACT, mlcore_guard_module::REVISION),
        (v3.version, v3.revision),
        "guard_v3.lua's revision changed: change the module alike, then its REVISION"
    );
}

fn batch(seq: u64, weights: &[f64]) -> SignalBatch {
    mlcore_testkit::signals::batch(
        seq,
        ["EURUSD", "USDJPY", "GBPUSD"]
            .iter()
            .zip(weights)
            .map(|(s, &w)| signal(s, w))
            .collect(),
    )
}

#[test]
fn a_guard_publishes_through_the_module_and_consumers_read_as_before() {
    let server = server();
    let mut conn = server.connection();
    let keys = Keys::new("client");
    let g = Guard::new(keys.clone(), 1000)
        .with_contract(ContractVersion::V3)
        .with_engine(GuardEngine::Module);
    g.check_engine(&mut conn).unwrap();
    mlcore_testkit::set_mode(&g, &mut conn, S, mlcore_contract::OpsMode::Active);
    assert_eq!(
        g.publish(&mut conn, &batch(1, &[0.05, -0.03, 0.0])).unwrap(),
        PublishOutcome::Accepted { count: 3 }
    );
    assert_eq!(
        g.publish(&mut conn, &batch(1, &[0.05, -0.03, 0.0])).unwrap(),
        PublishOutcome::Stale {
            symbol: String::new(),
            stored_seq: 1
        }
    );
    let mut pipelined = vec![batch(2, &[0.0, 0.0, 0.0]), batch(3, &[0.01, 0.0, 0.0])];
    pipelined[1].model_id = "m2".into();
    let outcomes = g.publish_many(&mut conn, &pipelined).unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Ok(PublishOutcome::Accepted { .. }))),
        "{outcomes:?}"
    );
    // Read through the Lua library's read function, as consumers do.
    let s = g.read(&mut conn, S, "EURUSD").unwrap().unwrap();
    assert_eq!((s.seq, s.weight, s.model_id.as_str()), (3, 0.01, "m2"));
    let mut bad = batch(4, &[0.0, 0.0, 0.0]);
    bad.signals[0].return_prob = 1.5;
    assert!(matches!(
        g.publish(&mut conn, &bad),
        Err(ContractError::BadInput(m)) if m.contains("signal 1 (EURUSD): return_prob must be in [0, 1], got 1.5")
    ));
}

#[test]
fn a_redis_without_the_module_is_named_and_the_module_needs_v3() {
    let plain = RedisServer::start();
    let mut conn = plain.connection();
    let g = Guard::new(Keys::new("x"), 1000)
        .with_contract(ContractVersion::V3)
        .with_engine(GuardEngine::Module);
    match g.check_engine(&mut conn) {
        Err(ContractError::GuardMissing { reason, .. }) => {
            assert!(reason.contains("does not know mlcore.guard_info"), "{reason}");
            assert!(reason.contains("loadmodule"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let v2 = Guard::new(Keys::new("x"), 1000).with_engine(GuardEngine::Module);
    let server = server();
    assert!(matches!(
        v2.check_engine(&mut server.connection()),
        Err(ContractError::GuardMissing { reason, .. }) if reason.contains("contract v3 only")
    ));
    // The function engine needs nothing more than the library.
    Guard::new(Keys::new("x"), 1000).check_engine(&mut conn).unwrap();
    let info: Value = redis::cmd("mlcore.guard_info")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(
        info,
        Value::Array(vec![
            Value::BulkString(b"mlcore_guard_module".to_vec()),
            Value::Int(3),
            Value::Int(1)
        ])
    );
}

#[test]
fn a_replica_without_the_module_receives_every_write() {
    let primary = server();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
    let mut conn = primary.connection();
    let mut rconn = replica.connection();
    let g = Guard::new(Keys::new("repl"), 1000)
        .with_contract(ContractVersion::V3)
        .with_engine(GuardEngine::Module);
    mlcore_testkit::set_mode(&g, &mut conn, S, mlcore_contract::OpsMode::Active);
    for seq in 1..=3 {
        g.publish(&mut conn, &batch(seq, &[0.01 * seq as f64, 0.0, 0.0]))
            .unwrap();
    }
    let keys = g.keys().strategy(S);
    let synced = mlcore_testkit::wait_until(std::time::Duration::from_secs(10), || {
        redis::cmd("GET")
            .arg(&keys.seq)
            .query::<Option<String>>(&mut rconn)
            .ok()
            .flatten()
            .as_deref()
            == Some("3")
    });
    assert!(synced.is_some(), "the replica never saw seq 3");
    // (A listpack's field order is not part of the contract: compared as maps.)
    let fields = |c: &mut redis::Connection| -> std::collections::BTreeMap<String, Vec<u8>> {
        redis::cmd("HGETALL").arg(&keys.snapshot).query(c).unwrap()
    };
    assert_eq!(fields(&mut rconn), fields(&mut conn));
    assert_eq!(fields(&mut conn)["seq"], b"3");
    // Stream entries with the primary's IDs, and the snapshot's expiry.
    let ids = |c: &mut redis::Connection| -> Vec<String> {
        let r: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(&keys.stream_v3)
            .arg("-")
            .arg("+")
            .query(c)
            .unwrap();
        r.ids.into_iter().map(|e| e.id).collect()
    };
    assert_eq!(ids(&mut rconn), ids(&mut conn));
    assert_eq!(ids(&mut conn).len(), 3);
    let exp = |c: &mut redis::Connection| -> i64 {
        redis::cmd("PEXPIRETIME").arg(&keys.snapshot).query(c).unwrap()
    };
    assert_eq!(exp(&mut rconn), exp(&mut conn));
}

#[test]
fn the_daemons_acl_user_publishes_through_the_module_and_a_consumer_cannot() {
    use mlcore_contract::acl::{self, Role};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.acl");
    // Each user's password after its rules (which start with `reset`).
    let mut text: String = acl::acl_file_for("mlcore", GuardEngine::Module)
        .lines()
        .map(|line| match line.split(' ').nth(1) {
            Some(user @ ("mlcore-daemon" | "mlcore-consumer")) => format!("{line} >pw-{user}\n"),
            _ => format!("{line}\n"),
        })
        .collect();
    text.push_str("user admin on >pw-admin ~* &* +@all\n");
    std::fs::write(&file, text).unwrap();
    let server = RedisServer::start_as(
        &[
            "--loadmodule",
            &module_path(),
            "--aclfile",
            file.to_str().unwrap(),
        ],
        Some(("admin", "pw-admin")),
    );
    let mut admin = server.connection();
    Guard::load(&mut admin).unwrap();
    let g = Guard::new(Keys::new("mlcore"), 1000)
        .with_contract(ContractVersion::V3)
        .with_engine(GuardEngine::Module);
    mlcore_testkit::set_mode(&g, &mut admin, S, mlcore_contract::OpsMode::Active);
    let login = |user: &str, pw: &str| {
        redis::Client::open(format!("redis://{user}:{pw}@127.0.0.1:{}/", server.port))
            .unwrap()
            .get_connection()
            .unwrap()
    };
    let mut daemon = login(Role::Daemon.user(), "pw-mlcore-daemon");
    g.check_engine(&mut daemon).unwrap();
    assert_eq!(
        g.publish(&mut daemon, &batch(1, &[0.01, 0.0, 0.0])).unwrap(),
        PublishOutcome::Accepted { count: 3 }
    );
    let mut consumer = login(Role::Consumer.user(), "pw-mlcore-consumer");
    let refused = g.publish(&mut consumer, &batch(2, &[0.0, 0.0, 0.0])).unwrap_err();
    let why = refused.to_string().to_ascii_lowercase();
    assert!(
        why.contains("noperm") && why.contains("mlcore.publish_v3"),
        "{refused}"
    );
    assert_eq!(g.read(&mut consumer, S, "EURUSD").unwrap().unwrap().seq, 1);
    // The function engine's file names no module command: a Redis without
    // the module loads it.
    assert!(!acl::acl_file("mlcore").contains("mlcore.publish_v3"));
}
