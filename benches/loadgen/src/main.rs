//! `mlcore-loadgen`: drives a running daemon over TCP at a set decision rate
//! and reads the signals back from Redis.
//!
//! Phases: a steady phase, then (with `--swap-every-ms`) a phase during which
//! a newly signed model version is dropped into `models_root` periodically
//! and the registry pointer in Redis moved to it (standing in for the control
//! plane's activation, so a daemon that follows the registry swaps too), so
//! the daemon verifies, warms and swaps models under load. The daemon's
//! resident memory is reported at each phase's start and end; during the
//! swaps the load generator also reads the daemon's swap count and memory at
//! eight points, and prints per window the swaps, the memory and the
//! latency of the decisions triggered in it, then whether memory and
//! latency stayed flat from the first half of the swaps to the second
//! ([`crate::swaps`]; the issue asks it across 1,000 swaps:
//! `--seconds 70 --swap-every-ms 40`). For each phase
//! it reports throughput, decisions dropped, the daemon's trigger →
//! acknowledged-by-Redis histogram (µs buckets from `/metrics`, differenced
//! per phase) and the trigger → visible-in-Redis latency: from the
//! trigger's timestamp, taken just before its frame is written, to the
//! entry's `written_at_us` — Redis' clock when the guard wrote the decision,
//! which no one can see earlier (one machine, one `CLOCK_REALTIME`, µs).
//! Every entry is read back from the stream and matched to its trigger by
//! `generated_at_ms` (the trigger's time). The issue's targets are judged on
//! that figure. Beside it, when this load generator's reader got the entry
//! (its monotonic clock): the same plus the reader's own lag — waking on a
//! core shared with Redis or the daemon — which a consumer on its own core
//! would not pay. Baselines measured in the same run, by a plain client:
//! one decision's 32 guarded publishes pipelined (single-signal calls, as
//! the issue words the p99 target's baseline) and the same 32 signals as
//! the one guard call the daemon sends (a stricter bound, printed beside
//! the verdict; [`crate::baseline`]), and the bare ONNX Runtime
//! time of one decision on feature rows of the quotes it sends. Before the
//! verdicts it says whether the host took more than 1 % of a core during
//! the baselines or a phase ([`mlcore_host::steal::QUIET_STEAL_PCT`]):
//! then the run measured the host as much as the daemon.
//! Beside them, what explains a tail the daemon does not cause: before the
//! load, how much a spinning thread on each core loses to stalls (the
//! machine's noise, [`mlcore_host::stalls`]) and whether its idle cores
//! halt at once ([`mlcore_host::idle`]); per phase, Redis' own time
//! in guard calls and the share of its core they took
//! ([`crate::redis_stats`]), what the host took from each core
//! (steal time, [`mlcore_host::steal`]), and whether the decisions
//! slower than the p99 target's bound were scattered or came in bursts
//! ([`mlcore_host::bursts`]). `--latencies-out FILE` writes every
//! decision's trigger time and latency as CSV, to plot.
//!
//! `mlcore-loadgen --env dev --addr 127.0.0.1:7401 --http 127.0.0.1:9464 --rate 500 --seconds 10`

#![allow(clippy::print_stdout)] // a command-line tool reports on stdout

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod baseline;
mod matching;
mod redis_stats;
mod swaps;

use anyhow::Context;
use baseline::{Bounds, PublishBaseline};
use clap::Parser;
use matching::{Matched, Matcher, Trigger};
use mlcore_benches::daemon_metrics::{bucket_quantile, snapshot};
use mlcore_benches::Percentiles;
use mlcore_config::{self as config, ProcessEnv};
use mlcore_daemon::wire::{encode, Frame};
use mlcore_host::bursts::{self, Bursts, Sample};
use mlcore_host::{stalls, steal};
use mlcore_market::Quote;
use mlcore_models::artifact::{self, ArtifactFiles, Manifest, SecretKeyFile};
use mlcore_research::synth::{Generator, SynthSpec};
use redis_stats::CommandStats;
use swaps::{Flatness, Reading};

/// Drives a running mlcore-daemon over TCP at a set rate, reads its
/// signals back from Redis, and judges the latency, throughput and swap
/// targets (docs/performance.md) against baselines measured in the same
/// run.
#[derive(Debug, Parser)]
#[command(name = "mlcore-loadgen", version)]
struct Args {
    /// The `configs/` folder.
    #[arg(long, env = "MLCORE_CONFIG_DIR", default_value = "configs")]
    config_dir: PathBuf,
    /// Environment of the running daemon.
    #[arg(long)]
    env: String,
    /// Daemon ingress.
    #[arg(long)]
    addr: String,
    /// Daemon metrics (`host:port`).
    #[arg(long)]
    http: String,
    /// Decisions per second (1-100000).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    rate: u64,
    /// Seconds per phase (1-3600).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Drop a new model version every N ms during a second phase (0: no swap phase).
    #[arg(long, default_value_t = 0)]
    swap_every_ms: u64,
    /// Artifact to re-sign as new versions for the swap phase.
    #[arg(long)]
    artifact: Option<PathBuf>,
    /// Signing key for the swap phase.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Seconds to probe each core's stalls before the load (0: skip; at most 60).
    #[arg(long, default_value_t = 1.0, value_parser = probe_seconds)]
    probe_seconds: f64,
    /// Write every decision's trigger time (µs from the load's start),
    /// trigger -> visible latency and trigger -> read by this load generator
    /// (µs) to this CSV file, to plot the tail.
    #[arg(long)]
    latencies_out: Option<PathBuf>,
}

