//! The command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// ml-assets-core control plane.
#[derive(Debug, Parser)]
#[command(name = "mlcore-control", version, about)]
pub struct Cli {
    /// The `configs/` folder (holding `base/` and `envs/`).
    #[arg(long, global = true, env = "MLCORE_CONFIG_DIR", default_value = "configs")]
    pub config_dir: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Market data tools.
    #[command(subcommand)]
    Data(DataCommand),
    /// Model artifact tools: keys, signing, verification.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Train ai1/ai2 on a dataset, export to ONNX, sign and verify.
    Train(TrainArgs),
    /// Ops modes, directly through the guard (break-glass; no approvals).
    #[command(subcommand)]
    Ops(OpsCommand),
    /// Serve the HTTP API (`control.yaml` `listen`); run `db migrate` first.
    Serve {
        /// Environment.
        #[arg(long)]
        env: String,
    },
    /// Database administration.
    #[command(subcommand)]
    Db(DbCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Redis deployment steps: the guard library and the users.
    #[command(subcommand)]
    Redis(RedisCommand),
    /// Research stages on a dataset (docs/research.md).
    #[command(subcommand)]
    Research(ResearchCommand),
    /// Retrain a strategy: the flow's eleven steps (dataset gate, features,
    /// labels, validation, training, export, θ search, backtest with stress,
    /// champion/challenger, sign, register), each reused when its inputs
    /// did not change; writes runs/<run_id>/ with report.html and appends
    /// runs/index.csv (docs/retraining.md). Exit 0: registered; 10: the
    /// candidate lost to the active model; 11: a step failed.
    Retrain(RetrainArgs),
    /// Observability automation, one job at a time (docs/runbook/observability.md).
    /// Prints the run's record (JSON) on stdout, diagnostics on stderr;
    /// every run appends it to automation_runs.log. Exit 0: ok or skipped
    /// (another run holds the job's lock); 12: the job failed.
    #[command(subcommand)]
    Observe(ObserveCommand),
    /// The daily workflow: with `--observability`, latency sampling, the
    /// dashboard export and the weekly report, in that order. Prints the
    /// records (JSON array); exit 12 when any job failed.
    RunDaily(RunDailyArgs),
}

/// `run-daily`.
#[derive(Debug, Args)]
pub struct RunDailyArgs {
    /// Environment.
    #[arg(long)]
    pub env: String,
    /// Run the observability jobs (the only part of the daily workflow
    /// this command runs; required so a script says what it runs).
    #[arg(long, required = true)]
    pub observability: bool,
    /// Write every delivery (the latency alert, the weekly webhook, the
    /// upload) to files under out_root instead of sending it.
    #[arg(long)]
    pub dry_run: bool,
}

/// `observe ...`
#[derive(Debug, Subcommand)]
pub enum ObserveCommand {
    /// Sample trigger -> Redis latency from the signal streams, roll up the
    /// hours, rotate, evaluate the SLO (2 breaching runs in a row: warning;
    /// 3: critical), write the heartbeat.
    Latency {
        /// Environment.
        #[arg(long)]
        env: String,
        /// Write the alert payload to out/latency_alerts/<job_id>.json
        /// instead of sending it.
        #[arg(long)]
        dry_run_alert: bool,
    },
    /// Build the weekly health report, validate it against its schema,
    /// sign it and deliver it to the webhook; keep it in
    /// weekly_report_history/.
    WeeklyReport {
        /// Environment.
        #[arg(long)]
        env: String,
        /// The week's Monday (YYYY-MM-DD; default: this week).
        #[arg(long)]
        week_start: Option<chrono::NaiveDate>,
        /// Write the signed report to out/weekly_report/<job_id>.json
        /// instead of sending it.
        #[arg(long)]
        dry_run_webhook: bool,
    },
    /// Export the dashboard datasets with their manifest, keep the bundle
    /// in the history, run the upload command.
    Dashboard {
        /// Environment.
        #[arg(long)]
        env: String,
        /// A dataset (repeatable; default: all): ev_history, slippage,
        /// turnover, latency_rollups.
        #[arg(long = "dataset", value_parser = parse_dataset)]
        datasets: Vec<mlcore_observe::dashboard::Dataset>,
        /// Do not run the upload command.
        #[arg(long)]
        dry_run_upload: bool,
    },
    /// Check a dashboard bundle's files against its manifest (exit 13 when
    /// they differ); with --restore, put back the newest bundle of the
    /// history that verifies.
    VerifyDashboard {
        /// Environment.
        #[arg(long)]
        env: String,
        /// The bundle (default: the current one, out_root/dashboard).
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// Restore the last good bundle when the current one fails.
        #[arg(long)]
        restore: bool,
    },
}

fn parse_dataset(s: &str) -> Result<mlcore_observe::dashboard::Dataset, String> {
    mlcore_observe::dashboard::Dataset::parse(s)
        .ok_or_else(|| format!("`{s}` is not a dataset: ev_history, slippage, turnover or latency_rollups"))
}

/// `retrain`.
#[derive(Debug, Args)]
pub struct RetrainArgs {
    /// Environment (control.yaml `retrain` says what and how).
    #[arg(long)]
    pub env: String,
    /// Strategy id from universe.yaml.
    #[arg(long)]
    pub strategy: String,
    /// Continue an interrupted (or failed) run: finished steps are reused,
    /// the rest run.
    #[arg(long, value_name = "RUN_ID")]
    pub resume: Option<String>,
    /// Print each step's key and whether it would run; do nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With `--dry-run`: the plan as JSON (steps, keys, whether cached,
    /// and how many units the fanned-out steps have).
    #[arg(long, requires = "dry_run")]
    pub json: bool,
    /// Create the run and print `{"run_id": ...}`; run nothing (a
    /// scale-out then drives it with `--step` and `--unit`).
    #[arg(long, conflicts_with_all = ["resume", "dry_run", "step", "unit"])]
    pub create: bool,
    /// With `--resume`: run only this step (the steps before it must be
    /// done); `register` finishes the run.
    #[arg(long, requires = "resume", conflicts_with = "unit")]
    pub step: Option<String>,
    /// With `--resume`: compute one unit of a fanned-out step into the
    /// step store — `fold:I` (validation) or `trial:I` (θ grid).
    #[arg(long, requires = "resume")]
    pub unit: Option<String>,
    /// With `--resume`: print the run's manifest (JSON); run nothing.
    #[arg(long, requires = "resume", conflicts_with_all = ["dry_run", "step", "unit"])]
    pub show: bool,
    /// Who starts the run (recorded in the run and the audit log).
    #[arg(long, default_value = "cli")]
    pub actor: String,
    /// No progress bars even on a terminal.
    #[arg(long)]
    pub quiet: bool,
}

/// `research ...`
#[derive(Debug, Subcommand)]
pub enum ResearchCommand {
    /// Cross-validate ai1 on triple-barrier labels without leakage: the
    /// point-in-time check, then purged k-fold (with embargo) or
    /// walk-forward; per-fold index ranges, stitched out-of-sample AUC,
    /// log loss, Brier score, calibration error and reliability diagram,
    /// as JSON.
    Cv(CvArgs),
    /// Replay a dataset (or a feed's capture) through the daemon's
    /// features, the model's ONNX heads and the decision crate, fill at the
    /// next quote after the latency with the cost table's costs, and report
    /// the base case beside the stress scenarios: prints the headline
    /// figures, writes portfolio_summary.json, positions.csv, equity.csv
    /// and daily_pnl.csv.
    Backtest(BacktestArgs),
    /// Search θ for a model on the first half of its held-out window: a
    /// coarse grid, then TPE, within core_policy.yaml's bounds and max_step
    /// of the current θ, under the trade and drawdown constraints and the
    /// bootstrap guard; then the chosen θ on the second half. Prints every
    /// trial, the verdict and the held-out figures as JSON.
    Theta(ThetaArgs),
}

/// `research theta`.
#[derive(Debug, Args)]
pub struct ThetaArgs {
    /// Environment (universe, costs, policy, trust).
    #[arg(long)]
    pub env: String,
    /// The model artifact folder.
    #[arg(long)]
    pub artifact: PathBuf,
    /// Dataset folder (with dataset_index.json).
    #[arg(long)]
    pub dataset: PathBuf,
    /// How to search.
    #[command(flatten)]
    pub search: SearchArgs,
    /// Write the report (JSON) here as well as to stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// How a θ search runs (`research theta`, `train --search-theta`).
#[derive(Debug, Clone, Args)]
pub struct SearchArgs {
    /// Decision cadence of the backtest, data-time ms.
    #[arg(long = "search-every-ms", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub every_ms: u64,
    /// Latency of the backtest, ms.
    #[arg(long = "search-latency-ms", default_value_t = 250)]
    pub latency_ms: u64,
    /// Points per axis of the coarse grid.
    #[arg(long, default_value_t = 5)]
    pub grid: usize,
    /// TPE trials after the grid.
    #[arg(long, default_value_t = 30)]
    pub trials: usize,
    /// Fewest fills a θ must trade to be considered.
    #[arg(long, default_value_t = 50)]
    pub min_fills: usize,
    /// Deepest drawdown allowed, units of capital.
    #[arg(long, default_value_t = 0.05)]
    pub max_drawdown: f64,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 20_261_205)]
    pub seed: u64,
}

