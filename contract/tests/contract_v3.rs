//! Contract v3 against a real Redis: one snapshot per strategy, binary
//! records, every guarantee of v2 (ordering with a persistent mark taken
//! over from v2, expiry on Redis' clock, fail-closed modes, all or nothing,
//! readable refusals), the migration (both libraries, reads of the newer,
//! v2 removed) and a real Cluster.

#![allow(clippy::unwrap_used)] // fixture helpers outside #[test] fns: a broken fixture should panic

use mlcore_contract::guard::{ContractVersion, RECORD_BYTES};
use mlcore_contract::{
    ContractError, Guard, Keys, ModeChange, OpsMode, PublishOutcome, SetModeOutcome, Side, SignalBatch,
};
use mlcore_testkit::signals::*;
use mlcore_testkit::{RedisCluster, RedisNamespace};

fn v3(g: Guard) -> Guard {
    g.with_contract(ContractVersion::V3)
}

/// An active strategy `S` on the shared Redis, with a v3 guard client.
fn active_v3() -> (RedisNamespace, Guard, redis::Connection) {
    let (ns, g, conn) = active();
    (ns, v3(g), conn)
}

fn three(seq: u64) -> SignalBatch {
    batch(
        seq,
        vec![
            signal("EURUSD", 0.05),
            signal("USDJPY", -0.03),
            signal("GBPUSD", 0.0),
        ],
    )
}

/// Every key of the namespace with its type, value dump and expiry.
fn dump(conn: &mut redis::Connection, ns: &RedisNamespace) -> Vec<(String, Vec<u8>, i64)> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", ns.ns))
        .query(conn)
        .unwrap();
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let bytes: Vec<u8> = redis::cmd("DUMP").arg(&k).query(conn).unwrap();
            let ttl: i64 = redis::cmd("PEXPIRETIME").arg(&k).query(conn).unwrap();
            (k, bytes, ttl)
        })
        .collect()
}

#[test]
fn a_decision_is_one_snapshot_read_per_symbol_and_one_stream_entry() {
    let (ns, g, mut conn) = active_v3();
    let mut b = three(1);
    b.signals[0].return_prob = f64::from(0.637_f32);
    assert_eq!(
        g.publish(&mut conn, &b).unwrap(),
        PublishOutcome::Accepted { count: 3 }
    );
    let s = g.read(&mut conn, S, "USDJPY").unwrap().unwrap();
    assert_eq!(
        (
            s.seq,
            s.side,
            s.weight,
            s.qty,
            s.model_id.as_str(),
            s.model_version
        ),
        (1, Side::Short, -0.03, -30_000.0, "m1", 7)
    );
    assert_eq!(
        (s.generated_at_ms, s.valid_until_ms),
        (b.generated_at_ms, b.valid_until_ms)
    );
    let e = g.read(&mut conn, S, "EURUSD").unwrap().unwrap();
    assert_eq!(e.return_prob, f64::from(0.637_f32), "an f32 output exactly");
    assert_eq!(e.risk_score, f64::from(0.2_f32));
    assert!(
        g.read(&mut conn, S, "AUDUSD").unwrap().is_none(),
        "not in the snapshot"
    );

    let keys = g.keys().strategy(S);
    let fields: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
        .arg(&keys.snapshot)
        .query(&mut conn)
        .unwrap();
    let fields: std::collections::BTreeMap<String, Vec<u8>> = fields.into_iter().collect();
    let names: Vec<&str> = fields.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "generated_at_ms",
            "model_id",
            "model_version",
            "records",
            "seq",
            "symbols",
            "valid_until_ms"
        ]
    );
    assert_eq!(fields["symbols"], b"EURUSD,USDJPY,GBPUSD");
    let records = &fields["records"];
    assert_eq!(records.len(), 3 * RECORD_BYTES);
    assert_eq!(
        f64::from_le_bytes(records[RECORD_BYTES..RECORD_BYTES + 8].try_into().unwrap()),
        -0.03,
        "USDJPY's weight"
    );
    let expires: i64 = redis::cmd("PEXPIRETIME")
        .arg(&keys.snapshot)
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        expires as u64, b.valid_until_ms,
        "the snapshot expires at valid_until"
    );
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&keys.stream_v3)
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .unwrap();
    assert_eq!(entries.ids.len(), 1);
    let entry = &entries.ids[0];
    assert_eq!(entry.get::<String>("symbols").unwrap(), "EURUSD,USDJPY,GBPUSD");
    assert_eq!(&entry.get::<Vec<u8>>("records").unwrap(), records);
    assert!(entry.get::<u64>("written_at_us").unwrap() > 0);
    // Nothing of v2 was written.
    let v2: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*:sig:*", ns.ns))
        .query(&mut conn)
        .unwrap();
    assert!(v2.is_empty(), "{v2:?}");
    assert_eq!(g.high_water_mark(&mut conn, S).unwrap(), 1);
}

