//! Retraining, operated: runs of `mlcore_retrain`'s flow started from the
//! CLI, the API or the schedule, registered through the registry, and
//! announced — `ModelRetrained`, `BacktestCompleted`, `RetrainFailed` on
//! the events channel and in the audit log, and an alert when a run fails.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mlcore_config::Severity;
use mlcore_models::artifact::ArtifactFiles;
use mlcore_retrain::lock::StrategyLock;
use mlcore_retrain::run::{RunManifest, RunSpec, RunStatus};
use mlcore_retrain::{Flow, FlowError, Progress, RegisterError, Step};
use serde_json::{json, Value};
use tokio::runtime::Handle;

use crate::alerts::Alert;
use crate::audit::NewEvent;
use crate::registry::{self, RegistryCode, RegistryError};
use crate::services::Services;

/// The audit record type of retraining.
pub const RECORD: &str = "retrain";

/// Why a run could not start or be found.
#[derive(Debug, thiserror::Error)]
pub enum RetrainError {
    /// Not in universe.yaml.
    #[error("unknown strategy `{0}`")]
    UnknownStrategy(String),
    /// Another run of the strategy holds its lock.
    #[error("{0}")]
    Busy(String),
    /// No such run.
    #[error("no run `{0}`")]
    NoRun(String),
    /// The registry could not be read.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The flow could not start.
    #[error(transparent)]
    Flow(FlowError),
}

impl From<FlowError> for RetrainError {
    fn from(e: FlowError) -> Self {
        match e {
            FlowError::Lock(l @ mlcore_retrain::lock::LockError::Busy { .. }) => Self::Busy(l.to_string()),
            FlowError::NoRun(id) => Self::NoRun(id),
            other => Self::Flow(other),
        }
    }
}

/// A new run's spec: the next version (above every registered one and
/// every folder under `models_root`), the active model as the champion,
/// created now.
pub async fn spec(
    svc: &Services,
    strategy: &str,
    trigger: &str,
    actor: &str,
) -> Result<RunSpec, RetrainError> {
    if svc.config.strategy(strategy).is_none() {
        return Err(RetrainError::UnknownStrategy(strategy.to_owned()));
    }
    let registered = registry::highest_version(svc, strategy).await?;
    let root = &svc.config.storage.models_root;
    let on_disk = highest_folder(&root.join(strategy)).max(highest_accepted(root, strategy));
    // A run that has not finished may still register its version.
    let unfinished = Flow::new(&svc.config)
        .list()
        .map_err(RetrainError::Flow)?
        .iter()
        .filter(|r| r.spec.strategy == strategy && r.finished_at_ms.is_none())
        .map(|r| r.spec.version)
        .max()
        .unwrap_or(0);
    let champion = registry::active_artifact(svc, strategy)
        .await?
        .map(|(_, path)| path);
    Ok(RunSpec {
        env: svc.config.environment.to_string(),
        strategy: strategy.to_owned(),
        version: registered.max(on_disk).max(unfinished) + 1,
        created_at_ms: svc.now_ms(),
        champion,
        trigger: trigger.to_owned(),
        actor: actor.to_owned(),
    })
}

/// The highest version of `strategy` any daemon sharing `models_root` has
/// accepted (`.state/<instance>.json`): a daemon refuses anything at or
/// below it as a rollback, even a version the registry never saw (a load
/// test's swaps).
fn highest_accepted(models_root: &Path, strategy: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir(models_root.join(".state")) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .filter_map(|state| state[strategy]["highest"].as_u64())
        .max()
        .unwrap_or(0)
}

fn highest_folder(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_prefix('v')?.parse::<u64>().ok())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// The registry as the flow's registrar: copies the signed artifact to
/// `models_root/<strategy>/v<version>` (atomically) and registers it.
struct Registrar<'a> {
    svc: &'a Services,
    handle: &'a Handle,
    actor: &'a str,
    run_id: &'a str,
}

