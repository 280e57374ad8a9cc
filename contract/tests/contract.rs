//! The Redis contract against a real Redis: the guard's refusals, ordering,
//! expiry, fail-closed modes, compare-and-set, restarts and a real Cluster.

#![allow(clippy::unwrap_used)] // fixture helpers outside #[test] fns: a broken fixture should panic

use std::time::Duration;

use mlcore_contract::{
    ContractError, Guard, Keys, ModeChange, OpsMode, PublishOutcome, SetModeOutcome, Side, SignalBatch,
    MAX_DECISIONS_PER_CALL,
};
use mlcore_testkit::signals::*;
use mlcore_testkit::{self as testutil, RedisCluster, RedisNamespace, RedisServer};
use proptest::prelude::*;
use redis::ConnectionLike;

fn key_count(conn: &mut redis::Connection, ns: &RedisNamespace) -> usize {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", ns.ns))
        .query(conn)
        .unwrap();
    keys.len()
}

#[test]
fn accepted_batch_is_readable_and_streamed() {
    let (ns, g, mut conn) = active();
    let b = batch(
        1,
        vec![
            signal("EURUSD", 0.05),
            signal("USDJPY", -0.03),
            signal("GBPUSD", 0.0),
        ],
    );
    assert_eq!(
        g.publish(&mut conn, &b).unwrap(),
        PublishOutcome::Accepted { count: 3 }
    );

    let s = g.read(&mut conn, S, "USDJPY").unwrap().unwrap();
    assert_eq!(
        (s.seq, s.side, s.weight, s.model_id.as_str(), s.model_version),
        (1, Side::Short, -0.03, "m1", 7)
    );
    assert_eq!(s.valid_until_ms, b.valid_until_ms);
    let keys = g.keys().strategy(S);
    let pttl: i64 = redis::cmd("PTTL")
        .arg(keys.sig("EURUSD"))
        .query(&mut conn)
        .unwrap();
    assert!(
        pttl > 55_000 && pttl <= 60_000,
        "key expires at valid_until: pttl {pttl}"
    );
    let len: u64 = redis::cmd("XLEN").arg(&keys.signals).query(&mut conn).unwrap();
    assert_eq!(len, 1, "one stream entry per decision");
    let entry = stream(&mut conn, &g).remove(0);
    let field = |name: &str| entry.get::<String>(name).unwrap();
    assert_eq!(
        (field("strategy"), field("seq"), field("n"), field("model_id")),
        (S.to_owned(), "1".to_owned(), "3".to_owned(), "m1".to_owned())
    );
    let signals: Vec<serde_json::Value> = serde_json::from_str(&field("signals")).unwrap();
    let usdjpy = &signals[1];
    assert_eq!(
        (
            usdjpy["symbol"].as_str(),
            usdjpy["side"].as_str(),
            usdjpy["weight"].as_f64()
        ),
        (Some("USDJPY"), Some("short"), Some(-0.03))
    );
    assert_eq!(
        usdjpy["qty"].as_f64(),
        Some(s.qty),
        "stream and hash carry the same numbers"
    );
    assert_eq!(g.high_water_mark(&mut conn, S).unwrap(), 1);
    drop(ns);
}

/// Redis' clock in µs since the epoch.
fn redis_time_us(conn: &mut impl ConnectionLike) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(conn).unwrap();
    secs * 1_000_000 + micros
}

/// Every entry's `written_at_us`, oldest first.
fn written_at(conn: &mut impl ConnectionLike, g: &Guard) -> Vec<u64> {
    stream(conn, g)
        .iter()
        .map(|e| e.get::<String>("written_at_us").unwrap().parse().unwrap())
        .collect()
}

#[test]
fn every_stream_entry_carries_redis_clock_at_the_write_in_microseconds() {
    let (_ns, g, mut conn) = active();
    // Decisions folded into one call become visible together: one stamp,
    // within the call.
    let before = redis_time_us(&mut conn);
    let batches = [
        batch(1, vec![signal("EURUSD", 0.05)]),
        batch(2, vec![signal("EURUSD", 0.04)]),
    ];
    let out = g.publish_many(&mut conn, &batches).unwrap();
    assert!(out.iter().all(|o| o.as_ref().unwrap().label() == "accepted"));
    let after = redis_time_us(&mut conn);
    let stamps = written_at(&mut conn, &g);
    assert_eq!(stamps.len(), 2);
    assert_eq!(stamps[0], stamps[1], "one call, one moment of visibility");
    assert!(
        (before..=after).contains(&stamps[0]),
        "{} not within the call ({before}..={after})",
        stamps[0]
    );
    // Until a stamp falls in the first 100 ms of a second (µs below 100000,
    // which must be zero-padded): every stamp lies within its call.
    let deadline = std::time::Instant::now() + Duration::from_millis(1_500);
    let mut seq = 2;
    let mut padded = false;
    while !padded && std::time::Instant::now() < deadline {
        seq += 1;
        let before = redis_time_us(&mut conn);
        assert_eq!(
            g.publish(&mut conn, &batch(seq, vec![signal("EURUSD", 0.01)]))
                .unwrap()
                .label(),
            "accepted"
        );
        let after = redis_time_us(&mut conn);
        let stamp = *written_at(&mut conn, &g).last().unwrap();
        assert!(
            (before..=after).contains(&stamp),
            "{stamp} not within the call ({before}..={after})"
        );
        padded = stamp % 1_000_000 < 100_000;
    }
    assert!(padded, "no stamp in the first 100 ms of a second within 1.5 s");
}

#[test]
fn stale_sequence_is_refused() {
    let (_ns, g, mut conn) = active();
    g.publish(&mut conn, &batch(5, vec![signal("EURUSD", 0.05)]))
        .unwrap();
    for seq in [5, 4, 1] {
        let out = g
            .publish(&mut conn, &batch(seq, vec![signal("EURUSD", -0.05)]))
            .unwrap();
        assert_eq!(
            out,
            PublishOutcome::Stale {
                symbol: "EURUSD".into(),
                stored_seq: 5
            }
        );
    }
    assert_eq!(g.read(&mut conn, S, "EURUSD").unwrap().unwrap().weight, 0.05);
}

#[test]
fn stale_check_survives_signal_expiry() {
    // The high-water mark does not expire with the signal, so an old decision
    // arriving after the current signal expired is still refused.
    let (_ns, g, mut conn) = active();
    let mut b = batch(9, vec![signal("EURUSD", 0.05)]);
    b.valid_until_ms = now_ms() + 150;
    g.publish(&mut conn, &b).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(g.read(&mut conn, S, "EURUSD").unwrap(), None);
    let late = g
        .publish(&mut conn, &batch(8, vec![signal("EURUSD", 0.01)]))
        .unwrap();
    assert_eq!(
        late,
        PublishOutcome::Stale {
            symbol: "EURUSD".into(),
            stored_seq: 9
        }
    );
}

#[test]
fn expired_signal_is_refused_and_nothing_is_written() {
    let (ns, g, mut conn) = active();
    let before = key_count(&mut conn, &ns);
    let mut b = batch(1, vec![signal("EURUSD", 0.05)]);
    b.valid_until_ms = now_ms().saturating_sub(1);
    assert!(matches!(
        g.publish(&mut conn, &b).unwrap(),
        PublishOutcome::Expired { .. }
    ));
    assert_eq!(key_count(&mut conn, &ns), before);
}