#[test]
fn order_expiry_and_the_mark_taken_over_from_v2() {
    let (ns, g2, mut conn) = active();
    let g = v3(g2.clone());
    // v2 published up to 100: v3 starts above it.
    assert_eq!(g2.publish(&mut conn, &three(100)).unwrap().label(), "accepted");
    assert_eq!(
        g.publish(&mut conn, &three(50)).unwrap(),
        PublishOutcome::Stale {
            symbol: String::new(),
            stored_seq: 100
        }
    );
    assert_eq!(g.publish(&mut conn, &three(101)).unwrap().label(), "accepted");
    assert_eq!(g.publish(&mut conn, &three(101)).unwrap().label(), "stale");
    // The mark outlives the snapshot.
    let keys = g.keys().strategy(S);
    redis::cmd("DEL").arg(&keys.snapshot).exec(&mut conn).unwrap();
    assert_eq!(g.publish(&mut conn, &three(90)).unwrap().label(), "stale");
    // Expired on Redis' clock: refused, nothing written.
    let before = dump(&mut conn, &ns);
    let mut old = three(200);
    old.valid_until_ms = now_ms() - 1;
    assert!(matches!(
        g.publish(&mut conn, &old).unwrap(),
        PublishOutcome::Expired { .. }
    ));
    assert_eq!(dump(&mut conn, &ns), before);

    // Several decisions in one call, one stale among them: each judged as
    // its own call, the snapshot the last accepted.
    let batches = [three(300), three(250), three(301)];
    let out: Vec<&'static str> = g
        .publish_many(&mut conn, &batches)
        .unwrap()
        .into_iter()
        .map(|o| o.unwrap().label())
        .collect();
    assert_eq!(out, ["accepted", "stale", "accepted"]);
    assert_eq!(g.read(&mut conn, S, "EURUSD").unwrap().unwrap().seq, 301);
    let len: u64 = redis::cmd("XLEN").arg(&keys.stream_v3).query(&mut conn).unwrap();
    assert_eq!(len, 3, "101, 300 and 301");
}

#[test]
fn the_snapshot_is_replaced_whole_and_expires_with_its_decision() {
    let (_ns, g, mut conn) = active_v3();
    let mut first = three(1);
    first.model_id = "m-old".into();
    g.publish(&mut conn, &first).unwrap();
    // The next decision carries other symbols: none of the first survives.
    let mut next = batch(2, vec![signal("AUDUSD", 0.01)]);
    next.valid_until_ms = now_ms() + 300;
    assert_eq!(g.publish(&mut conn, &next).unwrap().label(), "accepted");
    assert!(g.read(&mut conn, S, "EURUSD").unwrap().is_none(), "superseded");
    assert_eq!(g.read(&mut conn, S, "AUDUSD").unwrap().unwrap().model_id, "m1");
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert!(g.read(&mut conn, S, "AUDUSD").unwrap().is_none(), "expired");
    let raw: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
        .arg(g.keys().strategy(S).snapshot)
        .query(&mut conn)
        .unwrap();
    assert!(raw.is_empty(), "a plain read cannot see it either");
}

