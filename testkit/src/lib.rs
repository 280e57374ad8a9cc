//! `mlcore-testkit`: test fixtures shared across crates (a dev-dependency
//! only; [`signals`] holds the guard fixtures).
//!
//! Tests share one Redis and one PostgreSQL with each other and with later
//! runs, so every test takes a unique namespace and cleans up after itself.
//! `scripts/services.sh` exports where the servers are; when a variable is
//! unset the standard local address is used, and a server that does not
//! answer fails the test loudly (never a silent skip).

pub mod signals;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Redis URL for tests: `$MLCORE_TEST_REDIS_URL`, else the local default.
pub fn redis_url() -> String {
    std::env::var("MLCORE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

/// PostgreSQL DSN for tests: `$MLCORE_TEST_PG_DSN`, else the local default.
pub fn pg_dsn() -> String {
    std::env::var("MLCORE_TEST_PG_DSN")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The workspace root (the folder holding `configs/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The ONNX Runtime library: `$ORT_DYLIB_PATH`, else where
/// `scripts/setup-ort.sh` puts it.
pub fn ort_library() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".ort/lib/libonnxruntime.so.1.31.1"))
}

/// A name no other test (in this or another process) uses: prefix, pid,
/// nanoseconds and a counter.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}_{}_{}_{n}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

/// A project folder for an end-to-end test: the repository's `configs/`
/// with dev's Redis pointed at namespace `ns`. The folder (removed on drop)
/// and its `configs/envs/dev`, for the test's own overrides.
pub fn dev_project(ns: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary folder: {e}"));
    copy_tree(&workspace_root().join("configs"), &tmp.path().join("configs"))
        .unwrap_or_else(|e| panic!("copying configs/: {e}"));
    let dev = tmp.path().join("configs/envs/dev");
    let redis =
        std::fs::read_to_string(dev.join("redis.yaml")).unwrap_or_else(|e| panic!("dev redis.yaml: {e}"));
    std::fs::write(dev.join("redis.yaml"), format!("{redis}namespace: {ns}\n"))
        .unwrap_or_else(|e| panic!("dev redis.yaml: {e}"));
    (tmp, dev)
}

/// dev's daemon as `instance`, every thread on core 0 (tests share the
/// machine), its ingress and metrics on free ports.
pub fn one_core_daemon(dev: &std::path::Path, instance: &str) {
    let write = |file: &str, text: String| {
        std::fs::write(dev.join(file), text).unwrap_or_else(|e| panic!("dev {file}: {e}"))
    };
    write(
        "daemon.yaml",
        format!("instance_id: {instance}\ningress: {{listen: \"127.0.0.1:0\"}}\nthreads: {{ingress_core: 0, worker_cores: [0], publisher_core: 0, side_cores: [0]}}\n"),
    );
    write(
        "metrics.yaml",
        "listen: \"127.0.0.1:0\"\ndefault_labels: {environment: e2e}\n".into(),
    );
}

/// Copies a folder tree (a private `configs/` to mutate, say).
pub fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), dest)?;
        }
    }
    Ok(())
}

/// A connection to the shared test Redis; panics with a clear message when it
/// does not answer (tests must fail loudly, never skip).
pub fn redis_connection() -> redis::Connection {
    let url = redis_url();
    let client = redis::Client::open(url.as_str()).unwrap_or_else(|e| panic!("bad Redis URL {url}: {e}"));
    client.get_connection().unwrap_or_else(|e| {
        panic!("Redis at {url} does not answer ({e}): run tests through scripts/test.sh, which starts one")
    })
}

/// A unique key namespace on the shared Redis, whose keys are deleted on drop.
#[derive(Debug)]
pub struct RedisNamespace {
    /// The namespace (use it as `redis.yaml`'s `namespace`).
    pub ns: String,
    url: String,
}

impl RedisNamespace {
    /// A fresh namespace on the shared test Redis.
    pub fn new() -> Self {
        Self {
            ns: unique_name("t"),
            url: redis_url(),
        }
    }

    /// A fresh namespace on a specific server.
    pub fn on(url: &str) -> Self {
        Self {
            ns: unique_name("t"),
            url: url.to_owned(),
        }
    }
}

impl Default for RedisNamespace {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RedisNamespace {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let pattern = format!("{}:*", self.ns);
        let keys: Vec<String> = match redis::cmd("KEYS").arg(&pattern).query(&mut conn) {
            Ok(k) => k,
            Err(_) => return,
        };
        for chunk in keys.chunks(500) {
            let _: redis::RedisResult<()> = redis::cmd("UNLINK").arg(chunk).query(&mut conn);
        }
    }
}

/// What the server counted for one command since its start or the last
/// `CONFIG RESETSTAT` (`INFO commandstats`): server-wide, so exact only on a
/// private server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommandStats {
    /// Times it ran.
    pub calls: u64,
    /// Redis' own time in it, µs.
    pub usec: u64,
}

impl CommandStats {
    /// `command`'s line (lower case, e.g. `fcall`, `function|load`) of an
    /// `INFO commandstats` reply; zero when it never ran (it then has no
    /// line). A line that does not read as Redis writes it is an error that
    /// quotes it.
    pub fn from_info(info: &str, command: &str) -> Result<Self, String> {
        let prefix = format!("cmdstat_{command}:");
        let Some(line) = info.lines().find_map(|l| l.trim().strip_prefix(prefix.as_str())) else {
            return Ok(Self::default());
        };
        let field = |name: &str| -> Result<u64, String> {
            line.split(',')
                .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                .ok_or_else(|| format!("cmdstat_{command} has no {name}: {line}"))?
                .parse()
                .map_err(|e| format!("cmdstat_{command} {name}: {e}: {line}"))
        };
        Ok(Self {
            calls: field("calls")?,
            usec: field("usec")?,
        })
    }

    /// `command`'s stats on `conn`'s server (see [`CommandStats::from_info`]).
    pub fn read(conn: &mut impl redis::ConnectionLike, command: &str) -> Result<Self, String> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(conn)
            .map_err(|e| format!("INFO commandstats: {e}"))?;
        Self::from_info(&info, command)
    }

    /// What happened between `earlier` and `self` (zero if the counters
    /// were reset in between).
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            calls: self.calls.saturating_sub(earlier.calls),
            usec: self.usec.saturating_sub(earlier.usec),
        }
    }
}

/// [`CommandStats::read`], for tests: panics on an error.
pub fn command_stats(conn: &mut impl redis::ConnectionLike, command: &str) -> CommandStats {
    CommandStats::read(conn, command).unwrap_or_else(|e| panic!("{e}"))
}

/// A private `redis-server` this test owns (free port, temp dir, no
/// persistence), stopped on drop. For tests that restart or flush Redis,
/// which must never happen to the shared server.
#[derive(Debug)]
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
    extra: Vec<String>,
    /// User and password the test logs in with (a server whose ACL file
    /// switches the default user off).
    login: Option<(String, String)>,
}

impl RedisServer {
    /// Starts a standalone server.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_as(extra, None)
    }

    /// Starts a server with extra arguments, logging in as `login` (user,
    /// password) instead of the default user.
    pub fn start_as(extra: &[&str], login: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let mut s = Self {
            port: free_port(),
            dir,
            child: None,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            login: login.map(|(u, p)| (u.to_owned(), p.to_owned())),
        };
        s.spawn();
        s
    }

    /// `redis://[user:password@]127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        match &self.login {
            Some((user, password)) => format!("redis://{user}:{password}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    /// A connection.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .unwrap_or_else(|e| panic!("private Redis on {}: {e}", self.port))
    }

    /// Kills the server and starts it again on the same port: with no
    /// persistence, every key and function is gone.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn spawn(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server (is it installed? scripts/services.sh installs it): {e}")
            });
        self.child = Some(child);
        for _ in 0..200 {
            if let Ok(mut c) = redis::Client::open(self.url()).and_then(|c| c.get_connection()) {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("private redis-server on port {} did not answer", self.port);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three private cluster-enabled `redis-server`s joined into one Redis
/// Cluster (three masters, no replicas). Stopped on drop.
#[derive(Debug)]
pub struct RedisCluster {
    /// The nodes.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the nodes, assigns all 16384 slots and waits for `cluster_state:ok`.
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::start_with(&["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]))
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("redis-cli --cluster create: {e}"));
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for _ in 0..200 {
            let all_ok = nodes.iter().all(|n| {
                redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query::<String>(&mut n.connection())
                    .map(|i| i.contains("cluster_state:ok"))
                    .unwrap_or(false)
            });
            if all_ok {
                return Self { nodes };
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("Redis Cluster did not reach cluster_state:ok");
    }

    /// Seed URLs for a cluster client.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A PostgreSQL database of the test's own on the test server, created
/// empty and dropped (with its connections) when this is dropped — a
/// failing test included. Usable from sync and async tests alike: its
/// statements run on a runtime of their own, on a thread of their own.
#[derive(Debug)]
pub struct TestDatabase {
    /// Its name.
    pub name: String,
    /// Its DSN.
    pub dsn: String,
}

impl TestDatabase {
    /// A fresh database named `<prefix>_<unique>`.
    pub fn create(prefix: &str) -> Self {
        let name = unique_name(prefix);
        if let Err(e) = admin(format!("CREATE DATABASE \"{name}\"")) {
            panic!("PostgreSQL must answer: {e}");
        }
        let admin_dsn = pg_dsn();
        let base = admin_dsn.rsplit_once('/').map_or(admin_dsn.as_str(), |(b, _)| b);
        Self {
            dsn: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Never a panic while a failing test unwinds.
        let _ = admin(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name));
    }
}

/// Runs one statement on the server's admin database.
fn admin(sql: String) -> Result<(), String> {
    let dsn = pg_dsn();
    let done = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let pool = sqlx::PgPool::connect(&dsn).await.map_err(|e| e.to_string())?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&pool)
                .await
                .map(|_| ())
                .map_err(|e| format!("{sql}: {e}"))
        })
    })
    .join();
    done.unwrap_or_else(|_| Err("the database thread panicked".into()))
}

/// Writes a small synthetic dataset into `dir` (as `data synth` does) and
/// returns its index.
pub fn synth_dataset(
    dir: &std::path::Path,
    seed: u64,
    symbols: usize,
    days: u32,
    interval_ms: u32,
) -> mlcore_research::dataset::DatasetIndex {
    use mlcore_market::civil;
    use mlcore_research::{dataset, synth};
    let spec = synth::SynthSpec {
        seed,
        symbols,
        start_day: civil::parse("2026-01-05").unwrap_or(20_458),
        days,
        interval_ms,
        effect: 1.0,
    };
    let names = spec.symbol_names();
    let mut gen = synth::Generator::new(spec.clone()).unwrap_or_else(|e| panic!("{e}"));
    let mut partitions = Vec::new();
    for day in spec.trading_days() {
        let date = civil::format(day);
        for (i, quotes) in gen.day(day).into_iter().enumerate() {
            partitions.push(
                dataset::write_partition(dir, names[i], &date, &quotes).unwrap_or_else(|e| panic!("{e}")),
            );
        }
    }
    let index = dataset::DatasetIndex {
        format: 1,
        source: format!("synthetic seed={seed}"),
        symbols: names.iter().map(|s| (*s).to_owned()).collect(),
        interval_ms,
        partitions,
    };
    index.write(dir).unwrap_or_else(|e| panic!("{e}"));
    index
}

/// A small logistic head over the feature vector, different per `seed`,
/// with Platt calibration.
pub fn logistic_head(seed: f32) -> mlcore_research::onnx::export::LogisticHead {
    mlcore_research::onnx::export::LogisticHead {
        weights: (0..mlcore_features::N_FEATURES)
            .map(|i| ((i as f32 + seed) * 0.37).sin() * 0.1)
            .collect(),
        intercept: 0.05,
        platt: mlcore_research::onnx::export::Platt { a: 1.3, b: -0.1 },
    }
}

/// The manifest entry of a [`logistic_head`] exported to `file`.
pub fn logistic_head_spec(file: &str) -> mlcore_models::artifact::HeadSpec {
    mlcore_models::artifact::HeadSpec {
        file: file.into(),
        input: "x".into(),
        output: "prob".into(),
        n_features: mlcore_features::N_FEATURES,
        learner: "logistic".into(),
        calibration: "platt".into(),
        native: None,
    }
}

/// A manifest for `strategy` v`version` with `heads` of `learner` (each
/// shipped natively too), valid for two days from `now_ms`; its files are
/// filled in by `artifact::seal`.
fn manifest(
    strategy: &str,
    version: u64,
    now_ms: u64,
    (heads, learner): (&[&str], &str),
    auc: f64,
) -> mlcore_models::artifact::Manifest {
    use mlcore_models::artifact::{HeadSpec, Manifest, ThetaParams, TrainingWindow};
    use mlcore_models::native;
    let spec = |head: &str| HeadSpec {
        native: Some(native::file_name(head)),
        learner: learner.into(),
        ..logistic_head_spec(&format!("{head}.onnx"))
    };
    Manifest {
        format: 1,
        model_id: format!("{strategy}-v{version}"),
        strategy: strategy.into(),
        version,
        created_at_ms: now_ms,
        expires_at_ms: now_ms + 2 * 86_400_000,
        feature_schema_hash: mlcore_features::schema_hash().to_owned(),
        heads: heads.iter().map(|h| ((*h).to_owned(), spec(h))).collect(),
        theta: ThetaParams {
            theta1: 0.505,
            theta2: 0.9,
        },
        training_window: TrainingWindow {
            start_ms: 1,
            test_start_ms: 2,
            end_ms: 3,
        },
        metrics: [("ai1_auc_test".to_owned(), auc)].into(),
        files: std::collections::BTreeMap::new(),
    }
}

/// 64 validation rows of the feature vector, different per `seed`.
fn validation_rows(seed: f32) -> Vec<f32> {
    (0..64 * mlcore_features::N_FEATURES)
        .map(|i| ((i as f32 + seed) * 0.61).sin() * 3.0)
        .collect()
}

/// A small signed artifact for `strategy` v`version`: logistic heads
/// (weights from `seed`) exported to ONNX and shipped natively, with 64
/// validation rows, valid for two days from `now_ms`, sealed with `key`.
/// Builds in milliseconds, unlike a trained one.
pub fn logistic_artifact(
    key: &mlcore_models::artifact::SecretKeyFile,
    strategy: &str,
    version: u64,
    seed: f32,
    now_ms: u64,
) -> mlcore_models::artifact::ArtifactFiles {
    use mlcore_features as features;
    use mlcore_models::artifact::{self, ArtifactFiles};
    use mlcore_models::native::{self, NativeHead};
    use mlcore_research::onnx::export::ToOnnx;
    let manifest = manifest(
        strategy,
        version,
        now_ms,
        (&["ai1", "ai2"], "logistic"),
        0.5 + f64::from(seed) / 100.0,
    );
    let unwrap = |r: Result<Vec<u8>, _>| {
        r.unwrap_or_else(|e: mlcore_research::onnx::export::ExportError| panic!("{e}"))
    };
    let native_json = |head: mlcore_research::onnx::export::LogisticHead| {
        NativeHead::Logistic(head)
            .to_json()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let files = ArtifactFiles(
        [
            ("ai1.onnx".to_owned(), unwrap(logistic_head(seed).to_onnx("ai1"))),
            (
                "ai2.onnx".to_owned(),
                unwrap(logistic_head(seed + 1.0).to_onnx("ai2")),
            ),
            (native::file_name("ai1"), native_json(logistic_head(seed))),
            (native::file_name("ai2"), native_json(logistic_head(seed + 1.0))),
            (
                artifact::VALIDATION_ROWS.to_owned(),
                native::encode_rows(&validation_rows(seed)),
            ),
            (
                artifact::FEATURE_SCHEMA.to_owned(),
                serde_json::to_vec(&features::schema()).unwrap_or_default(),
            ),
        ]
        .into(),
    );
    artifact::seal(manifest, files, key)
        .unwrap_or_else(|e| panic!("{e}"))
        .1
}

/// A verified artifact whose three heads are tree ensembles — `heads`,
/// exported to ONNX and shipped natively, with 64 validation rows — as a
/// loader hands it to the scorer (sealed with a throwaway key, `dev`).
pub fn tree_artifact(
    heads: [&mlcore_models::native::TreeEnsembleHead; 3],
) -> mlcore_models::artifact::VerifiedArtifact {
    use mlcore_models::artifact::{self, ArtifactFiles, SecretKeyFile, VerifiedArtifact};
    use mlcore_models::native::{self, NativeHead};
    use mlcore_research::onnx::export::ToOnnx;
    let names = ["ai1", "ai2", "ai3"];
    let mut files: std::collections::BTreeMap<String, Vec<u8>> = names
        .iter()
        .zip(heads)
        .flat_map(|(name, head)| {
            let onnx = head.to_onnx(name).unwrap_or_else(|e| panic!("{e}"));
            let json = NativeHead::Trees(head.clone())
                .to_json()
                .unwrap_or_else(|e| panic!("{e}"));
            [(format!("{name}.onnx"), onnx), (native::file_name(name), json)]
        })
        .collect();
    files.insert(
        artifact::VALIDATION_ROWS.to_owned(),
        native::encode_rows(&validation_rows(0.0)),
    );
    let key = SecretKeyFile::generate("dev").unwrap_or_else(|e| panic!("{e}"));
    let (manifest, files) = artifact::seal(
        manifest("fx_g10", 1, now_ms(), (&names, "lightgbm"), 0.5),
        ArtifactFiles(files),
        &key,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    VerifiedArtifact {
        manifest,
        files,
        key_id: "dev".into(),
    }
}

/// Sets `strategy`'s mode through the guard, from the version stored now;
/// the new version. Panics if someone else changed it in between.
pub fn set_mode(
    guard: &mlcore_contract::Guard,
    conn: &mut impl redis::ConnectionLike,
    strategy: &str,
    mode: mlcore_contract::OpsMode,
) -> u64 {
    let current = guard
        .read_mode(conn, strategy)
        .unwrap_or_else(|e| panic!("read {strategy}'s mode: {e}"))
        .version;
    let change = mlcore_contract::ModeChange {
        strategy,
        expected_version: current,
        mode,
        reason: "test",
        actor: "tester",
        request_id: "req-1",
    };
    match guard.set_mode(conn, &change) {
        Ok(mlcore_contract::SetModeOutcome::Applied { version }) => version,
        other => panic!("set {strategy} {mode}: {other:?}"),
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Polls `f` every 5 ms for up to `limit`: how long it took to hold, or
/// `None` if it never did.
pub fn wait_until(limit: std::time::Duration, mut f: impl FnMut() -> bool) -> Option<std::time::Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    None
}

/// One HTTP/1.1 request (`Connection: close`, JSON body, optional bearer
/// token): the status code and the whole response text.
pub fn http(addr: &str, method: &str, path: &str, bearer: Option<&str>, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap_or_else(|e| panic!("writing to {addr}: {e}"));
    let mut resp = String::new();
    s.read_to_string(&mut resp)
        .unwrap_or_else(|e| panic!("reading from {addr}: {e}"));
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, resp)
}

/// Spawns `cmd` with its stdout piped and returns the process with the first
/// line it prints: the project's servers announce their addresses that way
/// (`listening key=ADDR ...`, read with [`announced`]).
pub fn spawn_announcing(cmd: &mut std::process::Command) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("reading the first line of {cmd:?}: {e}"));
    }
    (child, line)
}

/// The value of `key` (e.g. `http=`) in an announcement line.
pub fn announced(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .to_owned()
}

/// A heartbeat from `instance` written at `at_ms`: status `ok`, counters
/// zero, no model, no mode. Tests set what they look at.
pub fn heartbeat(instance: &str, at_ms: u64) -> mlcore_contract::Heartbeat {
    mlcore_contract::Heartbeat {
        instance: instance.into(),
        status: "ok".into(),
        at_ms,
        last_decision_ms: 0,
        p99_us: 0,
        decisions: 0,
        signals_accepted: 0,
        decisions_dropped: 0,
        refused_artifacts: 0,
        models: Default::default(),
        modes: Default::default(),
        refusals: Default::default(),
        config: Default::default(),
    }
}

/// A binary of the workspace, next to the test binary's folder (test
/// executables live in `target/<profile>/deps/`): `cargo nextest run
/// --workspace` builds every binary first. Tests in another package than
/// the binary's have no `CARGO_BIN_EXE_*` for it.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("no current executable: {e}"));
    let dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .unwrap_or_else(|| panic!("{} has no grandparent folder", exe.display()));
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests through scripts/test.sh (cargo nextest run --workspace builds every binary)",
        path.display()
    );
    path
}

