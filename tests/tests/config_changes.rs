//! Config change requests across real processes: `mlcore-control config
//! init` makes a real git repository and the deployed folder;
//! `mlcore-control serve` takes requests through review; `mlcore-daemon`,
//! reading the deployed folder, takes θ live between two decisions, reports
//! what needs a restart, refuses a version it cannot load (reverted by the
//! control plane), and follows a fast-path rollback — with real PostgreSQL,
//! Redis, git (libgit2) and ONNX Runtime.

#![allow(clippy::unwrap_used, clippy::expect_used)] // fixture helpers outside #[test] fns

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mlcore_config::{self as config, Environment, MapEnv};
use mlcore_contract::{Guard, Heartbeat, Keys, OpsMode};
use mlcore_models::artifact::SecretKeyFile;
use mlcore_research::synth;
use mlcore_testkit::{self as testutil, RedisNamespace};
use serde_json::{json, Value};

const OPERATOR: &str = "dev-operator-token";
const APPROVER: &str = "dev-approver-token";
const ADMIN: &str = "dev-admin-token";
const VIEWER: &str = "dev-viewer-token";
const INSTANCE: &str = "e2e-config";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    ns: RedisNamespace,
    db: testutil::TestDatabase,
}

fn setup() -> Setup {
    let ns = RedisNamespace::new();
    let (tmp, dev) = testutil::dev_project(&ns.ns);
    let root = tmp.path().to_owned();
    let repo = testutil::workspace_root();
    let write = |file: &str, text: String| std::fs::write(dev.join(file), text).unwrap();
    testutil::one_core_daemon(&dev, INSTANCE);
    // Long-lived signals: a busy machine never expires a decision here.
    write("core_policy.yaml", "signal: {ttl_ms: 600000}\n".into());
    // Relative: resolved against the project root the processes are given.
    write(
        "storage.yaml",
        format!(
            "models_root: models\nworm_root: worm\nbackups_root: b\ndatasets_root: d\nruns_root: runs\nops_root: ops\nout_root: out\nonnxruntime_library: {}\n",
            testutil::ort_library().display()
        ),
    );
    let control = std::fs::read_to_string(dev.join("control.yaml"))
        .unwrap()
        .replace("listen: \"127.0.0.1:8080\"", "listen: \"127.0.0.1:0\"")
        .replace(
            "key_file: deployments/dev-keys/dev-2026.key",
            &format!(
                "key_file: {}",
                repo.join("deployments/dev-keys/dev-2026.key").display()
            ),
        );
    // One operator makes every request here: more than the default burst.
    write(
        "control.yaml",
        mlcore_config::edit::set(
            &mlcore_config::edit::set(&control, "config_changes.apply_timeout_ms", "8000").unwrap(),
            "rate_limit",
            "{per_minute: 600, burst: 100}",
        )
        .unwrap(),
    );
    Setup {
        _tmp: tmp,
        root,
        ns,
        db: testutil::TestDatabase::create("mlcore_e2e_config"),
    }
}

impl Setup {
    fn live(&self) -> String {
        self.root.join(".run/live/configs").display().to_string()
    }

    /// `mlcore-control` with the test's environment (`--config-dir` first).
    fn control(&self, config_dir: &str) -> Command {
        let mut c = Command::new(testutil::binary("mlcore-control"));
        c.arg("--config-dir")
            .arg(config_dir)
            .env("MLCORE_REDIS_URL", testutil::redis_url())
            .env("MLCORE_PG_DSN", &self.db.dsn)
            .env("MLCORE_PROJECT_ROOT", &self.root);
        c
    }

    fn serve(&self) -> (Proc, String) {
        let (child, line) = testutil::spawn_announcing(
            self.control(&self.live())
                .args(["serve", "--env", "dev"])
                .stderr(Stdio::inherit()),
        );
        (Proc(child), testutil::announced(&line, "http="))
    }

    fn daemon(&self) -> (Proc, String) {
        let (child, line) = testutil::spawn_announcing(
            Command::new(testutil::binary("mlcore-daemon"))
                .args(["--config-dir", &self.live(), "--project-root"])
                .arg(&self.root)
                .args(["run", "--env", "dev"])
                .env("MLCORE_REDIS_URL", testutil::redis_url())
                .stderr(Stdio::inherit()),
        );
        (Proc(child), testutil::announced(&line, "ingress="))
    }