#[test]
fn modes_are_enforced_inside_redis_and_fail_closed() {
    let (ns, g, mut conn) = active_v3();
    let strategy_keys = g.keys().strategy(S);
    g.publish(
        &mut conn,
        &batch(1, vec![signal("EURUSD", 0.05), signal("USDJPY", -0.03)]),
    )
    .unwrap();

    set_mode(&g, &mut conn, S, OpsMode::ReduceOnly);
    let out = |g: &Guard, conn: &mut redis::Connection, seq, w: [f64; 2]| {
        g.publish(
            conn,
            &batch(seq, vec![signal("EURUSD", w[0]), signal("USDJPY", w[1])]),
        )
        .unwrap()
    };
    assert_eq!(
        out(&g, &mut conn, 2, [0.02, -0.03]).label(),
        "accepted",
        "shrinks"
    );
    assert_eq!(
        out(&g, &mut conn, 3, [0.03, -0.03]),
        PublishOutcome::Halted {
            mode: OpsMode::ReduceOnly,
            symbol: "EURUSD".into()
        },
        "grows from 0.02"
    );
    assert_eq!(
        out(&g, &mut conn, 4, [0.01, 0.01]),
        PublishOutcome::Halted {
            mode: OpsMode::ReduceOnly,
            symbol: "USDJPY".into()
        },
        "flips"
    );
    set_mode(&g, &mut conn, S, OpsMode::Flatten);
    assert_eq!(out(&g, &mut conn, 5, [0.01, 0.0]).label(), "halted");
    assert_eq!(out(&g, &mut conn, 6, [0.0, 0.0]).label(), "accepted");
    set_mode(&g, &mut conn, S, OpsMode::Halted);
    let before = dump(&mut conn, &ns);
    assert_eq!(out(&g, &mut conn, 7, [0.0, 0.0]).label(), "halted");
    assert_eq!(dump(&mut conn, &ns), before, "halted writes nothing");
    // Absent or garbled ops state: halted.
    redis::cmd("HSET")
        .arg(&strategy_keys.ops)
        .arg("mode")
        .arg("sideways")
        .exec(&mut conn)
        .unwrap();
    assert_eq!(out(&g, &mut conn, 8, [0.0, 0.0]).label(), "halted");
    redis::cmd("DEL").arg(&strategy_keys.ops).exec(&mut conn).unwrap();
    assert_eq!(out(&g, &mut conn, 9, [0.0, 0.0]).label(), "halted");
}

/// A raw `mlcore_publish_v3` call of strategy `S` with one decision.
fn raw(g: &Guard, symbols: &str, records: &[u8], seq: &str) -> redis::Cmd {
    let k = g.keys().strategy(S);
    let mut cmd = redis::cmd("FCALL");
    cmd.arg("mlcore_publish_v3")
        .arg(5)
        .arg(&k.ops)
        .arg(&k.snapshot)
        .arg(&k.seq)
        .arg(&k.stream_v3)
        .arg(&k.hwm)
        .arg(S)
        .arg(symbols)
        .arg(1000)
        .arg(1)
        .arg(seq)
        .arg(now_ms())
        .arg(now_ms() + 60_000)
        .arg("m1")
        .arg(7)
        .arg(records);
    cmd
}

fn record(weight: f64, qty: f64, prob: f32, risk: f32) -> Vec<u8> {
    let mut r = weight.to_le_bytes().to_vec();
    r.extend_from_slice(&qty.to_le_bytes());
    r.extend_from_slice(&prob.to_le_bytes());
    r.extend_from_slice(&risk.to_le_bytes());
    r
}

