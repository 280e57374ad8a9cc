//! The daemon end to end, as real processes: a trained and signed model in
//! `models_root`, `mlcore-daemon run` against the real Redis (a private
//! namespace), `mlcore-feed` replaying the synthetic market. Signals arrive in
//! Redis through the guard; a halt takes effect within milliseconds; a
//! malformed frame closes only its own connection; a newer model is swapped
//! in without a failed decision.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a broken fixture should panic

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mlcore_config::{self as config, Environment, MapEnv};
use mlcore_contract::guard::ContractVersion;
use mlcore_contract::{Guard, Keys, OpsMode, Side};
use mlcore_models::artifact::{SecretKeyFile, ThetaParams, TrustStore};
use mlcore_models::runtime;
use mlcore_research::synth;
use mlcore_research::train::{self, GbmParams, ModelMeta, TrainSpec};
use mlcore_testkit::{self as testutil, RedisNamespace};

struct Daemon {
    child: Child,
    ingress: String,
    http: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(http: &str, path: &str) -> (u16, String) {
    testutil::http(http, "GET", path, None, "")
}

fn metric(http: &str, line_start: &str) -> f64 {
    let (_, body) = get(http, "/metrics");
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Accepted guard batches, as the e2e configuration labels the series.
const ACCEPTED: &str =
    r#"ml_assets_core_batches_total{environment="e2e",service="ml-assets-core",outcome="accepted"}"#;

fn wait_ready(d: &Daemon) {
    assert!(
        testutil::wait_until(Duration::from_secs(20), || get(&d.http, "/readyz").0 == 200).is_some(),
        "daemon never became ready"
    );
}

/// Runs `mlcore-feed` with the test's configuration and `args`; its
/// stdout, once it exited successfully.
fn run_feed(root: &Path, args: &[&str]) -> String {
    let out = Command::new(testutil::binary("mlcore-feed"))
        .args([
            "--config-dir",
            root.join("configs").to_str().unwrap(),
            "--env",
            "dev",
        ])
        .args(args)
        .env("MLCORE_REDIS_URL", testutil::redis_url())
        .env("MLCORE_PG_DSN", testutil::pg_dsn())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "feed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn train_into(data: &Path, out: &Path, version: u64) {
    let key =
        SecretKeyFile::read(&testutil::workspace_root().join("deployments/dev-keys/dev-2026.key")).unwrap();
    let cfg = config::load(
        &testutil::workspace_root().join("configs"),
        Environment::Dev,
        &vars(),
    )
    .unwrap();
    let trust = TrustStore::from_config(&cfg.trust).unwrap();
    let spec = TrainSpec {
        dataset: data.to_owned(),
        model: ModelMeta {
            strategy: "fx_g10".into(),
            version,
            created_at_ms: testutil::now_ms(),
            valid_days: 2,
            // Low θ1 so the demo market produces positions, not only flats.
            theta: ThetaParams {
                theta1: 0.505,
                theta2: 0.9,
            },
        },
        symbols: synth::SYMBOLS.iter().map(|s| s.0.to_owned()).collect(),
        benchmark: 0,
        decision_every_ms: 60_000,
        horizon: 12,
        costs_bps: vec![1.0; 32],
        gbm: GbmParams {
            max_trees: 200,
            ..GbmParams::default()
        },
    };
    let report = train::train(&spec, &key, &trust, testutil::now_ms()).unwrap();
    train::write_artifact(&report.files, out).unwrap();
}

fn vars() -> MapEnv {
    MapEnv::new()
        .with("MLCORE_REDIS_URL", &testutil::redis_url())
        .with("MLCORE_PG_DSN", &testutil::pg_dsn())
}

fn start_daemon(root: &Path) -> Daemon {
    start_daemon_on(root, &testutil::redis_url())
}

/// The daemon of `root` with `MLCORE_REDIS_URL` = `redis_url`.
fn start_daemon_on(root: &Path, redis_url: &str) -> Daemon {
    let (child, line) = testutil::spawn_announcing(
        Command::new(testutil::binary("mlcore-daemon"))
            .args([
                "--config-dir",
                root.join("configs").to_str().unwrap(),
                "run",
                "--env",
                "dev",
            ])
            .env("MLCORE_REDIS_URL", redis_url)
            .env("MLCORE_PG_DSN", testutil::pg_dsn())
            .stderr(Stdio::inherit()), // nextest shows it when the test fails
    );
    // "listening ingress=HOST:PORT http=HOST:PORT"
    Daemon {
        ingress: testutil::announced(&line, "ingress="),
        http: testutil::announced(&line, "http="),
        child,
    }
}

/// daemon.yaml's threads with every thread on core 0 (tests share the
/// machine).
const ONE_CORE: &str = "{ingress_core: 0, worker_cores: [0], publisher_core: 0, side_cores: [0]}";

/// A folder with the repository's configs, the dev environment pointed at
/// namespace `ns`, free ports, the test's ONNX Runtime and models under
/// the folder, and `threads` as daemon.yaml's threads.
fn config_root(ns: &RedisNamespace, threads: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    testutil::copy_tree(&testutil::workspace_root().join("configs"), &root.join("configs")).unwrap();
    let dev = root.join("configs/envs/dev");
    // dev's own redis.yaml (guard_install) plus the test's namespace.
    let redis = std::fs::read_to_string(dev.join("redis.yaml")).unwrap();
    std::fs::write(
        dev.join("redis.yaml"),
        format!("{redis}namespace: {}\nreconcile_interval_ms: 1000\n", ns.ns),
    )
    .unwrap();
    std::fs::write(
        dev.join("daemon.yaml"),
        format!("instance_id: e2e\ningress: {{listen: \"127.0.0.1:0\"}}\nthreads: {threads}\n"),
    )
    .unwrap();
    std::fs::write(
        dev.join("metrics.yaml"),
        "listen: \"127.0.0.1:0\"\ndefault_labels: {environment: e2e}\n",
    )
    .unwrap();
    std::fs::write(
        dev.join("storage.yaml"),
        format!(
            "models_root: {}\nworm_root: {0}/w\nbackups_root: {0}/b\ndatasets_root: {0}/d\nonnxruntime_library: {}\n",
            root.join("models").display(),
            testutil::ort_library().display()
        ),
    )
    .unwrap();
    tmp
}

/// A daemon folder (`config_root`, one shared core) in timer mode every
/// `interval_ms` as `instance`, with a signed logistic model for `fx_g10`,
/// the guard loaded and the strategy active.
fn timer_root(ns: &RedisNamespace, instance: &str, interval_ms: u64) -> tempfile::TempDir {
    let tmp = timer_files(ns, instance, interval_ms);
    let mut conn = testutil::redis_connection();
    let guard = Guard::new(Keys::new(&ns.ns), 1000);
    Guard::load(&mut conn).unwrap();
    testutil::set_mode(&guard, &mut conn, "fx_g10", OpsMode::Active);
    tmp
}

/// [`timer_root`]'s files, Redis untouched.
fn timer_files(ns: &RedisNamespace, instance: &str, interval_ms: u64) -> tempfile::TempDir {
    let tmp = config_root(ns, ONE_CORE);
    let root = tmp.path();
    std::fs::write(
        root.join("configs/envs/dev/daemon.yaml"),
        format!(
            "instance_id: {instance}\ningress: {{listen: \"127.0.0.1:0\"}}\nthreads: {ONE_CORE}\n\
             decision: {{mode: timer, timer_interval_ms: {interval_ms}}}\n"
        ),
    )
    .unwrap();
    let key =
        SecretKeyFile::read(&testutil::workspace_root().join("deployments/dev-keys/dev-2026.key")).unwrap();
    testutil::logistic_artifact(&key, "fx_g10", 1, 1.0, testutil::now_ms())
        .write(&root.join("models/fx_g10/v1"))
        .unwrap();
    tmp
}

/// Scheduling policy and real-time priority of each of `pid`'s threads,
/// by name (`/proc/<pid>/task/<tid>/stat` fields 41 and 40).
fn thread_policies(pid: u32) -> Vec<(String, u32, u32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let name = std::fs::read_to_string(dir.join("comm"))
            .unwrap()
            .trim()
            .to_owned();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // Fields after the command's closing parenthesis start at field 3.
        let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        out.push((name, rest[41 - 3].parse().unwrap(), rest[40 - 3].parse().unwrap()));
    }
    out
}

#[test]
fn hot_threads_run_sched_fifo_when_configured_and_permitted() {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, RealtimeThreadSchedulePolicy, ThreadPriority,
        ThreadPriorityValue, ThreadSchedulePolicy,
    };
    // Whether this process may use SCHED_FIFO at all (root or
    // CAP_SYS_NICE): the daemon should then, and otherwise warn and go on.
    let permitted = std::thread::spawn(|| {
        set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Crossplatform(ThreadPriorityValue::try_from(10u8).unwrap()),
            ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
        )
        .is_ok()
    })
    .join()
    .unwrap();
    let ns = RedisNamespace::new();
    let tmp = config_root(
        &ns,
        "{ingress_core: 0, worker_cores: [0], publisher_core: 0, side_cores: [0], realtime_priority: 10}",
    );
    let daemon = start_daemon(tmp.path());
    const SCHED_FIFO: u32 = 1;
    let expected = if permitted { (SCHED_FIFO, 10) } else { (0, 0) };
    // Each hot thread sets its own policy as it starts, which may be just
    // after the daemon announces its addresses.
    let hot_names = ["ingress", "worker-0", "publisher"];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let threads = loop {
        let threads = thread_policies(daemon.child.id());
        let settled = hot_names
            .iter()
            .all(|hot| threads.iter().any(|(n, p, r)| n == hot && (*p, *r) == expected));
        if settled || std::time::Instant::now() > deadline {
            break threads;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for hot in hot_names {
        let (_, policy, priority) = threads
            .iter()
            .find(|(n, ..)| n == hot)
            .unwrap_or_else(|| panic!("no thread {hot} in {threads:?}"));
        if permitted {
            assert_eq!((*policy, *priority), (SCHED_FIFO, 10), "{hot}");
        } else {
            assert_eq!((*policy, *priority), (0, 0), "{hot} without permission");
        }
    }
    let side: Vec<_> = threads.iter().filter(|(n, ..)| n.starts_with("side")).collect();
    assert!(!side.is_empty(), "{threads:?}");
    assert!(
        side.iter().all(|(_, policy, _)| *policy == 0),
        "side threads stay normal: {side:?}"
    );
}

/// `decision.mode: timer`: the daemon decides on its own clock, every
/// `timer_interval_ms`, for every strategy, with no trigger frame and no
/// feed at all. The symbols have no quotes, so every signal is flat (not
/// ready) — published through the guard all the same, with a fresh
/// `valid_until`: "no valid signal" would tell consumers nothing. Then
/// quotes from a CSV through `mlcore-feed`, and one for an unknown symbol.
#[test]
fn timer_mode_decides_on_the_daemons_clock_without_triggers() {
    runtime::init(&testutil::ort_library()).unwrap();
    let ns = RedisNamespace::new();
    let tmp = timer_root(&ns, "e2e-timer", 100);
    let root = tmp.path();
    let mut conn = testutil::redis_connection();
    let guard = Guard::new(Keys::new(&ns.ns), 1000);

    let d = start_daemon(root);
    wait_ready(&d);
    assert!(
        testutil::wait_until(Duration::from_secs(10), || metric(&d.http, ACCEPTED) >= 5.0).is_some(),
        "no decision accepted without triggers"
    );
    let sig = guard
        .read(&mut conn, "fx_g10", "EURUSD")
        .unwrap()
        .expect("a valid EURUSD signal");
    assert_eq!((sig.side, sig.model_id.as_str()), (Side::Flat, "fx_g10-v1"));
    assert!(sig.valid_until_ms > testutil::now_ms());

    // At the configured cadence, on the daemon's clock: about one decision
    // per 100 ms. Only far too many would be wrong (ticks fired late in a
    // burst); a machine busy with the other tests skips ticks, so the lower
    // bound only says the timer goes on.
    let decisions = r#"ml_assets_core_decisions_total{environment="e2e",service="ml-assets-core"}"#;
    let (before, from) = (metric(&d.http, decisions), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let (after, ticks) = (
        metric(&d.http, decisions),
        from.elapsed().as_millis() as f64 / 100.0,
    );
    let made = after - before;
    assert!(
        made >= 3.0 && made <= ticks + 3.0,
        "{made} decisions in {ticks:.1} timer periods"
    );

    // Quotes from a CSV through mlcore-feed: the strategy's rows are
    // applied, another symbol's rows are left out and reported.
    let quotes = r#"ml_assets_core_quotes_total{environment="e2e",service="ml-assets-core"}"#;
    let unknown = r#"ml_assets_core_unknown_symbols_total{environment="e2e",service="ml-assets-core"}"#;
    let csv = root.join("quotes.csv");
    std::fs::write(
        &csv,
        "ts_ns,symbol,bid,ask,bid_size,ask_size\n\
         1000000000,EURUSD,1.1000,1.1002,1e6,1e6\n\
         1000000000,XAUUSD,2400,2401,10,10\n\
         2000000000,USDJPY,150.10,150.12,1e6,1e6\n\
         3000000000,EURUSD,1.1001,1.1003,1e6,1e6\n",
    )
    .unwrap();
    let stdout = run_feed(
        root,
        &[
            "--csv",
            csv.to_str().unwrap(),
            "--addr",
            &d.ingress,
            "--speed",
            "0",
        ],
    );
    assert!(stdout.contains("XAUUSD (1)"), "{stdout}");
    assert!(
        testutil::wait_until(Duration::from_secs(5), || metric(&d.http, quotes) >= 3.0).is_some(),
        "the CSV's 3 quotes were not applied"
    );
    assert_eq!(metric(&d.http, unknown), 0.0);

    // A quote for a wire id outside the universe is counted and dropped;
    // the connection stays open.
    let mut raw = TcpStream::connect(&d.ingress).unwrap();
    let mut buf = Vec::new();
    let q = mlcore_market::Quote {
        ts_ns: 0,
        symbol: 0,
        bid: 1.0,
        ask: 1.1,
        bid_size: 1.0,
        ask_size: 1.0,
    };
    mlcore_daemon::wire::encode(&mlcore_daemon::wire::Frame::quote(&q, 999_999, 1), &mut buf);
    raw.write_all(&buf).unwrap();
    assert!(
        testutil::wait_until(Duration::from_secs(5), || metric(&d.http, unknown) == 1.0).is_some(),
        "the unknown symbol was not counted"
    );
    assert_eq!(metric(&d.http, quotes), 3.0, "and not applied");

    // A trigger stamped an hour ahead is refused: its seq would hold the
    // strategy's high-water mark in the future. Decisions go on.
    let ahead = r#"ml_assets_core_triggers_ahead_total{environment="e2e",service="ml-assets-core"}"#;
    let mut buf = Vec::new();
    let in_an_hour = (testutil::now_ms() as i64 + 3_600_000) * 1_000_000;
    mlcore_daemon::wire::encode(
        &mlcore_daemon::wire::Frame::Trigger {
            ts_ns: in_an_hour,
            strategy: 0,
        },
        &mut buf,
    );
    raw.write_all(&buf).unwrap();
    assert!(
        testutil::wait_until(Duration::from_secs(5), || metric(&d.http, ahead) == 1.0).is_some(),
        "the future trigger was not refused"
    );
    let accepted = metric(&d.http, ACCEPTED);
    assert!(
        testutil::wait_until(Duration::from_secs(5), || metric(&d.http, ACCEPTED)
            >= accepted + 2.0)
        .is_some(),
        "decisions stopped after a future trigger"
    );
}

/// Decisions are deterministic given the frames (docs/wire-protocol.md):
/// two daemons fed the same frames, with the same model, publish the same
/// signals — features and `valid_until` come from the frames' timestamps,
/// not from when each daemon happened to process them.
#[test]
fn the_same_frames_and_model_give_the_same_signals() {
    runtime::init(&testutil::ort_library()).unwrap();
    let key =
        SecretKeyFile::read(&testutil::workspace_root().join("deployments/dev-keys/dev-2026.key")).unwrap();
    let artifact = testutil::logistic_artifact(&key, "fx_g10", 1, 3.0, testutil::now_ms());
    let mut conn = testutil::redis_connection();
    Guard::load(&mut conn).unwrap();
    let setups: Vec<(RedisNamespace, tempfile::TempDir, Guard)> = (0..2)
        .map(|_| {
            let ns = RedisNamespace::new();
            let tmp = config_root(&ns, ONE_CORE);
            // A long validity, so a machine busy with the other tests cannot
            // expire the one decision before it is published.
            std::fs::write(
                tmp.path().join("configs/envs/dev/core_policy.yaml"),
                "signal: {ttl_ms: 600000}\n",
            )
            .unwrap();
            artifact.write(&tmp.path().join("models/fx_g10/v1")).unwrap();
            let guard = Guard::new(Keys::new(&ns.ns), 1000);
            testutil::set_mode(&guard, &mut conn, "fx_g10", OpsMode::Active);
            (ns, tmp, guard)
        })
        .collect();
    let daemons: Vec<Daemon> = setups
        .iter()
        .map(|(_, tmp, _)| start_daemon(tmp.path()))
        .collect();
    for d in &daemons {
        wait_ready(d);
    }

    // 150 minutes of the synthetic market for the universe, moved to end
    // now, then one trigger at the last quote's time.
    let cfg = config::load(&setups[0].1.path().join("configs"), Environment::Dev, &vars()).unwrap();
    let ids: Vec<u32> = cfg.universe.strategies[0].symbols.iter().map(|s| s.id).collect();
    let spec = synth::SynthSpec {
        seed: 5,
        symbols: ids.len(),
        start_day: 20_458,
        days: 1,
        interval_ms: 60_000,
        effect: 1.0,
    };
    let day = synth::Generator::new(spec).unwrap().day_merged(20_458);
    let quotes = &day[..150 * ids.len()];
    let now_ns = testutil::now_ms() as i64 * 1_000_000;
    let last = quotes[quotes.len() - 1].ts_ns;
    let mut frames = Vec::new();
    for q in quotes {
        let frame =
            mlcore_daemon::wire::Frame::quote(q, ids[usize::from(q.symbol)], now_ns - (last - q.ts_ns));
        mlcore_daemon::wire::encode(&frame, &mut frames);
    }
    let trigger = mlcore_daemon::wire::Frame::Trigger {
        ts_ns: now_ns,
        strategy: 0,
    };
    mlcore_daemon::wire::encode(&trigger, &mut frames);
    let _streams: Vec<TcpStream> = daemons
        .iter()
        .map(|d| {
            let mut s = TcpStream::connect(&d.ingress).unwrap();
            s.write_all(&frames).unwrap();
            s
        })
        .collect();

    let entries: Vec<redis::streams::StreamId> = daemons
        .iter()
        .zip(&setups)
        .map(|(d, (_, _, guard))| {
            assert!(
                testutil::wait_until(Duration::from_secs(10), || metric(&d.http, ACCEPTED) >= 1.0).is_some(),
                "the trigger's decision was not accepted"
            );
            let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(guard.keys().strategy("fx_g10").signals)
                .arg("-")
                .arg("+")
                .query(&mut conn)
                .unwrap();
            assert_eq!(reply.ids.len(), 1, "one decision, one stream entry");
            reply.ids.into_iter().next().unwrap()
        })
        .collect();
    let field = |e: &redis::streams::StreamId, name: &str| -> String { e.get(name).unwrap() };
    for name in ["signals", "valid_until_ms", "model_id", "model_version", "n"] {
        assert_eq!(field(&entries[0], name), field(&entries[1], name), "{name}");
    }
    assert_eq!(
        field(&entries[0], "valid_until_ms").parse::<i64>().unwrap(),
        now_ns / 1_000_000 + 600_000,
        "the trigger's time + signal.ttl_ms"
    );
    let signals: serde_json::Value = serde_json::from_str(&field(&entries[0], "signals")).unwrap();
    assert_eq!(signals.as_array().map(Vec::len), Some(ids.len()));
    // Not a comparison of empty decisions: every symbol was scored (a
    // probability each, and not one default for all; a saturated logistic
    // head can give exactly 0 or 1, depending on the frames' time of day).
    let probs: Vec<f64> = signals
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["return_prob"].as_f64().unwrap())
        .collect();
    assert!(probs.iter().all(|p| (0.0..=1.0).contains(p)), "{probs:?}");
    assert!(probs.iter().any(|p| *p != probs[0]), "{probs:?}");
    // And no published side contradicts the model (θ1 0.505 in this
    // artifact): β-neutrality shrinks positions, it never turns one around.
    for s in signals.as_array().unwrap() {
        let p = s["return_prob"].as_f64().unwrap();
        match s["side"].as_str().unwrap() {
            "long" => assert!(p > 0.505, "{s}"),
            "short" => assert!(p < 0.495, "{s}"),
            _ => {}
        }
    }
}

#[test]
fn feed_to_guarded_signals_with_halt_swap_and_bad_frames() {
    runtime::init(&testutil::ort_library()).unwrap();
    let ns = RedisNamespace::new();
    let tmp = config_root(
        &ns,
        "{ingress_core: 0, worker_cores: [0], publisher_core: 0, side_cores: [0]}",
    );
    let root = tmp.path();
    let dev = root.join("configs/envs/dev");
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    testutil::synth_dataset(&data, 17, 32, 1, 60_000);
    train_into(&data, &root.join("models/fx_g10/v1"), 1);

    let mut conn = testutil::redis_connection();
    let guard = Guard::new(Keys::new(&ns.ns), 1000);
    Guard::load(&mut conn).unwrap();
    let set = |conn: &mut redis::Connection, mode: OpsMode| {
        testutil::set_mode(&guard, conn, "fx_g10", mode);
    };
    set(&mut conn, OpsMode::Active);

    let d = start_daemon(root);
    wait_ready(&d);
    // Hot threads by name; side work (endpoints, loader, ops watcher) on the
    // side runtime's threads.
    let names: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", d.child.id()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect();
    for hot in ["ingress", "worker-0", "publisher"] {
        assert!(names.iter().any(|n| n == hot), "{hot} missing: {names:?}");
    }
    assert!(
        names.iter().filter(|n| *n == "side").count() >= 3,
        "side runtime: an async worker and the two blocking loops: {names:?}"
    );

    let feed = |seconds: &str| {
        let args = [
            "--dataset",
            data.to_str().unwrap(),
            "--addr",
            &d.ingress,
            "--speed",
            "1200",
            "--trigger-every-ms",
            "50",
            "--seconds",
            seconds,
        ];
        run_feed(root, &args);
    };
    feed("2");
    assert!(
        testutil::wait_until(Duration::from_secs(5), || metric(&d.http, ACCEPTED) >= 10.0).is_some(),
        "no accepted batches"
    );
    let sig = guard
        .read(&mut conn, "fx_g10", "EURUSD")
        .unwrap()
        .expect("a valid EURUSD signal");
    assert_eq!((sig.model_id.as_str(), sig.model_version), ("fx_g10-v1", 1));
    assert!(
        sig.valid_until_ms > testutil::now_ms() - 2000 && sig.valid_until_ms <= testutil::now_ms() + 1500
    );
    let positions: usize = synth::SYMBOLS
        .iter()
        .filter_map(|s| guard.read(&mut conn, "fx_g10", s.0).ok().flatten())
        .filter(|s| s.qty != 0.0)
        .count();
    std::thread::sleep(Duration::from_millis(300)); // the last decisions land
    let stream_len: u64 = redis::cmd("XLEN")
        .arg(guard.keys().strategy("fx_g10").signals)
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        stream_len,
        metric(&d.http, ACCEPTED) as u64,
        "the stream holds one entry per accepted decision"
    );
    let hb = mlcore_contract::Heartbeat::read(&mut conn, guard.keys(), "e2e")
        .unwrap()
        .expect("heartbeat");
    assert_eq!(hb.models.get("fx_g10").map(String::as_str), Some("fx_g10-v1@1"));
    eprintln!("e2e: {positions} non-flat positions in the last decision, {stream_len} stream entries");

    // A malformed frame closes that connection only.
    let mut bad = TcpStream::connect(&d.ingress).unwrap();
    bad.write_all(&[9, 0, 0, 0, 77, 1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    let mut sink = [0u8; 1];
    bad.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(
        bad.read(&mut sink).unwrap_or(0),
        0,
        "the daemon closes a connection after a bad frame"
    );
    let unknown_kind = r#"ml_assets_core_wire_errors_total{environment="e2e",service="ml-assets-core",reason="unknown_kind"}"#;
    assert_eq!(metric(&d.http, unknown_kind), 1.0);

    // Halt: seen through pub/sub well before the 1 s reconciliation.
    set(&mut conn, OpsMode::Halted);
    let halted = r#"ml_assets_core_ops_mode{environment="e2e",service="ml-assets-core",strategy="fx_g10",mode="halted"}"#;
    let took = testutil::wait_until(Duration::from_secs(3), || {
        get(&d.http, "/metrics").1.contains(halted)
    })
    .expect("halt applied");
    eprintln!("e2e: halt applied after {took:?}");
    assert!(
        took < Duration::from_millis(500),
        "halt took {took:?}: pub/sub path broken?"
    );
    let before = metric(&d.http, ACCEPTED);
    feed("1");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        metric(&d.http, ACCEPTED),
        before,
        "nothing is published while halted"
    );

    // A newer model is verified, warmed and swapped in while decisions run.
    set(&mut conn, OpsMode::Active);
    train_into(&data, &root.join("models/fx_g10/v2"), 2);
    let version = r#"ml_assets_core_model_version{environment="e2e",service="ml-assets-core",strategy="fx_g10",model_id="fx_g10-v2"} 2"#;
    let without =
        r#"ml_assets_core_decisions_without_model_total{environment="e2e",service="ml-assets-core"}"#;
    let missing_before = metric(&d.http, without);
    assert!(
        testutil::wait_until(Duration::from_secs(10), || get(&d.http, "/metrics")
            .1
            .contains(version))
        .is_some(),
        "v2 never activated"
    );
    feed("1");
    assert!(testutil::wait_until(Duration::from_secs(5), || {
        guard
            .read(&mut conn, "fx_g10", "EURUSD")
            .ok()
            .flatten()
            .is_some_and(|s| s.model_version == 2)
    })
    .is_some());
    assert_eq!(
        metric(&d.http, without),
        missing_before,
        "no decision failed across the swap"
    );

    // An old artifact dropped into models_root is refused (rollback).
    let refused = r#"ml_assets_core_refused_artifacts_total{environment="e2e",service="ml-assets-core"}"#;
    testutil::copy_tree(&root.join("models/fx_g10/v1"), &root.join("models/fx_g10/v3")).unwrap();
    assert!(
        testutil::wait_until(Duration::from_secs(5), || metric(&d.http, refused) >= 1.0).is_some(),
        "a v1 manifest under v3/ must be refused"
    );
    assert!(get(&d.http, "/metrics").1.contains(version), "v2 keeps serving");

    // Revoking the signing key in trust.yaml applies without a restart: a
    // new artifact signed with it is refused once the file is re-read.
    let dev_trust =
        std::fs::read_to_string(testutil::workspace_root().join("configs/envs/dev/trust.yaml")).unwrap();
    std::fs::write(
        dev.join("trust.yaml"),
        format!("{dev_trust}revoked: [dev-2026]\n"),
    )
    .unwrap();
    let before = metric(&d.http, refused);
    std::thread::sleep(Duration::from_secs(11)); // the daemon re-reads trust.yaml every 10 s
    let key =
        SecretKeyFile::read(&testutil::workspace_root().join("deployments/dev-keys/dev-2026.key")).unwrap();
    let mut files = mlcore_models::artifact::ArtifactFiles::read(&root.join("models/fx_g10/v2")).unwrap();
    let mut manifest: mlcore_models::artifact::Manifest =
        serde_json::from_slice(files.get("manifest.json").unwrap()).unwrap();
    manifest.version = 4;
    manifest.model_id = "fx_g10-v4".into();
    files.0.remove("manifest.json");
    files.0.remove("manifest.sig");
    let (_, files) = mlcore_models::artifact::seal(manifest, files, &key).unwrap();
    files.write(&root.join("models/fx_g10/v4")).unwrap();
    assert!(
        testutil::wait_until(Duration::from_secs(5), || metric(&d.http, refused) > before).is_some(),
        "an artifact signed with a revoked key must be refused"
    );
    assert!(
        get(&d.http, "/metrics").1.contains(version),
        "v2 keeps serving after the revocation"
    );
}

/// SIGTERM: the daemon stops accepting, finishes what is in flight, writes
/// a last heartbeat that says `stopped` (with its final counts) and exits 0.
#[test]
fn sigterm_stops_the_daemon_cleanly_and_its_last_heartbeat_says_stopped() {
    let ns = RedisNamespace::new();
    let tmp = timer_root(&ns, "e2e-stop", 50);
    let root = tmp.path();
    let mut conn = testutil::redis_connection();
    let keys = Keys::new(&ns.ns);

    let mut d = start_daemon(root);
    wait_ready(&d);
    assert!(
        testutil::wait_until(Duration::from_secs(10), || metric(&d.http, ACCEPTED) >= 3.0).is_some(),
        "no decision accepted"
    );
    let status = testutil::stop_with_signal(&mut d.child, "TERM", Duration::from_secs(15));
    assert!(status.success(), "the daemon exited with {status} on SIGTERM");
    let hb = mlcore_contract::Heartbeat::read(&mut conn, &keys, "e2e-stop")
        .unwrap()
        .expect("a last heartbeat");
    assert_eq!(hb.status, "stopped");
    assert!(hb.decisions >= 3 && hb.signals_accepted >= 3, "{hb:?}");
    assert!(
        TcpStream::connect(&d.ingress).is_err(),
        "ingress still accepts after stopping"
    );
}

/// The daemon's `/metrics` is valid Prometheus text by the Prometheus
/// project's own parser and linter, with base units, `_total` counters,
/// HELP and TYPE everywhere, and the standard process metrics.
#[test]
fn the_daemons_metrics_pass_promtool() {
    let ns = RedisNamespace::new();
    let tmp = config_root(&ns, ONE_CORE);
    let d = start_daemon(tmp.path());
    assert!(
        testutil::wait_until(Duration::from_secs(10), || get(&d.http, "/healthz").0 == 200).is_some(),
        "daemon never answered"
    );
    let (code, response) = get(&d.http, "/metrics");
    assert_eq!(code, 200);
    let text = response.split("\r\n\r\n").last().unwrap_or_default();
    testutil::promtool_check_metrics(text);
    for family in [
        "# TYPE ml_assets_core_decisions_total counter",
        "# TYPE ml_assets_core_stage_latency_seconds histogram",
        "# TYPE process_cpu_seconds_total counter",
        "# TYPE process_resident_memory_bytes gauge",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
    assert!(!text.contains("microseconds"), "{text}");
}

/// A connection as `user` (password `pw-<user>`) to the private server.
fn as_user(server: &testutil::RedisServer, user: &str) -> (String, redis::Connection) {
    let url = format!("redis://{user}:pw-{user}@127.0.0.1:{}/", server.port);
    let conn = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("{user}: {e}"));
    (url, conn)
}

/// Asserts that `args` is refused to `who` with NOPERM.
fn refused(conn: &mut redis::Connection, who: &str, args: &[&str]) {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match cmd.query::<redis::Value>(conn) {
        Err(e) if e.code() == Some("NOPERM") || e.to_string().contains("NOPERM") => {}
        other => panic!("{who} ran {args:?}: {other:?}"),
    }
}

/// #22 §5: each process under its own least-privilege Redis user on a
/// real Redis with ACLs (`mlcore_contract::acl`, shipped as
/// `deployments/redis/users.acl`). The daemon starts, decides and
/// publishes with a user that cannot load functions once `redis
/// install-guard` has run as the installer; the control plane's user
/// changes modes and reads heartbeats; a consumer reads signals and can
/// write nothing; and every user is refused what it does not need.
#[test]
fn each_process_runs_under_a_least_privilege_redis_user() {
    use mlcore_contract::acl::{self, Role};
    runtime::init(&testutil::ort_library()).unwrap();
    // The shipped ACL file is the generator's, and Redis loads it.
    let shipped = testutil::workspace_root().join("deployments/redis/users.acl");
    assert_eq!(
        std::fs::read_to_string(&shipped).unwrap(),
        acl::acl_file("mlcore"),
        "deployments/redis/users.acl is stale: mlcore-control redis acl --env prod > deployments/redis/users.acl"
    );
    // With an administrator line of the deployment's own (the default
    // user is off: an unauthenticated client can do nothing).
    let acl_dir = tempfile::tempdir().unwrap();
    let with_admin = acl_dir.path().join("users.acl");
    std::fs::write(
        &with_admin,
        format!("{}user admin on >pw-admin ~* &* +@all\n", acl::acl_file("mlcore")),
    )
    .unwrap();
    let loaded = testutil::RedisServer::start_as(
        &["--aclfile", with_admin.to_str().unwrap()],
        Some(("admin", "pw-admin")),
    );
    let users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query(&mut loaded.connection())
        .unwrap();
    for role in Role::ALL {
        assert!(users.contains(&role.user().to_owned()), "{users:?}");
    }
    let mut anonymous = redis::Client::open(format!("redis://127.0.0.1:{}/", loaded.port))
        .unwrap()
        .get_connection()
        .unwrap();
    let refused_anonymously = redis::cmd("GET")
        .arg("mlcore:x")
        .query::<redis::Value>(&mut anonymous);
    assert!(
        refused_anonymously
            .as_ref()
            .is_err_and(|e| e.to_string().contains("NOAUTH")),
        "the default user is open: {refused_anonymously:?}"
    );
    drop(loaded);

    let server = testutil::RedisServer::start();
    let ns = RedisNamespace::on(&server.url());
    let mut admin = server.connection();
    for role in Role::ALL {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER").arg(role.user());
        for rule in role.rules(&ns.ns) {
            cmd.arg(rule);
        }
        cmd.arg(format!(">pw-{}", role.user()));
        let () = cmd.query(&mut admin).unwrap();
    }
    let (daemon_url, mut daemon) = as_user(&server, Role::Daemon.user());
    let (_, mut control) = as_user(&server, Role::Control.user());
    let (_, mut consumer) = as_user(&server, Role::Consumer.user());
    let (installer_url, mut installer) = as_user(&server, Role::Installer.user());

    // No guard yet: a process with `guard_install: explicit` says how to
    // install it; the daemon's user could not load it anyway.
    let why = Guard::ensure(&mut daemon, false, ContractVersion::V2)
        .unwrap_err()
        .to_string();
    assert!(why.contains("mlcore-control redis install-guard"), "{why}");
    let why = Guard::ensure(&mut daemon, true, ContractVersion::V2)
        .unwrap_err()
        .to_string();
    assert!(
        why.to_ascii_uppercase().contains("NOPERM") && why.contains("install-guard"),
        "{why}"
    );

    let tmp = timer_files(&ns, "e2e-acl", 100);
    let root = tmp.path();
    std::fs::write(
        root.join("configs/envs/dev/redis.yaml"),
        format!(
            "namespace: {}\nguard_install: explicit\nreconcile_interval_ms: 1000\n",
            ns.ns
        ),
    )
    .unwrap();
    let install = Command::new(testutil::binary("mlcore-control"))
        .args(["--config-dir", root.join("configs").to_str().unwrap()])
        .args(["redis", "install-guard", "--env", "dev"])
        .env("MLCORE_REDIS_URL", &daemon_url)
        .env("MLCORE_REDIS_ADMIN_URL", &installer_url)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&install.stdout);
    assert!(
        install.status.success() && said.contains("installed and answering (as $MLCORE_REDIS_ADMIN_URL)"),
        "{said}{}",
        String::from_utf8_lossy(&install.stderr)
    );
    Guard::ensure(&mut daemon, false, ContractVersion::V2).unwrap();

    // The control plane's user sets the mode through the guard.
    let guard = Guard::new(Keys::new(&ns.ns), 1000).installing(false);
    testutil::set_mode(&guard, &mut control, "fx_g10", OpsMode::Active);

    // The daemon decides and publishes as its user; the consumer reads.
    let d = start_daemon_on(root, &daemon_url);
    wait_ready(&d);
    assert!(
        testutil::wait_until(Duration::from_secs(10), || metric(&d.http, ACCEPTED) >= 3.0).is_some(),
        "the daemon published nothing under its ACL user"
    );
    let sig = guard
        .read(&mut consumer, "fx_g10", "EURUSD")
        .unwrap()
        .expect("the consumer reads a valid signal");
    assert_eq!(sig.model_id, "fx_g10-v1");
    // The control plane's monitor reads the daemon's heartbeat.
    let keys = Keys::new(&ns.ns);
    assert!(
        testutil::wait_until(Duration::from_secs(5), || {
            mlcore_contract::Heartbeat::read(&mut control, &keys, "e2e-acl")
                .ok()
                .flatten()
                .is_some()
        })
        .is_some(),
        "no heartbeat readable by the control plane's user"
    );
    // The daemon's user cannot change a mode, though it may write the ops
    // key the publish call declares: the guard asks for the mode-writer key.
    let current = guard.read_mode(&mut daemon, "fx_g10").unwrap().version;
    let change = mlcore_contract::ModeChange {
        strategy: "fx_g10",
        expected_version: current,
        mode: OpsMode::Flatten,
        reason: "daemon credentials",
        actor: "intruder",
        request_id: "r",
    };
    let why = guard.set_mode(&mut daemon, &change).unwrap_err().to_string();
    assert!(why.contains("may not change ops modes"), "{why}");
    // One-time codes are spent by the control plane's user only.
    assert_eq!(
        guard.spend_code(&mut control, "dev-approver", 7).unwrap(),
        mlcore_contract::CodeSpent::Spent
    );
    assert!(guard.spend_code(&mut daemon, "dev-approver", 0).is_err());
    // A halt from the control plane's user reaches the daemon (its
    // subscription and reconcile run under its user too).
    testutil::set_mode(&guard, &mut control, "fx_g10", OpsMode::Halted);
    assert!(
        testutil::wait_until(Duration::from_secs(5), || {
            mlcore_contract::Heartbeat::read(&mut control, &keys, "e2e-acl")
                .ok()
                .flatten()
                .and_then(|hb| hb.modes.get("fx_g10").cloned())
                .as_deref()
                == Some("halted")
        })
        .is_some(),
        "the daemon did not report the halt"
    );
    // A forged event on the channel (the daemon's user may publish there)
    // changes nothing: the daemon reads the mode from the ops hash.
    let forged =
        serde_json::json!({"type": "ops_mode", "strategy": "fx_g10", "mode": "active", "version": 999_999});
    let _: i64 = redis::cmd("PUBLISH")
        .arg(keys.events())
        .arg(forged.to_string())
        .query(&mut daemon)
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let mode = mlcore_contract::Heartbeat::read(&mut control, &keys, "e2e-acl")
        .unwrap()
        .and_then(|hb| hb.modes.get("fx_g10").cloned());
    assert_eq!(mode.as_deref(), Some("halted"), "a forged event moved the daemon");

    let other = "other-namespace:{fx_g10}:ops";
    let sig_key = keys.strategy("fx_g10").sig("EURUSD");
    let strategy_keys = keys.strategy("fx_g10");
    // Each writes only what it owns.
    for key in [
        strategy_keys.model.clone(),
        keys.second_factor_steps(),
        keys.audit_checkpoint(),
    ] {
        refused(&mut daemon, "daemon", &["HSET", &key, "f", "v"]);
        refused(&mut daemon, "daemon", &["PEXPIREAT", &key, "1"]);
    }
    for key in [sig_key.clone(), strategy_keys.hwm.clone()] {
        refused(&mut control, "control", &["HSET", &key, "f", "v"]);
        refused(&mut control, "control", &["PEXPIREAT", &key, "1"]);
    }
    for (who, conn) in [("daemon", &mut daemon), ("control", &mut control)] {
        refused(conn, who, &["FUNCTION", "LOAD", "REPLACE", "#!lua name=x\n"]);
        refused(conn, who, &["FUNCTION", "FLUSH"]);
        refused(conn, who, &["FUNCTION", "DELETE", "mlcore_guard_v2"]);
        refused(conn, who, &["FLUSHALL"]);
        refused(conn, who, &["CONFIG", "SET", "maxmemory", "1"]);
        refused(conn, who, &["KEYS", "*"]);
        refused(conn, who, &["DEL", &sig_key]);
        refused(conn, who, &["HGETALL", other]);
        refused(conn, who, &["ACL", "LIST"]);
        refused(conn, who, &["SHUTDOWN"]);
    }
    refused(&mut consumer, "consumer", &["HSET", &sig_key, "side", "long"]);
    refused(&mut consumer, "consumer", &["DEL", &sig_key]);
    refused(&mut consumer, "consumer", &["FCALL", "mlcore_publish_v2", "0"]);
    refused(&mut consumer, "consumer", &["FCALL", "mlcore_set_mode_v2", "0"]);
    refused(&mut consumer, "consumer", &["HGETALL", other]);
    refused(&mut consumer, "consumer", &["FUNCTION", "FLUSH"]);
    refused(&mut installer, "installer", &["HGETALL", &sig_key]);
    refused(&mut installer, "installer", &["FUNCTION", "FLUSH"]);
    refused(&mut installer, "installer", &["FLUSHALL"]);
    refused(&mut installer, "installer", &["CONFIG", "SET", "maxmemory", "1"]);
}

