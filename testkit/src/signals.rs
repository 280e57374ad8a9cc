//! Guard fixtures shared by the contract's tests and the daemon's
//! publisher tests: signals and batches of strategy [`S`], a guard in a
//! fresh namespace, what consumers can see, and generated decisions.

#![allow(clippy::unwrap_used)] // fixtures: a broken one should panic

use std::time::{SystemTime, UNIX_EPOCH};

use mlcore_contract::{ContractError, Guard, Keys, OpsMode, PublishOutcome, Side, Signal, SignalBatch};
use proptest::prelude::*;
use redis::ConnectionLike;

use crate::{RedisNamespace, RedisServer};

pub const S: &str = "fx_test";

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

pub fn guard(ns: &RedisNamespace) -> Guard {
    Guard::new(Keys::new(&ns.ns), 1000)
}

pub fn signal(symbol: &str, weight: f64) -> Signal {
    Signal {
        symbol: symbol.into(),
        side: Side::of_weight(weight),
        weight,
        qty: weight * 1_000_000.0,
        return_prob: 0.6,
        risk_score: 0.2,
    }
}

pub fn batch(seq: u64, signals: Vec<Signal>) -> SignalBatch {
    SignalBatch {
        strategy: S.into(),
        seq,
        generated_at_ms: now_ms(),
        valid_until_ms: now_ms() + 60_000,
        model_id: "m1".into(),
        model_version: 7,
        signals,
    }
}

pub fn set_mode(g: &Guard, conn: &mut impl ConnectionLike, strategy: &str, mode: OpsMode) -> u64 {
    crate::set_mode(g, conn, strategy, mode)
}

/// A loaded guard on the shared Redis, in a fresh namespace, strategy active.
pub fn active() -> (RedisNamespace, Guard, redis::Connection) {
    let ns = RedisNamespace::new();
    let mut conn = crate::redis_connection();
    Guard::load(&mut conn).unwrap();
    let g = guard(&ns);
    set_mode(&g, &mut conn, S, OpsMode::Active);
    (ns, g, conn)
}

/// A private `redis-server` (for tests that flush, restart or reconfigure
/// Redis), a namespace on it, its guard client and a connection.
pub fn private() -> (RedisServer, RedisNamespace, Guard, redis::Connection) {
    let server = RedisServer::start();
    let ns = RedisNamespace::on(&server.url());
    let g = guard(&ns);
    let conn = server.connection();
    (server, ns, g, conn)
}

/// Strategy `S`'s stream entries, oldest first.
pub fn stream(conn: &mut impl ConnectionLike, g: &Guard) -> Vec<redis::streams::StreamId> {
    redis::cmd("XRANGE")
        .arg(g.keys().strategy(S).signals)
        .arg("-")
        .arg("+")
        .query::<redis::streams::StreamRangeReply>(conn)
        .unwrap()
        .ids
}

/// What consumers can see of strategy `S`: each symbol's stored hash and
/// its expiry time, the high-water marks, and the stream entries' fields
/// (without their ids, which carry the time they were written).
pub type Visible = (
    Vec<(Vec<(String, String)>, i64)>,
    Vec<(String, String)>,
    Vec<Vec<(String, String)>>,
);

pub fn visible(conn: &mut impl ConnectionLike, g: &Guard, symbols: &[&str]) -> Visible {
    let keys = g.keys().strategy(S);
    let sorted = |mut v: Vec<(String, String)>| {
        v.sort();
        v
    };
    let sigs = symbols
        .iter()
        .map(|sym| {
            let key = keys.sig(sym);
            let fields: Vec<(String, String)> = redis::cmd("HGETALL").arg(&key).query(conn).unwrap();
            let expires: i64 = redis::cmd("PEXPIRETIME").arg(&key).query(conn).unwrap();
            (sorted(fields), expires)
        })
        .collect();
    let hwm: Vec<(String, String)> = redis::cmd("HGETALL").arg(&keys.hwm).query(conn).unwrap();
    (sigs, sorted(hwm), stream_entries(conn, g))
}

/// Strategy `S`'s stream entries, oldest first: each one's fields, sorted
/// (ids and `written_at_us` left out: they carry the time they were
/// written).
pub fn stream_entries(conn: &mut impl ConnectionLike, g: &Guard) -> Vec<Vec<(String, String)>> {
    stream(conn, g)
        .into_iter()
        .map(|e| {
            let mut fields: Vec<(String, String)> = e
                .map
                .iter()
                .filter(|(k, _)| k.as_str() != "written_at_us")
                .map(|(k, v)| (k.clone(), redis::from_redis_value_ref::<String>(v).unwrap()))
                .collect();
            fields.sort();
            fields
        })
        .collect()
}

/// An outcome with what may differ between two runs (Redis' clock) left out.
pub fn comparable(o: &Result<PublishOutcome, ContractError>) -> String {
    match o {
        Ok(PublishOutcome::Expired { .. }) => "expired".into(),
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("error: {e}"),
    }
}

/// One generated decision: seq step (≤ 0 repeats or goes back: stale),
/// whether it is already expired or malformed, and its weights.
pub type Gen = (i64, bool, bool, Vec<f64>);

pub fn decision_gen() -> impl Strategy<Value = Gen> {
    let weight = prop_oneof![Just(0.0), Just(0.02), Just(0.05), Just(-0.03), Just(-0.01)];
    (
        -2i64..4,
        proptest::bool::weighted(0.15),
        proptest::bool::weighted(0.1),
        proptest::collection::vec(weight, 3),
    )
}

pub const SYMBOLS: [&str; 3] = ["EURUSD", "USDJPY", "GBPUSD"];

pub fn generated_batches(gens: &[Gen]) -> Vec<SignalBatch> {
    let mut seq = 10i64;
    gens.iter()
        .map(|(step, expired, malformed, weights)| {
            seq = (seq + step).max(1);
            let mut b = batch(
                seq as u64,
                SYMBOLS.iter().zip(weights).map(|(s, w)| signal(s, *w)).collect(),
            );
            if *expired {
                b.valid_until_ms = now_ms() - 1_000;
            }
            if *malformed {
                b.signals[1].return_prob = 1.5;
            }
            b
        })
        .collect()
}

/// A connection as user `publisher` on `server`, allowed everything but
/// `denied` (ACL rules such as `-function`).
pub fn limited_user(
    server: &RedisServer,
    admin: &mut redis::Connection,
    denied: &[&str],
) -> redis::Connection {
    let mut rules = vec!["SETUSER", "publisher", "on", ">pw", "~*", "&*", "+@all"];
    rules.extend_from_slice(denied);
    let _: () = redis::cmd("ACL").arg(&rules).query(admin).unwrap();
    redis::Client::open(format!("redis://publisher:pw@127.0.0.1:{}/", server.port))
        .unwrap()
        .get_connection()
        .unwrap()
}
