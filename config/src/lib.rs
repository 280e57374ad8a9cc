//! Configuration: YAML is the only truth.
//!
//! `configs/base/*.yaml` holds every setting; `configs/envs/<env>/*.yaml` holds
//! only what differs. [`load`] deep-merges the two per file ([`merge`]),
//! deserialises into the strict types below (`deny_unknown_fields`, no serde
//! defaults: a missing key is an error, never a silent default), resolves
//! `$VAR` secrets ([`secret`]) and runs cross-file checks ([`validate`]). Every
//! problem found is reported at once with its code, file and key path
//! ([`error`]).

pub mod change;
mod costs;
pub mod deploy;
pub mod edit;
pub mod env;
pub mod error;
mod infra;
pub mod merge;
mod observability;
mod policy;
mod processes;
pub mod schedule;
pub mod secret;
mod sources;
pub mod tree;
mod trust;
mod universe;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_norway::Value;

pub use costs::{CostTable, Slippage, SymbolCost};
pub use env::{EnvSource, MapEnv, ProcessEnv};
pub use error::{ConfigCode, ConfigError, ConfigProblem};
pub use infra::{
    BackoffConfig, DatabaseConfig, GuardContract, GuardEngine, GuardInstall, HeartbeatConfig, PoolConfig,
    RedisConfig, RedisMode, RetentionConfig, StorageConfig,
};
pub use observability::{
    Channel, DashboardExportConfig, LatencyJobConfig, LogLevel, MetricsConfig, NotificationsConfig,
    ObservabilityJobsConfig, ObservabilitySchedule, PagerDutyConfig, RetryConfig, Severity, SlackConfig,
    WebhookConfig, WeeklyReportConfig,
};
pub use policy::{Adoption, CorePolicy, RiskLimits, SignalPolicy, Sizing, Theta, ThetaPair};
pub use processes::{
    minutes_of_day, ApprovalsConfig, AuditCheckpointConfig, ChangeWindow, ConfigApiConfig,
    ConfigChangesConfig, ControlConfig, Credential, DaemonConfig, DecisionConfig, DecisionMode,
    FailedAuthConfig, IngressConfig, MaxInstructionSet, Principal, QueuesConfig, RateLimitConfig,
    RetrainConfig, RetrainSchedule, RetrainSearch, RetrainTrees, Role, RollbackSigningConfig, ScoringBackend,
    ScoringConfig, SecondFactorConfig, ThreadsConfig, TlsConfig, Weekday,
};
pub use secret::Secret;
pub use sources::{FailoverConfig, ProviderConfig, ProviderSettings, SourcesConfig};
pub use tree::ConfigTree;
pub use trust::{KeyPurpose, TrustConfig, TrustedKeyConfig};
pub use universe::{BetaSource, StrategyUniverse, SymbolSpec, Universe};

/// A deployment environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    /// Developer machines and tests: literal secrets allowed.
    Dev,
    /// Staging.
    Stg,
    /// Production.
    Prod,
}

impl Environment {
    /// The folder name under `configs/envs/`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Dev => "dev",
            Self::Stg => "stg",
            Self::Prod => "prod",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Environment {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dev" => Ok(Self::Dev),
            "stg" => Ok(Self::Stg),
            "prod" => Ok(Self::Prod),
            other => Err(ConfigError {
                problems: vec![ConfigProblem {
                    code: ConfigCode::EnvUnknown,
                    file: PathBuf::from("configs/envs"),
                    key: String::new(),
                    message: format!("unknown environment `{other}` (expected dev, stg or prod)"),
                }],
            }),
        }
    }
}

/// The files every environment is built from, in load order.
pub const FILES: [&str; 12] = [
    "core_policy.yaml",
    "universe.yaml",
    "cost_table.yaml",
    "redis.yaml",
    "database.yaml",
    "storage.yaml",
    "notifications.yaml",
    "metrics.yaml",
    "sources.yaml",
    "daemon.yaml",
    "control.yaml",
    "trust.yaml",
];