/// #22 §6: two daemons serve one strategy from the same frames (the feed
/// sends every frame to both). Each decision reaches Redis once — the
/// second daemon's copy is refused as a duplicate, since both name it by
/// its trigger time — and when one daemon is killed halfway the other goes
/// on: every trigger the feed sent is in the stream exactly once.
#[test]
fn two_daemons_publish_each_decision_once_and_survive_one_dying() {
    runtime::init(&testutil::ort_library()).unwrap();
    let ns = RedisNamespace::new();
    let roots: Vec<tempfile::TempDir> = ["aa-a", "aa-b"]
        .iter()
        .map(|instance| {
            let tmp = config_root(&ns, ONE_CORE);
            std::fs::write(
                tmp.path().join("configs/envs/dev/daemon.yaml"),
                format!(
                    "instance_id: {instance}\ningress: {{listen: \"127.0.0.1:0\"}}\nthreads: {ONE_CORE}\n"
                ),
            )
            .unwrap();
            let key =
                SecretKeyFile::read(&testutil::workspace_root().join("deployments/dev-keys/dev-2026.key"))
                    .unwrap();
            testutil::logistic_artifact(&key, "fx_g10", 1, 1.0, testutil::now_ms())
                .write(&tmp.path().join("models/fx_g10/v1"))
                .unwrap();
            tmp
        })
        .collect();
    let data = roots[0].path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    testutil::synth_dataset(&data, 23, 32, 1, 30_000);
    let mut conn = testutil::redis_connection();
    let guard = Guard::new(Keys::new(&ns.ns), 1000);
    Guard::load(&mut conn).unwrap();
    testutil::set_mode(&guard, &mut conn, "fx_g10", OpsMode::Active);

    let mut a = start_daemon(roots[0].path());
    let b = start_daemon(roots[1].path());
    wait_ready(&a);
    wait_ready(&b);
    let feed = Command::new(testutil::binary("mlcore-feed"))
        .args(["--config-dir", roots[0].path().join("configs").to_str().unwrap()])
        .args(["--env", "dev", "--dataset", data.to_str().unwrap()])
        .args(["--addr", &a.ingress, "--addr", &b.ingress])
        .args(["--speed", "60", "--trigger-every-ms", "40", "--seconds", "6"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Both decide while both live: the pair publishes some decisions twice
    // over, and the guard takes each once.
    let duplicate =
        r#"ml_assets_core_batches_total{environment="e2e",service="ml-assets-core",outcome="duplicate"}"#;
    assert!(
        testutil::wait_until(Duration::from_secs(10), || {
            metric(&a.http, duplicate) + metric(&b.http, duplicate) >= 3.0
        })
        .is_some(),
        "no decision was refused as the other daemon's duplicate"
    );
    let _ = a.child.kill();
    let _ = a.child.wait();
    let out = feed.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("went away"),
        "the feed did not notice the killed daemon: {said}"
    );
    // "feed done: N quotes, T triggers in S s"
    let triggers: usize = said
        .split(" triggers")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    let stream = guard.keys().strategy("fx_g10").signals;
    let seqs = || -> Vec<u64> {
        redis::cmd("XRANGE")
            .arg(&stream)
            .arg("-")
            .arg("+")
            .query::<redis::streams::StreamRangeReply>(&mut testutil::redis_connection())
            .unwrap()
            .ids
            .iter()
            .map(|e| e.get::<u64>("seq").unwrap())
            .collect()
    };
    assert!(
        testutil::wait_until(Duration::from_secs(10), || seqs().len() >= triggers).is_some(),
        "{} decisions in the stream for {triggers} triggers",
        seqs().len()
    );
    std::thread::sleep(Duration::from_millis(500));
    let published = seqs();
    let mut distinct = published.clone();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        published.len(),
        "a decision was published twice: {published:?}"
    );
    assert!(
        published.windows(2).all(|w| w[0] < w[1]),
        "out of order: {published:?}"
    );
    assert_eq!(
        published.len(),
        triggers,
        "each trigger exactly once, after one daemon died"
    );
    let accepted_b = metric(&b.http, ACCEPTED);
    assert!(accepted_b > 0.0, "the survivor published nothing");
}

