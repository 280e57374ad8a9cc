//! `daemon.yaml` and `control.yaml`: how each process runs.

use serde::{Deserialize, Serialize};

use super::secret::Secret;

/// The whole of `daemon.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Identifies this daemon in heartbeats and metrics.
    pub instance_id: String,
    /// Market data ingress.
    pub ingress: IngressConfig,
    /// Core pinning.
    pub threads: ThreadsConfig,
    /// Queue capacities between stages.
    pub queues: QueuesConfig,
    /// What drives decisions.
    pub decision: DecisionConfig,
    /// How model heads are evaluated.
    pub scoring: ScoringConfig,
}

/// How model heads are evaluated (the backtester reads it too, so that it
/// scores as the daemon does).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringConfig {
    /// `native`: heads the artifact ships native parameters for are
    /// compiled at load and serve once they agree with ONNX Runtime on the
    /// artifact's validation rows (any other head, or a disagreement, runs
    /// on ONNX Runtime, logged and counted). `onnx`: ONNX Runtime only.
    pub backend: ScoringBackend,
    /// The widest instruction set the native tree kernels may use; a CPU
    /// without it uses the widest it has. `avx2` is for hosts whose cores
    /// lower their clock for 512-bit work (Skylake-SP, Cascade Lake), where
    /// the slower clock costs the other threads more than AVX-512 saves.
    pub max_instruction_set: MaxInstructionSet,
}

/// The widest instruction set the native tree kernels may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxInstructionSet {
    /// AVX-512 F + CD where the CPU has them (the widest form).
    Avx512,
    /// AVX2 at most.
    Avx2,
    /// The target's baseline (SSE2 on x86-64).
    Baseline,
}

/// Which backend evaluates a model's heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoringBackend {
    /// Compiled native heads where the artifact allows, else ONNX Runtime.
    Native,
    /// ONNX Runtime for every head.
    Onnx,
}

/// Market data ingress listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressConfig {
    /// `host:port` to listen on.
    pub listen: String,
    /// Connections beyond this are refused.
    pub max_connections: u32,
    /// Frames larger than this close the connection.
    pub max_frame_bytes: u32,
}

/// Which cores the hot threads are pinned to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadsConfig {
    /// Ingress (decode + features) thread.
    pub ingress_core: usize,
    /// One inference worker per entry.
    pub worker_cores: Vec<usize>,
    /// Publisher thread.
    pub publisher_core: usize,
    /// Cores for the side runtime (metrics, control, model loading); it avoids
    /// the hot cores whenever the machine has others.
    pub side_cores: Vec<usize>,
    /// `SCHED_FIFO` priority (1-99) for the hot threads, so that a woken hot
    /// thread runs at once instead of waiting for a normal task's slice; 0
    /// keeps the normal scheduler. The hot threads block between events,
    /// and the kernel's real-time throttling bounds them if one ever spun.
    /// Needs `CAP_SYS_NICE` or an `RLIMIT_RTPRIO` that allows it; without,
    /// the daemon says so and runs them normally.
    pub realtime_priority: u8,
}

/// Bounded queue capacities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueuesConfig {
    /// Decision requests to workers.
    pub decisions: usize,
    /// Decided batches to the publisher.
    pub publish: usize,
}

/// What triggers a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionConfig {
    /// `trigger` (frames from the feed) or `timer`.
    pub mode: DecisionMode,
    /// Period when `mode` is `timer`.
    pub timer_interval_ms: u64,
}

/// What triggers a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionMode {
    /// Decision trigger frames (deterministic replays).
    Trigger,
    /// A local timer.
    Timer,
}

/// The whole of `control.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// `host:port` of the HTTP API.
    pub listen: String,
    /// Requests with larger bodies get 413.
    pub max_body_bytes: usize,
    /// Two-person approvals.
    pub approvals: ApprovalsConfig,
    /// Per-principal limit on mutating requests.
    pub rate_limit: RateLimitConfig,
    /// Failed authentication, per source address: throttled, and a burst
    /// alerted.
    pub failed_auth: FailedAuthConfig,
    /// Refused requests the handlers did not audit themselves (401, 404,
    /// malformed bodies, 429...) are audited aggregated: one row per
    /// source, route, status and code per this many seconds.
    pub refused_audit_window_s: u64,
    /// A daemon whose heartbeat is older than this raises a critical alert.
    pub heartbeat_missing_after_ms: u64,
    /// Who may call the API.
    pub principals: Vec<Principal>,
    /// The key that signs rollback authorisations.
    pub rollback_signing: RollbackSigningConfig,
    /// Signed checkpoints of the audit log's head.
    pub audit_checkpoints: AuditCheckpointConfig,
    /// HTTPS for the API; required outside dev (`None`: plain HTTP).
    pub tls: Option<TlsConfig>,
    /// A second factor (TOTP) for approvals and break-glass.
    pub second_factor: SecondFactorConfig,
    /// The retraining flow (`retrain`, `POST /v1/retrain`, the schedule).
    pub retrain: RetrainConfig,
    /// Config change requests (docs/config-changes.md).
    pub config_changes: ConfigChangesConfig,
    /// An external Config API the requests are mirrored to (`None`: none).
    pub config_api: Option<ConfigApiConfig>,
    /// Observability automation: latency monitoring, the weekly report,
    /// the dashboard datasets, the analytics API's cache.
    pub observability: crate::ObservabilityJobsConfig,
}

