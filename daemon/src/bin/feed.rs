//! `mlcore-feed`: replays a dataset (the synthetic Parquet market, or a CSV
//! of quotes) to the daemon as wire frames, with decision triggers at a
//! chosen cadence. Timestamps are moved to the wall clock so signals are
//! live: `ts' = start + (ts − first) / speed`.
//!
//! `mlcore-feed --env dev --dataset .run/datasets/synth-seed7 --addr 127.0.0.1:7401 --speed 60 --trigger-every-ms 250 --seconds 20`

#![allow(clippy::print_stdout)] // a command-line tool reports on stdout

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use mlcore_daemon::wire::{encode, Frame};
use mlcore_models::config::{self, ProcessEnv};
use mlcore_models::dataset::Dataset;
use mlcore_models::market::Quote;

/// Replays market data (the synthetic Parquet dataset or a CSV of quotes)
/// to a running mlcore-daemon as wire frames, with decision triggers at a
/// chosen cadence.
#[derive(Debug, Parser)]
#[command(name = "mlcore-feed", version)]
struct Args {
    /// The `configs/` folder.
    #[arg(long, env = "MLCORE_CONFIG_DIR", default_value = "configs")]
    config_dir: PathBuf,
    /// Environment (for the universe's wire ids).
    #[arg(long)]
    env: String,
    /// Strategy to trigger.
    #[arg(long, default_value = "fx_g10")]
    strategy: String,
    /// Dataset folder (Parquet + dataset_index.json).
    #[arg(long, conflicts_with = "csv")]
    dataset: Option<PathBuf>,
    /// CSV of quotes: `ts_ns,symbol,bid,ask,bid_size,ask_size` with a header.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Daemon ingress address.
    #[arg(long, default_value = "127.0.0.1:7401")]
    addr: String,
    /// Replay speed (data seconds per wall second); 0 = as fast as possible.
    #[arg(long, default_value_t = 60.0, value_parser = speed)]
    speed: f64,
    /// Trigger cadence, wall-clock ms (at least 1).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    trigger_every_ms: u64,
    /// Quotes per symbol sent at full speed first, so features warm up.
    #[arg(long, default_value_t = 110)]
    warmup_quotes: usize,
    /// Stop after this many wall seconds (0 = until the data ends).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
}

fn speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(v) => Err(format!("{v} is not a finite speed of 0 or more")),
        Err(e) => Err(e.to_string()),
    }
}

fn read_csv(path: &PathBuf, names: &[String]) -> anyhow::Result<Vec<Quote>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let [ts, sym, bid, ask, bs, asz] = f.as_slice() else {
            bail!("{}:{}: expected 6 fields", path.display(), n + 1)
        };
        let Some(idx) = names.iter().position(|x| x == sym) else {
            continue;
        };
        let num = |v: &str| {
            v.parse::<f64>()
                .with_context(|| format!("{}:{}: `{v}` is not a number", path.display(), n + 1))
        };
        out.push(Quote {
            ts_ns: ts
                .parse()
                .with_context(|| format!("{}:{}: bad ts_ns", path.display(), n + 1))?,
            symbol: idx as u16,
            bid: num(bid)?,
            ask: num(ask)?,
            bid_size: num(bs)?,
            ask_size: num(asz)?,
        });
    }
    out.sort_by_key(|q| (q.ts_ns, q.symbol));
    Ok(out)
}

/// Trigger frames at a wall-clock cadence.
struct Triggers {
    next: Instant,
    every: Duration,
    count: u64,
    strategy: u16,
}

