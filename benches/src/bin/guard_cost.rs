//! `mlcore-guard-cost`: the instructions Redis spends per guard call,
//! counted by callgrind.
//!
//! Timings of one guard call move by ±25 % from run to run on a shared VM;
//! instruction counts repeat to ≈ 1 % for the same Redis, guard and calls,
//! whatever else the machine does. So changes to the guard (or to a Redis
//! setting) are judged here, and timed under load by `mlcore-loadgen`.
//!
//! It starts its own `redis-server` under `valgrind --tool=callgrind` on a
//! free loopback port (never the shared one), loads the guards this build
//! carries, and for each kind of decision — 32 signals all flat (what the
//! sample model mostly decides), all long — and each contract version,
//! sends warm-up calls, zeroes the counters, sends `--calls` calls in one
//! pipeline, dumps the counters and divides. The calls are what the daemon
//! sends: the guard client's own encoding, µs `seq`s, `f32` model outputs
//! widened to `f64`. The floor beside them, counted the same way: a plain
//! `HSET` of the same decision's bytes into one hash (each symbol a field,
//! its 24-byte v3 record the value), no guard. Prints each version's ratio
//! to the floor (#26's target for v3: at most 2×). v3 is counted twice when
//! the guard module is at hand (`--module`, or `libmlcore_guard_module.so`
//! beside this binary): through the Lua function and through the module.
//!
//! Run: `cargo build --release -p mlcore-guard-module && cargo run --release
//! -p mlcore-benches --bin mlcore-guard-cost` (needs `valgrind` and
//! `redis-server` on `PATH`; ≈ 1 minute).

#![allow(clippy::print_stdout)] // a benchmark binary: it prints its figures

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use mlcore_contract::guard::{ContractVersion, RECORD_BYTES};
use mlcore_contract::{Guard, GuardEngine, Keys, ModeChange, OpsMode, Side, Signal, SignalBatch};

#[derive(Parser, Debug)]
#[command(
    name = "mlcore-guard-cost",
    about = "Instructions Redis spends per guard call (callgrind)"
)]
struct Args {
    /// Calls counted per kind of decision.
    #[arg(long, default_value_t = 200)]
    calls: usize,
    /// Calls before counting (the Lua state, Redis' tables and the
    /// allocator settle).
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// The server's `hash-max-listpack-entries` (9 is what
    /// deployments/redis/README.md advises; Redis' own default is 128/512).
    #[arg(long, default_value_t = 9)]
    listpack_entries: u32,
    /// A guard library to count instead of the one this build carries (a
    /// variant being tried); it must answer as this build's version.
    #[arg(long)]
    library: Option<PathBuf>,
    /// Count only these calls (`v2`, `v3` or `v3-module`; all when
    /// absent), beside the plain HSET.
    #[arg(long)]
    only: Option<String>,
    /// The guard module to load and count (`v3-module`); by default the
    /// one built beside this binary, when there is one.
    #[arg(long)]
    module: Option<PathBuf>,
}

const STRATEGY: &str = "fx_cost";
const SYMBOLS: usize = 32;