/// The fully resolved configuration of one environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppConfig {
    /// Which environment this is.
    pub environment: Environment,
    /// `core_policy.yaml`.
    pub core_policy: CorePolicy,
    /// `universe.yaml`.
    pub universe: Universe,
    /// `cost_table.yaml`.
    pub cost_table: CostTable,
    /// `redis.yaml`.
    pub redis: RedisConfig,
    /// `database.yaml`.
    pub database: DatabaseConfig,
    /// `storage.yaml`.
    pub storage: StorageConfig,
    /// `notifications.yaml`.
    pub notifications: NotificationsConfig,
    /// `metrics.yaml`.
    pub metrics: MetricsConfig,
    /// `sources.yaml`.
    pub sources: SourcesConfig,
    /// `daemon.yaml`.
    pub daemon: DaemonConfig,
    /// `control.yaml`.
    pub control: ControlConfig,
    /// `trust.yaml`.
    pub trust: TrustConfig,
}

impl AppConfig {
    /// The resolved tree as YAML, with every secret redacted.
    pub fn to_redacted_yaml(&self) -> String {
        // Serialising plain data structs to YAML cannot fail: every map key is
        // a string and no custom serializer returns an error.
        serde_norway::to_string(self).unwrap_or_else(|e| format!("# could not render config: {e}\n"))
    }

    /// A strategy's universe by id.
    pub fn strategy(&self, id: &str) -> Option<&StrategyUniverse> {
        self.universe.strategies.iter().find(|s| s.id == id)
    }
}

/// Which process loads the configuration, and so which secrets it must
/// have. Every file is read and checked by every process (the tree is one
/// piece: cross-file rules need it whole); only the secrets differ. A
/// process does not need the PostgreSQL DSN, API tokens or alerting keys
/// it never uses: their `$VAR`s may be unset there, and stay unresolved
/// (empty), never read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Process {
    /// Every secret (`config check`).
    All,
    /// `mlcore-daemon`: Redis.
    Daemon,
    /// `mlcore-control serve`: Redis, PostgreSQL, API tokens, alerting.
    Control,
    /// The break-glass `ops set-mode`: Redis.
    BreakGlass,
    /// `db migrate`, `audit verify|retain`: PostgreSQL.
    Database,
    /// Commands that touch no service: `mlcore-feed`, `train`, `models verify`.
    Offline,
}

impl Process {
    /// Every process, with the name `config check --process` takes.
    pub const ALL: [(&'static str, Self); 6] = [
        ("all", Self::All),
        ("daemon", Self::Daemon),
        ("control", Self::Control),
        ("break-glass", Self::BreakGlass),
        ("database", Self::Database),
        ("offline", Self::Offline),
    ];

    /// Whether this process needs the secrets `file` references.
    pub fn needs_secrets_of(self, file: &str) -> bool {
        match self {
            Self::All => true,
            Self::Daemon | Self::BreakGlass => file == "redis.yaml",
            Self::Control => matches!(
                file,
                "redis.yaml" | "database.yaml" | "control.yaml" | "notifications.yaml"
            ),
            Self::Database => file == "database.yaml",
            Self::Offline => false,
        }
    }
}

impl FromStr for Process {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, p)| *p)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|(n, _)| *n).collect();
                format!("unknown process `{s}` (expected one of: {})", names.join(", "))
            })
    }
}

/// Loads `<root>/base` merged with `<root>/envs/<env>`, resolving every
/// secret from `vars` ([`Process::All`]). `root` is the `configs/` folder;
/// relative storage paths are resolved against its parent.
pub fn load(root: &Path, env: Environment, vars: &dyn EnvSource) -> Result<AppConfig, ConfigError> {
    load_for(root, env, vars, Process::All)
}

/// [`load`] for one process: only the secrets it uses must be set.
pub fn load_for(
    root: &Path,
    env: Environment,
    vars: &dyn EnvSource,
    process: Process,
) -> Result<AppConfig, ConfigError> {
    let tree = ConfigTree::read(root)?;
    load_tree(&tree, root, root.parent().unwrap_or(root), env, vars, process)
}

