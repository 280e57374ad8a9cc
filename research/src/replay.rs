//! The order in which a replay sees the market, and the file that records
//! what a feed sent.
//!
//! [`Schedule`]: quotes in time order with a decision trigger at every
//! multiple of the cadence (on the epoch's grid), each trigger fired after
//! every quote stamped before it — the convention
//! [`mlcore_features::batch`] samples training rows at, so a model's
//! training rows and a backtest's decisions see the engine in the same state.
//!
//! [`Capture`]: `mlcore-feed --capture FILE` writes every frame it sends
//! (quotes with the timestamps it put on them, triggers) as text lines; a
//! backtest of that file sees exactly what the daemon saw. Numbers are
//! written in Rust's shortest round-trip form, so reading them back gives
//! the same bits. Lines: `q,<ts_ns>,<symbol index>,<bid>,<ask>,<bid_size>,<ask_size>`
//! and `t,<ts_ns>`, after a `# mlcore capture v1` header.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use mlcore_market::Quote;

/// One step of a replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event {
    /// A quote: updates its symbol's features.
    Quote(Quote),
    /// A decision at this time, ns since the epoch.
    Trigger(i64),
}

/// Quotes with triggers at a cadence; see the module documentation.
#[derive(Debug)]
pub struct Schedule<'a> {
    quotes: &'a [Quote],
    next_quote: usize,
    every_ns: i64,
    next_trigger: i64,
    from_ns: i64,
    to_ns: i64,
}

impl<'a> Schedule<'a> {
    /// Every quote of `quotes` (time-ordered), with triggers every
    /// `every_ns` from `from_ns` (rounded up to the grid) until `to_ns`
    /// (exclusive) or the last quote. Quotes before `from_ns` warm the
    /// features up without a decision.
    pub fn new(quotes: &'a [Quote], every_ns: i64, from_ns: i64, to_ns: i64) -> Self {
        let every_ns = every_ns.max(1);
        let first = from_ns.div_euclid(every_ns) * every_ns;
        let next_trigger = if first < from_ns { first + every_ns } else { first };
        Self {
            quotes,
            next_quote: 0,
            every_ns,
            next_trigger,
            from_ns,
            to_ns,
        }
    }

    /// The window's start, ns.
    pub fn from_ns(&self) -> i64 {
        self.from_ns
    }
}

impl Iterator for Schedule<'_> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        let q = *self.quotes.get(self.next_quote)?;
        if self.next_trigger < self.to_ns && q.ts_ns >= self.next_trigger {
            let t = self.next_trigger;
            self.next_trigger += self.every_ns;
            return Some(Event::Trigger(t));
        }
        if q.ts_ns >= self.to_ns {
            self.next_quote = self.quotes.len();
            return None;
        }
        self.next_quote += 1;
        Some(Event::Quote(q))
    }
}

/// The header line of a capture file.
pub const CAPTURE_HEADER: &str = "# mlcore capture v1";

/// A capture that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// I/O on the file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A line that is not a capture line.
    #[error("{path}:{line}: {what}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        what: String,
    },
}

/// Writes capture lines (see the module documentation).
#[derive(Debug)]
pub struct Capture<W: Write> {
    out: W,
}

impl<W: Write> Capture<W> {
    /// Starts a capture: writes the header.
    pub fn new(mut out: W) -> std::io::Result<Self> {
        writeln!(out, "{CAPTURE_HEADER}")?;
        Ok(Self { out })
    }

