//! The retraining flow across real processes: `mlcore-control retrain`
//! against real PostgreSQL (registry, audit), Redis (events), ONNX Runtime
//! and LightGBM — killed with SIGKILL in every step and resumed; a changed
//! configuration rerunning only the steps it feeds; a corrupted partition
//! failing the gate with its event and alert; one run of a strategy at a
//! time; and the API of `serve` starting, following, listing and serving a
//! run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // fixture helpers outside #[test] fns

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mlcore_contract::Keys;
use mlcore_testkit::{self as testutil, RedisNamespace};
use serde_json::Value;

const STEPS: [&str; 11] = [
    "dataset",
    "features",
    "labels",
    "validation",
    "train",
    "export",
    "theta",
    "backtest",
    "challenge",
    "sign",
    "register",
];

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A webhook receiver standing in for the alert channel: every body.
fn webhook_stand_in() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&bodies);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut len = 0usize;
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 2 {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&body).into_owned());
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, bodies)
}

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    ns: RedisNamespace,
    dsn: String,
    _db: testutil::TestDatabase,
    alerts: Arc<Mutex<Vec<String>>>,
}

fn setup() -> Env {
    setup_on(None)
}

/// An environment of its own (database, namespace, storage) that trains on
/// `dataset` when given (else on a synthetic dataset of its own).
fn setup_on(dataset: Option<&Path>) -> Env {
    let ns = RedisNamespace::new();
    let (tmp, dev) = testutil::dev_project(&ns.ns);
    let root = tmp.path().to_owned();
    let repo = testutil::workspace_root();
    let write = |file: &str, text: String| std::fs::write(dev.join(file), text).unwrap();
    write(
        "storage.yaml",
        format!(
            "models_root: {0}/models\nworm_root: {0}/worm\nbackups_root: {0}/b\ndatasets_root: {0}/d\nruns_root: {0}/runs\nops_root: {0}/ops\nout_root: {0}/out\nonnxruntime_library: {1}\n",
            root.display(),
            testutil::ort_library().display()
        ),
    );
    let key = repo.join("deployments/dev-keys/dev-2026.key");
    let control = std::fs::read_to_string(dev.join("control.yaml"))
        .unwrap()
        .replace("listen: \"127.0.0.1:8080\"", "listen: \"127.0.0.1:0\"")
        .replace("deployments/dev-keys/dev-2026.key", &key.display().to_string())
        .replace(
            "dataset: synth-seed7-effect1",
            &format!(
                "dataset: {}",
                dataset.map_or("data".into(), |d| d.display().to_string())
            ),
        );
    // A small run: 60 trees, 15 TPE trials after the 5 × 5 grid.
    let control = mlcore_config::edit::set(
        &control,
        "retrain.trees",
        "{num_leaves: 31, learning_rate: 0.05, min_data_in_leaf: 50, max_trees: 60}",
    )
    .unwrap();
    let control = mlcore_config::edit::set(
        &control,
        "retrain.search",
        "{every_ms: 60000, latency_ms: 250, grid: 5, trials: 15, min_fills: 50, max_drawdown: 0.05, seed: 20261205}",
    )
    .unwrap();
    write("control.yaml", control);
    let (hook, alerts) = webhook_stand_in();
    let notifications = std::fs::read_to_string(dev.join("notifications.yaml"))
        .unwrap()
        .replace(
            "webhook:\n  enabled: false\n  url: \"http://127.0.0.1:9/webhook-disabled-in-dev\"",
            &format!("webhook:\n  enabled: true\n  url: \"{hook}\""),
        );
    write("notifications.yaml", notifications);

    let db = testutil::TestDatabase::create("mlcore_e2e_retrain");
    let env = Env {
        _tmp: tmp,
        root,
        ns,
        dsn: db.dsn.clone(),
        _db: db,
        alerts,
    };
    let o = env.control(&["db", "migrate", "--env", "dev"]);
    assert!(o.status.success(), "{}", text(&o));
    if dataset.is_some() {
        return env;
    }
    let data = env.root.join("d/data");
    let o = env.control(&[
        "data",
        "synth",
        "--seed",
        "11",
        "--days",
        "3",
        "--interval-ms",
        "15000",
        "--out",
        data.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    env
}

/// The run a `retrain` printed it started (or resumed).
fn run_of(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout);
    out.lines()
        .find_map(|l| {
            l.strip_prefix("run ")?
                .split_whitespace()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no run id in {out}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

impl Env {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(testutil::binary("mlcore-control"));
        cmd.arg("--config-dir")
            .arg(self.root.join("configs"))
            .args(args)
            .env("MLCORE_REDIS_URL", testutil::redis_url())
            .env("MLCORE_PG_DSN", &self.dsn)
            .env_remove("MLCORE_RETRAIN_STALL_IN");
        cmd
    }

    fn control(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// `retrain --env dev --strategy fx_g10` with `extra`.
    fn retrain(&self, extra: &[&str]) -> Output {
        let mut args = vec!["retrain", "--env", "dev", "--strategy", "fx_g10"];
        args.extend_from_slice(extra);
        self.control(&args)
    }

    /// A retrain (resuming `run` when given) stopped in `step`: returns
    /// once it says it stalled there, still holding the strategy's lock.
    fn stalled(&self, run: Option<&str>, step: &str) -> Proc {
        let mut args = vec!["retrain", "--env", "dev", "--strategy", "fx_g10"];
        if let Some(r) = run {
            args.extend(["--resume", r]);
        }
        let mut child = Proc(
            self.command(&args)
                .env("MLCORE_RETRAIN_STALL_IN", step)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut err = BufReader::new(child.0.stderr.take().unwrap());
        let mut seen = String::new();
        let mut line = String::new();
        while err.read_line(&mut line).unwrap() > 0 {
            if line.trim() == format!("stalled in {step}") {
                return child;
            }
            seen.push_str(&line);
            line.clear();
        }
        panic!("the run ended without stalling in {step}: {seen}");
    }

    fn runs(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// The id of the run started last.
    fn newest_run(&self) -> String {
        std::fs::read_dir(self.runs())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("-fx_g10-"))
            .max_by_key(|id| self.manifest(id)["started_at_ms"].as_u64().unwrap())
            .unwrap()
    }

    fn manifest(&self, run: &str) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.runs().join(run).join("manifest.json")).unwrap())
            .unwrap()
    }

    fn ledger_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.runs().join("index.csv"))
            .map(|t| t.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// The audit log's retraining rows: (action, result).
    fn audited(&self, rt: &tokio::runtime::Runtime) -> Vec<(String, String)> {
        rt.block_on(async {
            let pool = sqlx::PgPool::connect(&self.dsn).await.unwrap();
            sqlx::query_as(
                "SELECT action, result FROM audit.events WHERE record_type = 'retrain' ORDER BY seq",
            )
            .fetch_all(&pool)
            .await
            .unwrap()
        })
    }

    /// Every event published on the namespace's channel from now on.
    fn events(&self) -> Events {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = Arc::clone(&seen);
        let channel = Keys::new(&self.ns.ns).events();
        let (ready, subscribed) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut conn = testutil::redis_connection();
            let mut pubsub = conn.as_pubsub();
            pubsub.subscribe(&channel).unwrap();
            ready.send(()).unwrap();
            while let Ok(msg) = pubsub.get_message() {
                let payload: String = msg.get_payload().unwrap();
                into.lock().unwrap().push(serde_json::from_str(&payload).unwrap());
            }
        });
        subscribed.recv().unwrap();
        Events(seen)
    }
}