#[test]
fn bad_input_is_refused_by_name_and_writes_nothing() {
    let (ns, g, mut conn) = active_v3();
    g.publish(&mut conn, &three(1)).unwrap();
    let good = record(0.5, 100.0, 0.6, 0.1);
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "EURUSD",
            good[..23].to_vec(),
            "2",
            "records must be 24 bytes for 1 symbols, got 23",
        ),
        (
            "EURUSD",
            record(f64::NAN, 1.0, 0.6, 0.1),
            "2",
            "signal 1 (EURUSD): weight must be finite",
        ),
        (
            "EURUSD",
            record(f64::NEG_INFINITY, 1.0, 0.6, 0.1),
            "2",
            "weight must be finite",
        ),
        (
            "EURUSD",
            record(0.5, f64::INFINITY, 0.6, 0.1),
            "2",
            "qty must be finite",
        ),
        (
            "EURUSD",
            record(0.5, 1.0, 1.5, 0.1),
            "2",
            "return_prob must be in [0, 1]",
        ),
        (
            "EURUSD",
            record(0.5, 1.0, -0.1, 0.1),
            "2",
            "return_prob must be in [0, 1]",
        ),
        (
            "EURUSD",
            record(0.5, 1.0, f32::NAN, 0.1),
            "2",
            "return_prob must be in [0, 1]",
        ),
        (
            "EURUSD",
            record(0.5, 1.0, 0.6, f32::NEG_INFINITY),
            "2",
            "risk_score must be finite",
        ),
        (
            "EURUSD,USDJPY",
            [good.clone(), record(0.5, 1.0, 0.6, f32::NAN)].concat(),
            "2",
            "signal 2 (USDJPY): risk_score must be finite",
        ),
        ("eurusd", good.clone(), "2", "must be 1-16 characters of A-Z"),
        (
            "EURUSD,EURUSD",
            [good.clone(), good.clone()].concat(),
            "2",
            "EURUSD appears twice",
        ),
        ("", good.clone(), "2", "symbols are missing"),
        ("EURUSD", good.clone(), "0", "seq must be a positive integer"),
        ("EURUSD", good.clone(), "01", "seq must be a positive integer"),
    ];
    let before = dump(&mut conn, &ns);
    for (symbols, records, seq, says) in cases {
        let err = raw(&g, symbols, &records, seq)
            .query::<redis::Value>(&mut conn)
            .unwrap_err();
        assert_eq!(err.code(), Some("BADINPUT"), "{says}: {err}");
        assert!(err.to_string().contains(says), "{says}: {err}");
        assert_eq!(dump(&mut conn, &ns), before, "{says}: something was written");
    }
    // Keys of another strategy, and a key of the wrong type.
    let mut other = raw(&g, "EURUSD", &good, "2");
    let k = g.keys().strategy("other");
    other = {
        let mut c = redis::cmd("FCALL");
        c.arg("mlcore_publish_v3").arg(5).arg(&k.ops);
        for a in other.args_iter().skip(4) {
            if let redis::Arg::Simple(b) = a {
                c.arg(b);
            }
        }
        c
    };
    let err = other.query::<redis::Value>(&mut conn).unwrap_err();
    assert!(err.to_string().contains("is not strategy fx_test's"), "{err}");
    let keys = g.keys().strategy(S);
    redis::cmd("DEL").arg(&keys.seq).exec(&mut conn).unwrap();
    redis::cmd("LPUSH")
        .arg(&keys.seq)
        .arg("x")
        .exec(&mut conn)
        .unwrap();
    let before = dump(&mut conn, &ns);
    let err = raw(&g, "EURUSD", &good, "2")
        .query::<redis::Value>(&mut conn)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("does not hold a string: nothing was written"),
        "{err}"
    );
    assert_eq!(dump(&mut conn, &ns), before);
    // The snapshot and the stream of another type: refused, nothing written.
    redis::cmd("DEL").arg(&keys.seq).exec(&mut conn).unwrap();
    for (key, holds) in [(&keys.snapshot, "hash"), (&keys.stream_v3, "stream")] {
        let saved: Vec<u8> = redis::cmd("DUMP").arg(key).query(&mut conn).unwrap();
        redis::cmd("DEL").arg(key).exec(&mut conn).unwrap();
        redis::cmd("SET").arg(key).arg("x").exec(&mut conn).unwrap();
        let before = dump(&mut conn, &ns);
        let err = raw(&g, "EURUSD", &good, "9")
            .query::<redis::Value>(&mut conn)
            .unwrap_err();
        assert_eq!(err.code(), Some("BADINPUT"), "{err}");
        assert!(err.to_string().contains("nothing was written"), "{holds}: {err}");
        assert_eq!(dump(&mut conn, &ns), before, "{holds}");
        redis::cmd("DEL").arg(key).exec(&mut conn).unwrap();
        redis::cmd("RESTORE")
            .arg(key)
            .arg(0)
            .arg(saved)
            .exec(&mut conn)
            .unwrap();
    }
    // Through the client: a readable error, not a panic; and a side that
    // disagrees with its weight never leaves the client (v3 carries none).
    let mut b = three(5);
    b.signals[0].return_prob = 1.5;
    assert!(matches!(
        g.publish(&mut conn, &b),
        Err(ContractError::BadInput(m)) if m.contains("return_prob")
    ));
    let mut b = three(6);
    b.signals[1].side = Side::Long;
    assert!(matches!(
        g.publish(&mut conn, &b),
        Err(ContractError::Invalid { field: "side", reason }) if reason.contains("USDJPY: side long does not match weight -0.03")
    ));
}