/// Timer mode, active-active: ticks sit on the wall clock's grid, so two
/// daemons name each tick alike and publish it once between them.
#[test]
fn two_timer_daemons_publish_each_tick_once() {
    runtime::init(&testutil::ort_library()).unwrap();
    let ns = RedisNamespace::new();
    let a_root = timer_root(&ns, "tick-a", 100);
    let b_root = timer_files(&ns, "tick-b", 100);
    let a = start_daemon(a_root.path());
    let b = start_daemon(b_root.path());
    wait_ready(&a);
    wait_ready(&b);
    let duplicate =
        r#"ml_assets_core_batches_total{environment="e2e",service="ml-assets-core",outcome="duplicate"}"#;
    assert!(
        testutil::wait_until(Duration::from_secs(10), || {
            metric(&a.http, duplicate) + metric(&b.http, duplicate) >= 5.0
        })
        .is_some(),
        "the two daemons' ticks were never the same decision"
    );
    let guard = Guard::new(Keys::new(&ns.ns), 1000);
    let seqs: Vec<u64> = redis::cmd("XRANGE")
        .arg(guard.keys().strategy("fx_g10").signals)
        .arg("-")
        .arg("+")
        .query::<redis::streams::StreamRangeReply>(&mut testutil::redis_connection())
        .unwrap()
        .ids
        .iter()
        .map(|e| e.get::<u64>("seq").unwrap())
        .collect();
    assert!(seqs.len() >= 5, "{seqs:?}");
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "a tick published twice: {seqs:?}"
    );
    assert!(
        seqs.iter().all(|s| s % 100_000 == 0),
        "ticks off the 100 ms grid: {seqs:?}"
    );
}

