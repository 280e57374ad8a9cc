//! A trading consumer in Rust: read the current signals safely, then follow
//! the stream. Uses only the `redis` crate, as an external consumer would.
//!
//! `cargo run -p mlcore-models --example signal_consumer -- redis://127.0.0.1:6379/0 mlcore fx_g10 EURUSD`

#![allow(clippy::print_stdout, clippy::print_stderr)] // an example program prints

use std::collections::HashMap;

fn main() -> redis::RedisResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, ns, strategy, symbol] = args.as_slice() else {
        eprintln!("usage: signal_consumer <redis-url> <namespace> <strategy> <symbol>");
        std::process::exit(2);
    };
    let mut conn = redis::Client::open(url.as_str())?.get_connection()?;

    // 1. Is the strategy allowed to trade at all? Absent state means halted.
    let ops: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("{ns}:{{{strategy}}}:ops"))
        .query(&mut conn)?;
    let mode = ops.get("mode").map(String::as_str).unwrap_or("halted");
    println!("mode: {mode}");

    // 2. The current signal, only while valid (the guard compares with Redis
    //    time). Nil means: no valid signal, make no new trades.
    let sig_key = format!("{ns}:{{{strategy}}}:sig:{symbol}");
    let fields: Option<Vec<String>> = redis::cmd("FCALL_RO")
        .arg("mlcore_read_v2")
        .arg(1)
        .arg(&sig_key)
        .query(&mut conn)?;
    match fields {
        None => println!("{symbol}: no valid signal"),
        Some(f) => {
            let sig: HashMap<&str, &str> = f
                .chunks_exact(2)
                .map(|c| (c[0].as_str(), c[1].as_str()))
                .collect();
            println!(
                "{symbol}: seq={} side={} weight={} valid_until_ms={}",
                sig["seq"], sig["side"], sig["weight"], sig["valid_until_ms"]
            );
        }
    }

    // 3. Follow the stream from now on (blocks up to 5 s per read, 3 reads).
    let stream = format!("{ns}:{{{strategy}}}:signals");
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