/// [`load_for`] over files already in memory. `origin` names the folder
/// in problems (`file` = `origin/base/...`); relative storage and key paths
/// resolve against `project_root`.
pub fn load_tree(
    tree: &ConfigTree,
    origin: &Path,
    project_root: &Path,
    env: Environment,
    vars: &dyn EnvSource,
    process: Process,
) -> Result<AppConfig, ConfigError> {
    let loader = Loader {
        tree,
        root: origin,
        env,
        vars,
        process,
    };
    let mut problems = Vec::new();
    loader.check_env_folder(&mut problems);

    macro_rules! file {
        ($name:literal) => {
            loader
                .load_file($name)
                .map_err(|mut p| problems.append(&mut p))
                .ok()
        };
    }
    let core_policy = file!("core_policy.yaml");
    let universe = file!("universe.yaml");
    let cost_table = file!("cost_table.yaml");
    let redis = file!("redis.yaml");
    let database = file!("database.yaml");
    let storage: Option<StorageConfig> = file!("storage.yaml");
    let notifications = file!("notifications.yaml");
    let metrics = file!("metrics.yaml");
    let sources = file!("sources.yaml");
    let daemon = file!("daemon.yaml");
    let control = file!("control.yaml");
    let trust = file!("trust.yaml");

    let (
        Some(core_policy),
        Some(universe),
        Some(cost_table),
        Some(redis),
        Some(database),
        Some(mut storage),
        Some(notifications),
        Some(metrics),
        Some(sources),
        Some(daemon),
        Some(control),
        Some(trust),
    ) = (
        core_policy,
        universe,
        cost_table,
        redis,
        database,
        storage,
        notifications,
        metrics,
        sources,
        daemon,
        control,
        trust,
    )
    else {
        return Err(ConfigError { problems });
    };
    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }
    storage.resolve_relative(project_root);
    let mut control: ControlConfig = control;
    if control.retrain.dataset.is_relative() {
        control.retrain.dataset = storage.datasets_root.join(&control.retrain.dataset);
    }
    let tls_files = control
        .tls
        .as_mut()
        .map(|t| [&mut t.cert_file, &mut t.key_file])
        .into_iter()
        .flatten();
    for key_file in [
        &mut control.config_changes.repository,
        &mut control.config_changes.deploy_dir,
        &mut control.rollback_signing.key_file,
        &mut control.audit_checkpoints.key_file,
        &mut control.retrain.signing_key_file,
    ]
    .into_iter()
    .chain(tls_files)
    .chain(control.config_api.as_mut().and_then(|a| a.ca_file.as_mut()))
    {
        if key_file.is_relative() {
            *key_file = project_root.join(&*key_file);
        }
    }
    let config = AppConfig {
        environment: env,
        core_policy,
        universe,
        cost_table,
        redis,
        database,
        storage,
        notifications,
        metrics,
        sources,
        daemon,
        control,
        trust,
    };
    let problems = validate::validate(&config, &|file| loader.base_path(file));
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError { problems })
    }
}

struct Loader<'a> {
    tree: &'a ConfigTree,
    root: &'a Path,
    env: Environment,
    vars: &'a dyn EnvSource,
    process: Process,
}