/// A `redis-server` under callgrind; killed on drop.
struct Profiled {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Drop for Profiled {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Profiled {
    fn start(dir: &Path, listpack_entries: u32, module: Option<&Path>) -> Result<Self> {
        let port = mlcore_testkit::free_port();
        let child = Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg(format!(
                "--callgrind-out-file={}",
                dir.join("callgrind.out").display()
            ))
            .args(["redis-server", "--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--hash-max-listpack-entries", &listpack_entries.to_string()])
            .args(
                module
                    .map(|m| [Path::new("--loadmodule"), m])
                    .into_iter()
                    .flatten(),
            )
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting valgrind (is it installed? Debian: apt-get install valgrind)")?;
        let server = Self {
            child,
            dir: dir.to_owned(),
            url: format!("redis://127.0.0.1:{port}/"),
        };
        // Redis under valgrind takes seconds to start.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ping = redis::Client::open(server.url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            match ping {
                Ok(_) => return Ok(server),
                Err(e) if Instant::now() > deadline => {
                    bail!("redis-server under callgrind did not answer within 60 s: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn callgrind_control(&self, flag: &str) -> Result<()> {
        let out = Command::new("callgrind_control")
            .arg(flag)
            .arg(self.child.id().to_string())
            .output()
            .context("running callgrind_control (part of valgrind)")?;
        if !out.status.success() {
            bail!(
                "callgrind_control {flag} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Instructions counted since the last zeroing: dumps the counters and
    /// reads the new dump's `summary:`.
    fn dump_instructions(&self) -> Result<u64> {
        let before = dumps(&self.dir)?;
        self.callgrind_control("-d")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = dumps(&self.dir)?;
            if let Some(new) = now.iter().find(|p| !before.contains(p)) {
                // callgrind writes the file whole; wait until its summary is in.
                if let Ok(Some(n)) = std::fs::read_to_string(new).map(|t| summary(&t)) {
                    return Ok(n);
                }
            }
            if Instant::now() > deadline {
                bail!("no new callgrind dump in {} within 30 s", self.dir.display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn dumps(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("callgrind.out."))
        {
            out.push(path);
        }
    }
    Ok(out)
}

/// The event total a callgrind profile states on its `summary:` line.
fn summary(profile: &str) -> Option<u64> {
    profile
        .lines()
        .find_map(|l| l.strip_prefix("summary:"))
        .and_then(|n| n.trim().parse().ok())
}

/// A decision as the daemon sends it: `f32` model outputs widened, µs seq.
fn decision(seq: u64, long: bool, rng: &mut u64) -> SignalBatch {
    let mut unit = || {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        f64::from((*rng >> 40) as f32 / (1u64 << 24) as f32)
    };
    let now = mlcore_daemon::clock::now_ms();
    SignalBatch {
        strategy: STRATEGY.into(),
        seq,
        generated_at_ms: now,
        valid_until_ms: now + 600_000,
        model_id: "fx_cost-v1".into(),
        model_version: 1,
        signals: (0..SYMBOLS)
            .map(|i| {
                let (side, weight, qty) = if long {
                    (Side::Long, 1.0 / 32.0, 100_000.0)
                } else {
                    (Side::Flat, 0.0, 0.0)
                };
                Signal {
                    symbol: format!("SYM{i:02}"),
                    side,
                    weight,
                    qty,
                    return_prob: unit(),
                    risk_score: unit() * 0.3,
                }
            })
            .collect(),
    }
}

/// Sends `n` decisions in one pipeline; every one must be accepted (a
/// refusal is cheaper and would flatter the count).
fn publish(conn: &mut redis::Connection, guard: &Guard, seq: &mut u64, n: usize, long: bool) -> Result<()> {
    let keys = guard.keys().strategy(STRATEGY);
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64 ^ *seq;
    let mut pipe = redis::pipe();
    for _ in 0..n {
        *seq += 1;
        pipe.add_command(guard.publish_cmd(&keys, &decision(*seq, long, &mut rng)));
    }
    let replies: Vec<redis::Value> = pipe.query(conn).context("the guard calls")?;
    let want = redis::Value::Array(vec![
        redis::Value::BulkString(b"ok".to_vec()),
        redis::Value::Int(SYMBOLS as i64),
    ]);
    if let Some(other) = replies.iter().find(|r| **r != want) {
        bail!("a guard call was not accepted: {other:?}");
    }
    Ok(())
}

/// The floor: `n` plain `HSET`s of a decision's bytes into one hash (a
/// field per symbol, its 24-byte v3 record the value), pipelined.
fn plain_hset(conn: &mut redis::Connection, seq: &mut u64, n: usize, long: bool) -> Result<()> {
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64 ^ *seq;
    let mut pipe = redis::pipe();
    for _ in 0..n {
        *seq += 1;
        let d = decision(*seq, long, &mut rng);
        let mut cmd = redis::cmd("HSET");
        cmd.arg("cost:{fx_cost}:plain");
        for s in &d.signals {
            let mut record = Vec::with_capacity(RECORD_BYTES);
            record.extend_from_slice(&s.weight.to_le_bytes());
            record.extend_from_slice(&s.qty.to_le_bytes());
            record.extend_from_slice(&(s.return_prob as f32).to_le_bytes());
            record.extend_from_slice(&(s.risk_score as f32).to_le_bytes());
            cmd.arg(&s.symbol).arg(record);
        }
        pipe.add_command(cmd).ignore();
    }
    pipe.query::<()>(conn).context("the plain HSETs")?;
    Ok(())
}

fn main() -> Result<()> {
    let a = Args::parse();
    let source = match &a.library {
        Some(path) => {
            Some(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?)
        }
        None => None,
    };
    let module = match &a.module {
        Some(m) if !m.exists() => bail!("the guard module {} does not exist", m.display()),
        Some(m) => Some(m.clone()),
        None => std::env::current_exe()
            .ok()
            .and_then(|e| Some(e.parent()?.join("libmlcore_guard_module.so")))
            .filter(|m| m.exists()),
    };
    let dir = tempfile::tempdir().context("a temp dir for the profile")?;
    let server = Profiled::start(dir.path(), a.listpack_entries, module.as_deref())?;
    let mut conn = redis::Client::open(server.url.as_str())?.get_connection()?;
    match (&a.library, source) {
        (Some(path), Some(source)) => {
            Guard::load(&mut conn)?;
            redis::cmd("FUNCTION")
                .arg("LOAD")
                .arg("REPLACE")
                .arg(source)
                .query::<redis::Value>(&mut conn)
                .with_context(|| format!("loading {}", path.display()))?;
            Guard::check_version(&mut conn).with_context(|| format!("{} as the guard", path.display()))?;
        }
        _ => Guard::load(&mut conn)?,
    }
    let guard = Guard::new(Keys::new("cost"), 100_000);
    guard.set_mode(
        &mut conn,
        &ModeChange {
            strategy: STRATEGY,
            expected_version: 0,
            mode: OpsMode::Active,
            reason: "instruction count",
            actor: "mlcore-guard-cost",
            request_id: "mlcore-guard-cost",
        },
    )?;
    let mut seq = mlcore_daemon::clock::now_ms() * 1000;
    let library = a
        .library
        .as_ref()
        .map_or("this build's guard".to_owned(), |p| p.display().to_string());
    println!(
        "== mlcore-guard-cost: Redis instructions per guard call ({library}; {} calls after {} warm-up, \
         hash-max-listpack-entries {}) ==",
        a.calls, a.warmup, a.listpack_entries
    );
    match &module {
        Some(m) => {
            guard
                .clone()
                .with_contract(ContractVersion::V3)
                .with_engine(GuardEngine::Module)
                .check_engine(&mut conn)
                .with_context(|| format!("{} as the guard module", m.display()))?;
            println!("guard module: {}", m.display());
        }
        None => println!(
            "guard module: not found beside this binary, not counted \
             (cargo build --release -p mlcore-guard-module, or --module PATH)"
        ),
    }
    for (name, long) in [("all flat", false), ("all long", true)] {
        let mut count = |what: &mut dyn FnMut(&mut redis::Connection, &mut u64, usize) -> Result<()>| {
            what(&mut conn, &mut seq, a.warmup)?;
            server.callgrind_control("-z")?;
            what(&mut conn, &mut seq, a.calls.max(1))?;
            Ok::<u64, anyhow::Error>(server.dump_instructions()? / a.calls.max(1) as u64)
        };
        let floor = count(&mut |c, seq, n| plain_hset(c, seq, n, long))?;
        println!(
            "plain HSET of the decision's bytes, {SYMBOLS} fields, {name}: {floor} instructions ({:.3} M)",
            floor as f64 / 1e6
        );
        let mut kinds = vec![
            ("v2", ContractVersion::V2, GuardEngine::Function),
            ("v3", ContractVersion::V3, GuardEngine::Function),
        ];
        if module.is_some() {
            kinds.push(("v3-module", ContractVersion::V3, GuardEngine::Module));
        }
        for (label, version, engine) in kinds {
            if a.only.as_deref().is_some_and(|o| o != label) {
                continue;
            }
            let g = guard.clone().with_contract(version).with_engine(engine);
            let per_call = count(&mut |c, seq, n| publish(c, &g, seq, n, long))?;
            println!(
                "guard call {label}, {SYMBOLS} signals, {name}: {per_call} instructions ({:.3} M), {:.2}× the plain HSET",
                per_call as f64 / 1e6,
                per_call as f64 / floor as f64
            );
        }
    }
    let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").arg("NOSAVE").query(&mut conn);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_line_is_the_total() {
        let profile = "version: 1\ncreator: callgrind-3.19.0\npid: 12534\nevents: Ir\nsummary: 332500488\n\nfn=(1) main\n0 5\ntotals: 332941085\n";
        assert_eq!(summary(profile), Some(332_500_488));
        assert_eq!(
            summary("events: Ir\n"),
            None,
            "a profile still being written has none"
        );
        assert_eq!(summary("summary: many\n"), None);
    }

    #[test]
    fn decisions_are_what_the_daemon_sends() {
        let mut rng = 7;
        let flat = decision(1_763_900_000_000_001, false, &mut rng);
        assert_eq!(flat.signals.len(), SYMBOLS);
        for s in &flat.signals {
            assert_eq!((s.side, s.weight, s.qty), (Side::Flat, 0.0, 0.0));
            assert_eq!(s.return_prob, f64::from(s.return_prob as f32), "an f32 widened");
            assert!((0.0..1.0).contains(&s.return_prob));
        }
        let long = decision(2, true, &mut rng);
        assert!(long
            .signals
            .iter()
            .all(|s| s.side == Side::Long && s.weight > 0.0));
        assert_ne!(flat.signals[0].return_prob, flat.signals[1].return_prob);
    }
}
