//! The configuration loader against the real `configs/` tree, and each refusal
//! on a mutated copy of it.

#![allow(clippy::unwrap_used)] // fixture helpers outside #[test] fns: a broken fixture should panic

use std::fs;
use std::path::{Path, PathBuf};

use mlcore_config::{self as config, ConfigCode, ConfigError, Environment, MapEnv};

const ALL_SECRETS: [&str; 15] = [
    "MLCORE_REDIS_URL",
    "MLCORE_PG_DSN",
    "MLCORE_SLACK_WEBHOOK_URL",
    "MLCORE_PAGERDUTY_ROUTING_KEY",
    "MLCORE_WEBHOOK_HMAC_SECRET",
    "MLCORE_TWELVEDATA_API_KEY",
    "MLCORE_SECONDARY_API_KEY",
    "MLCORE_TOKEN_VIEWER",
    "MLCORE_TOKEN_OPERATOR",
    "MLCORE_TOKEN_APPROVER",
    "MLCORE_TOKEN_ADMIN",
    "MLCORE_TOTP_APPROVER",
    "MLCORE_TOTP_ADMIN",
    "MLCORE_OBS_WEEKLY_WEBHOOK_URL",
    "MLCORE_OBS_WEBHOOK_SECRET",
];

fn repo_configs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

fn full_env() -> MapEnv {
    ALL_SECRETS
        .iter()
        .fold(MapEnv::new(), |e, name| e.with(name, &secret_value(name)))
}

/// A plausible value of the secret `name`: URLs that leave the machine are
/// https:// outside dev.
fn secret_value(name: &str) -> String {
    match name {
        "MLCORE_SLACK_WEBHOOK_URL" => "https://hooks.example/value-0123456789".to_owned(),
        _ => format!("value-of-{name}-0123456789"),
    }
}

/// A private copy of `configs/` to mutate.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        mlcore_testkit::copy_tree(&repo_configs(), &dir.path().join("configs")).unwrap();
        Self { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("configs")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    fn edit(&self, rel: &str, from: &str, to: &str) {
        let p = self.path(rel);
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{rel} does not contain {from:?}");
        fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }

    fn write(&self, rel: &str, text: &str) {
        fs::write(self.path(rel), text).unwrap();
    }

    fn load(&self, env: Environment, vars: &MapEnv) -> Result<config::AppConfig, ConfigError> {
        config::load(&self.root(), env, vars)
    }
}

fn only_problem(err: &ConfigError, code: ConfigCode) -> &config::ConfigProblem {
    err.find(code)
        .unwrap_or_else(|| panic!("expected {code}, got:\n{err}"))
}

#[test]
fn every_shipped_environment_is_valid_with_its_secrets_set() {
    for env in [Environment::Dev, Environment::Stg, Environment::Prod] {
        let cfg = config::load(&repo_configs(), env, &full_env()).unwrap_or_else(|e| panic!("{env}: {e}"));
        assert_eq!(cfg.environment, env);
        assert_eq!(cfg.universe.strategies[0].symbols.len(), 32);
    }
}

#[test]
fn environment_overrides_merge_maps_and_replace_lists() {
    let cfg = config::load(&repo_configs(), Environment::Dev, &full_env()).unwrap();
    // dev/daemon.yaml replaces the worker list and keeps base's queue sizes.
    assert_eq!(cfg.daemon.threads.worker_cores, vec![1]);
    assert_eq!(cfg.daemon.queues.decisions, 1024);
    // Maps merge: base's `service` label survives dev adding `environment`.
    assert_eq!(
        cfg.metrics.default_labels.get("service").map(String::as_str),
        Some("ml-assets-core")
    );
    assert_eq!(
        cfg.metrics.default_labels.get("environment").map(String::as_str),
        Some("dev")
    );
    // Relative storage paths resolve against the folder holding configs/.
    assert!(cfg.storage.models_root.is_absolute());
    assert!(cfg.storage.models_root.ends_with(".run/models"));
}

#[test]
fn missing_key_is_refused_naming_file_and_key() {
    let f = Fixture::new();
    f.edit("base/core_policy.yaml", "  theta1: 0.55", "");
    let err = f.load(Environment::Dev, &full_env()).unwrap_err();
    let p = only_problem(&err, ConfigCode::KeyMissing);
    assert_eq!(p.key, "theta.theta1");
    assert!(p.file.ends_with("base/core_policy.yaml"), "{}", p.file.display());
    assert!(err.to_string().contains("CONFIG_KEY_MISSING"));
}