impl Loader<'_> {
    fn base_path(&self, file: &str) -> PathBuf {
        self.root.join("base").join(file)
    }

    fn env_dir(&self) -> PathBuf {
        self.root.join("envs").join(self.env.as_str())
    }

    /// The environment folder must exist (an empty one is fine) and hold only
    /// files that override a base file: a typo'd file name would otherwise be
    /// silently ignored.
    fn check_env_folder(&self, problems: &mut Vec<ConfigProblem>) {
        let env = self.env.as_str();
        if !self.tree.has_env(env) {
            problems.push(ConfigProblem {
                code: ConfigCode::FileMissing,
                file: self.env_dir(),
                key: String::new(),
                message: "environment folder does not exist".into(),
            });
            return;
        }
        for name in self.tree.env_files(env) {
            if !FILES.contains(&name) {
                problems.push(ConfigProblem {
                    code: ConfigCode::FileUnknown,
                    file: self.env_dir().join(name),
                    key: String::new(),
                    message: format!("not a known config file (expected one of: {})", FILES.join(", ")),
                });
            }
        }
    }

    fn read_yaml(&self, rel: &str, required: bool) -> Result<Option<Value>, ConfigProblem> {
        let path = self.root.join(rel);
        let Some(text) = self.tree.get(rel) else {
            if !required {
                return Ok(None);
            }
            return Err(ConfigProblem {
                code: ConfigCode::FileMissing,
                file: path,
                key: String::new(),
                message: "required file does not exist".into(),
            });
        };
        serde_norway::from_str::<Value>(text)
            .map(Some)
            .map_err(|e| ConfigProblem {
                code: ConfigCode::YamlInvalid,
                file: path,
                key: String::new(),
                message: e.to_string(),
            })
    }

    fn load_file<T: DeserializeOwned>(&self, name: &str) -> Result<T, Vec<ConfigProblem>> {
        let base_path = self.base_path(name);
        let env_path = self.env_dir().join(name);
        let base = self
            .read_yaml(&format!("base/{name}"), true)
            .map_err(|p| vec![p])?
            .unwrap_or(Value::Null);
        let overlay = self
            .read_yaml(&format!("envs/{}/{name}", self.env.as_str()), false)
            .map_err(|p| vec![p])?;
        let mut merged = base;
        if let Some(over) = overlay.clone() {
            if !over.is_null() {
                merge::deep_merge(&mut merged, over);
            }
        }
        let scope = secret::ResolveScope::enter(self.env, self.vars, &merged);
        let result = serde_path_to_error::deserialize::<_, T>(merged.clone());
        let unset = scope.finish();
        let file_of = |key: &str| match &overlay {
            // Name the file the offending key came from: the override when it
            // sets that key, the base file otherwise.
            Some(over) if merge::has_path(over, key) => env_path.clone(),
            _ => base_path.clone(),
        };
        let needed = self.process.needs_secrets_of(name);
        let mut problems: Vec<ConfigProblem> = secret::references(&merged)
            .into_iter()
            .filter(|(_, name)| needed && unset.contains(name))
            .map(|(key, name)| ConfigProblem {
                code: ConfigCode::SecretUnset,
                file: file_of(&key),
                message: format!("environment variable {name} is not set (referenced as ${name})"),
                key,
            })
            .collect();
        match result {
            Ok(value) if problems.is_empty() => Ok(value),
            Ok(_) => Err(problems),
            Err(err) => {
                let problem = classify(&err.path().to_string(), &err.inner().to_string());
                problems.push(ConfigProblem {
                    file: file_of(&problem.key),
                    ..problem
                });
                Err(problems)
            }
        }
    }
}

/// Turns a serde error (path + message) into a typed problem. serde's own
/// error constructors give stable message prefixes (`missing field`,
/// `unknown field`); secrets carry their code explicitly.
fn classify(path: &str, message: &str) -> ConfigProblem {
    let path = if path == "." { "" } else { path };
    let join = |field: &str| {
        if path.is_empty() {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        }
    };
    let backticked = |m: &str| m.split('`').nth(1).map(str::to_owned);
    let mk = |code, key: String, message: String| ConfigProblem {
        code,
        file: PathBuf::new(),
        key,
        message,
    };

    if let Some((code, detail)) = message.split_once(secret::CODE_SEP) {
        let code = match code {
            "CONFIG_SECRET_LITERAL" => ConfigCode::SecretLiteral,
            _ => ConfigCode::SecretInvalid,
        };
        return mk(code, path.to_owned(), detail.to_owned());
    }
    // A checked identifier (`mlcore_market::IdError`) that broke its rule.
    if ["invalid symbol `", "invalid strategy id `", "invalid model id `"]
        .iter()
        .any(|p| message.starts_with(p))
    {
        return mk(ConfigCode::ValueInvalid, path.to_owned(), message.to_owned());
    }
    if message.starts_with("missing field") {
        let field = backticked(message).unwrap_or_default();
        return mk(
            ConfigCode::KeyMissing,
            join(&field),
            format!("required key `{field}` is missing"),
        );
    }
    if message.starts_with("unknown field") {
        let field = backticked(message).unwrap_or_default();
        // serde_path_to_error already descended into the unknown key.
        let key = if path.ends_with(&field) {
            path.to_owned()
        } else {
            join(&field)
        };
        return mk(ConfigCode::KeyUnknown, key, message.to_owned());
    }
    mk(ConfigCode::TypeInvalid, path.to_owned(), message.to_owned())
}