impl mlcore_retrain::Registrar for Registrar<'_> {
    fn register(&self, strategy: &str, version: u64, dir: &Path) -> Result<String, RegisterError> {
        let files = ArtifactFiles::read(dir)?;
        let sha = files.manifest_sha256().unwrap_or_default();
        let target = self
            .svc
            .config
            .storage
            .models_root
            .join(strategy)
            .join(format!("v{version}"));
        if target.exists() {
            let there = ArtifactFiles::read(&target)?;
            if there.manifest_sha256().unwrap_or_default() != sha {
                return Err(format!(
                    "{} holds another artifact already; refusing to overwrite a model",
                    target.display()
                )
                .into());
            }
        } else {
            let tmp = target.with_file_name(format!(".tmp-v{version}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            files.write(&tmp)?;
            std::fs::rename(&tmp, &target).map_err(|e| format!("{}: {e}", target.display()))?;
        }
        let registered = self.handle.block_on(registry::register(
            self.svc,
            self.actor,
            strategy,
            version,
            self.run_id,
        ));
        match registered {
            Ok(r) => Ok(r.id),
            // Registered by an attempt of this run that died before
            // recording it: the same artifact is success.
            Err(RegistryError::Refused {
                code: RegistryCode::Exists,
                ..
            }) => {
                let id = format!("{strategy}-v{version}");
                let row = self.handle.block_on(registry::get(self.svc, &id))?;
                if row.manifest_sha256 == sha {
                    Ok(id)
                } else {
                    Err(format!("{id} is registered with another artifact").into())
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Runs (or resumes) `run` to its end and announces the outcome. Blocking:
/// call it from a blocking thread; `handle` runs the registry's and the
/// announcements' async calls.
pub fn execute(
    svc: &Services,
    handle: &Handle,
    run: RunManifest,
    lock: Option<StrategyLock>,
    only: Option<Step>,
    progress: &dyn Progress,
) -> Result<RunManifest, RetrainError> {
    let flow = Flow::new(&svc.config);
    let before = run.clone();
    let actor = run.spec.actor.clone();
    let run_id = run.run_id.clone();
    let registrar = Registrar {
        svc,
        handle,
        actor: &actor,
        run_id: &run_id,
    };
    let done = match (only, lock) {
        (Some(step), _) => flow.execute_step(run, step, &registrar, progress)?,
        (None, Some(lock)) => flow.execute_locked(run, lock, &registrar, progress)?,
        (None, None) => flow.execute(run, &registrar, progress)?,
    };
    // A finished run resumed again does nothing: nothing new to announce;
    // a run driven a step at a time announces when it ends.
    if done != before && done.status != RunStatus::Running {
        handle.block_on(announce(svc, &done));
    }
    Ok(done)
}

/// The events a finished run emits, in order.
pub fn events(run: &RunManifest, runs_root: &Path) -> Vec<Value> {
    let report = runs_root.join(&run.run_id).join("report.html");
    let base = |kind: &str| {
        json!({"type": kind, "run_id": run.run_id, "strategy": run.spec.strategy,
            "env": run.spec.env, "at_ms": run.finished_at_ms})
    };
    let mut out = Vec::new();
    if run.status == RunStatus::Failed {
        let mut e = base("RetrainFailed");
        e["step"] = json!(run.failure.as_ref().map(|f| &f.step));
        e["error"] = json!(run.failure.as_ref().map(|f| &f.message));
        out.push(e);
        return out;
    }
    let summary: Option<Value> =
        std::fs::read_to_string(runs_root.join(&run.run_id).join("portfolio_summary.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
    let mut e = base("BacktestCompleted");
    if let Some(s) = &summary {
        e["sharpe"] = s["base"]["sharpe"].clone();
        e["sharpe_ci90"] = s["base"]["sharpe_ci90"].clone();
        e["total_return"] = s["base"]["total_return"].clone();
        e["max_drawdown"] = s["base"]["max_drawdown"].clone();
        e["theta"] = json!([s["theta1"], s["theta2"]]);
        e["scenarios"] = json!(s["scenarios"].as_object().map(|m| m.keys().collect::<Vec<_>>()));
    }
    e["report"] = json!(report);
    out.push(e);
    if run.status == RunStatus::Succeeded {
        let mut e = base("ModelRetrained");
        e["model_id"] = json!(run.model_id);
        e["version"] = json!(run.spec.version);
        e["verdict"] = json!(run.verdict);
        e["artifact"] = json!(run.artifact);
        e["report"] = json!(report);
        out.push(e);
    }
    out
}

/// Publishes the run's events, audits them, and alerts on a failure.
/// Announcing never fails the run: a failure here is logged.
pub async fn announce(svc: &Services, run: &RunManifest) {
    let root = &svc.config.storage.runs_root;
    for event in events(run, root) {
        let kind = event["type"].as_str().unwrap_or("retrain").to_owned();
        if let Err(e) = svc.redis.publish_event(&event).await {
            tracing::warn!(error = %e, event = %kind, "publishing a retraining event failed");
        }
        let audited = svc
            .audit(NewEvent {
                at_ms: svc.now_ms(),
                record_type: RECORD.into(),
                critical: false,
                actor: run.spec.actor.clone(),
                action: kind.clone(),
                scope: run.spec.strategy.clone(),
                before: Value::Null,
                after: event.clone(),
                result: if run.status == RunStatus::Failed {
                    "failed".into()
                } else {
                    "ok".into()
                },
                request_id: run.run_id.clone(),
            })
            .await;
        if let Err(e) = audited {
            tracing::error!(error = %e, event = %kind, "auditing a retraining event failed");
        }
    }
    if let Some(f) = &run.failure {
        svc.alerts
            .deliver(&Alert {
                severity: Severity::Warning,
                kind: "retrain_failed".into(),
                scope: run.spec.strategy.clone(),
                summary: format!(
                    "retraining {} failed in step {}: {}",
                    run.spec.strategy, f.step, f.message
                ),
                details: json!({"run_id": run.run_id, "step": f.step, "error": f.message,
                "manifest": root.join(&run.run_id).join("manifest.json")}),
                resolve: false,
            })
            .await;
    }
}

/// Where a run is, for people: `running` only while a process holds the
/// strategy's lock; a `running` run nobody works on is `interrupted`.
pub fn status_of(flow: &Flow<'_>, run: &RunManifest) -> &'static str {
    match run.status {
        // A scale-out drives its run a step at a time, each step a process
        // of its own: between steps nobody holds the lock, and the run is
        // still running.
        RunStatus::Running if run.spec.trigger == SCALE_OUT => "running",
        RunStatus::Running if !flow.is_live(run) => "interrupted",
        s => s.as_str(),
    }
}

/// The trigger of runs a scale-out (Prefect) drives step by step.
pub const SCALE_OUT: &str = "scale-out";

/// Starts a run of `spec` (or resumes `resume`) in the background: the
/// strategy's lock is taken before anything is created (a refused start
/// leaves nothing behind), the run's manifest is returned once it is
/// ours, and the flow goes on on a blocking thread, announced when it ends.
pub async fn start(
    svc: Arc<Services>,
    spec: RunSpec,
    resume: Option<RunManifest>,
) -> Result<RunManifest, RetrainError> {
    let handle = Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let flow = Flow::new(&svc.config);
        let taken = match resume {
            Some(run) => flow.lock(&run).map(|lock| (run, lock)),
            None => flow.create_locked(spec),
        };
        let (run, lock) = match taken {
            Ok(x) => x,
            Err(e) => {
                let _ = tx.send(Err(RetrainError::from(e)));
                return;
            }
        };
        let run_id = run.run_id.clone();
        let _ = tx.send(Ok(run.clone()));
        if let Err(e) = execute(&svc, &handle, run, Some(lock), None, &mlcore_retrain::NoProgress) {
            tracing::error!(run_id = %run_id, error = %e, "a retraining run could not run");
        }
    });
    rx.await.map_err(|_| {
        RetrainError::Flow(FlowError::Input(
            "the run's thread ended before starting it".into(),
        ))
    })?
}

/// The run folder of `run_id`.
pub fn run_dir(svc: &Services, run_id: &str) -> PathBuf {
    svc.config.storage.runs_root.join(run_id)
}

/// The step names, in order (for documents and the CLI).
pub fn step_names() -> Vec<&'static str> {
    Step::ALL.iter().map(|s| s.name()).collect()
}

/// Starts retraining on the schedule in `control.yaml retrain.schedule`
/// (nothing when it is `null`): at each time the cron expression matches,
/// a run of each listed strategy (each under its own lock); a strategy
/// already being retrained is skipped and said so in the log and the audit.
pub fn spawn_schedule(svc: Arc<Services>) -> Option<tokio::task::JoinHandle<()>> {
    let schedule = svc.config.control.retrain.schedule.clone()?;
    let cron = match mlcore_config::schedule::parse(&schedule.cron) {
        Ok(c) => c,
        Err(e) => {
            // The loader validated it; this cannot happen with a loaded config.
            tracing::error!(error = %e, "retrain schedule unusable");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        loop {
            let now = svc.now_ms();
            let Some(next) = cron.next_after(now) else {
                tracing::warn!(cron = %schedule.cron, "the retrain schedule never matches again");
                return;
            };
            tracing::info!(cron = %schedule.cron, next_at_ms = next, "next scheduled retraining");
            tokio::time::sleep(std::time::Duration::from_millis(next.saturating_sub(now))).await;
            for strategy in &schedule.strategies {
                if let Err(e) = scheduled_run(&svc, strategy).await {
                    tracing::warn!(strategy = %strategy, error = %e, "scheduled retraining did not run");
                    let _ = svc
                        .audit(NewEvent {
                            at_ms: svc.now_ms(),
                            record_type: RECORD.into(),
                            critical: false,
                            actor: "schedule".into(),
                            action: "start".into(),
                            scope: strategy.clone(),
                            before: Value::Null,
                            after: Value::Null,
                            result: format!("refused: {e}"),
                            request_id: String::new(),
                        })
                        .await;
                }
            }
        }
    }))
}

async fn scheduled_run(svc: &Arc<Services>, strategy: &str) -> Result<(), RetrainError> {
    let spec = spec(svc, strategy, "schedule", "schedule").await?;
    start(Arc::clone(svc), spec, None).await.map(|_| ())
}