    /// Records one event.
    pub fn record(&mut self, e: &Event) -> std::io::Result<()> {
        match e {
            Event::Quote(q) => writeln!(
                self.out,
                "q,{},{},{},{},{},{}",
                q.ts_ns, q.symbol, q.bid, q.ask, q.bid_size, q.ask_size
            ),
            Event::Trigger(t) => writeln!(self.out, "t,{t}"),
        }
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads a capture file into its events, in order.
pub fn read_capture(path: &Path) -> Result<Vec<Event>, CaptureError> {
    let io = |source| CaptureError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut events = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        let bad = |what: String| CaptureError::Malformed {
            path: path.to_owned(),
            line: n + 1,
            what,
        };
        if n == 0 {
            if line != CAPTURE_HEADER {
                return Err(bad(format!("expected the header `{CAPTURE_HEADER}`")));
            }
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        let num = |i: usize, name: &str| -> Result<f64, CaptureError> {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .ok_or_else(|| bad(format!("{name} is not a number")))
        };
        let int = |i: usize, name: &str| -> Result<i64, CaptureError> {
            fields
                .get(i)
                .and_then(|f| f.parse::<i64>().ok())
                .ok_or_else(|| bad(format!("{name} is not an integer")))
        };
        match (fields.first().copied(), fields.len()) {
            (Some("t"), 2) => events.push(Event::Trigger(int(1, "ts_ns")?)),
            (Some("q"), 7) => events.push(Event::Quote(Quote {
                ts_ns: int(1, "ts_ns")?,
                symbol: u16::try_from(int(2, "symbol")?)
                    .map_err(|_| bad("symbol index out of range".into()))?,
                bid: num(3, "bid")?,
                ask: num(4, "ask")?,
                bid_size: num(5, "bid_size")?,
                ask_size: num(6, "ask_size")?,
            })),
            _ => {
                return Err(bad(format!(
                    "expected `q,ts,symbol,bid,ask,bid_size,ask_size` or `t,ts`, got {line:?}"
                )))
            }
        }
    }
    if events.is_empty() {
        return Err(CaptureError::Malformed {
            path: path.to_owned(),
            line: 1,
            what: "the capture holds no event".into(),
        });
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(ts_s: i64, symbol: u16) -> Quote {
        Quote {
            ts_ns: ts_s * 1_000_000_000,
            symbol,
            bid: 1.0 + f64::from(symbol) / 3.0,
            ask: 1.1 + f64::from(symbol) / 7.0,
            bid_size: 1e6,
            ask_size: 2e6,
        }
    }

    #[test]
    fn triggers_fire_on_the_grid_after_the_quotes_stamped_before_them() {
        let quotes = [q(0, 0), q(0, 1), q(5, 0), q(5, 1), q(10, 0), q(12, 1), q(20, 0)];
        let s = 1_000_000_000;
        let got: Vec<String> = Schedule::new(&quotes, 5 * s, 3 * s, 20 * s)
            .map(|e| match e {
                Event::Quote(q) => format!("q{}@{}", q.symbol, q.ts_ns / s),
                Event::Trigger(t) => format!("T@{}", t / s),
            })
            .collect();
        // The window opens at 3 s: the first trigger is the grid's 5 s,
        // fired before the quotes stamped 5 s; the window ends before 20 s.
        assert_eq!(
            got,
            ["q0@0", "q1@0", "T@5", "q0@5", "q1@5", "T@10", "q0@10", "q1@12", "T@15"]
        );
    }

    #[test]
    fn a_capture_reads_back_bit_for_bit_and_bad_lines_are_named() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("c.txt");
        let events = [
            Event::Quote(q(1, 2)),
            Event::Trigger(1_500_000_001),
            Event::Quote(q(2, 0)),
        ];
        let mut c = Capture::new(std::fs::File::create(&path)?)?;
        for e in &events {
            c.record(e)?;
        }
        c.finish()?;
        assert_eq!(read_capture(&path)?, events);
        std::fs::write(&path, format!("{CAPTURE_HEADER}\nt,1\nq,2,0,1.0,abc,1,1\n"))?;
        let err = read_capture(&path).expect_err("malformed").to_string();
        assert!(err.contains(":3: ask is not a number"), "{err}");
        std::fs::write(&path, "t,1\n")?;
        let err = read_capture(&path).expect_err("no header").to_string();
        assert!(err.contains(":1: expected the header"), "{err}");
        Ok(())
    }
}