    fn heartbeat(&self) -> Option<Heartbeat> {
        Heartbeat::read(
            &mut testutil::redis_connection(),
            &Keys::new(&self.ns.ns),
            INSTANCE,
        )
        .ok()
        .flatten()
    }

    fn guard(&self) -> Guard {
        Guard::new(Keys::new(&self.ns.ns), 1000)
    }

    /// The newest stream entry's signals.
    fn last_signals(&self) -> (usize, Vec<Value>) {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.guard().keys().strategy("fx_g10").signals)
            .arg("-")
            .arg("+")
            .query(&mut testutil::redis_connection())
            .unwrap();
        let n = reply.ids.len();
        let signals = reply
            .ids
            .last()
            .map(|e| {
                let text: String = e.get("signals").unwrap();
                serde_json::from_str::<Vec<Value>>(&text).unwrap()
            })
            .unwrap_or_default();
        (n, signals)
    }
}

fn call(api: &str, method: &str, path: &str, token: &str, body: Value) -> (u16, Value) {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (code, resp) = testutil::http(api, method, path, Some(token), &body);
    let json = resp
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (code, json)
}

/// Calls and checks the status; returns the body.
fn ok(api: &str, method: &str, path: &str, token: &str, body: Value, want: u16) -> Value {
    let (code, json) = call(api, method, path, token, body);
    assert_eq!(code, want, "{method} {path}: {json}");
    json
}

fn set(file: &str, key: &str, value: &str) -> Value {
    json!({"file": file, "key": key, "value": value})
}

/// The market's last 150 minutes ending now, then a trigger at `now`.
fn market_frames(ids: &[u32]) -> (Vec<u8>, i64) {
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
    (frames, now_ns)
}

fn trigger(stream: &mut TcpStream, ts_ns: i64) {
    let mut buf = Vec::new();
    mlcore_daemon::wire::encode(
        &mlcore_daemon::wire::Frame::Trigger { ts_ns, strategy: 0 },
        &mut buf,
    );
    stream.write_all(&buf).unwrap();
}

fn history(s: &Setup, id: &str) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(&s.db.dsn).await.unwrap();
        sqlx::query_scalar("SELECT to_state FROM audit.config_changes WHERE change_id = $1 ORDER BY seq")
            .bind(id)
            .fetch_all(&pool)
            .await
            .unwrap()
    })
}

