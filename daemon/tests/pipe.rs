//! The publisher's own connection against a real Redis: pipelines in
//! flight leave what one-by-one publishes leave, a flushed guard is
//! reloaded, authentication, databases, Unix sockets, and the Redis
//! setting that changes what a guard call costs.

#![allow(clippy::unwrap_used)] // fixture helpers outside #[test] fns: a broken fixture should panic

use std::time::Duration;

use mlcore_contract::{ContractError, Guard, OpsMode, PublishOutcome, SignalBatch};
use mlcore_daemon::redis_io::{PublishPipe, MAX_IN_FLIGHT};
use mlcore_testkit::signals::*;
use mlcore_testkit::{self as testutil, RedisNamespace, RedisServer};
use proptest::prelude::*;
use redis::ConnectionLike;

fn pipe(url: &str) -> PublishPipe {
    PublishPipe::connect_url(url, Duration::from_secs(2), Duration::from_secs(5))
        .unwrap()
        .unwrap_or_else(|| panic!("{url}: a TCP or Unix address opens its own socket"))
}

/// Publishes `rounds` through `pipe` with up to `MAX_IN_FLIGHT` pipelines
/// in flight (each sent before the oldest is read), collecting every
/// outcome in order.
fn through_pipe(pipe: &mut PublishPipe, g: &Guard, rounds: &[&[SignalBatch]]) -> Vec<String> {
    let mut out = Vec::new();
    for round in rounds {
        if pipe.in_flight() == MAX_IN_FLIGHT {
            out.extend(pipe.recv().unwrap().iter().map(comparable));
        }
        pipe.send(g, round).unwrap();
    }
    while pipe.in_flight() > 0 {
        out.extend(pipe.recv().unwrap().iter().map(comparable));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Pipelines in flight on the publisher's own connection are
    /// invisible: outcomes and everything a consumer can see are those of
    /// publishing the decisions one by one, whatever the rounds' sizes.
    #[test]
    fn the_pipe_leaves_what_one_by_one_publishes_leave(
        mode in prop_oneof![Just(OpsMode::Active), Just(OpsMode::ReduceOnly), Just(OpsMode::Halted)],
        gens in proptest::collection::vec(decision_gen(), 1..24),
        cuts in proptest::collection::vec(1usize..6, 24),
    ) {
        let url = testutil::redis_url();
        let mut conn = testutil::redis_connection();
        Guard::load(&mut conn).unwrap();
        let batches = generated_batches(&gens);
        let mut rounds: Vec<&[SignalBatch]> = Vec::new();
        let mut rest = &batches[..];
        for cut in cuts {
            if rest.is_empty() {
                break;
            }
            let (round, tail) = rest.split_at(cut.min(rest.len()));
            rounds.push(round);
            rest = tail;
        }
        if !rest.is_empty() {
            rounds.push(rest);
        }
        let start = batch(5, SYMBOLS.iter().zip([0.04, -0.04, 0.0]).map(|(s, w)| signal(s, w)).collect());
        let mut runs = Vec::new();
        for piped in [false, true] {
            let ns = RedisNamespace::on(&url);
            let g = guard(&ns);
            set_mode(&g, &mut conn, S, OpsMode::Active);
            prop_assert_eq!(g.publish(&mut conn, &start).unwrap().label(), "accepted");
            set_mode(&g, &mut conn, S, mode);
            let outcomes: Vec<String> = if piped {
                through_pipe(&mut pipe(&url), &g, &rounds)
            } else {
                batches.iter().map(|b| comparable(&g.publish(&mut conn, b))).collect()
            };
            runs.push((outcomes, visible(&mut conn, &g, &SYMBOLS)));
        }
        prop_assert_eq!(&runs[1].0, &runs[0].0, "outcomes");
        prop_assert_eq!(&runs[1].1, &runs[0].1, "what consumers see");
    }
}

#[test]
fn the_pipe_reloads_a_flushed_guard_and_resends_only_what_failed_in_every_pipeline() {
    let (server, _ns, g, mut admin) = private();
    Guard::load(&mut admin).unwrap();
    set_mode(&g, &mut admin, S, OpsMode::Active);
    let mut p = pipe(&server.url());
    let eur = |seq| batch(seq, vec![signal("EURUSD", 0.01 * seq as f64)]);
    let jpy = |seq| SignalBatch {
        strategy: "fx_other".into(),
        ..batch(seq, vec![signal("USDJPY", 0.02)])
    };
    set_mode(&g, &mut admin, "fx_other", OpsMode::Active);
    // One pipeline before the flush runs on the loaded guard.
    p.send(&g, &[eur(1)]).unwrap();
    assert_eq!(p.recv().unwrap()[0].as_ref().unwrap().label(), "accepted");

    let _: () = redis::cmd("FUNCTION").arg("FLUSH").query(&mut admin).unwrap();
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut admin).unwrap();
    // Two pipelines in flight, three guard calls each (EURUSD folded,
    // then the other strategy, then EURUSD again): all six find it gone.
    p.send(&g, &[eur(2), eur(3), jpy(1), eur(4)]).unwrap();
    p.send(&g, &[eur(5), jpy(2), eur(6), eur(7)]).unwrap();
    assert_eq!(p.in_flight(), 2);
    assert!(matches!(
        p.send(&g, &[eur(8)]),
        Err(ContractError::Invalid {
            field: "in_flight",
            ..
        })
    ));
    let first: Vec<String> = p.recv().unwrap().iter().map(comparable).collect();
    let second: Vec<String> = p.recv().unwrap().iter().map(comparable).collect();
    let ok = |n| format!("{:?}", PublishOutcome::Accepted { count: n });
    assert_eq!(first, [ok(1), ok(1), ok(1), ok(1)]);
    assert_eq!(second, [ok(1), ok(1), ok(1), ok(1)]);
    assert!(
        matches!(p.recv(), Err(ContractError::Invalid { .. })),
        "nothing in flight"
    );
    // 6 calls failed, the guard was loaded and checked once (both
    // libraries: v2 and v3), 6 were resent.
    assert_eq!(testutil::command_stats(&mut admin, "fcall").calls, 12);
    assert_eq!(testutil::command_stats(&mut admin, "function|load").calls, 2);
    // Each decision left one stream entry, in order.
    let seqs: Vec<String> = stream_entries(&mut admin, &g)
        .iter()
        .map(|e| e.iter().find(|(k, _)| k == "seq").unwrap().1.clone())
        .collect();
    assert_eq!(seqs, ["1", "2", "3", "4", "5", "6", "7"]);
    assert_eq!(g.read(&mut admin, S, "EURUSD").unwrap().unwrap().seq, 7);
    assert_eq!(g.high_water_mark(&mut admin, "fx_other").unwrap(), 2);
}