#[test]
fn absent_ops_state_is_halted() {
    let ns = RedisNamespace::new();
    let mut conn = testutil::redis_connection();
    Guard::load(&mut conn).unwrap();
    let g = guard(&ns);
    let out = g
        .publish(&mut conn, &batch(1, vec![signal("EURUSD", 0.05)]))
        .unwrap();
    assert_eq!(
        out,
        PublishOutcome::Halted {
            mode: OpsMode::Halted,
            symbol: String::new()
        }
    );
    assert_eq!(key_count(&mut conn, &ns), 0);
    let state = g.read_mode(&mut conn, S).unwrap();
    assert!(state.fail_closed && state.mode == OpsMode::Halted);
}

#[test]
fn garbled_ops_state_is_halted() {
    let (_ns, g, mut conn) = active();
    let _: () = redis::cmd("HSET")
        .arg(g.keys().strategy(S).ops)
        .arg("mode")
        .arg("yolo")
        .query(&mut conn)
        .unwrap();
    let out = g
        .publish(&mut conn, &batch(1, vec![signal("EURUSD", 0.05)]))
        .unwrap();
    assert!(matches!(
        out,
        PublishOutcome::Halted {
            mode: OpsMode::Halted,
            ..
        }
    ));
}

#[test]
fn halted_mode_publishes_nothing() {
    let (_ns, g, mut conn) = active();
    set_mode(&g, &mut conn, S, OpsMode::Halted);
    let out = g
        .publish(&mut conn, &batch(1, vec![signal("EURUSD", 0.0)]))
        .unwrap();
    assert_eq!(out.label(), "halted");
    assert_eq!(g.read(&mut conn, S, "EURUSD").unwrap(), None);
}

#[test]
fn reduce_only_accepts_shrinking_and_refuses_growing_or_flipping() {
    let (_ns, g, mut conn) = active();
    g.publish(
        &mut conn,
        &batch(1, vec![signal("EURUSD", 0.08), signal("USDJPY", -0.04)]),
    )
    .unwrap();
    set_mode(&g, &mut conn, S, OpsMode::ReduceOnly);

    let grow = g
        .publish(
            &mut conn,
            &batch(2, vec![signal("EURUSD", 0.05), signal("USDJPY", -0.06)]),
        )
        .unwrap();
    assert_eq!(
        grow,
        PublishOutcome::Halted {
            mode: OpsMode::ReduceOnly,
            symbol: "USDJPY".into()
        }
    );
    let flip = g
        .publish(&mut conn, &batch(3, vec![signal("EURUSD", -0.02)]))
        .unwrap();
    assert_eq!(
        flip,
        PublishOutcome::Halted {
            mode: OpsMode::ReduceOnly,
            symbol: "EURUSD".into()
        }
    );
    let new_position = g
        .publish(&mut conn, &batch(4, vec![signal("GBPUSD", 0.01)]))
        .unwrap();
    assert_eq!(
        new_position.label(),
        "halted",
        "no current position: only flat may pass"
    );

    let shrink = g
        .publish(
            &mut conn,
            &batch(5, vec![signal("EURUSD", 0.05), signal("USDJPY", 0.0)]),
        )
        .unwrap();
    assert_eq!(shrink, PublishOutcome::Accepted { count: 2 });
    assert_eq!(g.read(&mut conn, S, "EURUSD").unwrap().unwrap().weight, 0.05);
}

#[test]
fn flatten_mode_accepts_only_flat_signals() {
    let (_ns, g, mut conn) = active();
    g.publish(&mut conn, &batch(1, vec![signal("EURUSD", 0.08)]))
        .unwrap();
    set_mode(&g, &mut conn, S, OpsMode::Flatten);
    let out = g
        .publish(&mut conn, &batch(2, vec![signal("EURUSD", 0.01)]))
        .unwrap();
    assert_eq!(
        out,
        PublishOutcome::Halted {
            mode: OpsMode::Flatten,
            symbol: "EURUSD".into()
        }
    );
    let flat = g
        .publish(&mut conn, &batch(3, vec![signal("EURUSD", 0.0)]))
        .unwrap();
    assert_eq!(flat, PublishOutcome::Accepted { count: 1 });
    assert_eq!(g.read(&mut conn, S, "EURUSD").unwrap().unwrap().side, Side::Flat);
}

/// An `FCALL` of `function` with the keys of a EURUSD-only publish.
fn eurusd_fcall(g: &Guard, function: &str) -> redis::Cmd {
    let keys = g.keys().strategy(S);
    let mut cmd = redis::cmd("FCALL");
    cmd.arg(function)
        .arg(4)
        .arg(&keys.ops)
        .arg(&keys.hwm)
        .arg(&keys.signals)
        .arg(keys.sig("EURUSD"));
    cmd
}

/// Sends a hand-made publish, bypassing the typed client.
fn raw_publish(
    conn: &mut redis::Connection,
    g: &Guard,
    args: &[&str],
) -> Result<redis::Value, ContractError> {
    let mut cmd = eurusd_fcall(g, "mlcore_publish_v2");
    cmd.arg(args);
    cmd.query::<redis::Value>(conn).map_err(|e| match e.code() {
        Some("BADINPUT") => ContractError::BadInput(e.detail().unwrap_or_default().to_owned()),
        _ => ContractError::Redis(e),
    })
}

#[test]
fn bad_input_is_refused_with_a_clear_error_and_writes_nothing() {
    let (ns, g, mut conn) = active();
    let before = key_count(&mut conn, &ns);
    let vu = (now_ms() + 60_000).to_string();
    let good: Vec<String> = [
        "1", "1", &vu, "100", "m1", "7", S, "EURUSD", "long", "0.05", "1000", "0.6", "0.2",
    ]
    .map(String::from)
    .to_vec();
    let cases: Vec<(usize, &str, &str)> = vec![
        (0, "abc", "seq must be a positive integer"),
        (0, "-3", "seq must be a positive integer"),
        (0, "007", "seq must be a positive integer"),
        (9, "NaN", "weight must be a finite JSON number"),
        (9, "inf", "weight must be a finite JSON number"),
        (9, "0x10", "weight must be a finite JSON number"),
        (9, "05", "weight must be a finite JSON number"),
        (9, "5.", "weight must be a finite JSON number"),
        (9, "+0.05", "weight must be a finite JSON number"),
        (10, " 1000", "qty must be a finite JSON number"),
        (10, "1e999", "qty must be a finite JSON number"),
        (10, "1.e3", "qty must be a finite JSON number"),
        (12, ".2", "risk_score must be a finite JSON number"),
        (7, "EUR\"USD", "symbol must be 1-16 characters"),
        (8, "up", "side must be long, short or flat"),
        (11, "1.5", "return_prob must be a JSON number in [0, 1]"),
        (11, "-0.5", "return_prob must be a JSON number in [0, 1]"),
        (11, "10", "return_prob must be a JSON number in [0, 1]"),
        (9, "-0.05", "does not match weight"),
        (2, "soon", "valid_until_ms must be an integer"),
    ];
    for (index, value, expected) in cases {
        let mut args = good.clone();
        args[index] = value.to_owned();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        match raw_publish(&mut conn, &g, &refs) {
            Err(ContractError::BadInput(msg)) => assert!(msg.contains(expected), "{value}: {msg}"),
            other => panic!("{value}: expected BadInput, got {other:?}"),
        }
    }
    // A missing field: one argument short.
    let refs: Vec<&str> = good[..good.len() - 1].iter().map(String::as_str).collect();
    match raw_publish(&mut conn, &g, &refs) {
        Err(ContractError::BadInput(msg)) => assert!(msg.contains("signal fields"), "{msg}"),
        other => panic!("expected BadInput, got {other:?}"),
    }
    assert_eq!(
        key_count(&mut conn, &ns),
        before,
        "a refused publish writes nothing"
    );
    // The typed client passes NaN through to the same refusal.
    let err = g
        .publish(&mut conn, &batch(2, vec![signal("EURUSD", f64::NAN)]))
        .unwrap_err();
    assert!(matches!(err, ContractError::BadInput(_)), "{err:?}");
}