impl SearchArgs {
    /// The settings the research crate takes (`control.yaml retrain.search`'s shape).
    pub fn settings(&self) -> mlcore_config::RetrainSearch {
        mlcore_config::RetrainSearch {
            every_ms: self.every_ms,
            latency_ms: self.latency_ms,
            grid: self.grid,
            trials: self.trials,
            min_fills: self.min_fills,
            max_drawdown: self.max_drawdown,
            seed: self.seed,
        }
    }
}

/// `research backtest`.
#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// Environment (universe, costs, policy, trust).
    #[arg(long)]
    pub env: String,
    /// The model artifact folder (verified against the environment's trust).
    #[arg(long)]
    pub artifact: PathBuf,
    /// Dataset folder (with dataset_index.json).
    #[arg(long, required_unless_present = "capture", conflicts_with = "capture")]
    pub dataset: Option<PathBuf>,
    /// A capture written by `mlcore-feed --capture`: replayed exactly as the
    /// daemon received it (every decision measured, no stress scenarios).
    #[arg(long)]
    pub capture: Option<PathBuf>,
    /// θ1 to decide with (default: core_policy.yaml's `theta.per_strategy` for the strategy, else the model's).
    #[arg(long)]
    pub theta1: Option<f64>,
    /// θ2 to decide with (default: as θ1).
    #[arg(long)]
    pub theta2: Option<f64>,
    /// Decision cadence in data time, ms.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub decision_every_ms: u64,
    /// From decision to order at the market, ms.
    #[arg(long, default_value_t = 250)]
    pub latency_ms: u64,
    /// `held-out`: the second half of the model's held-out window (from its
    /// manifest), which `--search-theta` never saw; `test`: all of the
    /// held-out window; `all`: the whole dataset.
    #[arg(long, default_value = "held-out")]
    pub window: String,
    /// Leave the stress scenarios out.
    #[arg(long)]
    pub no_stress: bool,
    /// Output folder (created).
    #[arg(long)]
    pub out: PathBuf,
}