#[test]
fn during_the_migration_consumers_read_the_newer_of_v2_and_v3() {
    let (_ns, g2, mut conn) = active();
    let g = v3(g2.clone());
    // A consumer's client (either) reads v2's signal while only v2 writes.
    g2.publish(&mut conn, &batch(10, vec![signal("EURUSD", 0.5)]))
        .unwrap();
    assert_eq!(g.read(&mut conn, S, "EURUSD").unwrap().unwrap().weight, 0.5);
    // The daemon moves to v3: the newer signal wins, though v2's is valid.
    g.publish(&mut conn, &batch(11, vec![signal("EURUSD", -0.25)]))
        .unwrap();
    for client in [&g, &g2] {
        let s = client.read(&mut conn, S, "EURUSD").unwrap().unwrap();
        assert_eq!((s.seq, s.weight), (11, -0.25));
    }
    assert_eq!(g2.high_water_mark(&mut conn, S).unwrap(), 11);
    // A v2 writer left running judges by v2's marks alone, so the
    // migration moves every daemon of a strategy at once; reads still give
    // the newest of both.
    g2.publish(&mut conn, &batch(12, vec![signal("EURUSD", 0.1)]))
        .unwrap();
    g.publish(&mut conn, &batch(13, vec![signal("EURUSD", 0.2)]))
        .unwrap();
    assert_eq!(g.read(&mut conn, S, "EURUSD").unwrap().unwrap().seq, 13);

    // Mode changes through v3's set_mode: the same compare-and-set.
    let version = |c: &mut redis::Connection| g.read_mode(c, S).unwrap().version;
    let v = version(&mut conn);
    let change = |expected| ModeChange {
        strategy: S,
        expected_version: expected,
        mode: OpsMode::ReduceOnly,
        reason: "test",
        actor: "tester",
        request_id: "r-1",
    };
    assert_eq!(
        g.set_mode(&mut conn, &change(v)).unwrap(),
        SetModeOutcome::Applied { version: v + 1 }
    );
    assert_eq!(
        g.set_mode(&mut conn, &change(v)).unwrap(),
        SetModeOutcome::Conflict {
            current_version: v + 1
        }
    );
}

#[test]
fn once_v2_is_removed_v3_publishes_reads_and_changes_modes_alone() {
    let (_server, _ns, g, mut conn) = private();
    let g = v3(g.installing(false));
    Guard::load(&mut conn).unwrap();
    redis::cmd("FUNCTION")
        .arg("DELETE")
        .arg("mlcore_guard_v2")
        .exec(&mut conn)
        .unwrap();
    // A process writing v3 starts without v2; one writing v2 does not.
    Guard::ensure(&mut conn, false, ContractVersion::V3).unwrap();
    assert!(Guard::ensure(&mut conn, false, ContractVersion::V2).is_err());
    let v = g.read_mode(&mut conn, S).unwrap().version;
    let change = ModeChange {
        strategy: S,
        expected_version: v,
        mode: OpsMode::Active,
        reason: "test",
        actor: "tester",
        request_id: "r-1",
    };
    assert!(matches!(
        g.set_mode(&mut conn, &change).unwrap(),
        SetModeOutcome::Applied { .. }
    ));
    assert_eq!(g.publish(&mut conn, &three(1)).unwrap().label(), "accepted");
    assert_eq!(g.read(&mut conn, S, "USDJPY").unwrap().unwrap().weight, -0.03);
}

#[test]
fn a_three_master_cluster_serves_v3_strategies_in_different_slots() {
    let cluster = RedisCluster::start();
    let client = redis::cluster::ClusterClient::new(cluster.urls()).unwrap();
    let mut conn = client.get_connection().unwrap();
    Guard::load(&mut conn).unwrap();
    for node in &cluster.nodes {
        Guard::check_version(&mut node.connection()).unwrap();
    }
    let g = v3(Guard::new(Keys::new("mlcore"), 1000));
    let strategies = ["alpha", "bravo", "echo"];
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
    // alpha, bravo and echo hash to the three masters.
    let holding = cluster
        .nodes
        .iter()
        .filter(|n| redis::cmd("DBSIZE").query::<u64>(&mut n.connection()).unwrap() > 0)
        .count();
    assert_eq!(holding, 3);
}

