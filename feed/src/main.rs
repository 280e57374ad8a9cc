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
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use mlcore_config::{self as config, ProcessEnv};
use mlcore_daemon::wire::{encode, Frame};
use mlcore_market::Quote;
use mlcore_research::dataset::Dataset;
use mlcore_research::replay::{Capture, Event};

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
    /// Daemon ingress address; repeat it to send the same frames to
    /// several daemons (active-active). A daemon that goes away is dropped
    /// and the others go on; the feed fails only when none is left.
    #[arg(long, default_value = "127.0.0.1:7401", action = clap::ArgAction::Append)]
    addr: Vec<String>,
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
    /// Also write every frame sent, with the timestamps put on it, to this
    /// file (`mlcore-control research backtest --capture` replays it
    /// exactly as the daemon received it).
    #[arg(long)]
    capture: Option<PathBuf>,
}

fn speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(v) => Err(format!("{v} is not a finite speed of 0 or more")),
        Err(e) => Err(e.to_string()),
    }
}

/// The CSV's header, exactly: columns are found by position.
const CSV_HEADER: &str = "ts_ns,symbol,bid,ask,bid_size,ask_size";

/// Quotes read from a CSV, and what was left out of them.
#[derive(Debug, Default, PartialEq)]
struct CsvQuotes {
    quotes: Vec<Quote>,
    /// Rows per symbol that the strategy does not trade (not sent).
    other_symbols: std::collections::BTreeMap<String, u64>,
    /// Rows sent that the daemon will ignore, as it would live: a crossed
    /// book or a price that is not positive.
    unusable: u64,
}