/// `research cv`.
#[derive(Debug, Args)]
pub struct CvArgs {
    /// Environment (universe).
    #[arg(long)]
    pub env: String,
    /// Dataset folder (with dataset_index.json).
    #[arg(long)]
    pub dataset: PathBuf,
    /// Strategy id from universe.yaml.
    #[arg(long)]
    pub strategy: String,
    /// `kfold` (purged, embargoed), `expanding` or `rolling` walk-forward.
    #[arg(long, default_value = "kfold")]
    pub scheme: String,
    /// Folds (test blocks).
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Training samples of a rolling window.
    #[arg(long, default_value_t = 5_000)]
    pub window: usize,
    /// Decision cadence, ms.
    #[arg(long, default_value_t = 60_000)]
    pub decision_every_ms: u64,
    /// Vertical barrier, quotes ahead.
    #[arg(long, default_value_t = 12)]
    pub horizon: usize,
    /// Profit-take barrier, multiples of σ.
    #[arg(long, default_value_t = 1.0)]
    pub profit_take: f64,
    /// Stop-loss barrier, multiples of σ.
    #[arg(long, default_value_t = 1.0)]
    pub stop_loss: f64,
    /// Quotes in σ's window.
    #[arg(long, default_value_t = 100)]
    pub sigma_window: usize,
    /// Embargo after each test block, decisions.
    #[arg(long, default_value_t = 12)]
    pub embargo: i64,
    /// The trees' shape.
    #[command(flatten)]
    pub trees: TreeArgs,
    /// Trees of ai1 (cross-validation folds fit exactly this many).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_trees: u64,
    /// Write the report (JSON) here as well as to stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `redis ...`
#[derive(Debug, Subcommand)]
pub enum RedisCommand {
    /// Load (or upgrade) the guard library and check it answers. With
    /// `guard_install: explicit` (redis.yaml) the processes never do this
    /// themselves.
    InstallGuard {
        /// Environment.
        #[arg(long)]
        env: String,
        /// The variable holding the URL of a Redis user that may
        /// `FUNCTION LOAD`; redis.yaml's url when it is unset.
        #[arg(long, default_value = "MLCORE_REDIS_ADMIN_URL")]
        url_env: String,
    },
    /// Print the ACL file (daemon, control, consumer, guard installer
    /// users) for the environment's namespace.
    Acl {
        /// Environment.
        #[arg(long)]
        env: String,
    },
}

/// `db ...`
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Apply pending migrations (schemas core and audit).
    Migrate {
        /// Environment.
        #[arg(long)]
        env: String,
    },
}