/// An external Config API: every state change of a config change request is
/// sent there (`PUT {base_url}/change-requests/{id}`, the request as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigApiConfig {
    /// `https://...` (plain `http://` only in dev).
    pub base_url: String,
    /// Bearer token, a `$VAR` reference.
    pub token: crate::Secret,
    /// Per attempt (connect, send, answer).
    pub timeout_seconds: f64,
    /// Attempts after the first on a 5xx, a 429, a timeout or a refused
    /// connection; other answers are final.
    pub retries: u32,
    /// Wait before the first retry; doubled each time.
    pub backoff_ms: u64,
    /// Verify the server's certificate (`false` refused outside dev).
    pub verify_ssl: bool,
    /// PEM CA the server's certificate must chain to instead of the public
    /// roots (relative paths as the key files).
    pub ca_file: Option<std::path::PathBuf>,
}

/// Config change requests: where the configuration's history lives, where
/// it is deployed, and the rules a change follows there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigChangesConfig {
    /// The git repository holding the `configs/` tree (`base/`, `envs/`),
    /// created from `deploy_dir`'s content when absent. Relative paths are
    /// resolved against the folder that holds `configs/`.
    pub repository: std::path::PathBuf,
    /// The branch this environment's changes merge into.
    pub branch: String,
    /// The `configs/` folder this environment's processes read: `apply`
    /// writes the merged tree there (then `DEPLOYED.json`). Relative as
    /// `repository`.
    pub deploy_dir: std::path::PathBuf,
    /// A request not merged within this many hours of its creation expires.
    pub ttl_h: u64,
    /// How long `apply` waits for every running daemon to take (or refuse)
    /// the new version before it reverts.
    pub apply_timeout_ms: u64,
    /// When high-risk changes may be applied (UTC).
    pub change_window: ChangeWindow,
}

/// Days and hours (UTC) inside which a high-risk change may be applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeWindow {
    /// Days of the week: `mon` … `sun`.
    pub days: Vec<Weekday>,
    /// Opens at `HH:MM`.
    pub start: String,
    /// Closes at `HH:MM` (`24:00`: midnight at the end of the day).
    pub end: String,
}

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

/// `HH:MM` as minutes of the day (`24:00` is 1440).
pub fn minutes_of_day(hhmm: &str) -> Option<u32> {
    let (h, m) = hhmm.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

impl ChangeWindow {
    /// Whether the window is open at `unix_ms`.
    pub fn is_open(&self, unix_ms: u64) -> bool {
        use chrono::{Datelike, Timelike};
        let Some(t) = chrono::DateTime::from_timestamp_millis(unix_ms as i64) else {
            return false;
        };
        let day = match t.weekday() {
            chrono::Weekday::Mon => Weekday::Mon,
            chrono::Weekday::Tue => Weekday::Tue,
            chrono::Weekday::Wed => Weekday::Wed,
            chrono::Weekday::Thu => Weekday::Thu,
            chrono::Weekday::Fri => Weekday::Fri,
            chrono::Weekday::Sat => Weekday::Sat,
            chrono::Weekday::Sun => Weekday::Sun,
        };
        let minute = t.hour() * 60 + t.minute();
        match (minutes_of_day(&self.start), minutes_of_day(&self.end)) {
            (Some(a), Some(b)) => self.days.contains(&day) && a <= minute && minute < b,
            _ => false,
        }
    }
}

/// How the retraining flow trains, searches and signs, and when it runs by
/// itself (docs/retraining.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrainConfig {
    /// The dataset folder a run trains on, relative to storage.yaml's
    /// `datasets_root` (or absolute).
    pub dataset: std::path::PathBuf,
    /// The secret key that signs an adopted candidate; trust.yaml must
    /// list it with purpose `model`. Relative paths are resolved against
    /// the folder that holds `configs/`.
    pub signing_key_file: std::path::PathBuf,
    /// Decision cadence of the training samples, data-time ms.
    pub decision_every_ms: u64,
    /// Label horizon, quotes ahead.
    pub horizon: usize,
    /// Days a retrained model stays valid.
    pub valid_days: u32,
    /// Folds of the purged k-fold cross-validation (the validation step).
    pub folds: usize,
    /// LightGBM's tree parameters.
    pub trees: RetrainTrees,
    /// The θ search, the backtest and champion/challenger.
    pub search: RetrainSearch,
    /// Start runs by themselves (`None`: only on request).
    pub schedule: Option<RetrainSchedule>,
}