fn probe_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=60.0).contains(&v) => Ok(v),
        Ok(v) => Err(format!("{v} is not between 0 and 60")),
        Err(e) => Err(e.to_string()),
    }
}

impl Args {
    /// What clap cannot say alone: a swap phase needs what it swaps, and
    /// finding out after the steady phase would waste the run.
    fn check(&self) -> anyhow::Result<()> {
        if self.swap_every_ms == 0 {
            return Ok(());
        }
        let (Some(artifact), Some(key)) = (&self.artifact, &self.key) else {
            anyhow::bail!("--swap-every-ms needs --artifact (a model folder) and --key (its signing key)");
        };
        if !artifact.join(artifact::MANIFEST).is_file() {
            anyhow::bail!(
                "--artifact {}: no {} there",
                artifact.display(),
                artifact::MANIFEST
            );
        }
        if !key.is_file() {
            anyhow::bail!("--key {}: no such file", key.display());
        }
        Ok(())
    }
}

struct Phase {
    name: &'static str,
    /// The phase in a sentence ("the steady phase").
    called: &'static str,
    decisions: u64,
    dropped: u64,
    seconds: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    visible: Option<Percentiles>,
    /// Trigger → read by this load generator's reader.
    read: Option<Percentiles>,
    /// How the decisions slower than the p99 target's bound came.
    tail: Bursts,
    /// Decisions matched to their trigger in the stream.
    seen: usize,
    /// Redis' guard calls during the phase (`FCALL`, or the module's
    /// command: [`redis_stats::guard_command`]).
    redis: CommandStats,
    /// What the host took from each core during the phase (or why that
    /// could not be read).
    host: Result<Vec<steal::CoreShare>, String>,
    /// The daemon's swaps and memory read during a swap phase.
    readings: Vec<Reading>,
    /// The swap phase between consecutive readings.
    windows: Vec<swaps::Window>,
    /// The swap phase's halves compared.
    flat: Option<Flatness>,
}

/// Why a swap phase made fewer swaps than asked, and the `--seconds` that
/// would make them at the rate the daemon took them (a swap verifies the
/// artifact, builds its sessions and, for native heads, checks them against
/// ONNX Runtime: it can take longer than `--swap-every-ms`).
fn fewer_swaps(swaps: u64, seconds: u64) -> String {
    let per_second = swaps as f64 / seconds.max(1) as f64;
    let needed = if per_second > 0.0 {
        format!(
            "; at that rate --seconds {:.0} makes them",
            (swaps::SWAPS_ASKED as f64 * 1.1 / per_second).ceil()
        )
    } else {
        String::new()
    };
    format!(" (fewer swaps than asked: the daemon took {per_second:.1} a second{needed})")
}

/// The server's totals so far for the command the daemon publishes with
/// ([`redis_stats::guard_command`]).
fn guard_stats(conn: &mut redis::Connection, engine: config::GuardEngine) -> anyhow::Result<CommandStats> {
    CommandStats::read(conn, redis_stats::guard_command(engine)).map_err(anyhow::Error::msg)
}