#[test]
fn the_daemons_encoding_matches_what_the_guard_decodes_for_every_value() {
    let (_ns, g, mut conn) = active_v3();
    let values = [0.1 + 0.2, 1e-300, -123_456.789, 5e-324, 1e15];
    for (i, v) in values.iter().enumerate() {
        let mut b = batch(
            i as u64 + 1,
            vec![signal("EURUSD", *v), signal("USDJPY", -v.abs())],
        );
        b.signals[0].qty = -v * 3.0;
        b.signals[1].risk_score = f64::from(*v as f32);
        assert_eq!(g.publish(&mut conn, &b).unwrap().label(), "accepted", "{v}");
        let e = g.read(&mut conn, S, "EURUSD").unwrap().unwrap();
        assert_eq!((e.weight, e.qty), (*v, -v * 3.0), "exact through Redis");
        let u = g.read(&mut conn, S, "USDJPY").unwrap().unwrap();
        assert_eq!(u.risk_score, f64::from(*v as f32));
    }
}

/// The consumer examples (`docs/examples/signal_consumer.{rs,py}`), run
/// against a real Redis: each reads the newer of v2's and v3's signal and
/// decodes v3's stream.
#[test]
fn the_consumer_examples_read_v3_and_the_newer_of_v2_and_v3() {
    let (ns, g2, mut conn) = active();
    let g = v3(g2.clone());
    g2.publish(
        &mut conn,
        &batch(10, vec![signal("EURUSD", 0.5), signal("USDJPY", 0.0)]),
    )
    .unwrap();
    g.publish(
        &mut conn,
        &batch(11, vec![signal("EURUSD", -0.25), signal("USDJPY", 0.0)]),
    )
    .unwrap();
    let python = std::env::var("MLCORE_REFERENCE_PYTHON").unwrap_or_else(|_| {
        panic!(
            "MLCORE_REFERENCE_PYTHON is unset: run through scripts/test.sh (scripts/setup-python-tools.sh)"
        )
    });
    let example = mlcore_testkit::workspace_root().join("docs/examples/signal_consumer.py");
    let url = mlcore_testkit::redis_url();
    let args = [url.as_str(), ns.ns.as_str(), S, "EURUSD", "0", "1"];
    for (name, mut cmd) in [
        (
            "rust",
            std::process::Command::new(mlcore_testkit::binary("examples/signal_consumer")),
        ),
        ("python", {
            let mut c = std::process::Command::new(&python);
            c.arg(&example);
            c
        }),
    ] {
        let out = cmd.args(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("mode: active"), "{name}: {stdout}");
        assert!(
            stdout.contains("EURUSD: seq=11 side=short weight=-0.25"),
            "{name} did not read the newer signal: {stdout}"
        );
        let streamed: Vec<&str> = stdout
            .lines()
            .filter(|l| l.contains("seq=11 USDJPY") || l.contains("seq 11 USDJPY"))
            .collect();
        assert_eq!(
            streamed.len(),
            1,
            "{name} did not decode the v3 stream entry: {stdout}"
        );
        assert!(streamed[0].contains("flat"), "{name}: {stdout}");
    }
}

#[test]
fn a_v2_client_reads_where_v3_is_not_installed_yet() {
    let (_server, _ns, g, mut conn) = private();
    let g = g.installing(false);
    mlcore_contract::guard::LIBRARIES[0]
        .load_cmd()
        .exec(&mut conn)
        .unwrap();
    Guard::ensure(&mut conn, false, ContractVersion::V2).unwrap();
    set_mode(&g, &mut conn, S, OpsMode::Active);
    g.publish(&mut conn, &three(1)).unwrap();
    assert_eq!(g.read(&mut conn, S, "EURUSD").unwrap().unwrap().weight, 0.05);
}

#[test]
fn a_high_water_mark_that_is_not_a_number_fails_closed() {
    let (ns, g, mut conn) = active_v3();
    g.publish(&mut conn, &three(5)).unwrap();
    let keys = g.keys().strategy(S);
    redis::cmd("SET")
        .arg(&keys.seq)
        .arg("garbage")
        .exec(&mut conn)
        .unwrap();
    let before = dump(&mut conn, &ns);
    match g.publish(&mut conn, &three(6)) {
        Err(ContractError::BadInput(m)) => assert!(m.contains("not a number: nothing was written"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(dump(&mut conn, &ns), before);
    // v2's marks, taken over on a first v3 call, likewise.
    redis::cmd("DEL").arg(&keys.seq).exec(&mut conn).unwrap();
    redis::cmd("HSET")
        .arg(&keys.hwm)
        .arg("EURUSD")
        .arg("x")
        .exec(&mut conn)
        .unwrap();
    assert!(matches!(
        g.publish(&mut conn, &three(7)),
        Err(ContractError::BadInput(_))
    ));
}