#[test]
fn a_realtime_priority_outside_sched_fifo_is_refused() {
    let f = Fixture::new();
    f.edit(
        "envs/dev/daemon.yaml",
        "realtime_priority: 10",
        "realtime_priority: 120",
    );
    let err = f.load(Environment::Dev, &full_env()).unwrap_err();
    let p = only_problem(&err, ConfigCode::ValueInvalid);
    assert_eq!(p.key, "threads.realtime_priority");
    assert!(p.to_string().contains("1-99"), "{p}");
    f.edit(
        "envs/dev/daemon.yaml",
        "realtime_priority: 120",
        "realtime_priority: 99",
    );
    let cfg = f.load(Environment::Dev, &full_env()).unwrap();
    assert_eq!(cfg.daemon.threads.realtime_priority, 99);
}

#[test]
fn a_zero_timer_interval_is_refused() {
    let f = Fixture::new();
    f.edit(
        "base/daemon.yaml",
        "timer_interval_ms: 500",
        "timer_interval_ms: 0",
    );
    let err = f.load(Environment::Dev, &full_env()).unwrap_err();
    let p = only_problem(&err, ConfigCode::ValueInvalid);
    assert_eq!(p.key, "decision.timer_interval_ms");
    assert!(p.file.ends_with("base/daemon.yaml"), "{}", p.file.display());
}

#[test]
fn unknown_key_is_refused_naming_the_override_that_added_it() {
    let f = Fixture::new();
    f.write("envs/dev/core_policy.yaml", "theta:\n  theta3: 0.1\n");
    let err = f.load(Environment::Dev, &full_env()).unwrap_err();
    let p = only_problem(&err, ConfigCode::KeyUnknown);
    assert_eq!(p.key, "theta.theta3");
    assert!(
        p.file.ends_with("envs/dev/core_policy.yaml"),
        "{}",
        p.file.display()
    );
}

#[test]
fn wrong_type_is_refused_with_its_key() {
    let f = Fixture::new();
    f.edit("base/core_policy.yaml", "ttl_ms: 1500", "ttl_ms: soon");
    let err = f.load(Environment::Dev, &full_env()).unwrap_err();
    let p = only_problem(&err, ConfigCode::TypeInvalid);
    assert_eq!(p.key, "signal.ttl_ms");
}

#[test]
fn unset_secret_variable_is_refused_and_named() {
    let vars = MapEnv::new().with("MLCORE_PG_DSN", "postgresql://x@127.0.0.1/db");
    let err = config::load(&repo_configs(), Environment::Dev, &vars).unwrap_err();
    let p = only_problem(&err, ConfigCode::SecretUnset);
    assert_eq!(p.key, "url");
    assert!(p.file.ends_with("base/redis.yaml"));
    assert!(p.message.contains("MLCORE_REDIS_URL"), "{}", p.message);
}

#[test]
fn literal_secret_is_refused_outside_dev_but_accepted_in_dev() {
    let f = Fixture::new();
    f.write(
        "envs/prod/redis.yaml",
        "url: \"redis://:hunter2@10.0.0.1:6379/0\"\n",
    );
    let err = f.load(Environment::Prod, &full_env()).unwrap_err();
    let p = only_problem(&err, ConfigCode::SecretLiteral);
    assert_eq!(p.key, "url");
    assert!(p.file.ends_with("envs/prod/redis.yaml"));
    assert!(
        !err.to_string().contains("hunter2"),
        "the literal must not be echoed"
    );

    f.write("envs/dev/redis.yaml", "url: \"redis://127.0.0.1:6379/0\"\n");
    let cfg = f.load(Environment::Dev, &full_env()).unwrap();
    assert_eq!(cfg.redis.url.expose(), "redis://127.0.0.1:6379/0");
}

#[test]
fn malformed_secret_reference_is_refused() {
    let f = Fixture::new();
    f.write("envs/dev/redis.yaml", "url: \"$lower-case\"\n");
    let err = f.load(Environment::Dev, &full_env()).unwrap_err();
    assert_eq!(only_problem(&err, ConfigCode::SecretInvalid).key, "url");
}