/// Reads the daemon's stream until `stop`, matching each decision's entry
/// to its trigger from `sent`; per phase, the decisions seen, in trigger
/// order.
fn read_stream(
    url: String,
    stream: String,
    sent: std::sync::mpsc::Receiver<Trigger>,
    stop: Arc<AtomicBool>,
    load_start: Instant,
) -> anyhow::Result<[Vec<Matched>; 2]> {
    let mut out = [Vec::new(), Vec::new()];
    let mut c = redis::Client::open(url)?.get_connection()?;
    // From the newest entry now, by its id: `$` would miss an entry written
    // before the first read is under way.
    let newest: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(&stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(&mut c)
        .context("reading the daemon's stream")?;
    let mut last = newest
        .ids
        .first()
        .map_or_else(|| "0-0".to_owned(), |e| e.id.clone());
    let mut matcher = Matcher::new(load_start);
    // A blocked read per entry: reading in batches every few ms was tried,
    // and the reader's bursts of parsing took Redis' core in ms-long
    // stretches (guard calls 20-40 % slower, decisions queueing).
    while !stop.load(Ordering::Relaxed) {
        let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(100_000)
            .arg("BLOCK")
            .arg(200)
            .arg("STREAMS")
            .arg(&stream)
            .arg(&last)
            .query(&mut c)
            .context("reading the daemon's stream")?;
        let read_at = Instant::now();
        for t in sent.try_iter() {
            matcher.sent(t);
        }
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for e in key.ids {
                last = e.id.clone();
                let (Some(seq), Some(generated), Some(written)) = (
                    e.get::<String>("seq"),
                    e.get::<u64>("generated_at_ms"),
                    e.get::<u64>("written_at_us"),
                ) else {
                    anyhow::bail!(
                        "stream entry {} lacks seq, generated_at_ms or written_at_us: is the guard older than revision 3?",
                        e.id
                    );
                };
                if let Some(m) = matcher.entry(&seq, generated, written, read_at) {
                    out[m.phase].push(m);
                }
            }
        }
    }
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    a.check()?;
    let cfg = config::load_for(
        &a.config_dir,
        a.env.parse()?,
        &ProcessEnv,
        config::Process::Daemon,
    )?;
    let strat = cfg
        .universe
        .strategies
        .first()
        .context("no strategy in universe.yaml")?
        .clone();
    let n = strat.symbols.len();
    let ids: Vec<u32> = strat.symbols.iter().map(|s| s.id).collect();
    let spec = SynthSpec {
        seed: 99,
        symbols: n.min(32),
        start_day: 20_458,
        days: 1,
        interval_ms: 1_000,
        effect: 1.0,
    };
    let quotes: Vec<Quote> = Generator::new(spec)?.day_merged(20_458);
    // The machine's noise, before anything of ours loads it.
    let stalls = if a.probe_seconds > 0.0 {
        stalls::probe_cores(Duration::from_secs_f64(a.probe_seconds))
    } else {
        Vec::new()
    };

    // A halted strategy (also what no recorded mode means) makes the
    // daemon publish nothing: a load with nothing to measure. Said before
    // the baselines, not as "no decision seen" after the load.
    let mut conn = redis::Client::open(cfg.redis.url.expose())?.get_connection()?;
    let ops = mlcore_contract::Guard::new(mlcore_contract::Keys::new(&cfg.redis.namespace), 1000)
        .read_mode(&mut conn, strat.id.as_ref())?;
    if ops.mode == mlcore_contract::OpsMode::Halted {
        let recorded = if ops.version == 0 {
            "no ops mode recorded, which reads as halted".to_owned()
        } else {
            format!("halted since mode version {}", ops.version)
        };
        anyhow::bail!(
            "strategy {id} in namespace {ns}: {recorded}, so the daemon publishes nothing; resume it first: \
             `mlcore-control ops request --action resume --scope {id} --reason \"load test\"` as an operator, \
             then `mlcore-control ops approve --id REQUEST_ID` as an approver (scripts/demo.sh does both)",
            id = strat.id.as_ref(),
            ns = cfg.redis.namespace,
        );
    }

    // Baselines: one decision's guarded publishes by a plain client, as the
    // daemon sends it (one call) and as the issue words it (32 single-signal
    // calls, pipelined), one after the other — alternated, the one call
    // read half again slower than alone (p50 545–627 against 368–463 µs),
    // which would loosen the stricter bound; and bare ONNX Runtime for one
    // decision.
    let names: Vec<String> = strat.symbols.iter().map(|s| s.symbol.to_string()).collect();
    let mut base = PublishBaseline::new(
        redis::Client::open(cfg.redis.url.expose())?.get_connection()?,
        &format!("{}-loadgen-baseline", cfg.redis.namespace),
        &strat.id,
        &names,
    )?;
    // 2,000 calls of each (≈ 0.7 s and 3 s): with 500 the p99 was the
    // 5th-worst call, and one stall of the machine moved the target by a
    // third between runs.
    let cpu_before_baseline = steal::CpuTimes::read();
    let one_call = Percentiles::measure(2000, 50, || base.one_call());
    let pipelined = Percentiles::measure(2000, 50, || base.pipelined());
    let baseline_host = steal::since(cpu_before_baseline);
    let period = Duration::from_nanos(1_000_000_000 / a.rate.max(1));
    let baseline_paced = Percentiles::measure_paced(500, 20, period, || base.one_call());
    // A refused or failed publish is cheaper than an accepted one: the
    // first one stops the run rather than flatter the baseline.
    if let Some(why) = base.refused() {
        anyhow::bail!(
            "the baseline's guarded publish was not accepted ({why}); its timings would flatter the target"
        );
    }
    let mut conn = base.clean()?;
    let (ort, ort_constant, ort_paced) = ort_baselines(&strat, &quotes, period)?;

    // Reader: follow the daemon's stream; per phase, the latency from each
    // trigger to its decision's entry being visible.
    // The contract the daemon publishes with (`redis.yaml` `contract`), as
    // it reads the same configuration: v2's stream or v3's.
    let keys = mlcore_contract::Keys::new(&cfg.redis.namespace).strategy(strat.id.as_ref());
    let stream = match cfg.redis.contract {
        config::GuardContract::V2 => keys.signals,
        config::GuardContract::V3 => keys.stream_v3,
    };
    let engine = cfg.redis.guard_engine;
    println!(
        "contract: {:?} (guard engine {engine:?}), reading {stream}",
        cfg.redis.contract
    );
    let stop = Arc::new(AtomicBool::new(false));
    let load_start = Instant::now();
    let (sent_tx, sent_rx) = std::sync::mpsc::channel::<Trigger>();
    let reader = {
        let (url, stop) = (cfg.redis.url.expose().to_owned(), Arc::clone(&stop));
        std::thread::spawn(move || read_stream(url, stream, sent_rx, stop, load_start))
    };

    let mut tcp = TcpStream::connect(&a.addr).with_context(|| format!("connecting to {}", a.addr))?;
    tcp.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(1 << 16);
    let mut qi = 0usize;
    // Warm the features up.
    for q in quotes.iter().take(n * 120) {
        encode(&Frame::quote(q, ids[usize::from(q.symbol)], 0), &mut buf);
        qi += 1;
    }
    tcp.write_all(&buf)?;
    buf.clear();
    std::thread::sleep(Duration::from_millis(300));

    let mut run_phase = |phase: usize, swap: bool, tcp: &mut TcpStream| -> anyhow::Result<Phase> {
        let name = ["steady", "during swaps"][phase];
        let called = ["the steady phase", "the swap phase"][phase];
        let (b0, c0) = snapshot(&a.http)?;
        let redis0 = guard_stats(&mut conn, engine)?;
        let cpu0 = steal::CpuTimes::read();
        let start = Instant::now();
        let mut next = start;
        let mut sent = 0u64;
        let phase_over = AtomicBool::new(false);
        let mut readings = Vec::new();
        // Swaps come from their own thread: re-signing and writing an
        // artifact takes milliseconds, and doing it between triggers would
        // delay them and then send them in a burst — load-generator latency,
        // not the daemon's.
        std::thread::scope(|scope| -> anyhow::Result<()> {
            let swapper =
                swap.then(|| scope.spawn(|| swap_until(&a, &cfg, &strat.id, start, load_start, &phase_over)));
            while start.elapsed() < Duration::from_secs(a.seconds) {
                // One quote per symbol between decisions, then a trigger.
                for _ in 0..n {
                    let q = quotes[qi % quotes.len()];
                    qi += 1;
                    encode(&Frame::quote(&q, ids[usize::from(q.symbol)], 0), &mut buf);
                }
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_nanos() as i64;
                encode(
                    &Frame::Trigger {
                        ts_ns: ts,
                        strategy: 0,
                    },
                    &mut buf,
                );
                // Recorded before the write, so the reader always knows the
                // trigger by the time its entry can appear.
                let _ = sent_tx.send(Trigger {
                    phase,
                    ts_us: (ts / 1_000) as u64,
                    at: Instant::now(),
                });
                tcp.write_all(&buf)?;
                buf.clear();
                sent += 1;
                next += period;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
            }
            phase_over.store(true, Ordering::Relaxed);
            match swapper.map(|h| h.join()) {
                Some(Ok(result)) => readings = result?,
                Some(Err(_)) => anyhow::bail!("the swap thread panicked"),
                None => {}
            }
            Ok(())
        })?;
        let secs = start.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(300));
        let (b1, c1) = snapshot(&a.http)?;
        let redis = guard_stats(&mut conn, engine)?.since(&redis0);
        let host = steal::since(cpu0);
        let d = |k: &str| {
            c1.get(k)
                .copied()
                .unwrap_or(0)
                .saturating_sub(c0.get(k).copied().unwrap_or(0))
        };
        let mib = |c: &BTreeMap<String, u64>| {
            c.get("process_resident_memory_bytes").copied().unwrap_or(0) as f64 / 1048576.0
        };
        println!(
            "{name}: sent {sent} triggers, {} swaps, daemon RSS {:.1} MiB -> {:.1} MiB",
            d("model_swaps_total"),
            mib(&c0),
            mib(&c1)
        );
        Ok(Phase {
            name,
            called,
            decisions: d("decisions_total"),
            dropped: d("decisions_dropped_total") + d("publish_dropped_total"),
            seconds: secs,
            p50: bucket_quantile(&b0, &b1, 0.5),
            p99: bucket_quantile(&b0, &b1, 0.99),
            p999: bucket_quantile(&b0, &b1, 0.999),
            visible: None,
            read: None,
            tail: Bursts::default(),
            seen: 0,
            redis,
            host,
            readings,
            windows: Vec::new(),
            flat: None,
        })
    };
    let mut phases = vec![run_phase(0, false, &mut tcp)?];
    if a.swap_every_ms > 0 {
        phases.push(run_phase(1, true, &mut tcp)?);
    }
    stop.store(true, Ordering::Relaxed);
    let seen = match reader.join() {
        Ok(seen) => seen?,
        Err(_) => anyhow::bail!("the stream reader panicked"),
    };
    if let Some(path) = &a.latencies_out {
        write_latencies(path, &phases, &seen)?;
    }
    // The issue's bound, and the stricter one against the daemon's own form.
    let Bounds {
        issue: bound,
        stricter: strict_bound,
    } = Bounds::of(&pipelined, &one_call, &ort);
    for (p, matched) in phases.iter_mut().zip(seen) {
        let visible: Vec<Sample> = matched.iter().map(|m| m.visible).collect();
        p.seen = visible.len();
        p.tail = bursts::bursts(&visible, bound, BURST_GAP);
        p.visible = Percentiles::of(visible.iter().map(|s| s.latency).collect());
        p.read = Percentiles::of(matched.iter().map(|m| m.read).collect());
        p.windows = swaps::windows(&p.readings, &visible);
        p.flat = Flatness::of(&p.readings, &visible);
    }

    println!(
        "\n== mlcore-loadgen: {} decisions/s target, {} symbols ==",
        a.rate, n
    );
    for (core, s) in &stalls {
        println!("machine: {}", s.summary(*core));
    }
    // How idle cores wake changes every hand-off's cost: said beside the
    // figures so that runs on differently set machines are not compared.
    if let Some(idle) = mlcore_host::idle::IdleReading::of_this_host() {
        println!("machine: {}", idle.summary());
    }
    one_call.print("baseline: one decision's 32 signals as one guard call (the daemon's form)");
    pipelined.print("baseline: one decision's 32 guarded publishes, pipelined");
    println!("  (while they ran, {})", steal::describe(&baseline_host));
    ort.print("baseline: bare ONNX Runtime, one decision");
    ort_constant.print("  (for reference: the same on one constant row)");
    // Not the target's baselines: the same work paced at the load's rate,
    // which pays for a core that slept and caches others used meanwhile.
    baseline_paced.print(&format!(
        "  (diagnostic: the one guard call, one every {}us)",
        period.as_micros()
    ));
    ort_paced.print(&format!(
        "  (diagnostic: ONNX Runtime, one decision every {}us)",
        period.as_micros()
    ));
    for p in &phases {
        println!(
            "{:<13} {:>8.0} decisions/s  dropped {:>5}  trigger->ack (daemon, bucket bounds) p50 <= {} us  p99 <= {} us  p99.9 <= {} us",
            p.name,
            p.decisions as f64 / p.seconds,
            p.dropped,
            p.p50,
            p.p99,
            p.p999
        );
        match p.visible {
            Some(v) => v.print(&format!(
                "{}: trigger -> visible in Redis (written_at_us; {} seen)",
                p.name, p.seen
            )),
            None => println!("{}: no decision seen in the stream", p.name),
        }
        if let Some(r) = p.read {
            r.print("  (observer: trigger -> read by this load generator)");
        }
        println!("{}: tail: {}", p.name, p.tail.summary(bound, BURST_GAP));
        println!(
            "{}: {}",
            p.name,
            redis_stats::guard_summary(&p.redis, p.decisions, p.seconds)
        );
        println!("{}: machine: {}", p.name, steal::describe(&p.host));
        if !p.windows.is_empty() {
            print_windows(p.name, &p.windows);
        }
        if let Some(f) = &p.flat {
            println!("{}: memory: {}", p.name, f.memory_summary());
            println!("{}: latency: {}", p.name, f.latency_summary());
        }
    }
    // The issue's targets, judged on this run's own baselines and the
    // trigger -> visible figures (one machine's clock, µs resolution).
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let steady = &phases[0];
    // A phase in which no decision showed up in the stream has no figure:
    // it says so, and misses its target.
    let us =
        |d: Option<Duration>| d.map_or("no decision seen".to_owned(), |d| format!("{} us", d.as_micros()));
    let p99 = steady.visible.map(|v| v.p99);
    // Whether the host let the run measure the daemon: the latency verdicts
    // below are printed either way, and qualified.
    let disturbed: Vec<String> = std::iter::once(("the baselines", &baseline_host))
        .chain(phases.iter().map(|p| (p.called, &p.host)))
        .filter_map(|(when, w)| steal::disturbance(w).map(|d| format!("{d} during {when}")))
        .collect();
    if disturbed.is_empty() {
        println!(
            "machine: quiet (the host took at most {} % of any core during the baselines and each phase)",
            steal::QUIET_STEAL_PCT
        );
    } else {
        println!(
            "machine: DISTURBED: the host took {}; more than the {} % a p99 leaves to slow decisions, so the latency verdicts below are the host's as much as the daemon's: run again",
            disturbed.join("; "),
            steal::QUIET_STEAL_PCT
        );
    }
    println!(
        "target p99 <= 2 x (32 pipelined guarded publishes p99 + ONNX Runtime p99) = {} us: steady p99 {} -> {}",
        bound.as_micros(),
        us(p99),
        verdict(p99.is_some_and(|p| p <= bound))
    );
    println!(
        "  (stricter, against one guard call per decision: 2 x (one call p99 + ONNX Runtime p99) = {} us -> {})",
        strict_bound.as_micros(),
        verdict(p99.is_some_and(|p| p <= strict_bound))
    );
    println!(
        "target no dropped decision at {} decisions/s: {} dropped -> {}",
        a.rate,
        steady.dropped,
        verdict(steady.dropped == 0)
    );
    if let Some(swap_phase) = phases.get(1) {
        let limit = steady.visible.map(|v| v.p999.saturating_mul(2));
        let during = swap_phase.visible.map(|v| v.p999);
        println!(
            "target p99.9 during swaps <= 2 x steady p99.9 = {}: {} -> {}",
            us(limit),
            us(during),
            verdict(limit.zip(during).is_some_and(|(l, d)| d <= l) && swap_phase.dropped == 0)
        );
        match &swap_phase.flat {
            Some(f) => println!(
                "target memory and latency flat across {} swaps: {} swaps, memory {}, latency {} -> {}{}",
                swaps::SWAPS_ASKED,
                f.swaps,
                if f.memory_flat() { "flat" } else { "GROWING" },
                if f.latency_flat() { "flat" } else { "CLIMBING" },
                verdict(f.memory_flat() && f.latency_flat() && f.swaps >= swaps::SWAPS_ASKED),
                if f.swaps < swaps::SWAPS_ASKED {
                    fewer_swaps(f.swaps, a.seconds)
                } else {
                    String::new()
                }
            ),
            None => println!(
                "target memory and latency flat across swaps: the daemon swapped no model -> NOT met"
            ),
        }
    }
    Ok(())
}