#[test]
fn changes_go_through_review_and_daemons_take_them_live() {
    let s = setup();
    // The repository and the deployed folder, from the checkout's configs.
    let init = s
        .control(s.root.join("configs").to_str().unwrap())
        .args(["config", "init", "--env", "dev"])
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    assert!(s.root.join(".run/config-repo/HEAD").exists(), "a git repository");
    assert!(Path::new(&s.live()).join("DEPLOYED.json").exists());
    let migrate = s
        .control(&s.live())
        .args(["db", "migrate", "--env", "dev"])
        .status()
        .unwrap();
    assert!(migrate.success());

    let key =
        SecretKeyFile::read(&testutil::workspace_root().join("deployments/dev-keys/dev-2026.key")).unwrap();
    testutil::logistic_artifact(&key, "fx_g10", 1, 3.0, testutil::now_ms())
        .write(&s.root.join("models/fx_g10/v1"))
        .unwrap();
    let mut conn = testutil::redis_connection();
    Guard::load(&mut conn).unwrap();
    testutil::set_mode(&s.guard(), &mut conn, "fx_g10", OpsMode::Active);

    let (_serve, api) = s.serve();
    let (_daemon, ingress) = s.daemon();
    let cli = |token: &str, args: &[&str]| {
        let out = s
            .control(&s.live())
            .env("MLCORE_CONTROL_URL", format!("http://{api}"))
            .env("MLCORE_TOKEN", token)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    assert!(
        testutil::wait_until(Duration::from_secs(30), || s
            .heartbeat()
            .is_some_and(|hb| hb.models.contains_key("fx_g10")))
        .is_some(),
        "the daemon did not load its model"
    );
    let init_version = s.heartbeat().unwrap().config.version;
    assert_eq!(
        init_version.len(),
        40,
        "the daemon runs the deployed commit: {init_version}"
    );

    // One decision with the model's θ (θ1 0.505).
    let cfg = config::load(
        &s.root.join("configs"),
        Environment::Dev,
        &MapEnv::new()
            .with("MLCORE_REDIS_URL", "redis://x")
            .with("MLCORE_PG_DSN", "postgres://x"),
    )
    .unwrap();
    let ids: Vec<u32> = cfg.universe.strategies[0].symbols.iter().map(|x| x.id).collect();
    let (frames, t1) = market_frames(&ids);
    let mut feed = TcpStream::connect(&ingress).unwrap();
    feed.write_all(&frames).unwrap();
    trigger(&mut feed, t1);
    assert!(
        testutil::wait_until(Duration::from_secs(10), || s.last_signals().0 == 1).is_some(),
        "no first decision"
    );
    let (_, before) = s.last_signals();
    let prob = |x: &Value| x["return_prob"].as_f64().unwrap();
    let in_band = |x: &Value| x["side"] != "flat" && (0.2..=0.8).contains(&prob(x));
    assert!(
        before.iter().any(in_band),
        "the test needs a position θ1 = 0.8 would not take: {before:?}"
    );

    // Invalid: θ1 outside theta1_bounds is refused at submit, with the loader's code.
    let bad = ok(
        &api,
        "POST",
        "/v1/configs/changes",
        OPERATOR,
        json!({"title": "too far", "edits": [set("envs/dev/core_policy.yaml", "theta.per_strategy.fx_g10.theta1", "0.99"), set("envs/dev/core_policy.yaml", "theta.per_strategy.fx_g10.theta2", "0.9")]}),
        201,
    );
    let bad_id = bad["id"].as_str().unwrap();
    let refused = ok(
        &api,
        "POST",
        &format!("/v1/configs/changes/{bad_id}/submit"),
        OPERATOR,
        Value::Null,
        422,
    );
    assert_eq!(refused["code"], "CONFIG_CHANGE_INVALID");
    assert_eq!(
        refused["details"]["problems"][0]["code"], "CONFIG_VALUE_INVALID",
        "{refused}"
    );
    assert_eq!(
        refused["details"]["problems"][0]["key"],
        "theta.per_strategy.fx_g10.theta1"
    );

    // θ for fx_g10: a move beyond max_step from the configured θ is high risk.
    let cr = ok(
        &api,
        "POST",
        "/v1/configs/changes",
        OPERATOR,
        json!({"title": "θ for fx_g10", "edits": [set("envs/dev/core_policy.yaml", "theta.per_strategy.fx_g10.theta1", "0.8"), set("envs/dev/core_policy.yaml", "theta.per_strategy.fx_g10.theta2", "0.85")]}),
        201,
    );
    let id = cr["id"].as_str().unwrap().to_owned();
    let path = |verb: &str| format!("/v1/configs/changes/{id}/{verb}");
    assert_eq!(cr["state"], "draft");
    let diff = ok(&api, "GET", &path("diff"), VIEWER, Value::Null, 200);
    assert_eq!(diff["risk"], "high", "{diff}");
    assert_eq!(diff["live"], json!(["daemon"]));
    assert_eq!(diff["restart"], json!([]));
    let submitted = ok(&api, "POST", &path("submit"), OPERATOR, Value::Null, 200);
    assert_eq!(
        (
            submitted["state"].as_str(),
            submitted["required_approvals"].as_u64()
        ),
        (Some("pr_created"), Some(2))
    );
    // One approval is not enough for high risk; the author (an operator,
    // not an approver) cannot approve at all.
    ok(&api, "POST", &path("approve"), OPERATOR, Value::Null, 403);
    let one = ok(&api, "POST", &path("approve"), APPROVER, Value::Null, 200);
    assert_eq!(
        (one["state"].as_str(), one["approvals"].as_array().map(Vec::len)),
        (Some("pr_created"), Some(1))
    );
    ok(&api, "POST", &path("merge"), OPERATOR, Value::Null, 409);
    // An edit after an approval revokes it.
    let edited = ok(
        &api,
        "PATCH",
        &format!("/v1/configs/changes/{id}"),
        OPERATOR,
        json!({"edits": [set("envs/dev/core_policy.yaml", "theta.per_strategy.fx_g10.theta2", "0.9")]}),
        200,
    );
    assert_eq!(edited["approvals"], json!([]), "{edited}");
    assert_eq!(edited["state"], "pr_created");
    ok(&api, "POST", &path("approve"), APPROVER, Value::Null, 200);
    let approved = ok(&api, "POST", &path("approve"), ADMIN, Value::Null, 200);
    assert_eq!(approved["state"], "approved");
    ok(&api, "POST", &path("merge"), OPERATOR, Value::Null, 200);
    let applied = ok(&api, "POST", &path("apply"), OPERATOR, Value::Null, 200);
    assert_eq!(applied["request"]["state"], "applied", "{applied}");
    assert_eq!(applied["daemons"]["took"], json!([INSTANCE]));
    let version = applied["request"]["merged_commit"].as_str().unwrap().to_owned();
    assert_eq!(s.heartbeat().unwrap().config.version, version);

    // The next decision decides with θ1 0.8: nothing in the band is held.
    trigger(&mut feed, t1 + 1_000_000);
    assert!(
        testutil::wait_until(Duration::from_secs(10), || s.last_signals().0 == 2).is_some(),
        "no second decision"
    );
    let (_, after) = s.last_signals();
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(a["symbol"], b["symbol"]);
        if in_band(a) {
            assert_eq!(
                b["side"],
                "flat",
                "θ1 0.8 takes no position at p {}: {b}",
                prob(b)
            );
        }
        match b["side"].as_str().unwrap() {
            "long" => assert!(prob(b) > 0.8, "{b}"),
            "short" => assert!(prob(b) < 0.2, "{b}"),
            _ => {}
        }
    }
    let states = history(&s, &id);
    assert_eq!(
        states,
        [
            "draft",
            "pr_created",
            "pr_created",
            "pr_created",
            "pr_created",
            "approved",
            "merged",
            "applying",
            "applied"
        ],
        "every step recorded"
    );

    // Roll θ back through the CLI: it only restores the version deployed
    // before, so one approver suffices although the change is high risk
    // (the fast path), and the daemon's signals follow it back.
    let (code, out, err) = cli(OPERATOR, &["config", "rollback", "--id", &id]);
    assert_eq!(code, Some(0), "{err}");
    let rb: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            rb["risk"].as_str(),
            rb["fast_path"].as_bool(),
            rb["required_approvals"].as_u64()
        ),
        (Some("high"), Some(true), Some(1)),
        "{rb}"
    );
    let rb_id = rb["id"].as_str().unwrap().to_owned();
    let (code, _, err) = cli(APPROVER, &["config", "approve", "--id", &rb_id]);
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = cli(OPERATOR, &["config", "apply", "--id", &rb_id]);
    assert_eq!(code, Some(0), "{out}{err}");
    trigger(&mut feed, t1 + 2_000_000);
    assert!(
        testutil::wait_until(Duration::from_secs(10), || s.last_signals().0 == 3).is_some(),
        "no third decision"
    );
    let (_, back) = s.last_signals();
    let sides = |b: &[Value]| b.iter().map(|x| x["side"].clone()).collect::<Vec<_>>();
    assert_eq!(
        sides(&back),
        sides(&before),
        "the model's θ again, the same positions"
    );

    // A key that needs a restart: applied, reported, the old value kept.
    let cr2 = ok(
        &api,
        "POST",
        "/v1/configs/changes",
        OPERATOR,
        json!({"title": "deeper queue", "edits": [set("envs/dev/daemon.yaml", "queues.decisions", "512")]}),
        201,
    );
    let id2 = cr2["id"].as_str().unwrap().to_owned();
    let p2 = |verb: &str| format!("/v1/configs/changes/{id2}/{verb}");
    let low = ok(&api, "POST", &p2("submit"), OPERATOR, Value::Null, 200);
    assert_eq!(
        (low["risk"].as_str(), low["required_approvals"].as_u64()),
        (Some("low"), Some(1))
    );
    ok(&api, "POST", &p2("approve"), APPROVER, Value::Null, 200);
    ok(&api, "POST", &p2("merge"), OPERATOR, Value::Null, 200);
    let applied2 = ok(&api, "POST", &p2("apply"), OPERATOR, Value::Null, 200);
    assert_eq!(applied2["request"]["state"], "applied");
    assert_eq!(
        applied2["daemons"]["restart_required"],
        json!(["daemon.yaml: queues.decisions"])
    );
    let status = ok(&api, "GET", "/v1/configs/status", VIEWER, Value::Null, 200);
    let daemon = &status["daemons"].as_array().unwrap()[0];
    assert_eq!(
        daemon["restart_required"],
        json!(["daemon.yaml: queues.decisions"]),
        "{status}"
    );
    assert_eq!(status["deployed"], applied2["request"]["merged_commit"]);

    // A version the daemon cannot load (a secret its environment lacks):
    // refused, the request fails, the previous version is deployed again.
    let cr3 = ok(
        &api,
        "POST",
        "/v1/configs/changes",
        OPERATOR,
        json!({"title": "another Redis", "edits": [set("envs/dev/redis.yaml", "url", "\"$MLCORE_E2E_UNSET_URL\"")]}),
        201,
    );
    let id3 = cr3["id"].as_str().unwrap().to_owned();
    let p3 = |verb: &str| format!("/v1/configs/changes/{id3}/{verb}");
    let high = ok(&api, "POST", &p3("submit"), OPERATOR, Value::Null, 200);
    assert!(
        high["risk_reasons"][0]
            .as_str()
            .unwrap()
            .contains("secret reference changed"),
        "{high}"
    );
    ok(&api, "POST", &p3("approve"), APPROVER, Value::Null, 200);
    ok(&api, "POST", &p3("approve"), ADMIN, Value::Null, 200);
    ok(&api, "POST", &p3("merge"), OPERATOR, Value::Null, 200);
    let failed = ok(&api, "POST", &p3("apply"), OPERATOR, Value::Null, 200);
    assert_eq!(failed["request"]["state"], "failed", "{failed}");
    assert_eq!(failed["daemons"]["refused"][0]["instance"], INSTANCE);
    let reason = failed["daemons"]["refused"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("CONFIG_SECRET_UNSET"), "{reason}");
    let restored = ok(&api, "GET", "/v1/configs/status", VIEWER, Value::Null, 200);
    let restored_version = restored["deployed"].as_str().unwrap().to_owned();
    assert_ne!(
        restored_version,
        failed["request"]["merged_commit"].as_str().unwrap()
    );
    assert_eq!(
        failed["revert"]["took"],
        json!([INSTANCE]),
        "the daemon runs the restored version"
    );
    assert_eq!(s.heartbeat().unwrap().config.version, restored_version);
    let redis_yaml = std::fs::read_to_string(Path::new(&s.live()).join("envs/dev/redis.yaml")).unwrap();
    assert!(!redis_yaml.contains("MLCORE_E2E_UNSET_URL"), "{redis_yaml}");

    // Roll back the queue change too: the failed apply's revert left the
    // queue change's version deployed, so this is a plain restore again.
    let (code, out, err) = cli(OPERATOR, &["config", "rollback", "--id", &id2]);
    assert_eq!(code, Some(0), "{err}");
    let rb: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            rb["fast_path"].as_bool(),
            rb["required_approvals"].as_u64(),
            rb["kind"].as_str()
        ),
        (Some(true), Some(1), Some("rollback")),
        "{rb}"
    );
    let rid = rb["id"].as_str().unwrap();
    let (code, diff, err) = cli(VIEWER, &["config", "diff", "--id", rid]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        diff.contains("daemon.yaml: queues.decisions: 512 -> 1024"),
        "{diff}"
    );
    let (code, _, err) = cli(APPROVER, &["config", "approve", "--id", rid]);
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = cli(OPERATOR, &["config", "apply", "--id", rid]);
    assert_eq!(code, Some(0), "{out}{err}");
    let hb = s.heartbeat().unwrap();
    assert!(
        hb.config.restart_required.is_empty(),
        "back to what it started with: {:?}",
        hb.config
    );
    let (code, list, _) = cli(VIEWER, &["config", "list", "--state", "applied"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<Value>(&list).unwrap()["changes"]
            .as_array()
            .map(Vec::len),
        Some(4),
        "θ, its rollback, the queue, its rollback"
    );
}
