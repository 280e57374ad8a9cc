//! `mlcore-config-apply-bench`: what taking a configuration live costs a
//! daemon under load. A daemon of its own (release build, next to this
//! binary) reads a deployed folder; a sender drives it at `--rate`
//! decisions per second (32 quotes and a trigger each, as the load
//! generator does) for a steady phase, then for a phase in which a new
//! version — θ for the strategy, alternating between two values — is
//! deployed every `--every-ms` exactly as the control plane's `apply` does
//! (the files, `DEPLOYED.json` last, then `config_applied` on the events
//! channel).
//!
//! Reported: per version, the time from the start of its deployment to the
//! daemon's heartbeat saying it decides with it (polled every millisecond:
//! an upper bound of the swap, which comes first) and the daemon's own
//! `since_ms`; per phase, decisions, drops and the daemon's trigger →
//! acknowledged p50/p99 — the same run with and without changes.
//!
//! `mlcore-config-apply-bench [--rate 2000] [--seconds 60] [--every-ms 100]
//! [--variant full|write-only|poll-only] [--daemon-log FILE] [--contract v2|v3]
//! [--guard-engine function|module]`

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use mlcore_benches::daemon_metrics::{bucket_quantile, snapshot};
use mlcore_benches::Percentiles;
use mlcore_config::{ConfigTree, Environment, MapEnv};
use mlcore_contract::{Guard, Heartbeat, Keys, OpsMode};
use mlcore_daemon::wire::{encode, Frame};
use mlcore_models::artifact::SecretKeyFile;
use mlcore_research::synth::{Generator, SynthSpec};
use mlcore_testkit as testutil;