/// The swap phase window by window: swaps, memory, and the latency of the
/// decisions triggered in the window.
fn print_windows(name: &str, windows: &[swaps::Window]) {
    println!(
        "{name}: by window, from the phase's start (trigger -> visible of the decisions triggered in it):"
    );
    let origin = windows.first().map_or(Duration::ZERO, |w| w.from);
    for w in windows {
        let latency = w.latency.map_or("no decision seen".to_owned(), |p| p.to_string());
        println!(
            "  {:>6.1} - {:>6.1} s  {:>5} swaps  RSS {:>6.1} MiB  {latency}",
            w.from.saturating_sub(origin).as_secs_f64(),
            w.to.saturating_sub(origin).as_secs_f64(),
            w.swaps,
            w.rss_bytes as f64 / 1_048_576.0
        );
    }
}

/// Slow decisions whose triggers were at most this far apart are one burst
/// (10 triggers at 2,000/s): a stretch of slow machine, not one slow event.
const BURST_GAP: Duration = Duration::from_millis(5);

/// `--latencies-out`: one row per decision seen,
/// `phase,sent_us,latency_us,read_us`.
fn write_latencies(path: &std::path::Path, phases: &[Phase], seen: &[Vec<Matched>; 2]) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let mut csv = String::from("phase,sent_us,latency_us,read_us\n");
    for (p, matched) in phases.iter().zip(seen) {
        for m in matched {
            let _ = writeln!(
                csv,
                "{},{},{},{}",
                p.name,
                m.visible.sent.as_micros(),
                m.visible.latency.as_micros(),
                m.read.as_micros()
            );
        }
    }
    std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))
}