#[test]
fn every_json_number_form_is_accepted_and_copied_verbatim() {
    let (_ns, g, mut conn) = active();
    let vu = (now_ms() + 60_000).to_string();
    let keys = g.keys().strategy(S);
    for (seq, side, weight, qty, prob, risk) in [
        ("1", "long", "5e-2", "1E3", "1", "0"),
        ("2", "flat", "-0", "0", "0.0", "-1.25e+2"),
        ("3", "long", "12.5", "-7", "1.000", "3"),
        ("4", "short", "-0.125", "9007199254740993", "0.5", "1e2"),
    ] {
        let args = [
            seq, "1", &vu, "100", "m1", "7", S, "EURUSD", side, weight, qty, prob, risk,
        ];
        let reply = raw_publish(&mut conn, &g, &args).unwrap();
        assert_eq!(
            reply,
            redis::Value::Array(vec![
                redis::Value::BulkString(b"ok".to_vec()),
                redis::Value::Int(1)
            ]),
            "{args:?}"
        );
        let stored: Vec<String> = redis::cmd("HMGET")
            .arg(keys.sig("EURUSD"))
            .arg(&["weight", "qty", "return_prob", "risk_score"])
            .query(&mut conn)
            .unwrap();
        assert_eq!(stored, [weight, qty, prob, risk]);
        let entries: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(&keys.signals)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query(&mut conn)
            .unwrap();
        let text: String = entries.ids[0].get("signals").unwrap();
        assert!(text.contains(&format!("\"weight\":{weight},")), "{text}");
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            parsed[0]["weight"].as_f64().unwrap(),
            weight.parse::<f64>().unwrap()
        );
    }
}

/// JSON's number grammar (RFC 8259), as the guard must apply it: optional
/// minus, an integer part without leading zeros, optional fraction and
/// exponent, each with at least one digit; finite as an `f64`; at most 300
/// characters (the guard's cap). The value, when acceptable.
fn json_number(s: &str) -> Option<f64> {
    fn digits(b: &[u8], mut i: usize) -> usize {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    }
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 300 {
        return None;
    }
    let mut i = usize::from(b[0] == b'-');
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(c) if c.is_ascii_digit() => i = digits(b, i),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        let end = digits(b, i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let end = digits(b, i);
        if end == i {
            return None;
        }
        i = end;
    }
    let v: f64 = s.parse().ok()?;
    (i == b.len() && v.is_finite()).then_some(v)
}

/// Strings a number check must get right: every string of up to 3
/// characters over digits, sign, dot, exponent and a space; valid numbers
/// in every form a model or a sizing step writes; and each of those with
/// one character changed, dropped or added.
fn number_candidates() -> Vec<String> {
    let alphabet = ["0", "1", "9", ".", "-", "+", "e", "E", " ", "x"];
    let mut out: Vec<String> = vec![String::new()];
    let mut level = vec![String::new()];
    for _ in 0..3 {
        level = level
            .iter()
            .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
            .collect();
        out.extend(level.iter().cloned());
    }
    // A deterministic xorshift: the same candidates in every run.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut valid = vec![
        "0.5123456716537476".to_owned(),
        "1.000".into(),
        "-0".into(),
        "0e0".into(),
        "1E+05".into(),
        "9007199254740993".into(),
        format!("0.{}", "1".repeat(299)),
        format!("0.{}", "1".repeat(298)),
        "1e308".into(),
        "1e309".into(),
        "0x1p3".into(),
        "infinity".into(),
        "1\0".into(),
    ];
    for _ in 0..200 {
        let unit = (next() >> 11) as f64 / (1u64 << 53) as f64;
        let f = unit as f32;
        let scale = 10f64.powi((next() % 13) as i32 - 6);
        valid.push(f64::from(f).to_string());
        valid.push(f.to_string());
        valid.push((unit * scale).to_string());
        valid.push(format!("{:e}", -unit * scale));
        valid.push(((next() % 2_000_000) as i64 - 1_000_000).to_string());
    }
    let changes = [b'0', b'5', b'.', b'-', b'+', b'e', b' ', b'x'];
    for v in &valid {
        let len = v.len().max(1);
        let at = (next() as usize) % len;
        let c = changes[(next() as usize) % changes.len()] as char;
        let mut replaced = v.clone();
        if at < v.len() && v.is_char_boundary(at) && v.is_char_boundary(at + 1) {
            replaced.replace_range(at..at + 1, &c.to_string());
            let mut dropped = v.clone();
            dropped.remove(at);
            out.push(dropped);
        }
        let mut added = v.clone();
        added.insert(at.min(v.len()), c);
        out.extend([replaced, added]);
    }
    out.extend(valid);
    out.sort();
    out.dedup();
    out
}

/// The guard's number checks (fast paths for the common forms, patterns for
/// the rest) accept exactly JSON's finite numbers of at most 300 characters
/// in every numeric field, `return_prob` only within [0, 1].
#[test]
fn number_checks_accept_exactly_json_numbers() {
    let (_ns, g, mut conn) = active();
    let vu = (now_ms() + 60_000).to_string();
    let candidates = number_candidates();
    assert!(candidates.len() > 4_000, "{} candidates", candidates.len());
    let (mut seq, mut accepted) = (0u64, 0usize);
    for s in &candidates {
        let value = json_number(s);
        // (index in the arguments, field, whether the value is acceptable there)
        let fields = [
            (9, "weight", value.is_some()),
            (10, "qty", value.is_some()),
            (11, "return_prob", value.is_some_and(|v| (0.0..=1.0).contains(&v))),
            (12, "risk_score", value.is_some()),
        ];
        for (index, field, ok) in fields {
            seq += 1;
            let seq_s = seq.to_string();
            let side = match value {
                Some(v) if index == 9 && v > 0.0 => "long",
                Some(v) if index == 9 && v < 0.0 => "short",
                _ if index == 9 => "flat",
                _ => "long",
            };
            let mut args = [
                seq_s.as_str(),
                "1",
                &vu,
                "100",
                "m1",
                "7",
                S,
                "EURUSD",
                side,
                "0.05",
                "1000",
                "0.6",
                "0.2",
            ];
            args[index] = s;
            match raw_publish(&mut conn, &g, &args) {
                Ok(_) if ok => accepted += 1,
                Err(ContractError::BadInput(msg)) if !ok => {
                    assert!(msg.contains(&format!("{field} must be")), "{field} {s:?}: {msg}")
                }
                other => panic!("{field} {s:?}: acceptable: {ok}, got {other:?}"),
            }
        }
    }
    assert!(accepted > 1_000, "only {accepted} accepted");
}

#[test]
fn concurrent_mode_changes_cannot_both_win() {
    let (ns, g, mut conn) = active();
    let v = g.read_mode(&mut conn, S).unwrap().version;
    let handles: Vec<_> = [OpsMode::Halted, OpsMode::Flatten]
        .into_iter()
        .map(|mode| {
            let g = g.clone();
            std::thread::spawn(move || {
                let mut conn = testutil::redis_connection();
                let change = ModeChange {
                    strategy: S,
                    expected_version: v,
                    mode,
                    reason: "race",
                    actor: "a",
                    request_id: "r",
                };
                g.set_mode(&mut conn, &change).unwrap()
            })
        })
        .collect();
    let outcomes: Vec<SetModeOutcome> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let applied = outcomes
        .iter()
        .filter(|o| matches!(o, SetModeOutcome::Applied { .. }))
        .count();
    assert_eq!(applied, 1, "{outcomes:?}");
    assert!(outcomes.contains(&SetModeOutcome::Conflict {
        current_version: v + 1
    }));
    assert_eq!(g.read_mode(&mut conn, S).unwrap().version, v + 1);
    drop(ns);
}