#[derive(Debug, Parser)]
#[command(name = "mlcore-config-apply-bench")]
struct Args {
    /// Decisions per second.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Seconds per phase.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// A new version every this many ms in the second phase.
    #[arg(long, default_value_t = 100)]
    every_ms: u64,
    /// The daemon binary (default: `mlcore-daemon` beside this one).
    #[arg(long)]
    daemon: Option<PathBuf>,
    /// The daemon's log (JSON lines: each reload with its `took_us`).
    #[arg(long)]
    daemon_log: Option<PathBuf>,
    /// Controls that locate a cost: `full` (deploy and announce new
    /// versions), `write-only` (write the files, the version unchanged: the
    /// daemon takes nothing), `poll-only` (only the heartbeat polling).
    #[arg(long, value_enum, default_value_t = Variant::Full)]
    variant: Variant,
    /// The Redis contract the daemon publishes with (`redis.yaml`
    /// `contract`): `v2` or `v3`. With a huge `--every-ms`, the steady
    /// phase alone is the sustained-rate check of both versions.
    #[arg(long, default_value = "v2")]
    contract: String,
    /// What runs v3's publish call (`redis.yaml` `guard_engine`):
    /// `function` or `module` (the Redis at `MLCORE_TEST_REDIS_URL` must
    /// have loaded the guard module).
    #[arg(long, default_value = "function")]
    guard_engine: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Variant {
    Full,
    WriteOnly,
    PollOnly,
}

const INSTANCE: &str = "config-apply-bench";

/// One deployed version: the daemon's `since_ms` minus the deployment's
/// start (its clock), and the time until its heartbeat said so (ours) —
/// `None` when the next version came first —, and how long writing the
/// folder took.
type Applied = (Option<u64>, Option<Duration>, Duration);

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A project folder: the repository's configs (dev) pointed at a namespace
/// of its own, free ports, this machine's ONNX Runtime, models under it.
fn project(root: &Path, ns: &str, contract: &str, guard_engine: &str) -> anyhow::Result<()> {
    let src = root.join("source");
    testutil::copy_tree(&testutil::workspace_root().join("configs"), &src)?;
    let dev = src.join("envs/dev");
    let redis = std::fs::read_to_string(dev.join("redis.yaml"))?;
    std::fs::write(
        dev.join("redis.yaml"),
        format!("{redis}namespace: {ns}\ncontract: {contract}\nguard_engine: {guard_engine}\n"),
    )?;
    // dev's thread layout (hot threads on core 1, SCHED_FIFO 10), a free port.
    std::fs::write(
        dev.join("daemon.yaml"),
        format!(
            "instance_id: {INSTANCE}\ningress: {{listen: \"127.0.0.1:0\"}}\n\
             threads: {{ingress_core: 1, worker_cores: [1], publisher_core: 1, side_cores: [0], realtime_priority: 10}}\n"
        ),
    )?;
    std::fs::write(
        dev.join("metrics.yaml"),
        "listen: \"127.0.0.1:0\"\ndefault_labels: {environment: bench}\n",
    )?;
    std::fs::write(
        dev.join("storage.yaml"),
        format!(
            "models_root: models\nworm_root: worm\nbackups_root: b\ndatasets_root: d\nruns_root: runs\nops_root: ops\nout_root: out\nonnxruntime_library: {}\n",
            testutil::ort_library().display()
        ),
    )?;
    Ok(())
}

/// The tree with θ for fx_g10 set to `theta` (dev's core_policy.yaml).
fn with_theta(base: &ConfigTree, theta: (f64, f64)) -> anyhow::Result<ConfigTree> {
    let mut t = base.clone();
    t.insert(
        "envs/dev/core_policy.yaml",
        format!(
            "theta:\n  per_strategy:\n    fx_g10: {{theta1: {}, theta2: {}}}\n",
            theta.0, theta.1
        ),
    )?;
    Ok(t)
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if a.rate == 0 || a.every_ms == 0 || a.seconds == 0 {
        bail!("--rate, --seconds and --every-ms must be positive");
    }
    if a.contract != "v2" && a.contract != "v3" {
        bail!("--contract must be v2 or v3, got {}", a.contract);
    }
    if a.guard_engine != "function" && a.guard_engine != "module" {
        bail!(
            "--guard-engine must be function or module, got {}",
            a.guard_engine
        );
    }
    let daemon_bin = match &a.daemon {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no folder")?
            .join("mlcore-daemon"),
    };
    if !daemon_bin.exists() {
        bail!(
            "{} is missing: cargo build --release -p mlcore-daemon",
            daemon_bin.display()
        );
    }
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    let ns = format!("mlcore-cfgbench-{}", std::process::id());
    project(root, &ns, &a.contract, &a.guard_engine)?;
    let live = root.join("live/configs");
    let base = ConfigTree::read(&root.join("source"))?;
    mlcore_config::deploy::write(&live, &base, "bench-0", "bench", now_ms())?;
    let vars = MapEnv::new()
        .with("MLCORE_REDIS_URL", &testutil::redis_url())
        .with("MLCORE_PG_DSN", &testutil::pg_dsn());
    let cfg = mlcore_config::load_tree(
        &base,
        &live,
        root,
        Environment::Dev,
        &vars,
        mlcore_config::Process::Daemon,
    )?;
    let key = SecretKeyFile::read(&testutil::workspace_root().join("deployments/dev-keys/dev-2026.key"))?;
    testutil::logistic_artifact(&key, "fx_g10", 1, 3.0, now_ms()).write(&root.join("models/fx_g10/v1"))?;
    let keys = Keys::new(&ns);
    let mut conn = redis::Client::open(testutil::redis_url())?.get_connection()?;
    Guard::load(&mut conn)?;
    testutil::set_mode(
        &Guard::new(keys.clone(), 1000),
        &mut conn,
        "fx_g10",
        OpsMode::Active,
    );

    let (child, line) = testutil::spawn_announcing(
        Command::new(&daemon_bin)
            .args(["--config-dir"])
            .arg(&live)
            .arg("--project-root")
            .arg(root)
            .args(["run", "--env", "dev"])
            .env("MLCORE_REDIS_URL", testutil::redis_url())
            .stderr(match &a.daemon_log {
                Some(path) => Stdio::from(std::fs::File::create(path)?),
                None => Stdio::null(),
            }),
    );
    let _daemon = Daemon(child);
    let ingress = testutil::announced(&line, "ingress=");
    let http = testutil::announced(&line, "http=");
    let hb = |conn: &mut redis::Connection| Heartbeat::read(conn, &keys, INSTANCE).ok().flatten();
    let ready = testutil::wait_until(Duration::from_secs(60), || {
        hb(&mut conn).is_some_and(|h| h.models.contains_key("fx_g10"))
    });
    if ready.is_none() {
        bail!("the daemon did not load its model within 60 s");
    }

    // The market: one quote per symbol between decisions.
    let strat = cfg.universe.strategies.first().context("no strategy")?.clone();
    let ids: Vec<u32> = strat.symbols.iter().map(|s| s.id).collect();
    let n = ids.len();
    let quotes = Generator::new(SynthSpec {
        seed: 99,
        symbols: n,
        start_day: 20_458,
        days: 1,
        interval_ms: 1_000,
        effect: 1.0,
    })?
    .day_merged(20_458);
    let mut tcp = TcpStream::connect(&ingress)?;
    tcp.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(1 << 16);
    let mut qi = 0usize;
    for q in quotes.iter().take(n * 120) {
        encode(&Frame::quote(q, ids[usize::from(q.symbol)], 0), &mut buf);
        qi += 1;
    }
    tcp.write_all(&buf)?;
    buf.clear();
    std::thread::sleep(Duration::from_millis(500));

    let period = Duration::from_nanos(1_000_000_000 / a.rate);
    println!(
        "mlcore-config-apply-bench: {} decisions/s x {} symbols, {} s steady then {} s with a new version every {} ms",
        a.rate, n, a.seconds, a.seconds, a.every_ms
    );
    let mut phases = Vec::new();
    let mut applies: Vec<Applied> = Vec::new();
    for changing in [false, true] {
        let (b0, c0) = snapshot(&http)?;
        let over = AtomicBool::new(false);
        let start = Instant::now();
        let mut sent = 0u64;
        std::thread::scope(|scope| -> anyhow::Result<()> {
            let changer = changing.then(|| {
                scope.spawn(|| -> anyhow::Result<Vec<Applied>> {
                    let mut out = Vec::new();
                    let mut c = redis::Client::open(testutil::redis_url())?.get_connection()?;
                    let mut i = 0u64;
                    let mut next = Instant::now();
                    while !over.load(Ordering::Relaxed) {
                        i += 1;
                        let theta = if i.is_multiple_of(2) {
                            (0.60, 0.90)
                        } else {
                            (0.65, 0.85)
                        };
                        let tree = with_theta(&base, theta)?;
                        let version = if a.variant == Variant::WriteOnly {
                            "bench-0".to_owned()
                        } else {
                            format!("bench-{i}")
                        };
                        let (t0, at) = (now_ms(), Instant::now());
                        if a.variant != Variant::PollOnly {
                            mlcore_config::deploy::write(&live, &tree, &version, "bench", t0)?;
                        }
                        let written = at.elapsed();
                        let event = serde_json::json!({"type": "config_applied", "version": version});
                        redis::cmd("PUBLISH")
                            .arg(keys.events())
                            .arg(event.to_string())
                            .query::<i64>(&mut c)?;
                        next += Duration::from_millis(a.every_ms);
                        // Until the daemon says it runs it, or the next is due.
                        let mut taken = None;
                        while Instant::now() < next {
                            if let Some(h) = Heartbeat::read(&mut c, &keys, INSTANCE).ok().flatten() {
                                if h.config.version == version {
                                    taken = Some((h.config.since_ms.saturating_sub(t0), at.elapsed()));
                                    break;
                                }
                                if h.config.refused.as_ref().is_some_and(|r| r.version == version) {
                                    bail!("the daemon refused {version}: {:?}", h.config.refused);
                                }
                            }
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        out.push((taken.map(|t| t.0), taken.map(|t| t.1), written));
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        }
                    }
                    Ok(out)
                })
            });
            let mut next = start;
            while start.elapsed() < Duration::from_secs(a.seconds) {
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
                tcp.write_all(&buf)?;
                buf.clear();
                sent += 1;
                next += period;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
            }
            over.store(true, Ordering::Relaxed);
            if let Some(h) = changer {
                match h.join() {
                    Ok(r) => applies = r?,
                    Err(_) => bail!("the config thread panicked"),
                }
            }
            Ok(())
        })?;
        let secs = start.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(500));
        let (b1, c1) = snapshot(&http)?;
        let d = |k: &str| {
            c1.get(k)
                .copied()
                .unwrap_or(0)
                .saturating_sub(c0.get(k).copied().unwrap_or(0))
        };
        phases.push((
            if changing { "with config changes" } else { "steady" },
            sent,
            d("decisions_total"),
            d("decisions_dropped_total") + d("publish_dropped_total"),
            secs,
            bucket_quantile(&b0, &b1, 0.5),
            bucket_quantile(&b0, &b1, 0.99),
        ));
    }