/// The bare ONNX Runtime time of one decision: the sample model scoring
/// feature matrices taken from the quotes this run sends, through the same
/// feature engine as the daemon, one after another; and, for reference, the
/// same on one constant matrix, and paced at the load's rate (a
/// diagnostic). The constant one reads ≈ 30 % faster: every
/// row takes the same path through every tree, so the CPU predicts every
/// branch — no decision on market data does that.
fn ort_baselines(
    strat: &mlcore_config::StrategyUniverse,
    quotes: &[Quote],
    period: Duration,
) -> anyhow::Result<(Percentiles, Percentiles, Percentiles)> {
    use mlcore_features::{FeatureEngine, N_FEATURES};
    let n = strat.symbols.len().min(mlcore_benches::SYMBOLS);
    let benchmark = strat
        .symbols
        .iter()
        .position(|s| s.symbol == strat.benchmark)
        .unwrap_or(0);
    let mut engine = FeatureEngine::new(n, benchmark);
    let mut matrices: Vec<Vec<f32>> = Vec::new();
    // After 120 quotes per symbol (the features' longest window), a matrix
    // every round of quotes, as a decision between rounds would see it.
    for (i, q) in quotes.iter().enumerate() {
        engine.update(q);
        if i >= n * 120 && i % n == 0 && matrices.len() < 512 {
            let mut m = vec![0f32; n * N_FEATURES];
            engine.write_matrix(q.ts_ns, &mut m);
            matrices.push(m);
        }
    }
    anyhow::ensure!(!matrices.is_empty(), "too few quotes for a feature matrix");
    let model = mlcore_benches::sample_model();
    let mut scorer =
        mlcore_models::scoring::ModelScorer::new(&model, n, mlcore_config::ScoringBackend::Onnx)?;
    scorer.warm_up(n, 50)?;
    // A failed run is no baseline: the first error stops the load generator.
    let mut failed: Option<String> = None;
    let mut k = 0usize;
    let mut score = |m: &[f32]| {
        if failed.is_none() {
            if let Err(e) = scorer.score(m, n) {
                failed = Some(e.to_string());
            }
        }
    };
    let mut score_next = || {
        k += 1;
        score(&matrices[k % matrices.len()]);
    };
    let real = Percentiles::measure(2000, 200, &mut score_next);
    let paced = Percentiles::measure_paced(1000, 20, period, &mut score_next);
    let constant_rows = vec![0.1f32; n * N_FEATURES];
    let constant = Percentiles::measure(2000, 200, || score(&constant_rows));
    if let Some(why) = failed {
        anyhow::bail!("ONNX Runtime failed during its baseline: {why}");
    }
    Ok((real, constant, paced))
}