#[test]
fn printed_config_redacts_every_secret() {
    let vars = full_env().with("MLCORE_REDIS_URL", "redis://:s3cr3t-password@10.1.1.1:6379/0");
    let cfg = config::load(&repo_configs(), Environment::Stg, &vars).unwrap();
    let printed = cfg.to_redacted_yaml();
    let debug = format!("{cfg:?}");
    for name in ALL_SECRETS {
        let value = vars_value(&vars, name);
        assert!(
            !printed.contains(&value) && !debug.contains(&value),
            "{name} leaked"
        );
    }
    assert!(!printed.contains("s3cr3t"));
    assert!(printed.contains("<redacted $MLCORE_REDIS_URL>"));
}

fn vars_value(vars: &MapEnv, name: &str) -> String {
    use mlcore_config::EnvSource;
    vars.var(name).unwrap()
}

#[test]
fn every_problem_is_reported_at_once() {
    let f = Fixture::new();
    f.edit("base/core_policy.yaml", "  theta1: 0.55", "");
    f.edit(
        "base/daemon.yaml",
        "instance_id: daemon-1",
        "instance_id: daemon-1\nextra_key: 1",
    );
    let err = f.load(Environment::Dev, &MapEnv::new()).unwrap_err();
    assert!(err.has(ConfigCode::KeyMissing));
    assert!(err.has(ConfigCode::KeyUnknown));
    assert!(err.has(ConfigCode::SecretUnset));
    assert!(err.problems.len() >= 3, "{err}");
}

#[test]
fn misnamed_override_file_is_refused() {
    let f = Fixture::new();
    f.write("envs/dev/core-policy.yaml", "theta: {theta1: 0.6}\n");
    let err = f.load(Environment::Dev, &full_env()).unwrap_err();
    assert!(only_problem(&err, ConfigCode::FileUnknown)
        .file
        .ends_with("core-policy.yaml"));
}

#[test]
fn missing_base_file_and_invalid_yaml_are_refused() {
    let f = Fixture::new();
    fs::remove_file(f.path("base/sources.yaml")).unwrap();
    f.write("envs/dev/metrics.yaml", "listen: [unclosed\n");
    let err = f.load(Environment::Dev, &full_env()).unwrap_err();
    assert!(only_problem(&err, ConfigCode::FileMissing)
        .file
        .ends_with("base/sources.yaml"));
    assert!(only_problem(&err, ConfigCode::YamlInvalid)
        .file
        .ends_with("envs/dev/metrics.yaml"));
}

#[test]
fn unknown_environment_is_refused() {
    let err = "production".parse::<Environment>().unwrap_err();
    assert!(err.has(ConfigCode::EnvUnknown));
}

#[test]
fn cross_file_rules_are_checked() {
    let f = Fixture::new();
    f.edit(
        "base/cost_table.yaml",
        "  USDHKD: {spread_bps: 2.5, commission_bps: 0.2}\n",
        "",
    );
    f.edit("base/core_policy.yaml", "theta1: 0.55", "theta1: 0.45");
    let err = f.load(Environment::Dev, &full_env()).unwrap_err();
    let keys: Vec<&str> = err
        .problems
        .iter()
        .filter(|p| p.code == ConfigCode::ValueInvalid)
        .map(|p| p.key.as_str())
        .collect();
    assert!(keys.contains(&"symbols.USDHKD"), "{err}");
    assert!(keys.contains(&"theta.theta1"), "{err}");
}

/// #22 §7: outside dev the API serves HTTPS, alerts leave over HTTPS, and
/// with a second factor required every approver has one enrolled.
#[test]
fn transport_and_second_factor_rules_outside_dev() {
    let f = Fixture::new();
    fs::remove_file(f.path("envs/prod/control.yaml")).unwrap();
    f.edit(
        "base/notifications.yaml",
        "url: https://obs.internal.example/hooks/mlcore",
        "url: http://obs.internal.example/hooks/mlcore",
    );
    f.edit("base/control.yaml", "    totp: \"$MLCORE_TOTP_ADMIN\"\n", "");
    let err = f.load(Environment::Prod, &full_env()).unwrap_err();
    let keys: Vec<(&str, &str)> = err
        .problems
        .iter()
        .filter(|p| p.code == ConfigCode::ValueInvalid)
        .map(|p| (p.file.file_name().unwrap().to_str().unwrap(), p.key.as_str()))
        .collect();
    assert!(keys.contains(&("control.yaml", "tls")), "{err}");
    assert!(keys.contains(&("notifications.yaml", "webhook.url")), "{err}");
    assert!(keys.contains(&("control.yaml", "principals[3].totp")), "{err}");
    assert_eq!(keys.len(), 3, "{err}");
    // dev keeps plain HTTP and needs no second factor.
    f.load(Environment::Dev, &full_env()).unwrap();
}