#[test]
fn the_pipe_authenticates_selects_the_database_and_reports_a_lost_connection() {
    let (mut server, _ns, g, mut admin) = private();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "publisher", "on", ">pw", "~*", "&*", "+@all"])
        .query(&mut admin)
        .unwrap();
    let url = |pw: &str| format!("redis://publisher:{pw}@127.0.0.1:{}/3", server.port);
    let refused =
        PublishPipe::connect_url(&url("wrong"), Duration::from_secs(2), Duration::from_secs(5)).unwrap_err();
    assert!(refused.to_string().contains("WRONGPASS"), "{refused}");

    let mut p = pipe(&url("pw"));
    assert_eq!(p.get_db(), 3);
    Guard::load(&mut p).unwrap();
    set_mode(&g, &mut p, S, OpsMode::Active);
    p.send(&g, &[batch(1, vec![signal("EURUSD", 0.05)])]).unwrap();
    assert_eq!(p.recv().unwrap()[0].as_ref().unwrap().label(), "accepted");
    let _: () = redis::cmd("SELECT").arg(3).query(&mut admin).unwrap();
    assert_eq!(
        g.read(&mut admin, S, "EURUSD").unwrap().unwrap().seq,
        1,
        "written in db 3"
    );

    server.restart();
    let lost = p
        .send(&g, &[batch(2, vec![signal("EURUSD", 0.05)])])
        .and_then(|()| p.recv().map(|_| ()));
    assert!(matches!(lost, Err(ContractError::Redis(_))), "{lost:?}");
    assert!(!p.is_open());
}