    println!("\nphase                  sent    decided  dropped   rate/s   trigger->ack p50   p99 (bucket bounds, µs)");
    for (name, sent, decided, dropped, secs, p50, p99) in &phases {
        println!(
            "{name:<20} {sent:>8} {decided:>10} {dropped:>8} {:>8.0} {p50:>18} {p99:>6}",
            *decided as f64 / secs
        );
    }
    let taken: Vec<Duration> = applies.iter().filter_map(|x| x.1).collect();
    let since: Vec<u64> = applies.iter().filter_map(|x| x.0).collect();
    let missed = applies.len() - taken.len();
    println!(
        "\n{} versions deployed, {} reported taken before the next was due ({} superseded first)",
        applies.len(),
        taken.len(),
        missed
    );
    if let Some(p) = Percentiles::of(applies.iter().map(|x| x.2).collect()) {
        println!("writing the folder (13 files, each fsynced, then DEPLOYED.json): {p}");
    }
    if let Some(p) = Percentiles::of(taken.clone()) {
        println!("deployment start -> heartbeat says it decides with it: {p}");
        let mut s = since.clone();
        s.sort_unstable();
        println!(
            "deployment start -> daemon's since_ms (ms, its clock): p50 {} p99 {} max {}",
            s[s.len() / 2],
            s[(s.len() * 99 / 100).min(s.len() - 1)],
            s[s.len() - 1]
        );
    }
    let (steady, changing) = (&phases[0], &phases[1]);
    println!(
        "verdict: drops {} vs {} steady; p99 {} vs {} µs steady (same run)",
        changing.3, steady.3, changing.6, steady.6
    );
    Ok(())
}