/// Readings of the daemon per swap phase (so seven windows between them).
const READINGS: u32 = 8;

/// Drops a new version every `--swap-every-ms` from `start` (the phase's)
/// until `over`, and reads the daemon's swap count and memory at the start,
/// `READINGS - 2` times in between and at the end (times from
/// `load_start`).
fn swap_until(
    a: &Args,
    cfg: &config::AppConfig,
    strategy: &str,
    start: Instant,
    load_start: Instant,
    over: &AtomicBool,
) -> anyhow::Result<Vec<Reading>> {
    // The swapper stands in for a control plane that runs elsewhere in
    // production: it takes the cores only when the daemon and Redis leave
    // them idle, so what the phase measures is the daemon's own swaps.
    let idle = thread_priority::set_thread_priority_and_policy(
        thread_priority::thread_native_id(),
        thread_priority::ThreadPriority::Min,
        thread_priority::ThreadSchedulePolicy::Normal(thread_priority::NormalThreadSchedulePolicy::Idle),
    );
    if let Err(e) = idle {
        println!("swap thread: could not run SCHED_IDLE ({e:?}); it competes with the daemon and Redis");
    }
    let read = |readings: &mut Vec<Reading>| -> anyhow::Result<()> {
        let at = load_start.elapsed();
        let (_, c) = snapshot(&a.http)?;
        let get = |k: &str| {
            c.get(k)
                .copied()
                .with_context(|| format!("the daemon's /metrics has no {k}"))
        };
        readings.push(Reading {
            at,
            swaps: get("model_swaps_total")?,
            rss_bytes: get("process_resident_memory_bytes")?,
        });
        Ok(())
    };
    let mut readings = Vec::with_capacity(READINGS as usize);
    read(&mut readings)?;
    let mut swapper = Swapper::new(a, cfg, strategy)?;
    let every = Duration::from_millis(a.swap_every_ms.max(1));
    let read_every = Duration::from_secs(a.seconds) / (READINGS - 1);
    let (mut next_swap, mut next_read) = (start + every, start + read_every);
    while !over.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next_read && readings.len() < READINGS as usize - 1 {
            read(&mut readings)?;
            next_read += read_every;
        }
        if now < next_swap {
            std::thread::sleep((next_swap - now).min(Duration::from_millis(20)));
            continue;
        }
        swapper.drop_next()?;
        next_swap += every;
    }
    read(&mut readings)?;
    Ok(readings)
}

