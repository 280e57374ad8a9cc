//! A trading consumer in Rust: read the current signals safely, then follow
//! the stream. Built against `mlcore-contract` alone (the Redis client and
//! serde; no ONNX Runtime, Parquet or learners), as a consumer would.
//!
//! `cargo run -p mlcore-contract --example signal_consumer -- redis://127.0.0.1:6379/0 mlcore fx_g10 EURUSD`

#![allow(clippy::print_stdout, clippy::print_stderr)] // an example program prints

use mlcore_contract::{Guard, Keys};

fn main() -> redis::RedisResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, ns, strategy, symbol] = args.as_slice() else {
        eprintln!("usage: signal_consumer <redis-url> <namespace> <strategy> <symbol>");
        std::process::exit(2);
    };
    let mut conn = redis::Client::open(url.as_str())?.get_connection()?;

    let guard = Guard::new(Keys::new(ns), 0);

    // 1. Is the strategy allowed to trade at all? Absent or unreadable state
    //    reads as halted.
    match guard.read_mode(&mut conn, strategy) {
        Ok(ops) => println!("mode: {} (version {})", ops.mode, ops.version),
        Err(e) => println!("mode: unreadable ({e}): treat as halted"),
    }

    // 2. The current signal, only while valid (the guard compares with Redis
    //    time). None means: no valid signal, make no new trades.
    match guard.read(&mut conn, strategy, symbol) {
        Ok(None) => println!("{symbol}: no valid signal"),
        Ok(Some(sig)) => println!(
            "{symbol}: seq={} side={} weight={} valid_until_ms={}",
            sig.seq, sig.side, sig.weight, sig.valid_until_ms
        ),
        Err(e) => println!("{symbol}: unreadable ({e}): make no new trades"),
    }

    // 3. Follow the stream from now on (blocks up to 5 s per read, 3 reads).
    let stream = guard.keys().strategy(strategy).signals;
    let mut last_id = "$".to_owned();
    for _ in 0..3 {
        let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(5000)
            .arg("STREAMS")
            .arg(&stream)
            .arg(&last_id)
            .query(&mut conn)?;
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            // One entry per decision; its signals are a JSON array.
            for entry in key.ids {
                let field = |name: &str| entry.get::<String>(name).unwrap_or_default();
                last_id = entry.id.clone();
                // When the decision became visible (Redis' clock, µs), and how
                // long after that this consumer read it: its own lag.
                let written_us: u64 = field("written_at_us").parse().unwrap_or(0);
                let now_us = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64);
                println!(
                    "{} seq={} visible at {written_us} us, read {} us later",
                    entry.id,
                    field("seq"),
                    now_us.saturating_sub(written_us)
                );
                // Check validity against your clock too: never act on a decision past valid_until_ms.
                let signals: Vec<serde_json::Value> =
                    serde_json::from_str(&field("signals")).unwrap_or_default();
                for s in signals {
                    println!(
                        "{} seq={} {} side={} weight={}",
                        entry.id,
                        field("seq"),
                        s["symbol"].as_str().unwrap_or_default(),
                        s["side"].as_str().unwrap_or_default(),
                        s["weight"]
                    );
                }
            }
        }
    }
    Ok(())
}