#[test]
fn mode_changes_are_announced_on_the_events_channel() {
    let (_ns, g, mut conn) = active();
    let client = redis::Client::open(testutil::redis_url()).unwrap();
    let mut sub_conn = client.get_connection().unwrap();
    let mut pubsub = sub_conn.as_pubsub();
    pubsub.subscribe(g.keys().events()).unwrap();
    pubsub
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    let version = set_mode(&g, &mut conn, S, OpsMode::ReduceOnly);
    let msg = pubsub.get_message().unwrap();
    let event: serde_json::Value = serde_json::from_str(&msg.get_payload::<String>().unwrap()).unwrap();
    assert_eq!(event["type"], "ops_mode");
    assert_eq!(event["strategy"], S);
    assert_eq!(event["mode"], "reduce_only");
    assert_eq!(event["version"], version);
}

#[test]
fn read_never_returns_a_signal_past_valid_until_even_before_the_key_expires() {
    let (_ns, g, mut conn) = active();
    let key = g.keys().strategy(S).sig("EURUSD");
    // A hash whose valid_until has passed but which has no TTL (as in the
    // instant between valid_until and Redis' lazy expiry).
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg(&[
            "seq",
            "1",
            "side",
            "long",
            "weight",
            "0.1",
            "qty",
            "1",
            "return_prob",
            "0.6",
            "risk_score",
            "0.1",
        ])
        .arg(&[
            "model_id",
            "m",
            "model_version",
            "1",
            "generated_at_ms",
            "1",
            "valid_until_ms",
        ])
        .arg(now_ms() - 10)
        .query(&mut conn)
        .unwrap();
    assert_eq!(g.read(&mut conn, S, "EURUSD").unwrap(), None);
}