impl Triggers {
    /// Encodes a trigger stamped with the wall clock when one is due.
    fn fire_if_due(&mut self, now: Instant, start: Instant, wall0: i64, buf: &mut Vec<u8>) {
        if now >= self.next {
            let ts_ns = wall0 + (now - start).as_nanos() as i64;
            encode(
                &Frame::Trigger {
                    ts_ns,
                    strategy: self.strategy,
                },
                buf,
            );
            self.count += 1;
            self.next += self.every;
        }
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let env = a.env.parse::<config::Environment>()?;
    let cfg = config::load(&a.config_dir, env, &ProcessEnv)?;
    let (s_idx, strat) = cfg
        .universe
        .strategies
        .iter()
        .enumerate()
        .find(|(_, s)| s.id == a.strategy)
        .with_context(|| format!("strategy {} not in universe.yaml", a.strategy))?;
    let names: Vec<String> = strat.symbols.iter().map(|s| s.symbol.clone()).collect();
    let ids: HashMap<u16, u32> = strat
        .symbols
        .iter()
        .enumerate()
        .map(|(i, s)| (i as u16, s.id))
        .collect();
    let quotes = match (&a.dataset, &a.csv) {
        (Some(d), _) => {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            Dataset::open(d)?.load_quotes(&refs)?
        }
        (None, Some(c)) => read_csv(c, &names)?,
        (None, None) => bail!("give --dataset or --csv"),
    };
    let Some(first) = quotes.first().map(|q| q.ts_ns) else {
        bail!("no quotes to replay")
    };
    let mut stream = TcpStream::connect(&a.addr).with_context(|| format!("connecting to {}", a.addr))?;
    stream.set_nodelay(true)?;
    let start = Instant::now();
    let wall0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as i64;
    let warm = a.warmup_quotes * names.len();
    let data0 = quotes.get(warm).map_or(first, |q| q.ts_ns);
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut sent = 0u64;
    let every = Duration::from_millis(a.trigger_every_ms.max(1));
    let mut triggers = Triggers {
        next: start + every,
        every,
        count: 0,
        strategy: s_idx as u16,
    };
    let deadline = (a.seconds > 0).then(|| start + Duration::from_secs(a.seconds));
    for (i, q) in quotes.iter().enumerate() {
        // Pace data time against wall time after the warm-up.
        let rel_data = (q.ts_ns - data0).max(0) as f64;
        if i >= warm && a.speed > 0.0 {
            let due = start + Duration::from_nanos((rel_data / a.speed) as u64);
            loop {
                let now = Instant::now();
                triggers.fire_if_due(now, start, wall0, &mut buf);
                if now >= due || deadline.is_some_and(|d| now >= d) {
                    break;
                }
                if !buf.is_empty() {
                    stream.write_all(&buf)?;
                    buf.clear();
                }
                std::thread::sleep(
                    (due.min(triggers.next))
                        .saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(5)),
                );
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let ts = if a.speed > 0.0 {
            wall0 + (rel_data / a.speed) as i64
        } else {
            wall0 + start.elapsed().as_nanos() as i64
        };
        let Some(&symbol_id) = ids.get(&q.symbol) else {
            continue;
        };
        encode(&Frame::quote(q, symbol_id, ts), &mut buf);
        sent += 1;
        if a.speed == 0.0 {
            triggers.fire_if_due(Instant::now(), start, wall0, &mut buf);
        }
        if buf.len() > 32 * 1024 {
            stream.write_all(&buf)?;
            buf.clear();
        }
    }
    stream.write_all(&buf)?;
    stream.flush()?;
    println!(
        "feed done: {sent} quotes, {} triggers in {:.1} s",
        triggers.count,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds_and_cadences_that_mean_nothing_are_refused_by_name() {
        for (args, name) in [
            (&["--speed=-1"][..], "--speed"),
            (&["--speed", "inf"][..], "--speed"),
            (&["--speed", "NaN"][..], "--speed"),
            (&["--speed", "fast"][..], "--speed"),
            (&["--trigger-every-ms", "0"][..], "--trigger-every-ms"),
        ] {
            let parsed = Args::try_parse_from(["mlcore-feed", "--env", "dev"].iter().chain(args));
            let err = parsed.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(name), "{args:?}: {err:?}");
        }
        let ok = Args::try_parse_from([
            "mlcore-feed",
            "--env",
            "dev",
            "--speed",
            "0",
            "--trigger-every-ms",
            "1",
        ]);
        assert!(
            matches!(
                ok,
                Ok(Args {
                    trigger_every_ms: 1,
                    ..
                })
            ),
            "{ok:?}"
        );
    }
}