/// `audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain and that the WORM archive agrees; names the first bad row.
    Verify {
        /// Environment.
        #[arg(long)]
        env: String,
    },
    /// Apply retention (database.yaml): remove expired events from the
    /// front of the chain, keeping it verifiable. The WORM archive keeps all.
    Retain {
        /// Environment.
        #[arg(long)]
        env: String,
    },
}

/// `ops ...`
#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// Compare-and-set a strategy's mode directly in Redis (break-glass; no approval, no API).
    SetMode(SetModeArgs),
    /// Ask the API for an action (halt, reduce_only, flatten, resume, rollback).
    Request {
        /// API base URL, e.g. http://127.0.0.1:8080.
        #[arg(long, env = "MLCORE_CONTROL_URL")]
        url: String,
        /// Action.
        #[arg(long)]
        action: String,
        /// Strategy id or `global`.
        #[arg(long)]
        scope: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Approve a pending request (needs the approver role; not your own).
    Approve {
        /// API base URL.
        #[arg(long, env = "MLCORE_CONTROL_URL")]
        url: String,
        /// Request id.
        #[arg(long)]
        id: String,
    },
    /// Reject a pending request.
    Reject {
        /// API base URL.
        #[arg(long, env = "MLCORE_CONTROL_URL")]
        url: String,
        /// Request id.
        #[arg(long)]
        id: String,
    },
    /// Each strategy's mode and what the daemons report.
    Status {
        /// API base URL.
        #[arg(long, env = "MLCORE_CONTROL_URL")]
        url: String,
    },
}

/// `ops set-mode` arguments.
#[derive(Debug, Args)]
pub struct SetModeArgs {
    /// Environment (Redis address and namespace).
    #[arg(long)]
    pub env: String,
    /// Strategy id.
    #[arg(long)]
    pub strategy: Option<String>,
    /// Every strategy of the universe.
    #[arg(long)]
    pub all: bool,
    /// New mode.
    #[arg(long)]
    pub mode: String,
    /// Why (recorded in the ops hash and the event).
    #[arg(long)]
    pub reason: String,
    /// Who.
    #[arg(long)]
    pub actor: String,
}