/// The guard module (`guardmod/`, `libmlcore_guard_module.so`) this
/// workspace built, for `redis-server --loadmodule`: beside the test
/// executable (`target/<profile>/deps/`, where a test build leaves the
/// cdylib) or one folder up (where `cargo build` puts it).
pub fn guard_module() -> PathBuf {
    const NAME: &str = "libmlcore_guard_module.so";
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("no current executable: {e}"));
    let deps = exe
        .parent()
        .unwrap_or_else(|| panic!("{} has no folder", exe.display()));
    let beside = deps.join(NAME);
    if beside.exists() {
        return beside;
    }
    let up = deps.parent().map(|p| p.join(NAME));
    match up {
        Some(p) if p.exists() => p,
        _ => panic!(
            "{} is missing: run the tests through scripts/test.sh (cargo nextest run --workspace builds the guard module)",
            beside.display()
        ),
    }
}

/// Sends `signal` (`TERM`, `INT`, ...) to `child` and waits up to `limit`
/// for it to exit; its exit status, or a panic naming what did not happen.
pub fn stop_with_signal(
    child: &mut std::process::Child,
    signal: &str,
    limit: std::time::Duration,
) -> std::process::ExitStatus {
    let sent = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap_or_else(|e| panic!("kill -{signal}: {e}"));
    assert!(sent.success(), "kill -{signal} {} failed", child.id());
    let started = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if started.elapsed() < limit => std::thread::sleep(std::time::Duration::from_millis(20)),
            Ok(None) => panic!("pid {} still running {limit:?} after SIG{signal}", child.id()),
            Err(e) => panic!("waiting for pid {}: {e}", child.id()),
        }
    }
}