/// The `seq` of every entry of the strategy's v3 stream, in stream order.
fn v3_stream_seqs(conn: &mut redis::Connection, keys: &mlcore_contract::StrategyKeys) -> Vec<u64> {
    redis::cmd("XRANGE")
        .arg(&keys.stream_v3)
        .arg("-")
        .arg("+")
        .query::<redis::streams::StreamRangeReply>(conn)
        .unwrap()
        .ids
        .iter()
        .map(|e| e.get::<u64>("seq").unwrap())
        .collect()
}

/// Contract v3 end to end: two timer daemons publishing through
/// `mlcore_publish_v3` (redis.yaml `contract: v3`) leave one snapshot per
/// strategy that a consumer reads symbol by symbol, one stream entry per
/// tick (the guard's one mark per strategy refuses the second daemon's
/// copy), nothing under v2's keys, and halting through v3's `set_mode`
/// stops the snapshot.
#[test]
fn timer_daemons_on_contract_v3_publish_snapshots_each_tick_once() {
    runtime::init(&testutil::ort_library()).unwrap();
    let ns = RedisNamespace::new();
    let a_root = timer_root(&ns, "v3-a", 100);
    let b_root = timer_files(&ns, "v3-b", 100);
    for root in [&a_root, &b_root] {
        let path = root.path().join("configs/envs/dev/redis.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}contract: v3\n")).unwrap();
    }
    let a = start_daemon(a_root.path());
    let b = start_daemon(b_root.path());
    wait_ready(&a);
    wait_ready(&b);
    let guard = Guard::new(Keys::new(&ns.ns), 1000).with_contract(ContractVersion::V3);
    let keys = guard.keys().strategy("fx_g10");
    let mut conn = testutil::redis_connection();
    let entries = |conn: &mut redis::Connection| v3_stream_seqs(conn, &keys);
    assert!(
        testutil::wait_until(Duration::from_secs(10), || entries(&mut conn).len() >= 5).is_some(),
        "no v3 stream entries"
    );
    let seqs = entries(&mut conn);
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "a tick published twice: {seqs:?}"
    );
    let signal = guard.read(&mut conn, "fx_g10", "USDJPY").unwrap().unwrap();
    assert!(
        signal.seq.is_multiple_of(100_000) && signal.model_id == "fx_g10-v1",
        "{signal:?}"
    );
    let v2: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*:sig:*", ns.ns))
        .query(&mut conn)
        .unwrap();
    assert!(v2.is_empty(), "v2 keys written: {v2:?}");
    testutil::set_mode(&guard, &mut conn, "fx_g10", OpsMode::Halted);
    std::thread::sleep(Duration::from_millis(500));
    let halted_at = guard.high_water_mark(&mut conn, "fx_g10").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        guard.high_water_mark(&mut conn, "fx_g10").unwrap(),
        halted_at,
        "a halted strategy's snapshot moved"
    );
}