/// A Redis on the daemon's host is best reached over its Unix socket
/// (deployments/redis/README.md): the publisher's pipe and the Redis client
/// both take a `unix://` URL, database included.
#[test]
fn over_a_unix_socket_the_pipe_and_the_client_publish_set_modes_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("redis.sock");
    let socket_arg = socket.to_str().unwrap();
    let server = RedisServer::start_with(&["--unixsocket", socket_arg, "--unixsocketperm", "700"]);
    let ns = RedisNamespace::on(&server.url());
    let g = guard(&ns);
    let url = format!("unix://{socket_arg}?db=2");
    let mut client = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .unwrap();
    let mut p = pipe(&url);
    assert_eq!(p.get_db(), 2);
    Guard::load(&mut p).unwrap();
    set_mode(&g, &mut client, S, OpsMode::Active);
    p.send(
        &g,
        &[
            batch(1, vec![signal("EURUSD", 0.05)]),
            batch(2, vec![signal("EURUSD", 0.04)]),
        ],
    )
    .unwrap();
    let outcomes: Vec<&str> = p
        .recv()
        .unwrap()
        .iter()
        .map(|o| o.as_ref().unwrap().label())
        .collect();
    assert_eq!(outcomes, ["accepted", "accepted"]);
    let read = g.read(&mut client, S, "EURUSD").unwrap().unwrap();
    assert_eq!((read.seq, read.weight), (2, 0.04));
    // The same database over TCP: the socket is only a way in.
    let mut tcp = redis::Client::open(format!("{}2", server.url()))
        .and_then(|c| c.get_connection())
        .unwrap();
    assert_eq!(g.read(&mut tcp, S, "EURUSD").unwrap().unwrap().seq, 2);
}

#[test]
fn the_pipe_answers_plain_requests_with_large_replies() {
    let (ns, _g, mut conn) = active();
    let key = format!("{}:big", ns.ns);
    let mut fields: Vec<(String, String)> = (0..5_000)
        .map(|i| (format!("f{i:05}"), format!("{i}-{}", "x".repeat(60))))
        .collect();
    redis::cmd("HSET").arg(&key).arg(&fields).exec(&mut conn).unwrap();
    // ≈ 370 KB in one reply: read in many pieces into a growing buffer.
    let mut p = pipe(&testutil::redis_url());
    let mut got: Vec<(String, String)> = redis::cmd("HGETALL").arg(&key).query(&mut p).unwrap();
    got.sort();
    fields.sort();
    assert_eq!(got, fields);
    // The next request on the same pipe reads from where that one ended.
    let n: usize = redis::cmd("HLEN").arg(&key).query(&mut p).unwrap();
    assert_eq!(n, 5_000);
}

/// `OBJECT ENCODING` of the signal hash of `symbol` and of the hwm hash.
fn encodings(conn: &mut redis::Connection, g: &Guard, symbol: &str) -> (String, String) {
    let keys = g.keys().strategy(S);
    let mut enc =
        |key: String| -> String { redis::cmd("OBJECT").arg("ENCODING").arg(key).query(conn).unwrap() };
    (enc(keys.sig(symbol)), enc(keys.hwm.clone()))
}

#[test]
fn the_listpack_setting_is_read_and_at_its_advised_value_the_guards_hashes_are_hash_tables() {
    use mlcore_daemon::redis_io::tuning;
    // 12 symbols: the hwm hash has more fields than the advised value too.
    let symbols: Vec<String> = (0..12).map(|i| format!("S{i:02}")).collect();
    let decision = |seq| batch(seq, symbols.iter().map(|s| signal(s, 0.01)).collect());
    let publish = |conn: &mut redis::Connection, g: &Guard| {
        Guard::load(conn).unwrap();
        set_mode(g, conn, S, OpsMode::Active);
        assert_eq!(
            g.publish(conn, &decision(1)).unwrap(),
            PublishOutcome::Accepted { count: 12 }
        );
    };

    // Redis' default (512 built in, 128 in the shipped redis.conf): advice
    // given; the hashes are listpacks.
    let (_default, _ns, g, mut conn) = private();
    let entries = tuning::hash_listpack_entries(&mut conn).unwrap().unwrap();
    assert!(tuning::advice(entries).is_some(), "{entries}");
    publish(&mut conn, &g);
    assert_eq!(
        encodings(&mut conn, &g, "S03"),
        ("listpack".into(), "listpack".into())
    );

    // At the advised value: no advice; both hashes the guard rewrites per
    // decision are hash tables (a signal hash has 10 fields).
    let advised = tuning::ADVISED_MAX.to_string();
    let tuned = RedisServer::start_with(&["--hash-max-listpack-entries", &advised]);
    let g = guard(&RedisNamespace::on(&tuned.url()));
    let mut conn = tuned.connection();
    assert_eq!(
        tuning::hash_listpack_entries(&mut conn).unwrap(),
        Some(tuning::ADVISED_MAX)
    );
    assert_eq!(tuning::advice(tuning::ADVISED_MAX), None);
    publish(&mut conn, &g);
    assert_eq!(
        encodings(&mut conn, &g, "S03"),
        ("hashtable".into(), "hashtable".into())
    );

    // A user that may not run CONFIG: the setting is unknown, not an error.
    let mut limited = limited_user(&tuned, &mut conn, &["-config"]);
    assert_eq!(tuning::hash_listpack_entries(&mut limited).unwrap(), None);
}