#[test]
fn the_full_example_matches_the_base_files() {
    let text = fs::read_to_string(repo_configs().join("examples/full.yaml")).unwrap();
    let docs: Vec<&str> = text.split("\n--- # ").skip(1).collect();
    assert_eq!(docs.len(), config::FILES.len());
    for (doc, file) in docs.iter().zip(config::FILES) {
        let (name, body) = doc.split_once('\n').unwrap();
        assert_eq!(name.trim(), file);
        let example: serde_norway::Value = serde_norway::from_str(body).unwrap();
        let base: serde_norway::Value =
            serde_norway::from_str(&fs::read_to_string(repo_configs().join("base").join(file)).unwrap())
                .unwrap();
        assert_eq!(example, base, "configs/examples/full.yaml is stale for {file}");
    }
}

/// Each process loads the whole tree but needs only its own secrets: the
/// daemon runs in prod with the Redis URL alone; the control plane needs
/// Redis, PostgreSQL, the API tokens and alerting, never the market-data
/// keys; commands that touch no service need none. `All` needs every one.
#[test]
fn each_process_needs_only_the_secrets_it_uses() {
    use config::Process;
    let only = |names: &[&str]| {
        names
            .iter()
            .fold(MapEnv::new(), |e, n| e.with(n, &secret_value(n)))
    };
    let load = |p: Process, vars: &MapEnv| config::load_for(&repo_configs(), Environment::Prod, vars, p);

    let cfg = load(Process::Daemon, &only(&["MLCORE_REDIS_URL"])).unwrap();
    assert_eq!(cfg.redis.url.expose(), "value-of-MLCORE_REDIS_URL-0123456789");
    assert!(
        !cfg.database.dsn.is_resolved(),
        "an unneeded secret stays unresolved"
    );
    load(Process::BreakGlass, &only(&["MLCORE_REDIS_URL"])).unwrap();
    load(Process::Database, &only(&["MLCORE_PG_DSN"])).unwrap();
    load(Process::Offline, &MapEnv::new()).unwrap();

    // The daemon without Redis: only that is missing.
    let err = load(Process::Daemon, &MapEnv::new()).unwrap_err();
    let unset: Vec<_> = err.problems.iter().map(|p| p.message.clone()).collect();
    assert_eq!(unset.len(), 1, "{err}");
    assert!(unset[0].contains("MLCORE_REDIS_URL"), "{err}");

    let control = [
        "MLCORE_REDIS_URL",
        "MLCORE_PG_DSN",
        "MLCORE_SLACK_WEBHOOK_URL",
        "MLCORE_PAGERDUTY_ROUTING_KEY",
        "MLCORE_WEBHOOK_HMAC_SECRET",
        "MLCORE_TOKEN_VIEWER",
        "MLCORE_TOKEN_OPERATOR",
        "MLCORE_TOKEN_APPROVER",
        "MLCORE_TOKEN_ADMIN",
        "MLCORE_TOTP_APPROVER",
        "MLCORE_TOTP_ADMIN",
        "MLCORE_OBS_WEEKLY_WEBHOOK_URL",
        "MLCORE_OBS_WEBHOOK_SECRET",
    ];
    load(Process::Control, &only(&control)).unwrap();
    let err = load(Process::Control, &only(&control[1..])).unwrap_err();
    assert!(err.to_string().contains("MLCORE_REDIS_URL"), "{err}");
    // Everything: the market-data keys too.
    let err = load(Process::All, &only(&control)).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("MLCORE_TWELVEDATA_API_KEY") && text.contains("MLCORE_SECONDARY_API_KEY"),
        "{text}"
    );
    assert_eq!("break-glass".parse::<Process>().unwrap(), Process::BreakGlass);
    assert!("nobody".parse::<Process>().unwrap_err().contains("daemon"));
}