/// Versions this run created that stay on disk; older ones are removed so
/// repeated swap runs do not fill `models_root` (the daemon only ever loads
/// the newest).
const KEEP_VERSIONS: usize = 32;

/// Re-signs `--artifact` as successive versions under
/// `models_root/<strategy>/` and moves the registry pointer to each. What
/// does not change between versions (key, source files, the directory's
/// highest version, the Redis connection) is read once, so that a swap
/// costs the load generator only the sealing and the writes: it stands in
/// for a control plane that in production runs on another machine, and a
/// heavy swap step here (a directory scan of thousands of versions, a new
/// connection per swap) measured as milliseconds of the shared cores taken
/// from the daemon and Redis.
struct Swapper {
    strategy: String,
    key: SecretKeyFile,
    files: ArtifactFiles,
    manifest: Manifest,
    dir: PathBuf,
    next: u64,
    created: std::collections::VecDeque<PathBuf>,
    conn: mlcore_contract::RedisConn,
    keys: mlcore_contract::Keys,
}

impl Swapper {
    fn new(a: &Args, cfg: &config::AppConfig, strategy: &str) -> anyhow::Result<Self> {
        let (Some(src), Some(key)) = (&a.artifact, &a.key) else {
            anyhow::bail!("--swap-every-ms needs --artifact and --key")
        };
        let key = SecretKeyFile::read(key)?;
        let mut files = ArtifactFiles::read(src)?;
        let manifest: Manifest = serde_json::from_slice(files.get(artifact::MANIFEST).context("manifest")?)?;
        files.0.remove(artifact::MANIFEST);
        files.0.remove(artifact::SIGNATURE);
        let dir = cfg.storage.models_root.join(strategy);
        let highest = std::fs::read_dir(&dir)?
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_prefix('v')?
                    .parse::<u64>()
                    .ok()
            })
            .max()
            .unwrap_or(0);
        Ok(Self {
            strategy: strategy.to_owned(),
            key,
            files,
            manifest,
            dir,
            next: highest + 1,
            created: std::collections::VecDeque::new(),
            conn: mlcore_contract::RedisConn::connect(&(&cfg.redis).into())?,
            keys: mlcore_contract::Keys::new(&cfg.redis.namespace),
        })
    }

    /// Writes the next version and points the registry at it.
    fn drop_next(&mut self) -> anyhow::Result<()> {
        let (version, strategy) = (self.next, &self.strategy);
        self.next += 1;
        let mut manifest = self.manifest.clone();
        manifest.version = version;
        manifest.model_id = format!("{strategy}-v{version}");
        let (_, files) =
            artifact::seal(manifest, self.files.clone(), &self.key).map_err(anyhow::Error::msg)?;
        let path = self.dir.join(format!("v{version}"));
        files.write(&path)?;
        self.created.push_back(path);
        while self.created.len() > KEEP_VERSIONS {
            if let Some(old) = self.created.pop_front() {
                std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
            }
        }
        let pointer = mlcore_contract::ModelPointer {
            strategy: strategy.clone(),
            model_id: format!("{strategy}-v{version}"),
            version,
            manifest_sha256: files
                .manifest_sha256()
                .context("sealed artifact has no manifest")?,
            rollback: None,
            pinned: false,
            actor: "mlcore-loadgen".into(),
            request_id: format!("loadgen-{version}"),
            updated_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as u64,
        };
        pointer.write(&mut self.conn, &self.keys)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_few_swaps_say_the_rate_and_the_seconds_that_would_do() {
        // 860 swaps in 45 s: 19.1 a second; 1,100 of them take 58 s.
        assert_eq!(
            fewer_swaps(860, 45),
            " (fewer swaps than asked: the daemon took 19.1 a second; at that rate --seconds 58 makes them)"
        );
        assert_eq!(
            fewer_swaps(0, 45),
            " (fewer swaps than asked: the daemon took 0.0 a second)"
        );
    }

    fn parse(extra: &[&str]) -> Result<Args, String> {
        let base = [
            "mlcore-loadgen",
            "--env",
            "dev",
            "--addr",
            "127.0.0.1:7401",
            "--http",
            "127.0.0.1:9464",
        ];
        Args::try_parse_from(base.iter().chain(extra)).map_err(|e| e.to_string())
    }

    #[test]
    fn rates_seconds_and_probes_out_of_range_are_refused_by_name() {
        for (args, name) in [
            (&["--rate", "0"][..], "--rate"),
            (&["--rate", "100001"][..], "--rate"),
            (&["--seconds", "0"][..], "--seconds"),
            (&["--probe-seconds=-1"][..], "--probe-seconds"),
            (&["--probe-seconds", "inf"][..], "--probe-seconds"),
            (&["--probe-seconds", "NaN"][..], "--probe-seconds"),
        ] {
            let err = parse(args).err().unwrap_or_else(|| panic!("{args:?} accepted"));
            assert!(err.contains(name), "{args:?}: {err}");
        }
        let ok = parse(&["--rate", "2000", "--seconds", "45", "--probe-seconds", "0"]);
        assert!(
            matches!(
                ok,
                Ok(Args {
                    rate: 2000,
                    seconds: 45,
                    ..
                })
            ),
            "{ok:?}"
        );
    }

    #[test]
    fn a_swap_phase_needs_an_artifact_and_a_key_before_anything_runs() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let key = dir.path().join("k.key");
        std::fs::write(&key, "x")?;
        let dir_s = dir.path().to_string_lossy().into_owned();
        let key_s = key.to_string_lossy().into_owned();
        let check = |extra: &[&str]| parse(extra).map_err(anyhow::Error::msg).and_then(|a| a.check());
        let err = check(&["--swap-every-ms", "40"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("--artifact"), "{err}");
        let err = check(&["--swap-every-ms", "40", "--artifact", &dir_s, "--key", &key_s])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("manifest.json"), "{err}");
        std::fs::write(dir.path().join(artifact::MANIFEST), "{}")?;
        let missing = dir.path().join("none.key").to_string_lossy().into_owned();
        let err = check(&["--swap-every-ms", "40", "--artifact", &dir_s, "--key", &missing])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("none.key"), "{err}");
        check(&["--swap-every-ms", "40", "--artifact", &dir_s, "--key", &key_s])?;
        check(&[])?;
        Ok(())
    }
}