/// `guard_engine: module`: a timer daemon publishes contract v3 through
/// the guard module (`guardmod/`) on a Redis that loaded it: Redis counts
/// the module's command, the stream gets one entry per tick, and a
/// consumer reads the snapshot through the Lua library as ever.
#[test]
fn a_timer_daemon_publishes_through_the_guard_module() {
    runtime::init(&testutil::ort_library()).unwrap();
    let module = testutil::guard_module();
    let server = testutil::RedisServer::start_with(&["--loadmodule", module.to_str().unwrap()]);
    let mut conn = server.connection();
    Guard::load(&mut conn).unwrap();
    let ns = RedisNamespace::on(&server.url());
    let root = timer_files(&ns, "module-a", 100);
    let path = root.path().join("configs/envs/dev/redis.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}contract: v3\nguard_engine: module\n")).unwrap();
    let guard = Guard::new(Keys::new(&ns.ns), 1000).with_contract(ContractVersion::V3);
    testutil::set_mode(&guard, &mut conn, "fx_g10", OpsMode::Active);
    let d = start_daemon_on(root.path(), &server.url());
    wait_ready(&d);
    let keys = guard.keys().strategy("fx_g10");
    let entries = |conn: &mut redis::Connection| v3_stream_seqs(conn, &keys);
    assert!(
        testutil::wait_until(Duration::from_secs(10), || entries(&mut conn).len() >= 3).is_some(),
        "no stream entries through the module"
    );
    let seqs = entries(&mut conn);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let calls = testutil::command_stats(&mut conn, "mlcore.publish_v3").calls;
    assert!(calls >= 3, "the module's command ran {calls} times");
    let signal = guard.read(&mut conn, "fx_g10", "USDJPY").unwrap().unwrap();
    assert_eq!(signal.model_id, "fx_g10-v1", "{signal:?}");
}