#[test]
fn a_listen_address_with_an_impossible_port_is_a_config_error() {
    for (file, bad) in [
        ("daemon.yaml", "ingress: {listen: \"127.0.0.1:99999\"}\n"),
        ("metrics.yaml", "listen: \"127.0.0.1:-1\"\n"),
        ("control.yaml", "listen: \"127.0.0.1\"\n"),
    ] {
        let f = Fixture::new();
        f.write(&format!("envs/dev/{file}"), bad);
        let err = f.load(Environment::Dev, &full_env()).unwrap_err();
        let p = only_problem(&err, ConfigCode::ValueInvalid);
        assert!(p.key.ends_with("listen"), "{file}: {err}");
        assert!(p.message.contains("is not a listen address"), "{file}: {err}");
    }
    // Port 0 (the OS picks one, the process announces it) and IPv6 are fine.
    let f = Fixture::new();
    f.write("envs/dev/daemon.yaml", "ingress: {listen: \"[::1]:0\"}\n");
    f.load(Environment::Dev, &full_env()).unwrap();
}

/// Strategy ids and symbols are checked identifiers: a strategy id that
/// would break the Redis hash tag, or a symbol outside the market's syntax,
/// is refused when read, naming the key.
#[test]
fn identifiers_are_checked_when_read() {
    let f = Fixture::new();
    f.edit("base/universe.yaml", "- id: fx_g10", "- id: \"fx}{g10\"");
    let err = f.load(Environment::Dev, &full_env()).unwrap_err();
    let p = only_problem(&err, ConfigCode::ValueInvalid);
    assert_eq!(p.key, "strategies[0].id", "{err}");
    assert!(p.message.contains("invalid strategy id `fx}{g10`"), "{err}");

    let f = Fixture::new();
    f.edit("base/universe.yaml", "{symbol: GBPUSD,", "{symbol: gbp-usd,");
    let err = f.load(Environment::Dev, &full_env()).unwrap_err();
    let p = only_problem(&err, ConfigCode::ValueInvalid);
    assert!(p.key.ends_with(".symbol"), "{err}");
    assert!(p.message.contains("invalid symbol `gbp-usd`"), "{err}");
}

#[test]
fn a_retrain_schedule_is_off_by_default_and_checked_when_set() {
    let cfg = config::load(&repo_configs(), Environment::Prod, &full_env()).unwrap();
    assert_eq!(cfg.control.retrain.schedule, None, "off by default");
    assert!(cfg
        .control
        .retrain
        .dataset
        .starts_with(&cfg.storage.datasets_root));

    let f = Fixture::new();
    f.edit(
        "base/control.yaml",
        "  schedule: null",
        "  schedule: {cron: \"0 30 5 * * MON-FRI\", strategies: [fx_g10]}",
    );
    let cfg = f.load(Environment::Dev, &full_env()).unwrap();
    let s = cfg.control.retrain.schedule.unwrap();
    let next = config::schedule::parse(&s.cron)
        .unwrap()
        .next_after(1_796_378_400_000);
    // Friday 2026-12-04 10:00 UTC → Monday 05:30.
    assert_eq!(next, Some(1_796_621_400_000));

    let f = Fixture::new();
    f.edit(
        "base/control.yaml",
        "  schedule: null",
        "  schedule: {cron: \"30 25 * * *\", strategies: [fx_g10, eq_nope]}",
    );
    let err = f.load(Environment::Dev, &full_env()).unwrap_err();
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["retrain.schedule.cron", "retrain.schedule.strategies[1]"],
        "{err}"
    );
    assert!(
        err.to_string().contains("`30 25 * * *` is not a cron expression"),
        "{err}"
    );
    assert!(err.to_string().contains("`eq_nope` is not a strategy"), "{err}");
}

#[test]
fn the_guard_module_needs_contract_v3() {
    let f = Fixture::new();
    f.write(
        "envs/dev/redis.yaml",
        "guard_install: auto\nguard_engine: module\n",
    );
    let err = f.load(Environment::Dev, &full_env()).unwrap_err();
    let p = only_problem(&err, ConfigCode::ValueInvalid);
    assert_eq!(p.key, "guard_engine");
    assert!(p.message.contains("contract: v3"), "{}", p.message);
    f.write(
        "envs/dev/redis.yaml",
        "guard_install: auto\nguard_engine: module\ncontract: v3\n",
    );
    let cfg = f.load(Environment::Dev, &full_env()).unwrap();
    assert_eq!(cfg.redis.guard_engine, config::GuardEngine::Module);
}