/// `config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate one environment and print the resolved tree (secrets redacted).
    /// Exit code 0 only when the configuration is valid.
    Check {
        /// Environment: dev, stg or prod.
        #[arg(long)]
        env: String,
        /// Print only the verdict, not the resolved tree.
        #[arg(long)]
        quiet: bool,
        /// Check one process's view: only the secrets it uses must be set
        /// (all, daemon, control, break-glass, database, offline).
        #[arg(long, default_value = "all")]
        process: mlcore_config::Process,
    },
    /// Create the config repository from a configs folder (default: the
    /// `--config-dir`) and deploy it into control.yaml's
    /// `config_changes.deploy_dir` when that is empty. Idempotent.
    Init {
        /// Environment whose control.yaml names the repository.
        #[arg(long)]
        env: String,
    },
    /// Propose a change: a draft request with the edits (`--submit` also
    /// submits it). Through the API, as `$MLCORE_TOKEN`.
    Propose {
        /// API base URL.
        #[arg(long, env = "MLCORE_CONTROL_URL")]
        url: String,
        /// What it does, in a line.
        #[arg(long)]
        title: String,
        /// `FILE:KEY=VALUE`: set one key, e.g.
        /// `envs/dev/core_policy.yaml:theta.per_strategy.fx_g10.theta1=0.6`.
        #[arg(long = "set", value_name = "FILE:KEY=VALUE")]
        sets: Vec<String>,
        /// `FILE=LOCAL_PATH`: replace a file whole with a local file's text.
        #[arg(long = "file", value_name = "FILE=LOCAL_PATH")]
        files: Vec<String>,
        /// Remove an environment override file.
        #[arg(long = "delete", value_name = "FILE")]
        deletes: Vec<String>,
        /// Submit it at once (validation and risk).
        #[arg(long)]
        submit: bool,
    },
    /// A request's diff: each key's old and new value (secrets redacted),
    /// who takes it live and who must restart, the risk.
    Diff {
        /// API base URL.
        #[arg(long, env = "MLCORE_CONTROL_URL")]
        url: String,
        /// Request id.
        #[arg(long)]
        id: String,
        /// Print the API's JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Submit a draft.
    Submit {
        /// API base URL.
        #[arg(long, env = "MLCORE_CONTROL_URL")]
        url: String,
        /// Request id.
        #[arg(long)]
        id: String,
    },
    /// Approve a request (approver; never your own; `$MLCORE_TOTP_CODE`).
    Approve {
        /// API base URL.
        #[arg(long, env = "MLCORE_CONTROL_URL")]
        url: String,
        /// Request id.
        #[arg(long)]
        id: String,
    },
    /// Reject a request (approver).
    Reject {
        /// API base URL.
        #[arg(long, env = "MLCORE_CONTROL_URL")]
        url: String,
        /// Request id.
        #[arg(long)]
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Withdraw a request (its author, or an admin).
    Cancel {
        /// API base URL.
        #[arg(long, env = "MLCORE_CONTROL_URL")]
        url: String,
        /// Request id.
        #[arg(long)]
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Merge an approved request (if not merged yet) and apply it: the
    /// daemons take it live or it is reverted. Exit 11 when it failed.
    Apply {
        /// API base URL.
        #[arg(long, env = "MLCORE_CONTROL_URL")]
        url: String,
        /// Request id.
        #[arg(long)]
        id: String,
    },
    /// Propose (and submit) the rollback of an applied request.
    Rollback {
        /// API base URL.
        #[arg(long, env = "MLCORE_CONTROL_URL")]
        url: String,
        /// The applied request.
        #[arg(long)]
        id: String,
    },
    /// Requests, newest first.
    List {
        /// API base URL.
        #[arg(long, env = "MLCORE_CONTROL_URL")]
        url: String,
        /// Only this state (draft, pr_created, approved, merged, applied,
        /// rejected, cancelled, expired, failed).
        #[arg(long)]
        state: Option<String>,
    },
    /// One request.
    Show {
        /// API base URL.
        #[arg(long, env = "MLCORE_CONTROL_URL")]
        url: String,
        /// Request id.
        #[arg(long)]
        id: String,
    },
    /// The deployed version and the version each daemon runs.
    Status {
        /// API base URL.
        #[arg(long, env = "MLCORE_CONTROL_URL")]
        url: String,
    },
}

/// `data ...`
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Generate a deterministic synthetic market as Parquet partitions.
    Synth(SynthArgs),
}

/// `data synth` arguments.
#[derive(Debug, Args)]
pub struct SynthArgs {
    /// RNG seed.
    #[arg(long)]
    pub seed: u64,
    /// Number of symbols (1-32, in universe order).
    #[arg(long, default_value_t = 32)]
    pub symbols: usize,
    /// Number of weekdays.
    #[arg(long)]
    pub days: u32,
    /// First day, YYYY-MM-DD (weekends are skipped).
    #[arg(long, default_value = "2026-01-05")]
    pub start: String,
    /// Quote interval per symbol, ms.
    #[arg(long, default_value_t = 5000)]
    pub interval_ms: u32,
    /// Strength of the planted reversal (1 = default, 0 = none: a market
    /// with nothing to learn).
    #[arg(long, default_value_t = 1.0)]
    pub effect: f64,
    /// Output folder (must not hold a dataset already).
    #[arg(long)]
    pub out: PathBuf,
}

/// `models ...`
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Generate an ed25519 signing key: `<id>.key` (secret, 0600) and `<id>.pub`.
    Keygen {
        /// Key id written into signatures and trust.yaml.
        #[arg(long)]
        id: String,
        /// Folder to write the two files into.
        #[arg(long)]
        out: PathBuf,
    },
    /// (Re)seal an artifact folder: hash its files into manifest.json and sign it.
    Sign {
        /// Artifact folder.
        #[arg(long)]
        artifact: PathBuf,
        /// Secret key file.
        #[arg(long)]
        key: PathBuf,
    },
    /// Verify an artifact (folder or tar) against an environment's trust.yaml.
    Verify(VerifyArgs),
    /// Print an artifact's manifest and files without verifying it.
    Inspect {
        /// Artifact folder or tar.
        #[arg(long)]
        artifact: PathBuf,
    },
    /// Register `models_root/<strategy>/v<version>` in the registry (API; verifies it).
    Register {
        /// API base URL.
        #[arg(long, env = "MLCORE_CONTROL_URL")]
        url: String,
        /// Strategy id.
        #[arg(long)]
        strategy: String,
        /// Artifact version.
        #[arg(long)]
        version: u64,
    },
    /// Every registered version, its status and which daemons loaded it (API).
    List {
        /// API base URL.
        #[arg(long, env = "MLCORE_CONTROL_URL")]
        url: String,
    },
    /// Ask to activate a model (API; an approver decides with `ops approve`).
    Activate(ModelDecision),
    /// Reject a candidate or approved model (API; approver).
    Reject(ModelDecision),
    /// Release the pin a rollback set on a strategy (API; approver).
    ReleasePin {
        /// API base URL.
        #[arg(long, env = "MLCORE_CONTROL_URL")]
        url: String,
        /// Strategy id.
        #[arg(long)]
        strategy: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
}

/// `models activate | reject` arguments.
#[derive(Debug, Args)]
pub struct ModelDecision {
    /// API base URL.
    #[arg(long, env = "MLCORE_CONTROL_URL")]
    pub url: String,
    /// Model id.
    #[arg(long)]
    pub id: String,
    /// Why.
    #[arg(long)]
    pub reason: String,
}

impl ModelsCommand {
    /// The API call of a registry subcommand; `None` for the local ones.
    pub fn api_call(&self) -> Option<ApiCall<'_>> {
        use serde_json::json;
        let (url, method, path, body) = match self {
            Self::Register {
                url,
                strategy,
                version,
            } => (
                url,
                "POST",
                "/v1/models".to_owned(),
                Some(json!({"strategy": strategy, "version": version})),
            ),
            Self::List { url } => (url, "GET", "/v1/models".to_owned(), None),
            Self::Activate(d) | Self::Reject(d) => {
                let verb = if matches!(self, Self::Activate(_)) {
                    "activate"
                } else {
                    "reject"
                };
                (
                    &d.url,
                    "POST",
                    format!("/v1/models/{}/{verb}", d.id),
                    Some(json!({"reason": d.reason})),
                )
            }
            Self::ReleasePin {
                url,
                strategy,
                reason,
            } => (
                url,
                "POST",
                format!("/v1/models/pins/{strategy}/release"),
                Some(json!({"reason": reason})),
            ),
            Self::Keygen { .. } | Self::Sign { .. } | Self::Verify(_) | Self::Inspect { .. } => return None,
        };
        Some(ApiCall {
            url,
            method,
            path,
            body,
        })
    }
}

