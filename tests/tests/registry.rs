//! The registry across real processes: `mlcore-control serve` activates and
//! rolls back models, `mlcore-daemon` follows the pointer (with the signed
//! rollback authorisation), ignores unapproved files once it follows the
//! registry, keeps the rolled-back version across a restart, and refuses a
//! pointer whose manifest does not match — with real PostgreSQL, Redis and
//! ONNX Runtime.

#![allow(clippy::unwrap_used, clippy::expect_used)] // fixture helpers outside #[test] fns

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mlcore_contract::{Heartbeat, Keys, ModelPointer};
use mlcore_models::artifact::SecretKeyFile;
use mlcore_testkit::{self as testutil, RedisNamespace};
use serde_json::Value;

const OPERATOR: &str = "dev-operator-token";
const APPROVER: &str = "dev-approver-token";
const INSTANCE: &str = "e2e-registry";

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `mlcore-control db migrate` on the test's database.
fn migrate(config_dir: &str, dsn: &str) {
    let status = Command::new(testutil::binary("mlcore-control"))
        .args(["--config-dir", config_dir, "db", "migrate", "--env", "dev"])
        .env("MLCORE_REDIS_URL", testutil::redis_url())
        .env("MLCORE_PG_DSN", dsn)
        .status()
        .unwrap();
    assert!(status.success(), "db migrate");
}

/// Starts a binary that prints one `listening ... key=ADDR` line; returns
/// the process and the line.
fn start(name: &str, args: &[&str], dsn: &str) -> (Proc, String) {
    let (child, line) = testutil::spawn_announcing(
        Command::new(testutil::binary(name))
            .args(args)
            .env("MLCORE_REDIS_URL", testutil::redis_url())
            .env("MLCORE_PG_DSN", dsn)
            .stderr(Stdio::inherit()), // nextest shows it when the test fails
    );
    (Proc(child), line)
}

/// One API call as `token`: status and JSON body.
fn call(addr: &str, method: &str, path: &str, token: &str, body: &str) -> (u16, Value) {
    let (code, resp) = testutil::http(addr, method, path, Some(token), body);
    let json = resp
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (code, json)
}

fn wait_until(limit: Duration, f: impl FnMut() -> bool) -> bool {
    testutil::wait_until(limit, f).is_some()
}

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    ns: RedisNamespace,
    dsn: String,
    _db: testutil::TestDatabase,
}