/// Events received by [`Env::events`]'s subscriber.
struct Events(Arc<Mutex<Vec<Value>>>);

/// The events received so far (after a moment for the last to arrive), taken.
fn drain(events: &mut Events) -> Vec<Value> {
    std::thread::sleep(Duration::from_millis(300));
    std::mem::take(&mut *events.0.lock().unwrap())
}

fn states(m: &Value) -> Vec<(String, String)> {
    m["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn state_of(m: &Value, step: &str) -> String {
    states(m)
        .into_iter()
        .find(|(n, _)| n == step)
        .map(|(_, s)| s)
        .unwrap()
}

/// Temporary folders (and their writers' lock files) left in the step store.
fn temporaries(runs: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for step in std::fs::read_dir(runs.join("steps")).unwrap().flatten() {
        for e in std::fs::read_dir(step.path()).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn a_run_killed_in_every_step_resumes_to_one_registered_model_announced_once() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = setup();

    let o = env.retrain(&["--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("11 of 11 steps would run"), "{}", text(&o));
    let mut events = env.events();

    // Killed in each step after its work, before its output is sealed
    // (register: after registering, before the run records it); each
    // attempt resumes the run the previous one left.
    let mut run: Option<String> = None;
    for (i, step) in STEPS.iter().enumerate() {
        let mut p = env.stalled(run.as_deref(), step);
        p.0.kill().unwrap(); // SIGKILL
        p.0.wait().unwrap();
        let id = run.get_or_insert_with(|| env.newest_run()).clone();
        let m = env.manifest(&id);
        assert_eq!(m["status"], "running", "{step}: {m}");
        assert_eq!(m["current_step"], *step);
        assert_eq!(state_of(&m, step), "running", "{step}");
        for earlier in &STEPS[..i] {
            let s = state_of(&m, earlier);
            assert!(
                s == "done" || s == "cached",
                "{earlier} is {s} after a kill in {step}"
            );
        }
        if *step != "register" {
            // The unsealed output never took its key's place.
            let entry = m["steps"].as_array().unwrap()[i].clone();
            let key = entry["key"].as_str().unwrap();
            assert!(!env.runs().join("steps").join(step).join(key).exists(), "{step}");
            let left = temporaries(&env.runs());
            let folders = left.iter().filter(|p| p.is_dir()).count();
            assert_eq!(folders, 1, "{step}: one half-written output: {left:?}");
            assert_eq!(left.len(), 2, "{step}: and its dead writer's lock file: {left:?}");
        }
    }
    let id = run.unwrap();
    let o = env.retrain(&["--resume", &id]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("succeeded: fx_g10-v1 signed and registered"),
        "{out}"
    );
    let m = env.manifest(&id);
    assert_eq!(m["status"], "succeeded");
    assert_eq!(m["model_id"], "fx_g10-v1");
    assert_eq!(m["resumed"], 11);
    for (name, state) in states(&m) {
        assert!(state == "done" || state == "cached", "{name} is {state}");
    }
    assert!(temporaries(&env.runs()).is_empty(), "killed steps' folders swept");

    // What people read.
    let dir = env.runs().join(&id);
    let report = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(report.contains("fx_g10-v1 signed and registered"));
    assert_eq!(
        report.matches("data:image/png;base64,").count(),
        5,
        "equity, drawdown, reliability, θ, stress"
    );
    for plot in ["equity", "drawdown", "reliability", "theta", "stress"] {
        let png = std::fs::read(dir.join("plots").join(format!("{plot}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{plot}");
    }
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("portfolio_summary.json")).unwrap()).unwrap();
    assert_eq!(summary["model_id"], "fx_g10-v1");
    assert!(summary["base"]["fills"].as_u64().unwrap() > 0);
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap();
    assert!(
        metrics["model"]["ai1_auc_test"].as_f64().unwrap() > 0.6,
        "{metrics}"
    );
    assert_eq!(metrics["backtest"]["scenarios"].as_object().unwrap().len(), 4);
    assert!(std::fs::read_to_string(dir.join("daily.csv"))
        .unwrap()
        .starts_with("day,pnl\n"));
    // One ledger line: killed attempts never finished.
    let ledger = env.ledger_lines();
    assert_eq!(ledger.len(), 2, "{ledger:?}");
    assert!(ledger[1].starts_with(&format!("{id},fx_g10,dev,")) && ledger[1].contains(",succeeded,"));

    // The registered artifact verifies, carries its research, and the
    // registry holds it once, as a candidate.
    let artifact = env.root.join("models/fx_g10/v1");
    let o = env.control(&[
        "models",
        "verify",
        "--env",
        "dev",
        "--artifact",
        artifact.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(artifact.join("manifest.json")).unwrap()).unwrap();
    for k in ["oos_sharpe", "backtest_sharpe", "theta_search_adopted"] {
        assert!(manifest["metrics"][k].is_number(), "{k}: {manifest}");
    }
    let statuses: Vec<(String, String)> = rt.block_on(async {
        let pool = sqlx::PgPool::connect(&env.dsn).await.unwrap();
        sqlx::query_as("SELECT id, status FROM core.model_registry")
            .fetch_all(&pool)
            .await
            .unwrap()
    });
    assert_eq!(statuses, [("fx_g10-v1".to_owned(), "candidate".to_owned())]);

    // Announced once, on the events channel and in the audit log.
    let seen = drain(&mut events);
    let kinds: Vec<&str> = seen.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["BacktestCompleted", "ModelRetrained"], "{seen:?}");
    assert_eq!(seen[1]["model_id"], "fx_g10-v1");
    assert_eq!(seen[1]["run_id"], id.as_str());
    assert!(seen[0]["sharpe"].is_number());
    let audited = env.audited(&rt);
    assert_eq!(
        audited,
        [
            ("BacktestCompleted".to_owned(), "ok".to_owned()),
            ("ModelRetrained".to_owned(), "ok".to_owned())
        ]
    );

    // Resuming the finished run does no work: nothing rewritten, nothing
    // announced, no ledger line.
    let before = std::fs::read(dir.join("manifest.json")).unwrap();
    let report_before = std::fs::metadata(dir.join("report.html"))
        .unwrap()
        .modified()
        .unwrap();
    let o = env.retrain(&["--resume", &id]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(dir.join("manifest.json")).unwrap(), before);
    assert_eq!(
        std::fs::metadata(dir.join("report.html"))
            .unwrap()
            .modified()
            .unwrap(),
        report_before
    );
    assert_eq!(env.ledger_lines().len(), 2);
    assert!(drain(&mut events).is_empty());
}

#[test]
fn a_changed_config_reruns_only_what_it_feeds_one_run_at_a_time_and_a_bad_partition_fails_the_gate() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = setup();
    let o = env.retrain(&[]);
    assert!(o.status.success(), "{}", text(&o));
    let first = run_of(&o);
    assert_eq!(env.manifest(&first)["model_id"], "fx_g10-v1");

    // One run of a strategy at a time: a second start is refused while the
    // first holds the lock, and the lock dies with its holder.
    let holder = env.stalled(None, "sign");
    let o = env.retrain(&[]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("fx_g10 is being retrained already"),
        "{}",
        text(&o)
    );
    drop(holder); // SIGKILL
    let interrupted = env.newest_run();
    assert_eq!(env.manifest(&interrupted)["status"], "running");
    assert_eq!(env.manifest(&interrupted)["current_step"], "sign");

    // θ search settings feed θ and everything after it, nothing before.
    let control = env.root.join("configs/envs/dev/control.yaml");
    let text_of = std::fs::read_to_string(&control).unwrap();
    std::fs::write(&control, text_of.replace("trials: 15", "trials: 10")).unwrap();
    let o = env.retrain(&[]);
    assert!(o.status.success(), "{}", text(&o));
    let m = env.manifest(&run_of(&o));
    let expect = |m: &Value, cached: &[&str]| {
        for (name, state) in states(m) {
            let want = if cached.contains(&name.as_str()) {
                "cached"
            } else {
                "done"
            };
            assert_eq!(state, want, "{name}: {:?}", states(m));
        }
    };
    expect(&m, &STEPS[..6]);
    assert_eq!(
        m["model_id"], "fx_g10-v3",
        "v2 stays the killed run's: it may still register it"
    );
    // The first run finished under other inputs: it is not re-done under
    // its old version and time.
    let before = std::fs::read(env.runs().join(&first).join("manifest.json")).unwrap();
    let o = env.retrain(&["--resume", &first]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("its inputs have changed since: start a new run"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read(env.runs().join(&first).join("manifest.json")).unwrap(),
        before
    );

    // The adoption margin feeds the challenge alone.
    let policy = env.root.join("configs/base/core_policy.yaml");
    let text_of = std::fs::read_to_string(&policy).unwrap();
    assert!(text_of.contains("sharpe_margin: 0.0"), "{text_of}");
    std::fs::write(
        &policy,
        text_of.replace("sharpe_margin: 0.0", "sharpe_margin: 0.25"),
    )
    .unwrap();
    let o = env.retrain(&[]);
    assert!(o.status.success(), "{}", text(&o));
    let m = env.manifest(&run_of(&o));
    expect(&m, &STEPS[..8]);

    // A partition changed after indexing: the gate refuses it, naming it;
    // the run fails, announces it and alerts.
    let mut events = env.events();
    let partition = env.root.join("d/data/symbol=EURUSD/date=2026-01-06/part.parquet");
    let mut bytes = std::fs::read(&partition).unwrap();
    bytes.push(0);
    std::fs::write(&partition, bytes).unwrap();
    let o = env.retrain(&[]);
    assert_eq!(o.status.code(), Some(11), "{}", text(&o));
    let m = env.manifest(&run_of(&o));
    assert_eq!(m["status"], "failed");
    assert_eq!(m["failure"]["step"], "dataset");
    let message = m["failure"]["message"].as_str().unwrap();
    assert!(
        message.contains("symbol=EURUSD/date=2026-01-06") && message.contains("sha256"),
        "{message}"
    );
    assert_eq!(state_of(&m, "features"), "pending");
    let seen = drain(&mut events);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["type"], "RetrainFailed");
    assert_eq!(seen[0]["step"], "dataset");
    let alerts = env.alerts.lock().unwrap().clone();
    assert!(
        alerts
            .iter()
            .any(|a| a.contains("retrain_failed") && a.contains("symbol=EURUSD")),
        "{alerts:?}"
    );
    assert!(env.ledger_lines().last().unwrap().contains(",failed,"));
    assert!(env
        .audited(&rt)
        .contains(&("RetrainFailed".to_owned(), "failed".to_owned())));
}

/// One API call as `token`: status and JSON body (or the raw text).
fn call(addr: &str, method: &str, path: &str, token: &str, body: &str) -> (u16, Value, String) {
    let (code, resp) = testutil::http(addr, method, path, Some(token), body);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, serde_json::from_str(&body).unwrap_or(Value::Null), resp)
}

#[test]
fn the_api_starts_follows_lists_and_serves_a_run() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = setup();
    let (child, line) =
        testutil::spawn_announcing(env.command(&["serve", "--env", "dev"]).stderr(Stdio::inherit()));
    let _serve = Proc(child);
    let api = testutil::announced(&line, "http=");
    const OPERATOR: &str = "dev-operator-token";
    const VIEWER: &str = "dev-viewer-token";

    let start = r#"{"strategy":"fx_g10"}"#;
    let (code, _, _) = call(&api, "POST", "/v1/retrain", VIEWER, start);
    assert_eq!(code, 403);
    let (code, json, _) = call(&api, "POST", "/v1/retrain", OPERATOR, r#"{"strategy":"eq_nope"}"#);
    assert_eq!(
        (code, json["code"].as_str()),
        (422, Some("RETRAIN_STRATEGY_UNKNOWN"))
    );
    let (code, json, _) = call(&api, "POST", "/v1/retrain", OPERATOR, start);
    assert_eq!(code, 202, "{json}");
    let id = json["run_id"].as_str().unwrap().to_owned();
    assert_eq!(json["status"], "running");
    // A second start while it runs is refused.
    let (code, json, _) = call(&api, "POST", "/v1/retrain", OPERATOR, start);
    assert_eq!(
        (code, json["code"].as_str()),
        (409, Some("RETRAIN_BUSY")),
        "{json}"
    );

    // Followed to its end: status, current step, progress.
    let path = format!("/v1/retrain/{id}");
    let started = Instant::now();
    let mut seen_steps = std::collections::BTreeSet::new();
    let detail = loop {
        let (code, json, _) = call(&api, "GET", &path, VIEWER, "");
        assert_eq!(code, 200, "{json}");
        if let Some(s) = json["run"]["current_step"].as_str() {
            seen_steps.insert(s.to_owned());
        }
        if json["run"]["status"] != "running" {
            break json;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the run did not finish: {json}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(detail["run"]["status"], "succeeded", "{detail}");
    assert_eq!(detail["run"]["steps_done"], 11);
    assert_eq!(detail["run"]["trigger"], "api");
    assert_eq!(detail["run"]["actor"], "dev-operator");
    assert_eq!(detail["run"]["model_id"], "fx_g10-v1");
    assert_eq!(detail["manifest"]["steps"].as_array().unwrap().len(), 11);
    assert!(!seen_steps.is_empty(), "progress was visible while it ran");

    let (code, json, _) = call(&api, "GET", "/v1/retrain", VIEWER, "");
    assert_eq!(code, 200);
    assert_eq!(json["runs"][0]["run_id"], id.as_str());
    let (code, _, raw) = call(&api, "GET", &format!("{path}/report"), VIEWER, "");
    assert_eq!(code, 200);
    assert!(
        raw.to_ascii_lowercase().contains("content-type: text/html"),
        "{}",
        &raw[..300]
    );
    assert!(raw.contains("data:image/png;base64,"));
    let (code, json, _) = call(
        &api,
        "GET",
        "/v1/retrain/20990101T000000Z-fx_g10-0000",
        VIEWER,
        "",
    );
    assert_eq!((code, json["code"].as_str()), (404, Some("RETRAIN_NOT_FOUND")));
    // The start was audited with who asked; the outcome is announced
    // right after the run's manifest says it ended.
    let rows = || -> Vec<(String, String, String)> {
        rt.block_on(async {
            let pool = sqlx::PgPool::connect(&env.dsn).await.unwrap();
            sqlx::query_as(
                "SELECT actor, action, result FROM audit.events WHERE record_type = 'retrain' ORDER BY seq",
            )
            .fetch_all(&pool)
            .await
            .unwrap()
        })
    };
    let announced = |r: &[(String, String, String)]| r.iter().any(|(_, a, _)| a == "ModelRetrained");
    assert!(testutil::wait_until(Duration::from_secs(10), || announced(&rows())).is_some());
    let rows = rows();
    assert!(
        rows.contains(&("dev-operator".into(), "start".into(), "ok".into())),
        "{rows:?}"
    );
    assert!(rows.contains(&(
        "dev-operator".into(),
        "start".into(),
        "refused: RETRAIN_BUSY".into()
    )));
    assert!(rows.contains(&("dev-operator".into(), "ModelRetrained".into(), "ok".into())));
}

/// Each step's outputs (file → sha256) in a run's manifest, by step.
fn outputs(m: &Value) -> Vec<(String, Value)> {
    m["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_owned(), s["outputs"].clone()))
        .collect()
}

#[test]
fn the_prefect_flow_fans_out_folds_and_trials_and_computes_what_the_in_process_run_computes() {
    let python = std::env::var_os("MLCORE_PREFECT_PYTHON").map_or_else(
        || testutil::workspace_root().join(".tools/prefect/bin/python"),
        PathBuf::from,
    );
    assert!(
        python.exists(),
        "Prefect is not installed at {}: run `bash scripts/setup-python-tools.sh` (scripts/test.sh does)",
        python.display()
    );
    let local = setup();
    let o = local.retrain(&[]);
    assert!(o.status.success(), "{}", text(&o));
    let in_process = local.manifest(&run_of(&o));

    // The same data, a store of its own, driven by Prefect's local runner.
    let scaled = setup_on(Some(&local.root.join("d/data")));
    let prefect_home = tempfile::tempdir().unwrap();
    let o = Command::new(&python)
        .arg(testutil::workspace_root().join("deployments/prefect/core_retrain_flow.py"))
        .args(["--env", "dev", "--strategy", "fx_g10", "--config-dir"])
        .arg(scaled.root.join("configs"))
        .env("MLCORE_CONTROL", testutil::binary("mlcore-control"))
        .env("MLCORE_REDIS_URL", testutil::redis_url())
        .env("MLCORE_PG_DSN", &scaled.dsn)
        .env("PREFECT_HOME", prefect_home.path())
        .env("PREFECT_API_URL", "")
        .env("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        // The local runner's ephemeral API server (uvicorn and its SQLite
        // migrations) takes more than Prefect's default 20 s to start
        // when the suite loads both cores; it timed out once in CI.
        .env("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
        .env("DO_NOT_TRACK", "1")
        .env("PREFECT_LOGGING_LEVEL", "WARNING")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let summary: Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(summary["status"], "succeeded", "{summary}");
    let fanned = scaled.manifest(summary["run_id"].as_str().unwrap());

    // Every fold and grid trial ran as a task of its own, into the store.
    let units = |kind: &str| {
        std::fs::read_dir(scaled.runs().join("steps").join(kind))
            .unwrap()
            .count()
    };
    assert_eq!(units("fold"), 4);
    assert_eq!(units("trial"), 25);
    // Step for step the same bytes, up to signing (which stamps each run's
    // own time); the signed models carry the same figures and θ.
    let (a, b) = (outputs(&in_process), outputs(&fanned));
    assert_eq!(a.len(), 11);
    for ((name, x), (_, y)) in a.iter().zip(&b).take(9) {
        assert_eq!(x, y, "step {name}");
        assert!(
            x.as_object().is_some_and(|o| !o.is_empty()),
            "{name} wrote nothing"
        );
    }
    let signed = |env: &Env| -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(env.root.join("models/fx_g10/v1/manifest.json")).unwrap(),
        )
        .unwrap()
    };
    let (x, y) = (signed(&local), signed(&scaled));
    assert_eq!(x["metrics"], y["metrics"]);
    assert_eq!(x["theta"], y["theta"]);
    assert_eq!(x["files"]["ai1.onnx"], y["files"]["ai1.onnx"]);

    // The Kubernetes deployment: its entrypoint is this flow, and the work
    // pool's template passes Prefect's validation and mounts the store.
    let o = Command::new(&python)
        .arg("deployments/prefect/check_deployment.py")
        .current_dir(testutil::workspace_root())
        .env("PREFECT_HOME", prefect_home.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(r#""flow": "core_retrain_flow""#),
        "{}",
        text(&o)
    );
}

#[test]
fn the_schedule_starts_a_run_by_itself() {
    let env = setup();
    // Once, six seconds from now (UTC, with seconds).
    let at = testutil::now_ms() / 1000 + 6;
    let (_, mo, d) = mlcore_market::civil::from_days((at / 86_400) as i64);
    let t = at % 86_400;
    let cron = format!("{} {} {} {d} {mo} *", t % 60, t / 60 % 60, t / 3600);
    let control = env.root.join("configs/envs/dev/control.yaml");
    let text = std::fs::read_to_string(&control).unwrap();
    let text = mlcore_config::edit::set(
        &text,
        "retrain.schedule",
        &format!("{{cron: \"{cron}\", strategies: [fx_g10]}}"),
    )
    .unwrap();
    std::fs::write(&control, text).unwrap();
    let (child, line) =
        testutil::spawn_announcing(env.command(&["serve", "--env", "dev"]).stderr(Stdio::inherit()));
    let _serve = Proc(child);
    let api = testutil::announced(&line, "http=");
    let started = Instant::now();
    let run = loop {
        let (_, json, _) = call(&api, "GET", "/v1/retrain", "dev-viewer-token", "");
        let done = json["runs"]
            .as_array()
            .and_then(|runs| runs.iter().find(|r| r["status"] != "running").cloned());
        if let Some(r) = done {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "no scheduled run finished: {json}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(run["trigger"], "schedule");
    assert_eq!(run["actor"], "schedule");
    assert_eq!(run["status"], "succeeded", "{run}");
    let (_, json, _) = call(&api, "GET", "/v1/retrain", "dev-viewer-token", "");
    assert_eq!(
        json["runs"].as_array().unwrap().len(),
        1,
        "it matched once: {json}"
    );
}