/// `models verify` arguments.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Artifact folder or tar.
    #[arg(long)]
    pub artifact: PathBuf,
    /// Environment whose trust.yaml to use.
    #[arg(long)]
    pub env: String,
    /// Highest version already accepted for the strategy (rollback check).
    #[arg(long)]
    pub highest_accepted: Option<u64>,
    /// A rollback authorisation (JSON) permitting this version.
    #[arg(long)]
    pub rollback_auth: Option<PathBuf>,
}

/// `train` arguments.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Environment (universe, θ, trust and ONNX Runtime come from its config).
    #[arg(long)]
    pub env: String,
    /// Dataset folder (with dataset_index.json).
    #[arg(long)]
    pub dataset: PathBuf,
    /// Artifact folder to create.
    #[arg(long)]
    pub out: PathBuf,
    /// Secret signing key file.
    #[arg(long)]
    pub key: PathBuf,
    /// Strategy id from universe.yaml.
    #[arg(long)]
    pub strategy: String,
    /// Model version (monotonic per strategy).
    #[arg(long, default_value_t = 1)]
    pub version: u64,
    /// Creation time in the manifest (ms since the epoch); default
    /// `$SOURCE_DATE_EPOCH` (seconds) if set, else now.
    #[arg(long)]
    pub created_at_ms: Option<u64>,
    /// Days the model stays valid.
    #[arg(long, default_value_t = 30)]
    pub valid_days: u32,
    /// Decision cadence for training samples, ms.
    #[arg(long, default_value_t = 60_000)]
    pub decision_every_ms: u64,
    /// Label horizon, quotes ahead.
    #[arg(long, default_value_t = 12)]
    pub horizon: usize,
    /// The trees' shape.
    #[command(flatten)]
    pub trees: TreeArgs,
    /// Most trees of ai1 (fewer when the calibration segment's log loss
    /// stops improving for 50 rounds).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_trees: u64,
    /// Choose θ by backtesting the trained model on its held-out window
    /// (`research theta`) instead of copying core_policy.yaml's; the
    /// search's verdict and figures go into the manifest's metrics.
    #[arg(long)]
    pub search_theta: bool,
    /// The active model's artifact: compare the new model with it on the
    /// new model's held-out window (champion/challenger); the verdict and
    /// both sets of figures go into the manifest's metrics, and the
    /// registry refuses a model that lost.
    #[arg(long)]
    pub champion: Option<PathBuf>,
    /// How the θ search runs.
    #[command(flatten)]
    pub search: SearchArgs,
}