fn setup() -> Setup {
    let ns = RedisNamespace::new();
    let (tmp, dev) = testutil::dev_project(&ns.ns);
    let root = tmp.path().to_owned();
    let repo = testutil::workspace_root();
    let write = |file: &str, text: String| std::fs::write(dev.join(file), text).unwrap();
    testutil::one_core_daemon(&dev, INSTANCE);
    write(
        "storage.yaml",
        format!(
            "models_root: {0}/models\nworm_root: {0}/worm\nbackups_root: {0}/b\ndatasets_root: {0}/d\nonnxruntime_library: {1}\n",
            root.display(),
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
    write("control.yaml", control);

    let db = testutil::TestDatabase::create("mlcore_e2e_registry");
    Setup {
        _tmp: tmp,
        root,
        ns,
        dsn: db.dsn.clone(),
        _db: db,
    }
}

impl Setup {
    fn config_dir(&self) -> String {
        self.root.join("configs").display().to_string()
    }

    fn artifact(&self, version: u64) {
        let key = SecretKeyFile::read(&testutil::workspace_root().join("deployments/dev-keys/dev-2026.key"))
            .unwrap();
        testutil::logistic_artifact(&key, "fx_g10", version, version as f32, testutil::now_ms())
            .write(&self.root.join(format!("models/fx_g10/v{version}")))
            .unwrap();
    }

    fn daemon(&self) -> Proc {
        let dir = self.config_dir();
        start(
            "mlcore-daemon",
            &["--config-dir", &dir, "run", "--env", "dev"],
            &self.dsn,
        )
        .0
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

    /// What the daemon's heartbeat says it runs for fx_g10.
    fn loaded(&self) -> Option<String> {
        self.heartbeat().and_then(|hb| hb.models.get("fx_g10").cloned())
    }

    fn refused(&self) -> u64 {
        self.heartbeat().map_or(0, |hb| hb.refused_artifacts)
    }

    fn wait_loaded(&self, want: &str) {
        assert!(
            wait_until(Duration::from_secs(20), || self.loaded().as_deref() == Some(want)),
            "the daemon should run {want}, it reports {:?}",
            self.loaded()
        );
    }
}

/// Asks to activate `id` as the operator and approves as the approver.
fn activate(api: &str, id: &str) {
    let (code, json) = call(
        api,
        "POST",
        &format!("/v1/models/{id}/activate"),
        OPERATOR,
        r#"{"reason":"e2e"}"#,
    );
    assert_eq!(code, 202, "{json}");
    approve(api, json["id"].as_str().unwrap());
}

fn approve(api: &str, request: &str) {
    let (code, json) = call(
        api,
        "POST",
        &format!("/v1/ops/requests/{request}/approve"),
        APPROVER,
        "",
    );
    assert_eq!(code, 200, "{json}");
}

#[test]
fn the_daemon_follows_registry_activations_and_rollbacks() {
    let s = setup();
    let dir = s.config_dir();
    migrate(&dir, &s.dsn);
    s.artifact(1);

    // No pointer yet: the daemon serves the highest verified folder.
    let mut daemon = s.daemon();
    s.wait_loaded("fx_g10-v1@1");

    let (_control, line) = start(
        "mlcore-control",
        &["--config-dir", &dir, "serve", "--env", "dev"],
        &s.dsn,
    );
    let api = testutil::announced(&line, "http=");
    let register = |v: u64| {
        let body = format!(r#"{{"strategy":"fx_g10","version":{v}}}"#);
        let (code, json) = call(&api, "POST", "/v1/models", OPERATOR, &body);
        assert_eq!(code, 201, "{json}");
    };
    register(1);
    activate(&api, "fx_g10-v1");
    s.artifact(2);
    register(2);
    activate(&api, "fx_g10-v2");
    s.wait_loaded("fx_g10-v2@2");

    // Rollback through the ops API: the daemon goes back to v1, which it
    // accepts only with the signed authorisation in the pointer.
    let (code, json) = call(
        &api,
        "POST",
        "/v1/ops/requests",
        OPERATOR,
        r#"{"action":"rollback","scope":"fx_g10","reason":"e2e rollback"}"#,
    );
    assert_eq!(code, 202, "{json}");
    approve(&api, json["id"].as_str().unwrap());
    s.wait_loaded("fx_g10-v1@1");
    // What an attacker with write access to Redis could capture: the
    // rollback pointer with its signed authorisation.
    let keys = Keys::new(&s.ns.ns);
    let captured = ModelPointer::read(&mut testutil::redis_connection(), &keys, "fx_g10")
        .unwrap()
        .unwrap();
    assert!(captured.rollback.is_some());
    let (_, list) = call(&api, "GET", "/v1/models", OPERATOR, "");
    let v1 = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "fx_g10-v1")
        .unwrap();
    assert_eq!(
        (v1["status"].as_str(), v1["loaded_by"][0].as_str()),
        (Some("active"), Some(INSTANCE)),
        "{list}"
    );

    // Following the registry, a new file in models_root does not go live.
    s.artifact(3);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        s.loaded().as_deref(),
        Some("fx_g10-v1@1"),
        "v3 was never approved"
    );

    // A restart keeps the rolled-back version.
    drop(daemon);
    daemon = s.daemon();
    assert!(
        wait_until(Duration::from_secs(20), || {
            s.heartbeat().is_some_and(|hb| {
                hb.decisions == 0 && hb.models.get("fx_g10").map(String::as_str) == Some("fx_g10-v1@1")
            })
        }),
        "after a restart the daemon runs v1 again"
    );

    // Release the pin, then v3 goes through the registry.
    let (code, json) = call(
        &api,
        "POST",
        "/v1/models/pins/fx_g10/release",
        APPROVER,
        r#"{"reason":"fixed"}"#,
    );
    assert_eq!(code, 200, "{json}");
    // v2 again (at or below the highest version ever active, so with an
    // authorisation from v1), then the captured v2 → v1 pointer replayed:
    // it goes back from what runs, but it was used already. Refused.
    activate(&api, "fx_g10-v2");
    s.wait_loaded("fx_g10-v2@2");
    let refused_before = s.refused();
    captured.write(&mut testutil::redis_connection(), &keys).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || s.refused() > refused_before),
        "a used rollback authorisation was accepted again"
    );
    assert_eq!(s.loaded().as_deref(), Some("fx_g10-v2@2"));
    register(3);
    activate(&api, "fx_g10-v3");
    s.wait_loaded("fx_g10-v3@3");

    // The captured rollback pointer written back after v3 was activated:
    // refused above already (this daemon remembers the refusal and does
    // not retry it), and v3 keeps serving.
    captured.write(&mut testutil::redis_connection(), &keys).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        s.loaded().as_deref(),
        Some("fx_g10-v3@3"),
        "a replayed rollback moved the daemon back"
    );
    // The same transition (v2 → v1), freshly signed with the rollback key
    // and never used: refused all the same, since the daemon no longer
    // runs v2 — an authorisation is bound to where it goes back from. (A
    // fresh folder, so the daemon does not skip it as refused before.)
    let key =
        SecretKeyFile::read(&testutil::workspace_root().join("deployments/dev-keys/dev-2026.key")).unwrap();
    let mut fresh = captured.clone();
    let mut grant = captured.rollback.clone().unwrap().grant;
    grant.request_id = "ops-never-used".into();
    grant.issued_at_ms = testutil::now_ms();
    grant.expires_at_ms = testutil::now_ms() + 600_000;
    fresh.rollback = Some(mlcore_models::artifact::rollback::sign(grant, &key).unwrap());
    let refused_before = s.refused();
    fresh.write(&mut testutil::redis_connection(), &keys).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || s.refused() > refused_before),
        "a rollback from a version the daemon does not run was not refused"
    );
    assert_eq!(s.loaded().as_deref(), Some("fx_g10-v3@3"));
    // The registry's pointer goes back to v3 for the rest of the test.
    let mut current = captured.clone();
    (
        current.model_id,
        current.version,
        current.rollback,
        current.pinned,
    ) = ("fx_g10-v3".into(), 3, None, false);
    let (_, list) = call(&api, "GET", "/v1/models", OPERATOR, "");
    current.manifest_sha256 = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "fx_g10-v3")
        .and_then(|m| m["manifest_sha256"].as_str())
        .unwrap()
        .to_owned();
    current.write(&mut testutil::redis_connection(), &keys).unwrap();

    // A pointer whose manifest does not match is refused, announced, and v3 keeps serving.
    let mut sub = testutil::redis_connection();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe(keys.events()).unwrap();
    pubsub.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let before = s.refused();
    let mut bad = ModelPointer::read(&mut testutil::redis_connection(), &keys, "fx_g10")
        .unwrap()
        .unwrap();
    bad.version = 2;
    bad.model_id = "fx_g10-v2".into();
    bad.manifest_sha256 = "00".repeat(32);
    bad.write(&mut testutil::redis_connection(), &keys).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut refusal = None;
    while refusal.is_none() && Instant::now() < deadline {
        if let Ok(msg) = pubsub.get_message() {
            let payload: String = msg.get_payload().unwrap();
            let ev: Value = serde_json::from_str(&payload).unwrap();
            if ev["type"] == "model_refused" {
                refusal = Some(ev);
            }
        }
    }
    let refusal = refusal.expect("a model_refused event");
    assert_eq!(
        (refusal["instance"].as_str(), refusal["version"].as_u64()),
        (Some(INSTANCE), Some(2))
    );
    assert!(
        refusal["reason"].as_str().unwrap().contains("sha256"),
        "{refusal}"
    );
    assert!(wait_until(Duration::from_secs(5), || s.refused() > before));
    assert_eq!(s.loaded().as_deref(), Some("fx_g10-v3@3"), "v3 keeps serving");
    // The registry learns the refusal from the heartbeat and shows it
    // against v2, with the daemon's reason.
    let refused_by = || {
        let (_, list) = call(&api, "GET", "/v1/models", OPERATOR, "");
        list["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == "fx_g10-v2")
            .map(|m| m["refused_by"].clone())
            .unwrap()
    };
    assert!(
        wait_until(Duration::from_secs(10), || refused_by()[0]["instance"]
            == INSTANCE),
        "{}",
        refused_by()
    );
    let reason = refused_by()[0]["reason"].as_str().unwrap().to_owned();
    assert!(
        reason.contains("sha256") && reason.starts_with("the pointer named manifest 0000"),
        "the pointer, not the artifact, is at fault: {reason}"
    );

    // A corrupt state file stops the daemon at start, naming the file:
    // starting without it would forget the rollback floor.
    drop(daemon);
    let state = s.root.join(format!("models/.state/{INSTANCE}.json"));
    std::fs::write(&state, "{not json").unwrap();
    let out = Command::new(testutil::binary("mlcore-daemon"))
        .args(["--config-dir", &dir, "run", "--env", "dev"])
        .env("MLCORE_REDIS_URL", testutil::redis_url())
        .env("MLCORE_PG_DSN", &s.dsn)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("model state file") && stderr.contains(&state.display().to_string()),
        "{stderr}"
    );
}