#[test]
fn concurrent_publishers_never_let_a_lower_seq_overwrite_a_higher_one() {
    let (ns, g, mut conn) = active();
    let threads = 4;
    let per_thread = 60u64;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let g = g.clone();
            std::thread::spawn(move || {
                let mut conn = testutil::redis_connection();
                // Thread t publishes seqs t+1, t+1+threads, ... in a scrambled order.
                let mut seqs: Vec<u64> = (0..per_thread).map(|i| i * threads + t + 1).collect();
                seqs.sort_by_key(|s| (s * 7919) % 101);
                for seq in seqs {
                    g.publish(
                        &mut conn,
                        &batch(seq, vec![signal("EURUSD", 0.01 * (seq % 5 + 1) as f64)]),
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let max = per_thread * threads;
    assert_eq!(g.read(&mut conn, S, "EURUSD").unwrap().unwrap().seq, max);
    // Every accepted publish went to the stream: their seqs strictly increase.
    let seqs: Vec<u64> = stream_entries(&mut conn, &g)
        .iter()
        .map(|f| f.iter().find(|(k, _)| k == "seq").unwrap().1.parse().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "stream seqs not increasing: {seqs:?}"
    );
    assert_eq!(*seqs.last().unwrap(), max);
    drop(ns);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn any_order_of_publishes_keeps_the_highest_seq(seqs in proptest::collection::vec(1u64..50, 1..25)) {
        let (_ns, g, mut conn) = active();
        let mut best = 0u64;
        for seq in seqs {
            let out = g.publish(&mut conn, &batch(seq, vec![signal("EURUSD", 0.02)])).unwrap();
            if seq > best {
                prop_assert_eq!(out, PublishOutcome::Accepted { count: 1 });
                best = seq;
            } else {
                prop_assert_eq!(out, PublishOutcome::Stale { symbol: "EURUSD".into(), stored_seq: best });
            }
            prop_assert_eq!(g.read(&mut conn, S, "EURUSD").unwrap().unwrap().seq, best);
        }
    }

    #[test]
    fn an_expired_signal_is_never_returned(offset in prop_oneof![-5_000i64..-100, 300i64..5_000]) {
        let (_ns, g, mut conn) = active();
        let vu = (now_ms() as i64 + offset) as u64;
        let key = g.keys().strategy(S).sig("EURUSD");
        let _: () = redis::cmd("HSET").arg(&key)
            .arg(&["seq", "1", "side", "flat", "weight", "0", "qty", "0", "return_prob", "0.5", "risk_score", "0"])
            .arg(&["model_id", "m", "model_version", "1", "generated_at_ms", "1", "valid_until_ms"]).arg(vu)
            .query(&mut conn).unwrap();
        let read = g.read(&mut conn, S, "EURUSD").unwrap();
        prop_assert_eq!(read.is_some(), offset > 0);
    }
}

#[test]
fn restart_or_function_flush_reloads_the_guard_and_nothing_unguarded_gets_in() {
    let (mut server, _ns, g, mut conn) = private();
    Guard::load(&mut conn).unwrap();
    set_mode(&g, &mut conn, S, OpsMode::Active);
    assert_eq!(
        g.publish(&mut conn, &batch(1, vec![signal("EURUSD", 0.05)]))
            .unwrap()
            .label(),
        "accepted"
    );

    server.restart();
    let mut conn = server.connection();
    // The library and the ops state are gone: the publish reloads the guard,
    // which then fails closed (no ops state = halted).
    let out = g
        .publish(&mut conn, &batch(2, vec![signal("EURUSD", 0.05)]))
        .unwrap();
    assert_eq!(
        out,
        PublishOutcome::Halted {
            mode: OpsMode::Halted,
            symbol: String::new()
        }
    );
    Guard::check_version(&mut conn).unwrap();

    set_mode(&g, &mut conn, S, OpsMode::Active);
    let _: () = redis::cmd("FUNCTION").arg("FLUSH").query(&mut conn).unwrap();
    assert_eq!(
        g.publish(&mut conn, &batch(3, vec![signal("EURUSD", 0.05)]))
            .unwrap()
            .label(),
        "accepted"
    );
    assert_eq!(g.read(&mut conn, S, "EURUSD").unwrap().unwrap().seq, 3);
}

#[test]
fn pipelined_batches_get_one_outcome_each_and_reload_a_flushed_guard() {
    let (_server, _ns, g, mut conn) = private();
    Guard::load(&mut conn).unwrap();
    set_mode(&g, &mut conn, S, OpsMode::Active);
    let mut bad = batch(12, vec![signal("GBPUSD", 0.01)]);
    bad.signals[0].return_prob = 1.5;
    let batches = [
        batch(10, vec![signal("EURUSD", 0.05), signal("USDJPY", -0.02)]),
        batch(9, vec![signal("EURUSD", 0.07)]), // below the first: stale
        bad,
        batch(11, vec![signal("EURUSD", 0.03)]),
    ];
    // A flushed library is reloaded once for the whole pipeline.
    let _: () = redis::cmd("FUNCTION").arg("FLUSH").query(&mut conn).unwrap();
    let out = g.publish_many(&mut conn, &batches).unwrap();
    assert_eq!(out.len(), 4);
    assert_eq!(out[0].as_ref().unwrap(), &PublishOutcome::Accepted { count: 2 });
    assert_eq!(out[1].as_ref().unwrap().label(), "stale");
    assert!(
        matches!(&out[2], Err(ContractError::BadInput(m)) if m.contains("return_prob")),
        "{:?}",
        out[2]
    );
    assert_eq!(out[3].as_ref().unwrap(), &PublishOutcome::Accepted { count: 1 });
    let stored = g.read(&mut conn, S, "EURUSD").unwrap().unwrap();
    assert_eq!((stored.seq, stored.weight), (11, 0.03));
    assert!(
        g.read(&mut conn, S, "GBPUSD").unwrap().is_none(),
        "a refused batch writes nothing"
    );
    assert!(matches!(
        g.publish_many(&mut conn, &[batch(13, vec![])]),
        Err(ContractError::Invalid { field: "signals", .. })
    ));
}

/// A connection to `server` as user `publisher`, allowed everything but
/// the `denied` ACL rules (`-config`, ...), which `admin` sets up.
#[test]
fn a_client_that_cannot_reload_the_guard_refuses_to_publish() {
    let server = RedisServer::start();
    let ns = RedisNamespace::on(&server.url());
    let g = guard(&ns);
    let mut admin = server.connection();
    Guard::load(&mut admin).unwrap();
    set_mode(&g, &mut admin, S, OpsMode::Active);
    // A publisher allowed to call functions and read keys, but not to load functions.
    let mut publisher = limited_user(&server, &mut admin, &["-function|load", "-function|flush"]);
    assert_eq!(
        g.publish(&mut publisher, &batch(1, vec![signal("EURUSD", 0.05)]))
            .unwrap()
            .label(),
        "accepted"
    );

    let _: () = redis::cmd("FUNCTION").arg("FLUSH").query(&mut admin).unwrap();
    let err = g
        .publish(&mut publisher, &batch(2, vec![signal("EURUSD", 0.07)]))
        .unwrap_err();
    assert!(matches!(err, ContractError::GuardMissing { .. }), "{err:?}");
    assert_eq!(
        g.high_water_mark(&mut admin, S).unwrap(),
        1,
        "nothing was written"
    );
    let weight: String = redis::cmd("HGET")
        .arg(g.keys().strategy(S).sig("EURUSD"))
        .arg("weight")
        .query(&mut admin)
        .unwrap();
    assert_eq!(weight, "0.05");
}

#[test]
fn a_three_master_cluster_serves_strategies_in_different_slots() {
    let cluster = RedisCluster::start();
    let client = redis::cluster::ClusterClient::new(cluster.urls()).unwrap();
    let mut conn = client.get_connection().unwrap();
    Guard::load(&mut conn).unwrap();
    // The library is on every master.
    for node in &cluster.nodes {
        Guard::check_version(&mut node.connection()).unwrap();
    }
    let g = Guard::new(Keys::new("mlcore"), 1000);
    // Strategies whose hash tags land on different masters.
    let strategies = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
    for s in strategies {
        set_mode(&g, &mut conn, s, OpsMode::Active);
        let mut b = batch(1, vec![signal("EURUSD", 0.05), signal("USDJPY", -0.02)]);
        b.strategy = s.into();
        assert_eq!(
            g.publish(&mut conn, &b).unwrap(),
            PublishOutcome::Accepted { count: 2 },
            "{s}"
        );
        assert_eq!(g.read(&mut conn, s, "USDJPY").unwrap().unwrap().weight, -0.02);
        set_mode(&g, &mut conn, s, OpsMode::Halted);
        b.seq = 2;
        assert_eq!(g.publish(&mut conn, &b).unwrap().label(), "halted");
    }
    // The strategies' keys are spread over several masters.
    let holding = cluster
        .nodes
        .iter()
        .filter(|n| redis::cmd("DBSIZE").query::<u64>(&mut n.connection()).unwrap() > 0)
        .count();
    // CRC16 slots: alpha 865, charlie 1769, foxtrot 3172 | bravo 8623,
    // delta 9053 | echo 14438 — one group per master of a 3-master split.
    assert_eq!(holding, 3, "strategies should spread over all three masters");

    // Batches of strategies on different masters in one call, and a
    // heartbeat (keys in different slots): a Cluster connection cannot
    // pipeline across nodes, so these go one by one.
    let batches: Vec<SignalBatch> = ["alpha", "bravo"]
        .iter()
        .map(|s| {
            set_mode(&g, &mut conn, s, OpsMode::Active);
            let mut b = batch(3, vec![signal("EURUSD", 0.01)]);
            b.strategy = (*s).into();
            b
        })
        .collect();
    let out = g.publish_many(&mut conn, &batches).unwrap();
    assert!(
        out.iter().all(|o| o.as_ref().unwrap().label() == "accepted"),
        "{out:?}"
    );
    let hb = testutil::heartbeat("daemon-c", now_ms());
    hb.write(&mut conn, g.keys(), 5_000).unwrap();
    assert!(mlcore_contract::Heartbeat::read(&mut conn, g.keys(), "daemon-c")
        .unwrap()
        .is_some());
}

#[test]
fn keys_that_do_not_match_the_strategy_or_symbol_are_refused() {
    let (ns, g, mut conn) = active();
    let other = g.keys().strategy("other");
    let mine = g.keys().strategy(S);
    let vu = (now_ms() + 60_000).to_string();
    let args = [
        "1",
        "1",
        vu.as_str(),
        "100",
        "m1",
        "7",
        S,
        "EURUSD",
        "long",
        "0.05",
        "1000",
        "0.6",
        "0.2",
    ];
    let attempts = [
        // Another strategy's ops key: its mode would gate our signal.
        [
            other.ops.clone(),
            mine.hwm.clone(),
            mine.signals.clone(),
            mine.sig("EURUSD"),
        ],
        // Our ops key but another symbol's signal key.
        [
            mine.ops.clone(),
            mine.hwm.clone(),
            mine.signals.clone(),
            mine.sig("USDJPY"),
        ],
    ];
    for keys in attempts {
        let err = redis::cmd("FCALL")
            .arg("mlcore_publish_v2")
            .arg(4)
            .arg(&keys)
            .arg(&args)
            .query::<redis::Value>(&mut conn)
            .unwrap_err();
        assert_eq!(err.code(), Some("BADINPUT"), "{err}");
    }
    let dup = g
        .publish(
            &mut conn,
            &batch(1, vec![signal("EURUSD", 0.05), signal("EURUSD", 0.06)]),
        )
        .unwrap_err();
    assert!(
        matches!(&dup, ContractError::BadInput(m) if m.contains("twice")),
        "{dup:?}"
    );
    assert_eq!(key_count(&mut conn, &ns), 1, "only the ops key exists");
}

/// A raw guard call for two symbols: `publish` or, with `many`, a
/// `publish_many` of one decision.
fn two_symbol_call(many: bool, keys: &[String], symbols: [&str; 2], strategy: &str, seq: u64) -> redis::Cmd {
    let vu = now_ms() + 60_000;
    let mut cmd = redis::cmd("FCALL");
    cmd.arg(if many {
        "mlcore_publish_many_v2"
    } else {
        "mlcore_publish_v2"
    })
    .arg(keys.len())
    .arg(keys);
    if many {
        cmd.arg(1);
    }
    cmd.arg(seq)
        .arg(now_ms())
        .arg(vu)
        .arg(100)
        .arg("m1")
        .arg(7)
        .arg(strategy);
    for sym in symbols {
        cmd.arg(sym)
            .arg("long")
            .arg("0.05")
            .arg("1000")
            .arg("0.6")
            .arg("0.2");
    }
    cmd
}

/// The guard remembers the layouts (keys, strategy, symbols) it accepted, to
/// skip checking them again; a call that differs in any of them is checked in
/// full, in both publish functions, and a layout forgotten when the memory
/// starts over is checked again.
#[test]
fn a_remembered_layout_never_lets_a_changed_one_through() {
    let (ns, g, mut conn) = active();
    let mine = g.keys().strategy(S);
    let other = g.keys().strategy("other");
    let good = vec![
        mine.ops.clone(),
        mine.hwm.clone(),
        mine.signals.clone(),
        mine.sig("EURUSD"),
        mine.sig("USDJPY"),
    ];
    let with = |i: usize, key: String| {
        let mut k = good.clone();
        k[i] = key;
        k
    };
    let accept = |conn: &mut redis::Connection, many: bool, seq: &mut u64| {
        *seq += 1;
        let v: redis::Value = two_symbol_call(many, &good, ["EURUSD", "USDJPY"], S, *seq)
            .query(conn)
            .unwrap();
        assert!(format!("{v:?}").contains("ok"), "{v:?}");
    };
    type Case = (Vec<String>, [&'static str; 2], &'static str, &'static str);
    let changed: Vec<Case> = vec![
        (
            with(4, mine.sig("GBPUSD")),
            ["EURUSD", "USDJPY"],
            S,
            "is not the signal key",
        ),
        (good.clone(), ["EURUSD", "GBPUSD"], S, "is not the signal key"),
        (
            good.clone(),
            ["EURUSD", "USDJPY"],
            "other",
            "is not strategy other",
        ),
        (
            with(1, other.hwm.clone()),
            ["EURUSD", "USDJPY"],
            S,
            "do not match",
        ),
        (with(4, mine.sig("EURUSD")), ["EURUSD", "EURUSD"], S, "twice"),
    ];
    let mut seq = 0;
    for many in [false, true] {
        for (keys, symbols, strategy, why) in &changed {
            accept(&mut conn, many, &mut seq);
            let err = two_symbol_call(many, keys, *symbols, strategy, seq + 1)
                .query::<redis::Value>(&mut conn)
                .unwrap_err();
            assert_eq!(err.code(), Some("BADINPUT"), "{keys:?} {symbols:?}: {err}");
            assert!(err.to_string().contains(why), "{keys:?} {symbols:?}: {err}");
        }
    }
    let hwm: Vec<Option<u64>> = redis::cmd("HMGET")
        .arg(&mine.hwm)
        .arg(&["EURUSD", "USDJPY", "GBPUSD"])
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        hwm,
        vec![Some(seq), Some(seq), None],
        "only the good layout wrote"
    );
    let entries: u64 = redis::cmd("XLEN").arg(&mine.signals).query(&mut conn).unwrap();
    assert_eq!(entries, seq);

    // More layouts than the guard keeps: the memory starts over, and the
    // first layout is checked (and refused when changed) as before.
    for k in 0..70 {
        let strategy = format!("churn{k}");
        set_mode(&g, &mut conn, &strategy, OpsMode::Active);
        let mut b = batch(1, vec![signal("EURUSD", 0.05)]);
        b.strategy = strategy;
        assert_eq!(
            g.publish(&mut conn, &b).unwrap(),
            PublishOutcome::Accepted { count: 1 }
        );
    }
    accept(&mut conn, false, &mut seq);
    let (keys, symbols, strategy, why) = &changed[1];
    let err = two_symbol_call(false, keys, *symbols, strategy, seq + 1)
        .query::<redis::Value>(&mut conn)
        .unwrap_err();
    assert!(err.to_string().contains(why), "{err}");
    drop(ns);
}

#[test]
fn heartbeat_round_trips_and_expires() {
    let ns = RedisNamespace::new();
    let keys = Keys::new(&ns.ns);
    let mut conn = testutil::redis_connection();
    let hb = mlcore_contract::Heartbeat {
        instance: "daemon-t".into(),
        status: "ok".into(),
        at_ms: now_ms(),
        last_decision_ms: now_ms() - 5,
        p99_us: 850,
        decisions: 10,
        signals_accepted: 320,
        decisions_dropped: 0,
        refused_artifacts: 0,
        models: [("fx_g10".to_owned(), "m1@7".to_owned())].into(),
        modes: [("fx_g10".to_owned(), "active".to_owned())].into(),
        refusals: [(
            "fx_g10".to_owned(),
            mlcore_contract::ModelRefusal {
                version: 8,
                manifest_sha256: Some("ab".repeat(32)),
                reason: "signature: unknown key".into(),
                at_ms: now_ms(),
            },
        )]
        .into(),
        config: mlcore_contract::heartbeat::ConfigReport {
            version: "ab12".into(),
            since_ms: 7,
            restart_required: vec!["redis.yaml: url".into()],
            refused: Some(mlcore_contract::heartbeat::ConfigRefusal {
                version: "cd34".into(),
                reason: "CONFIG_SECRET_UNSET".into(),
                at_ms: 9,
            }),
        },
    };
    hb.write(&mut conn, &keys, 300).unwrap();
    let read = mlcore_contract::Heartbeat::read(&mut conn, &keys, "daemon-t").unwrap();
    assert_eq!(read.as_ref(), Some(&hb));
    let known = mlcore_contract::Heartbeat::known_instances(&mut conn, &keys).unwrap();
    assert_eq!(known, vec![("daemon-t".to_owned(), hb.at_ms)]);
    std::thread::sleep(std::time::Duration::from_millis(450));
    assert_eq!(
        mlcore_contract::Heartbeat::read(&mut conn, &keys, "daemon-t").unwrap(),
        None
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Folding consecutive decisions into one guard call is invisible: the
    /// outcomes and everything a consumer can see are those of publishing
    /// the decisions one by one, in every mode, with stale, expired and
    /// malformed decisions mixed in, across the fold limit.
    #[test]
    fn folded_decisions_leave_what_one_by_one_publishes_leave(
        mode in prop_oneof![Just(OpsMode::Active), Just(OpsMode::ReduceOnly), Just(OpsMode::Flatten), Just(OpsMode::Halted)],
        gens in proptest::collection::vec(decision_gen(), 1..12),
    ) {
        let server = RedisServer::start();
        let mut conn = server.connection();
        Guard::load(&mut conn).unwrap();
        let batches = generated_batches(&gens);
        let start = batch(5, SYMBOLS.iter().zip([0.04, -0.04, 0.0]).map(|(s, w)| signal(s, w)).collect());
        let mut runs = Vec::new();
        for folded in [false, true] {
            let ns = RedisNamespace::on(&server.url());
            let g = guard(&ns);
            set_mode(&g, &mut conn, S, OpsMode::Active);
            prop_assert_eq!(g.publish(&mut conn, &start).unwrap().label(), "accepted");
            set_mode(&g, &mut conn, S, mode);
            let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut conn).unwrap();
            let outcomes: Vec<String> = if folded {
                g.publish_many(&mut conn, &batches).unwrap().iter().map(comparable).collect()
            } else {
                batches.iter().map(|b| comparable(&g.publish(&mut conn, b))).collect()
            };
            let calls = testutil::command_stats(&mut conn, "fcall").calls;
            runs.push((outcomes, visible(&mut conn, &g, &SYMBOLS), calls));
        }
        let (one_by_one, folded) = (&runs[0], &runs[1]);
        prop_assert_eq!(&folded.0, &one_by_one.0, "outcomes");
        prop_assert_eq!(&folded.1, &one_by_one.1, "what consumers see");
        prop_assert_eq!(one_by_one.2, batches.len() as u64);
        prop_assert_eq!(folded.2, batches.len().div_ceil(MAX_DECISIONS_PER_CALL) as u64, "guard calls when folded");
    }
}

/// Sends a hand-made `mlcore_publish_many_v2` for EURUSD.
fn raw_publish_many(
    conn: &mut redis::Connection,
    g: &Guard,
    count: &str,
    blocks: &[Vec<String>],
) -> redis::RedisResult<redis::Value> {
    let mut cmd = eurusd_fcall(g, "mlcore_publish_many_v2");
    cmd.arg(count);
    for b in blocks {
        cmd.arg(b);
    }
    cmd.query(conn)
}

#[test]
fn publish_many_refuses_a_malformed_call_whole_and_a_malformed_decision_alone() {
    let (ns, g, mut conn) = active();
    let before = key_count(&mut conn, &ns);
    let vu = (now_ms() + 60_000).to_string();
    let block = |seq: &str, strategy: &str, symbol: &str| -> Vec<String> {
        [
            seq, "1", &vu, "100", "m1", "7", strategy, symbol, "long", "0.05", "1000", "0.6", "0.2",
        ]
        .map(String::from)
        .to_vec()
    };
    let whole_call_refusals: Vec<(&str, Vec<Vec<String>>, &str)> = vec![
        (
            "0",
            vec![block("1", S, "EURUSD")],
            "count must be a positive integer",
        ),
        (
            "2",
            vec![block("1", S, "EURUSD")],
            "expected 2 decisions of 13 fields",
        ),
        (
            "2",
            vec![block("1", S, "GBPUSD"), block("2", S, "GBPUSD")],
            "decision 1: signal 1 (GBPUSD): key",
        ),
        (
            "2",
            vec![block("1", "other", "EURUSD"), block("2", S, "EURUSD")],
            "decision 1: ops key",
        ),
    ];
    for (count, blocks, expected) in whole_call_refusals {
        let err = raw_publish_many(&mut conn, &g, count, &blocks).unwrap_err();
        assert_eq!(err.code(), Some("BADINPUT"), "{err}");
        assert!(
            err.detail().unwrap_or_default().contains(expected),
            "{expected}: {err}"
        );
    }
    assert_eq!(key_count(&mut conn, &ns), before, "a refused call writes nothing");

    // Decisions 2-4 are malformed (another symbol, another strategy, a
    // probability out of range); 1 and 5 go through, as separate calls would.
    let mut bad_prob = block("4", S, "EURUSD");
    bad_prob[11] = "1.5".into();
    let blocks = vec![
        block("1", S, "EURUSD"),
        block("2", S, "GBPUSD"),
        block("3", "other", "EURUSD"),
        bad_prob,
        block("5", S, "EURUSD"),
    ];
    let reply = raw_publish_many(&mut conn, &g, "5", &blocks).unwrap();
    let replies: Vec<Vec<String>> = redis::from_redis_value_ref::<Vec<redis::Value>>(&reply)
        .unwrap()
        .iter()
        .map(|r| {
            redis::from_redis_value_ref::<Vec<redis::Value>>(r)
                .unwrap()
                .iter()
                .map(|v| redis::from_redis_value_ref::<String>(v).unwrap())
                .collect()
        })
        .collect();
    assert_eq!(replies[0], ["ok", "1"]);
    assert_eq!(replies[1][0], "bad_input");
    assert!(
        replies[1][1].contains("signal 1 (GBPUSD): symbol differs from the first decision's EURUSD"),
        "{replies:?}"
    );
    assert!(replies[2][1].contains("strategy other differs"), "{replies:?}");
    assert!(
        replies[3][1].contains("return_prob must be a JSON number in [0, 1]"),
        "{replies:?}"
    );
    assert_eq!(replies[4], ["ok", "1"]);
    assert_eq!(replies.len(), 5);
    assert_eq!(g.read(&mut conn, S, "EURUSD").unwrap().unwrap().seq, 5);
    let entries: usize = redis::cmd("XLEN")
        .arg(g.keys().strategy(S).signals)
        .query(&mut conn)
        .unwrap();
    assert_eq!(entries, 2, "one stream entry per accepted decision");
}

#[test]
fn an_older_guard_library_is_upgraded_and_only_the_calls_that_failed_are_retried() {
    let (_server, _ns, g, mut conn) = private();
    // Revision 1 of v2: the same library without `mlcore_publish_many_v2`.
    let registration =
        "redis.register_function { function_name = 'mlcore_publish_many_v2', callback = publish_many }\n";
    assert!(mlcore_contract::guard::SOURCE.contains(registration));
    let older = mlcore_contract::guard::SOURCE.replace(registration, "").replace(
        &format!("local REVISION = {}", mlcore_contract::guard::REVISION),
        "local REVISION = 1",
    );
    let _: () = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(&older)
        .query(&mut conn)
        .unwrap();
    assert!(
        Guard::check_version(&mut conn).is_err(),
        "revision 1 is older than this client"
    );
    set_mode(&g, &mut conn, S, OpsMode::Active);
    // One call the old library runs (a lone decision) and one it cannot (two
    // decisions folded): only the second is retried after the upgrade, so
    // the first is not refused as stale by its own earlier run.
    let batches = [
        batch(1, vec![signal("EURUSD", 0.05)]),
        batch(2, vec![signal("EURUSD", 0.04), signal("USDJPY", -0.02)]),
        batch(3, vec![signal("EURUSD", 0.03), signal("USDJPY", -0.01)]),
    ];
    let out = g.publish_many(&mut conn, &batches).unwrap();
    let labels: Vec<&str> = out.iter().map(|o| o.as_ref().unwrap().label()).collect();
    assert_eq!(labels, ["accepted", "accepted", "accepted"]);
    Guard::check_version(&mut conn).unwrap();
    let entries: usize = redis::cmd("XLEN")
        .arg(g.keys().strategy(S).signals)
        .query(&mut conn)
        .unwrap();
    assert_eq!(entries, 3);
    assert_eq!(g.read(&mut conn, S, "USDJPY").unwrap().unwrap().weight, -0.01);
}

/// Every key of strategy `S`'s namespace with its type, serialised value
/// and expiry: what a refused call must leave exactly as it was.
fn snapshot(conn: &mut redis::Connection, ns: &RedisNamespace) -> Vec<(String, String, Vec<u8>, i64)> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", ns.ns))
        .query(conn)
        .unwrap();
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let t: String = redis::cmd("TYPE").arg(&k).query(conn).unwrap();
            let dump: Vec<u8> = redis::cmd("DUMP").arg(&k).query(conn).unwrap();
            let pttl: i64 = redis::cmd("PEXPIRETIME").arg(&k).query(conn).unwrap();
            (k, t, dump, pttl)
        })
        .collect()
}

/// The arguments of one valid three-signal decision with sequence `seq`.
fn decision_args(seq: u64) -> Vec<String> {
    let vu = (now_ms() + 60_000).to_string();
    let mut args: Vec<String> = [&seq.to_string(), "1", &vu, "100", "m1", "7", S]
        .map(String::from)
        .to_vec();
    for (sym, w) in SYMBOLS.iter().zip(["0.05", "-0.03", "0"]) {
        let side = if w.starts_with('-') {
            "short"
        } else if w == "0" {
            "flat"
        } else {
            "long"
        };
        args.extend([*sym, side, w, "1000", "0.6", "0.2"].map(String::from));
    }
    args
}

/// A hand-made call of `function` over strategy `S`'s keys and `SYMBOLS`.
fn three_symbol_call(g: &Guard, function: &str, args: &[String]) -> redis::Cmd {
    let keys = g.keys().strategy(S);
    let mut cmd = redis::cmd("FCALL");
    cmd.arg(function)
        .arg(3 + SYMBOLS.len())
        .arg(&keys.ops)
        .arg(&keys.hwm)
        .arg(&keys.signals);
    for s in SYMBOLS {
        cmd.arg(keys.sig(s));
    }
    cmd.arg(args);
    cmd
}

/// Redis does not roll a function back, so the guard checks everything
/// that could make a write fail before its first write. Each key the guard
/// touches is broken in turn (another type in its place; a stream with no
/// IDs left), and each argument position of a call is broken in turn
/// (empty, missing, one too many): every such call is refused with a
/// readable error and leaves every key of the namespace — types, values,
/// expiries — exactly as it was. (Before, a signal key holding a string
/// failed the call after the signal hashes before it were overwritten, and
/// a stream key of another type after the hashes and marks were written.)
#[test]
fn a_refused_call_leaves_every_key_exactly_as_it_was() {
    let (server, ns, g, mut conn) = private();
    let _ = &server;
    Guard::load(&mut conn).unwrap();
    set_mode(&g, &mut conn, S, OpsMode::Active);
    let keys = g.keys().strategy(S);
    let accepted = three_symbol_call(&g, "mlcore_publish_v2", &decision_args(10))
        .query::<redis::Value>(&mut conn)
        .unwrap();
    assert!(format!("{accepted:?}").contains("ok"), "{accepted:?}");
    let refused = |conn: &mut redis::Connection, cmd: &redis::Cmd| -> String {
        match cmd.query::<redis::Value>(conn) {
            Err(e) if e.code() == Some("BADINPUT") => e.detail().unwrap_or_default().to_owned(),
            other => panic!("expected a BADINPUT refusal, got {other:?}"),
        }
    };
    let many_args = |seq: u64| {
        let mut a = vec!["2".to_owned()];
        a.extend(decision_args(seq));
        a.extend(decision_args(seq + 1));
        a
    };

    // 1. Every key, of another type.
    let mut wrong_type: Vec<String> = vec![keys.ops.clone(), keys.hwm.clone(), keys.signals.clone()];
    wrong_type.extend(SYMBOLS.iter().map(|s| keys.sig(s)));
    for (i, key) in wrong_type.iter().enumerate() {
        let saved: Vec<u8> = redis::cmd("DUMP").arg(key).query(&mut conn).unwrap();
        let _: () = redis::cmd("DEL").arg(key).query(&mut conn).unwrap();
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("intruder")
            .query(&mut conn)
            .unwrap();
        let before = snapshot(&mut conn, &ns);
        for (function, args) in [
            ("mlcore_publish_v2", decision_args(20 + i as u64)),
            ("mlcore_publish_many_v2", many_args(40 + 2 * i as u64)),
        ] {
            let why = refused(&mut conn, &three_symbol_call(&g, function, &args));
            assert!(
                why.contains(key) && why.contains("holds a string"),
                "{function}, {key}: {why}"
            );
            assert_eq!(
                snapshot(&mut conn, &ns),
                before,
                "{function} with {key} a string changed something"
            );
        }
        if i == 0 {
            let change = ModeChange {
                strategy: S,
                expected_version: 1,
                mode: OpsMode::Halted,
                reason: "r",
                actor: "a",
                request_id: "q",
            };
            let err = g.set_mode(&mut conn, &change).unwrap_err().to_string();
            assert!(err.contains("holds a string"), "{err}");
            assert_eq!(snapshot(&mut conn, &ns), before, "set_mode changed something");
        }
        let _: () = redis::cmd("DEL").arg(key).query(&mut conn).unwrap();
        let _: () = redis::cmd("RESTORE")
            .arg(key)
            .arg(0)
            .arg(saved)
            .query(&mut conn)
            .unwrap();
    }

    // 2. A stream with no IDs left for `XADD *`.
    let saved: Vec<u8> = redis::cmd("DUMP").arg(&keys.signals).query(&mut conn).unwrap();
    let _: () = redis::cmd("DEL").arg(&keys.signals).query(&mut conn).unwrap();
    let _: String = redis::cmd("XADD")
        .arg(&keys.signals)
        .arg("18446744073709551615-7")
        .arg("f")
        .arg("v")
        .query(&mut conn)
        .unwrap();
    let before = snapshot(&mut conn, &ns);
    let why = refused(
        &mut conn,
        &three_symbol_call(&g, "mlcore_publish_v2", &decision_args(60)),
    );
    assert!(why.contains("no stream IDs left"), "{why}");
    assert_eq!(snapshot(&mut conn, &ns), before);
    let _: () = redis::cmd("DEL").arg(&keys.signals).query(&mut conn).unwrap();
    let _: () = redis::cmd("RESTORE")
        .arg(&keys.signals)
        .arg(0)
        .arg(saved)
        .query(&mut conn)
        .unwrap();

    // 3. Every argument position: empty; and the call one argument short
    //    or long.
    let before = snapshot(&mut conn, &ns);
    let good = decision_args(70);
    for i in 0..good.len() {
        let mut args = good.clone();
        args[i] = String::new();
        let why = refused(&mut conn, &three_symbol_call(&g, "mlcore_publish_v2", &args));
        assert!(!why.is_empty(), "argument {i}");
        assert_eq!(
            snapshot(&mut conn, &ns),
            before,
            "argument {i} empty changed something"
        );
        // In a many call, a malformed decision is refused on its own
        // (`bad_input`; the others go on, as separate calls would), unless
        // it breaks the call's layout (strategy, symbols): then the whole
        // call is refused and nothing changes.
        for d in 0..2 {
            let mut many = many_args(80);
            many[1 + d * good.len() + i] = String::new();
            match three_symbol_call(&g, "mlcore_publish_many_v2", &many).query::<redis::Value>(&mut conn) {
                Err(e) => {
                    assert_eq!(e.code(), Some("BADINPUT"), "decision {d}, argument {i}: {e}");
                    assert_eq!(
                        snapshot(&mut conn, &ns),
                        before,
                        "decision {d}, argument {i} changed something"
                    );
                }
                Ok(v) => assert!(
                    format!("{v:?}").contains("bad_input"),
                    "decision {d}, argument {i}: {v:?}"
                ),
            }
            let _: () = redis::cmd("DEL")
                .arg(ns_keys(&mut conn, &ns))
                .query(&mut conn)
                .unwrap();
            restore(&mut conn, &before);
        }
    }
    let mut short = good.clone();
    short.pop();
    let mut long = good.clone();
    long.push("0".into());
    for args in [short, long] {
        let why = refused(&mut conn, &three_symbol_call(&g, "mlcore_publish_v2", &args));
        assert!(why.contains("signal fields"), "{why}");
    }
    for count in ["", "0", "3", "x"] {
        let mut many = many_args(90);
        many[0] = count.into();
        refused(&mut conn, &three_symbol_call(&g, "mlcore_publish_many_v2", &many));
    }
    assert_eq!(
        snapshot(&mut conn, &ns),
        before,
        "a refused call changed something"
    );
}

fn ns_keys(conn: &mut redis::Connection, ns: &RedisNamespace) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(format!("{}:*", ns.ns))
        .query(conn)
        .unwrap()
}

/// Puts back every key of `snapshot` as it was (the namespace emptied first).
fn restore(conn: &mut redis::Connection, snapshot: &[(String, String, Vec<u8>, i64)]) {
    for (k, _, dump, expire_at) in snapshot {
        let mut cmd = redis::cmd("RESTORE");
        cmd.arg(k)
            .arg(if *expire_at > 0 { *expire_at } else { 0 })
            .arg(dump.as_slice());
        if *expire_at > 0 {
            cmd.arg("ABSTTL");
        }
        let _: () = cmd.query(conn).unwrap();
    }
}