/// LightGBM's tree parameters (`train`, `research cv`).
#[derive(Debug, Clone, Copy, Args)]
pub struct TreeArgs {
    /// Leaves per tree (LightGBM grows leaf-wise).
    #[arg(long, default_value_t = 31, value_parser = clap::value_parser!(u64).range(2..=4096))]
    pub num_leaves: u64,
    /// Learning rate.
    #[arg(long, default_value_t = 0.05, value_parser = learning_rate)]
    pub learning_rate: f64,
    /// Fewest rows in a leaf.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub min_data_in_leaf: u64,
}

impl TreeArgs {
    /// The learner's parameters, with at most `max_trees` trees.
    pub fn params(&self, max_trees: u64) -> mlcore_research::train::GbmParams {
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        mlcore_research::train::GbmParams {
            num_leaves: size(self.num_leaves),
            learning_rate: self.learning_rate,
            min_data_in_leaf: size(self.min_data_in_leaf),
            max_trees: size(max_trees),
        }
    }
}

/// A learning rate: in (0, 1].
fn learning_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1.0 => Ok(v),
        Ok(v) => Err(format!("{v} is not a learning rate in (0, 1]")),
        Err(e) => Err(e.to_string()),
    }
}

/// One API call: method, path, JSON body.
#[derive(Debug)]
pub struct ApiCall<'a> {
    /// Base URL.
    pub url: &'a str,
    /// `GET`, `POST` or `PATCH`.
    pub method: &'a str,
    /// Path under the base URL.
    pub path: String,
    /// JSON body, if any.
    pub body: Option<serde_json::Value>,
}