/// SIGINT (and SIGTERM alike): the control plane stops accepting, finishes
/// the requests in progress and exits 0.
#[test]
fn the_control_plane_stops_cleanly_on_a_signal() {
    let s = setup();
    let dir = s.config_dir();
    migrate(&dir, &s.dsn);
    for signal in ["INT", "TERM"] {
        let (mut control, line) = start(
            "mlcore-control",
            &["--config-dir", &dir, "serve", "--env", "dev"],
            &s.dsn,
        );
        let api = testutil::announced(&line, "http=");
        let (code, _) = call(&api, "GET", "/v1/models", OPERATOR, "");
        assert_eq!(code, 200);
        let status = testutil::stop_with_signal(&mut control.0, signal, Duration::from_secs(10));
        assert!(
            status.success(),
            "mlcore-control serve exited with {status} on SIG{signal}"
        );
        assert!(
            std::net::TcpStream::connect(&api).is_err(),
            "still listening after SIG{signal}"
        );
    }
}

/// Logs are JSON lines (timestamp, level, target, fields) through
/// `tracing`; `RUST_LOG` overrides the configured level, and the records
/// of libraries (sqlx here) come through instead of being dropped.
#[test]
fn logs_are_json_lines_and_rust_log_lets_library_records_through() {
    let s = setup();
    let dir = s.config_dir();
    migrate(&dir, &s.dsn);
    let log = tempfile::NamedTempFile::new().unwrap();
    let (child, line) = testutil::spawn_announcing(
        Command::new(testutil::binary("mlcore-control"))
            .args(["--config-dir", &dir, "serve", "--env", "dev"])
            .env("MLCORE_REDIS_URL", testutil::redis_url())
            .env("MLCORE_PG_DSN", &s.dsn)
            .env("RUST_LOG", "info,sqlx=debug")
            .stderr(log.reopen().unwrap()),
    );
    let mut control = Proc(child);
    let api = testutil::announced(&line, "http=");
    assert_eq!(call(&api, "GET", "/v1/models", OPERATOR, "").0, 200);
    assert!(testutil::stop_with_signal(&mut control.0, "TERM", Duration::from_secs(10)).success());
    let text = std::fs::read_to_string(log.path()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    for l in &lines {
        assert!(
            l["timestamp"].is_string() && l["level"].is_string() && l["target"].is_string(),
            "{l}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l["target"].as_str().is_some_and(|t| t.starts_with("sqlx"))),
        "no sqlx record with RUST_LOG=sqlx=debug:\n{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "control plane stopped" && l["level"] == "INFO"),
        "{text}"
    );
}

/// Every file under `dir` whose name starts with `prefix`.
fn files_starting(dir: &std::path::Path, prefix: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_starting(&path, prefix, out);
        } else if entry.file_name().to_string_lossy().starts_with(prefix) {
            out.push(path);
        }
    }
}