/// Checks a Prometheus exposition with `promtool check metrics` (the
/// Prometheus project's own parser and linter: naming rules, HELP and TYPE,
/// counter suffixes, units). Panics with promtool's findings, or when
/// promtool is missing (`scripts/test.sh` installs it).
pub fn promtool_check_metrics(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool: {e} (scripts/test.sh installs Debian's prometheus package)"));
    child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(text.as_bytes()))
        .unwrap_or_else(|| panic!("promtool has no stdin"))
        .unwrap_or_else(|e| panic!("writing to promtool: {e}"));
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("promtool: {e}"));
    assert!(
        out.status.success(),
        "promtool check metrics refused the exposition:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::CommandStats;

    const INFO: &str = "# Commandstats\r\n\
        cmdstat_xread:calls=17786,usec=178768,usec_per_call=10.05,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_fcall:calls=19148,usec=6536852,usec_per_call=341.39,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_fcall_ro:calls=1,usec=13,usec_per_call=13.00,rejected_calls=0,failed_calls=0\r\n";

    #[test]
    fn a_commands_line_is_read_and_not_its_prefixed_neighbour() {
        assert_eq!(
            CommandStats::from_info(INFO, "fcall"),
            Ok(CommandStats {
                calls: 19148,
                usec: 6536852
            })
        );
        assert_eq!(
            CommandStats::from_info(INFO, "fcall_ro"),
            Ok(CommandStats { calls: 1, usec: 13 })
        );
        assert_eq!(CommandStats::from_info(INFO, "hset"), Ok(CommandStats::default()));
    }

    #[test]
    fn a_malformed_line_is_an_error_that_quotes_it() {
        let err = CommandStats::from_info("cmdstat_fcall:calls=x,usec=1", "fcall").unwrap_err();
        assert!(err.contains("calls") && err.contains("calls=x,usec=1"), "{err}");
        let err = CommandStats::from_info("cmdstat_fcall:calls=3", "fcall").unwrap_err();
        assert!(err.contains("no usec"), "{err}");
    }

    #[test]
    fn since_is_the_difference_and_zero_across_a_reset() {
        let before = CommandStats {
            calls: 100,
            usec: 30_000,
        };
        let after = CommandStats {
            calls: 20_100,
            usec: 6_530_000,
        };
        assert_eq!(
            after.since(&before),
            CommandStats {
                calls: 20_000,
                usec: 6_500_000
            }
        );
        assert_eq!(before.since(&after), CommandStats::default());
    }
}