/// Replay parity: the frames `mlcore-feed` sends a real daemon, captured,
/// replayed by `mlcore-control research backtest --capture` with the same
/// model and configuration, give the signals the daemon published — every
/// field of every signal, bit for bit (`docs/research.md`).
#[test]
fn the_backtester_computes_the_signals_the_daemon_publishes() {
    let ns = RedisNamespace::new();
    let tmp = config_root(&ns, ONE_CORE);
    // Nothing expires on a busy machine: every decision is published.
    std::fs::write(
        tmp.path().join("configs/envs/dev/core_policy.yaml"),
        "signal: {ttl_ms: 600000}\n",
    )
    .unwrap();
    let data = tmp.path().join("data");
    testutil::synth_dataset(&data, 23, synth::SYMBOLS.len(), 1, 60_000);
    runtime::init(&testutil::ort_library()).unwrap();
    let model = tmp.path().join("models/fx_g10/v1");
    train_into(&data, &model, 1);
    let mut conn = testutil::redis_connection();
    Guard::load(&mut conn).unwrap();
    let guard = Guard::new(Keys::new(&ns.ns), 1000);
    testutil::set_mode(&guard, &mut conn, "fx_g10", OpsMode::Active);
    let d = start_daemon(tmp.path());
    wait_ready(&d);

    let capture = tmp.path().join("frames.txt");
    run_feed(
        tmp.path(),
        &[
            "--dataset",
            data.to_str().unwrap(),
            "--addr",
            &d.ingress,
            "--speed",
            "3600",
            "--trigger-every-ms",
            "50",
            "--seconds",
            "5",
            "--capture",
            capture.to_str().unwrap(),
        ],
    );
    let triggers = std::fs::read_to_string(&capture)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("t,"))
        .count();
    assert!(triggers >= 20, "{triggers} triggers captured");
    assert!(
        testutil::wait_until(Duration::from_secs(20), || metric(&d.http, ACCEPTED)
            >= triggers as f64)
        .is_some(),
        "{} of {triggers} decisions accepted",
        metric(&d.http, ACCEPTED)
    );
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(guard.keys().strategy("fx_g10").signals)
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .unwrap();

    let out = tmp.path().join("bt");
    let bt = Command::new(testutil::binary("mlcore-control"))
        .current_dir(tmp.path())
        .args(["--config-dir", tmp.path().join("configs").to_str().unwrap()])
        .args(["research", "backtest", "--env", "dev", "--artifact"])
        .arg(&model)
        .arg("--capture")
        .arg(&capture)
        .arg("--out")
        .arg(&out)
        .env("MLCORE_REDIS_URL", testutil::redis_url())
        .env("MLCORE_PG_DSN", testutil::pg_dsn())
        .output()
        .unwrap();
    assert!(bt.status.success(), "{}", String::from_utf8_lossy(&bt.stderr));
    // ts_ns,symbol,side,weight,qty,return_prob,risk_score — by trigger µs.
    let positions = std::fs::read_to_string(out.join("positions.csv")).unwrap();
    let mut replayed: std::collections::BTreeMap<u64, Vec<Vec<String>>> = Default::default();
    for line in positions.lines().skip(1) {
        let f: Vec<String> = line.split(',').map(str::to_owned).collect();
        let us = f[0].parse::<u64>().unwrap() / 1_000;
        replayed.entry(us).or_default().push(f[1..].to_vec());
    }
    assert_eq!(
        replayed.len(),
        triggers,
        "one backtest decision per captured trigger"
    );
    let bits = |s: &str| s.parse::<f64>().unwrap().to_bits();
    let mut not_flat = 0;
    for e in &reply.ids {
        let seq: u64 = e.get::<String>("seq").unwrap().parse().unwrap();
        let ours = replayed
            .get(&seq)
            .unwrap_or_else(|| panic!("no backtest decision at seq {seq}"));
        let signals: Vec<serde_json::Value> =
            serde_json::from_str(&e.get::<String>("signals").unwrap()).unwrap();
        assert_eq!(signals.len(), ours.len());
        for (s, o) in signals.iter().zip(ours) {
            let num = |k: &str| bits(&s[k].to_string());
            assert_eq!(s["symbol"].as_str(), Some(o[0].as_str()), "seq {seq}");
            assert_eq!(s["side"].as_str(), Some(o[1].as_str()), "seq {seq} {s}");
            assert_eq!(num("weight"), bits(&o[2]), "seq {seq} weight {s} vs {o:?}");
            assert_eq!(num("qty"), bits(&o[3]), "seq {seq} qty {s} vs {o:?}");
            assert_eq!(
                num("return_prob"),
                bits(&o[4]),
                "seq {seq} return_prob {s} vs {o:?}"
            );
            assert_eq!(
                num("risk_score"),
                bits(&o[5]),
                "seq {seq} risk_score {s} vs {o:?}"
            );
            not_flat += usize::from(o[1] != "flat");
        }
    }
    assert_eq!(
        reply.ids.len(),
        triggers,
        "every captured decision was published once"
    );
    assert!(not_flat > 0, "a comparison of flat books only proves little");
}