/// #22 §2 across processes: `serve` signs a checkpoint of the audit log's
/// head into the WORM archive and Redis (at shutdown here); `audit verify`
/// checks Redis' copy, and when the newest row goes together with its
/// archive file and every archived checkpoint, Redis' copy still names it.
#[test]
fn serve_checkpoints_the_audit_log_to_the_archive_and_redis() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = setup();
    let dir = s.config_dir();
    migrate(&dir, &s.dsn);
    let (mut control, line) = start(
        "mlcore-control",
        &["--config-dir", &dir, "serve", "--env", "dev"],
        &s.dsn,
    );
    let api = testutil::announced(&line, "http=");
    let halt = r#"{"action":"halt","scope":"fx_g10","reason":"checkpoint e2e"}"#;
    assert_eq!(call(&api, "POST", "/v1/ops/requests", OPERATOR, halt).0, 201);
    assert!(testutil::stop_with_signal(&mut control.0, "TERM", Duration::from_secs(10)).success());

    let json: String = redis::cmd("HGET")
        .arg(Keys::new(&s.ns.ns).audit_checkpoint())
        .arg("checkpoint")
        .query(&mut testutil::redis_connection())
        .unwrap();
    let cp: Value = serde_json::from_str(&json).unwrap();
    let head = cp["seq"].as_i64().unwrap();
    assert!(
        head >= 1 && cp["key_id"] == "dev-2026" && cp["signature"].as_str().unwrap().len() == 128,
        "{cp}"
    );

    let verify = || {
        Command::new(testutil::binary("mlcore-control"))
            .args(["--config-dir", &dir, "audit", "verify", "--env", "dev"])
            .env("MLCORE_REDIS_URL", testutil::redis_url())
            .env("MLCORE_PG_DSN", &s.dsn)
            .output()
            .unwrap()
    };
    let out = verify();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains(&format!("Redis' checkpoint (seq {head}) checked")),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The newest row, its archive file and every archived checkpoint go.
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(&s.dsn).await.unwrap();
        let mut su = pool.acquire().await.unwrap();
        for sql in [
            "SELECT set_config('mlcore.pruning', 'on', false)".to_owned(),
            format!("DELETE FROM audit.events WHERE seq = {head}"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *su)
                .await
                .unwrap();
        }
    });
    let worm = s.root.join("worm");
    let mut newest = Vec::new();
    files_starting(&worm, &format!("{head:012}-"), &mut newest);
    assert_eq!(newest.len(), 1, "{newest:?}");
    std::fs::remove_file(&newest[0]).unwrap();
    std::fs::remove_dir_all(worm.join("_checkpoints")).unwrap();
    let out = verify();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains(&format!("audit chain broken at seq {head}")) && stderr.contains("checkpoint"),
        "{stderr}"
    );
}

