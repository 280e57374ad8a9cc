//! A trading consumer in Rust: read the current signals safely, then follow
//! the stream. Built against `mlcore-contract` alone (the Redis client and
//! serde; no ONNX Runtime, Parquet or learners), as a consumer would.
//! Reads contract v3 (one snapshot per strategy, binary records) and, while
//! daemons migrate, v2: `Guard::read` returns the newer of the two.
//!
//! `cargo run -p mlcore-contract --example signal_consumer -- redis://127.0.0.1:6379/0 mlcore fx_g10 EURUSD [FROM_ID [READS]]`
//!
//! The stream is followed from `FROM_ID` (default `$`: from now on) for
//! `READS` blocking reads of up to 5 s (default 3).

#![allow(clippy::print_stdout, clippy::print_stderr)] // an example program prints

use mlcore_contract::guard::decode_records;
use mlcore_contract::{Guard, Keys};

fn main() -> redis::RedisResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let (url, ns, strategy, symbol) = match args.as_slice() {
        [_, url, ns, strategy, symbol, ..] => (url, ns, strategy, symbol),
        _ => {
            eprintln!("usage: signal_consumer <redis-url> <namespace> <strategy> <symbol> [from-id [reads]]");
            std::process::exit(2);
        }
    };
    let mut last_id = args.get(5).cloned().unwrap_or_else(|| "$".to_owned());
    let reads: usize = args.get(6).and_then(|r| r.parse().ok()).unwrap_or(3);
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

    // 3. Follow contract v3's stream (blocks up to 5 s per read).
    let stream = guard.keys().strategy(strategy).stream_v3;
    for _ in 0..reads {
        let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(5000)
            .arg("STREAMS")
            .arg(&stream)
            .arg(&last_id)
            .query(&mut conn)?;
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            // One entry per decision: its symbols, comma-separated, and
            // its signals as binary records.
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
                let records = entry.get::<Vec<u8>>("records").unwrap_or_default();
                match decode_records(&field("symbols"), &records) {
                    Ok(signals) => {
                        for s in signals {
                            println!(
                                "{} seq={} {} side={} weight={}",
                                entry.id,
                                field("seq"),
                                s.symbol,
                                s.side,
                                s.weight
                            );
                        }
                    }
                    Err(e) => println!("{} seq={}: unreadable ({e}): skip it", entry.id, field("seq")),
                }
            }
        }
    }
    Ok(())
}