/// Reads `ts_ns,symbol,bid,ask,bid_size,ask_size` rows (after exactly that
/// header; blank lines skipped) for the strategy's `names`, sorted by time.
/// A row that cannot be read stops the replay with its line and field:
/// replaying part of a file as if it were all of it would mislead.
fn read_csv(path: &Path, names: &[String]) -> anyhow::Result<CsvQuotes> {
    let at = |n: usize| format!("{}:{}", path.display(), n + 1);
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    match lines.next() {
        Some((_, header)) if header.trim().replace(' ', "") == CSV_HEADER => {}
        Some((n, header)) => bail!(
            "{}: the header must be `{CSV_HEADER}`, found `{}`",
            at(n),
            header.trim()
        ),
        None => bail!(
            "{}: empty; expected the header `{CSV_HEADER}` and quotes",
            path.display()
        ),
    }
    let mut out = CsvQuotes::default();
    for (n, line) in lines {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let [ts, sym, bid, ask, bs, asz] = f.as_slice() else {
            bail!("{}: expected 6 fields, found {}", at(n), f.len())
        };
        let Some(idx) = names.iter().position(|x| x == sym) else {
            *out.other_symbols.entry((*sym).to_owned()).or_default() += 1;
            continue;
        };
        let num = |field: &str, v: &str| -> anyhow::Result<f64> {
            match v.parse::<f64>() {
                Ok(x) if x.is_finite() => Ok(x),
                _ => bail!("{}: {field} `{v}` is not a finite number", at(n)),
            }
        };
        let quote = Quote {
            ts_ns: ts.parse().with_context(|| {
                format!("{}: ts_ns `{ts}` is not an integer of ns since the epoch", at(n))
            })?,
            symbol: idx as u16,
            bid: num("bid", bid)?,
            ask: num("ask", ask)?,
            bid_size: num("bid_size", bs)?,
            ask_size: num("ask_size", asz)?,
        };
        if quote.bid_size < 0.0 || quote.ask_size < 0.0 {
            bail!("{}: sizes cannot be negative", at(n));
        }
        if !quote.is_sane() {
            out.unusable += 1;
        }
        out.quotes.push(quote);
    }
    out.quotes.sort_by_key(|q| (q.ts_ns, q.symbol));
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
    fn fire_if_due(
        &mut self,
        now: Instant,
        start: Instant,
        wall0: i64,
        buf: &mut Vec<u8>,
        capture: &mut Recorder,
    ) -> anyhow::Result<()> {
        if now >= self.next {
            let ts_ns = wall0 + (now - start).as_nanos() as i64;
            capture.record(&Event::Trigger(ts_ns))?;
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
        Ok(())
    }
}

/// The capture file, when asked for.
struct Recorder(Option<(PathBuf, Capture<std::io::BufWriter<std::fs::File>>)>);

impl Recorder {
    fn open(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else { return Ok(Self(None)) };
        let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let c = Capture::new(std::io::BufWriter::new(file))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Self(Some((path.to_owned(), c))))
    }

    fn record(&mut self, e: &Event) -> anyhow::Result<()> {
        if let Some((path, c)) = &mut self.0 {
            c.record(e)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        if let Some((path, c)) = self.0 {
            c.finish()
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

/// How long a daemon may stop reading before the feed drops it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// The same bytes to every daemon still connected.
struct FanOut {
    streams: Vec<(String, TcpStream)>,
}

impl FanOut {
    /// Connects to every daemon that answers (the others are said on
    /// stdout); an error only when none does. A daemon that stops reading
    /// (hung, partitioned) is dropped after [`WRITE_TIMEOUT`], so it cannot
    /// hold the others back.
    fn connect(addrs: &[String]) -> anyhow::Result<Self> {
        let mut streams = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let opened = TcpStream::connect(addr).and_then(|s| {
                s.set_nodelay(true)?;
                s.set_write_timeout(Some(WRITE_TIMEOUT))?;
                Ok(s)
            });
            match opened {
                Ok(stream) => streams.push((addr.clone(), stream)),
                Err(e) if addrs.len() > 1 => {
                    println!("daemon at {addr} does not answer ({e}): going on without it")
                }
                Err(e) => return Err(e).with_context(|| format!("connecting to {addr}")),
            }
        }
        if streams.is_empty() {
            bail!("no daemon answers at {}", addrs.join(", "));
        }
        Ok(Self { streams })
    }

    /// Writes `buf` to each daemon; one that fails or stops reading is
    /// dropped (said on stdout), an error only when none is left.
    fn write(&mut self, buf: &[u8]) -> anyhow::Result<()> {
        self.streams.retain_mut(|(addr, s)| match s.write_all(buf) {
            Ok(()) => true,
            Err(e) => {
                println!("daemon at {addr} went away ({e}): going on without it");
                false
            }
        });
        if self.streams.is_empty() {
            bail!("every daemon went away");
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let env = a.env.parse::<config::Environment>()?;
    let cfg = config::load_for(&a.config_dir, env, &ProcessEnv, config::Process::Offline)?;
    let (s_idx, strat) = cfg
        .universe
        .strategies
        .iter()
        .enumerate()
        .find(|(_, s)| s.id == a.strategy)
        .with_context(|| format!("strategy {} not in universe.yaml", a.strategy))?;
    let names: Vec<String> = strat.symbols.iter().map(|s| s.symbol.to_string()).collect();
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
        (None, Some(c)) => {
            let read = read_csv(c, &names)?;
            if !read.other_symbols.is_empty() {
                let skipped: Vec<String> = read
                    .other_symbols
                    .iter()
                    .map(|(s, n)| format!("{s} ({n})"))
                    .collect();
                println!(
                    "skipped rows of symbols {} does not trade: {}",
                    a.strategy,
                    skipped.join(", ")
                );
            }
            if read.unusable > 0 {
                println!(
                    "{} quotes are crossed or not positive: sent, and ignored by the daemon as it would live",
                    read.unusable
                );
            }
            read.quotes
        }
        (None, None) => bail!("give --dataset or --csv"),
    };
    let Some(first) = quotes.first().map(|q| q.ts_ns) else {
        bail!("no quotes to replay")
    };
    let mut out = FanOut::connect(&a.addr)?;
    let mut capture = Recorder::open(a.capture.as_deref())?;
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
                triggers.fire_if_due(now, start, wall0, &mut buf, &mut capture)?;
                if now >= due || deadline.is_some_and(|d| now >= d) {
                    break;
                }
                if !buf.is_empty() {
                    out.write(&buf)?;
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
        capture.record(&Event::Quote(Quote { ts_ns: ts, ..*q }))?;
        sent += 1;
        if a.speed == 0.0 {
            triggers.fire_if_due(Instant::now(), start, wall0, &mut buf, &mut capture)?;
        }
        if buf.len() > 32 * 1024 {
            out.write(&buf)?;
            buf.clear();
        }
    }
    out.write(&buf)?;
    capture.finish()?;
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

    fn csv(text: &str) -> anyhow::Result<CsvQuotes> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("quotes.csv");
        std::fs::write(&path, text)?;
        read_csv(&path, &["EURUSD".to_owned(), "USDJPY".to_owned()])
    }

    #[test]
    fn a_csv_is_read_in_time_order_with_what_was_left_out_reported() -> anyhow::Result<()> {
        let read = csv("ts_ns, symbol, bid, ask, bid_size, ask_size\n\
             2000,USDJPY,150.1,150.2,1e6,2e6\n\
             \n\
             1000,EURUSD,1.1,1.1002,1e6,1e6\n\
             1500,XAUUSD,2400,2401,10,10\n\
             3000,EURUSD,1.2,1.1,1e6,1e6\n")?;
        let order: Vec<(i64, u16)> = read.quotes.iter().map(|q| (q.ts_ns, q.symbol)).collect();
        assert_eq!(order, [(1000, 0), (2000, 1), (3000, 0)]);
        assert_eq!(read.quotes[1].ask_size, 2e6);
        assert_eq!(
            read.other_symbols.into_iter().collect::<Vec<_>>(),
            [("XAUUSD".to_owned(), 1)]
        );
        assert_eq!(read.unusable, 1, "the crossed EURUSD quote");
        Ok(())
    }

    #[test]
    fn a_csv_that_cannot_be_read_whole_is_refused_naming_line_and_field() {
        let header = "ts_ns,symbol,bid,ask,bid_size,ask_size\n";
        for (text, expected) in [
            (String::new(), "empty"),
            (
                "symbol,ts_ns,bid,ask,bid_size,ask_size\n1,EURUSD,1,1,1,1\n".to_owned(),
                "quotes.csv:1: the header must be",
            ),
            ("1000,EURUSD,1.1,1.2,1,1\n".to_owned(), "the header must be"),
            (
                format!("{header}1000,EURUSD,1.1,1.2,1\n"),
                "quotes.csv:2: expected 6 fields, found 5",
            ),
            (
                format!("{header}1000,EURUSD,1.1,NaN,1,1\n"),
                "quotes.csv:2: ask `NaN` is not a finite number",
            ),
            (
                format!("{header}1000,EURUSD,1.1,1.2,1,1\n1.5e9,EURUSD,1.1,1.2,1,1\n"),
                "quotes.csv:3: ts_ns `1.5e9`",
            ),
            (
                format!("{header}1000,USDJPY,150,151,-5,1\n"),
                "quotes.csv:2: sizes cannot be negative",
            ),
        ] {
            let err = csv(&text).err().map(|e| format!("{e:#}")).unwrap_or_default();
            assert!(err.contains(expected), "{text:?}: {err:?}");
        }
    }
}