/// A self-signed certificate for `localhost`: (certificate PEM, key PEM).
fn self_signed() -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

/// `GET https://localhost:<port>/healthz` trusting only `ca_pem`: the
/// status, or the error.
async fn https_health(port: u16, ca_pem: &str) -> Result<u16, String> {
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

/// #22 §7: with `tls` configured the API serves HTTPS only (rustls), a
/// renewed certificate is served without a restart, a broken renewal keeps
/// the one being served, and SIGTERM still stops it cleanly.
#[test]
fn the_api_serves_https_and_reloads_its_certificate() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = setup();
    let dir = s.config_dir();
    migrate(&dir, &s.dsn);
    let (cert, key) = (s.root.join("tls.crt"), s.root.join("tls.key"));
    let (first_cert, first_key) = self_signed();
    std::fs::write(&cert, &first_cert).unwrap();
    std::fs::write(&key, &first_key).unwrap();
    let control_yaml = s.root.join("configs/envs/dev/control.yaml");
    let mut text = std::fs::read_to_string(&control_yaml).unwrap();
    text.push_str(&format!(
        "tls:\n  cert_file: {}\n  key_file: {}\n  reload_check_s: 1\n",
        cert.display(),
        key.display()
    ));
    std::fs::write(&control_yaml, text).unwrap();

    let (mut control, line) = start(
        "mlcore-control",
        &["--config-dir", &dir, "serve", "--env", "dev"],
        &s.dsn,
    );
    let addr = testutil::announced(&line, "https=");
    let port: u16 = addr.rsplit_once(':').unwrap().1.parse().unwrap();
    assert_eq!(rt.block_on(https_health(port, &first_cert)), Ok(200));
    // Plain HTTP gets no answer from the API (the server may close the
    // connection before the request is even written).
    let plain = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        answer
    };
    assert!(!plain.starts_with(b"HTTP/1.1 200"), "plain HTTP was served");

    // A renewed certificate: served without a restart.
    let (second_cert, second_key) = self_signed();
    std::fs::write(&key, &second_key).unwrap();
    std::fs::write(&cert, &second_cert).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || rt
            .block_on(https_health(port, &second_cert))
            == Ok(200)),
        "the renewed certificate is not served"
    );
    assert!(
        rt.block_on(https_health(port, &first_cert)).is_err(),
        "the old certificate is still served"
    );

    // A broken renewal: the server keeps the certificate it has.
    std::fs::write(&cert, "not a certificate").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(rt.block_on(https_health(port, &second_cert)), Ok(200));

    assert!(testutil::stop_with_signal(&mut control.0, "TERM", Duration::from_secs(10)).success());
}