/// LightGBM's tree parameters for retraining.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrainTrees {
    /// Leaves per tree.
    pub num_leaves: usize,
    /// Shrinkage.
    pub learning_rate: f64,
    /// Fewest rows in a leaf.
    pub min_data_in_leaf: usize,
    /// Most trees (early stopping on the calibration segment stops sooner).
    pub max_trees: usize,
}

/// How the flow's backtests and θ search run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrainSearch {
    /// Decision cadence of the backtests, data-time ms.
    pub every_ms: u64,
    /// From decision to order, ms.
    pub latency_ms: u64,
    /// Points per axis of the coarse grid.
    pub grid: usize,
    /// TPE trials after the grid.
    pub trials: usize,
    /// Fewest fills a θ must trade.
    pub min_fills: usize,
    /// Deepest drawdown a θ may have, units of capital.
    pub max_drawdown: f64,
    /// Seed of the sampler.
    pub seed: u64,
}

/// When the control plane starts retraining by itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrainSchedule {
    /// A cron expression, UTC (five fields, or six with seconds first),
    /// e.g. `0 30 5 * * MON-FRI`.
    pub cron: String,
    /// The strategies to retrain, one run each, one after another.
    pub strategies: Vec<String>,
}

/// The API's certificate (rustls). Both files are PEM; they are read again
/// when either changes, without a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, leaf first. Relative paths are resolved against
    /// the folder that holds `configs/`.
    pub cert_file: std::path::PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: std::path::PathBuf,
    /// Seconds between checks of the files for a change.
    pub reload_check_s: u64,
}

/// Whether approvals and break-glass need a one-time code (RFC 6238 TOTP:
/// SHA-1, 6 digits, 30 s, one step of clock skew either way; each code
/// usable once), from the principal's enrolled `totp` secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecondFactorConfig {
    /// Required for approving or rejecting a request, and for `ops
    /// set-mode` (break-glass).
    pub required: bool,
}

/// How `serve` checkpoints the audit log's head: signed, into the WORM
/// archive and Redis, so `audit verify` notices the newest rows deleted
/// even together with their archive files. The key must be trusted with
/// the `audit_checkpoint` purpose in `trust.yaml` for `verify` to believe
/// a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditCheckpointConfig {
    /// Secret key file (`models keygen` writes one). Relative paths are
    /// resolved against the folder that holds `configs/`.
    pub key_file: std::path::PathBuf,
    /// Seconds between checkpoints (one more at shutdown).
    pub interval_s: u64,
}

/// How the control plane signs rollback authorisations. The key must be
/// trusted with the `rollback` purpose in `trust.yaml` for daemons to accept
/// them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackSigningConfig {
    /// Secret key file (`models keygen` writes one). Relative paths are
    /// resolved against the folder that holds `configs/`.
    pub key_file: std::path::PathBuf,
    /// An authorisation is usable this long after it is issued.
    pub authorization_ttl_s: u64,
}

/// Two-person approval settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// A pending request expires after this.
    pub ttl_s: u64,
    /// Warn this long before a pending request expires.
    pub expiry_warning_s: u64,
}

/// Token bucket per principal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained mutating requests per minute.
    pub per_minute: u32,
    /// Burst size.
    pub burst: u32,
}

/// Failed authentication per source address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailedAuthConfig {
    /// Failures a source may make in a row before it is throttled.
    pub burst: u32,
    /// Failures per minute it may keep making after that.
    pub per_minute: u32,
    /// Failures from one source within a minute that raise an alert.
    pub alert_after: u32,
}

/// A caller of the control API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    /// Name recorded in the audit log.
    pub name: String,
    /// Roles held.
    pub roles: Vec<Role>,
    /// How the bearer token is checked.
    pub credential: Credential,
    /// Enrolled TOTP secret (base32, as authenticator apps take it), a
    /// `$VAR` reference; needed when `second_factor.required`.
    #[serde(default)]
    pub totp: Option<Secret>,
}

/// Control-plane roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads state.
    Viewer,
    /// Requests and applies safety actions.
    Operator,
    /// Approves others' requests.
    Approver,
    /// Everything, including registry and config administration.
    Admin,
}

/// A principal's bearer token: either the token itself (from the environment)
/// or its sha256, so a config file never has to hold a usable token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", deny_unknown_fields, rename_all = "snake_case")]
pub enum Credential {
    /// The token, as a `$VAR` reference: `{kind: token, value: "$VAR"}`.
    Token {
        /// The token.
        value: Secret,
    },
    /// Hex sha256 of the token: `{kind: sha256, value: "ab12..."}`.
    Sha256 {
        /// 64 hex digits.
        value: String,
    },
}
