//! `core_retrain_flow`: plans a run's steps, runs what is not in the store
//! yet, records every step in the run's manifest, and finishes the run's
//! folder (report, ledger line).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use mlcore_config::AppConfig;
use serde_json::Value;

use crate::lock::StrategyLock;
use crate::run::{new_run_id, valid_run_id, Failure, RunManifest, RunSpec, RunStatus, StepEntry, StepState};
use crate::steps::{self, Challenge, Context, Unit};
use crate::store::{now_ms, Lookup, Sealed, StepKey, Store, CODE_VERSION};
use crate::{ledger, lock, report, FlowError, Step};

/// Registers a signed candidate (the control plane's registry).
pub trait Registrar {
    /// Registers the artifact in `dir` as `strategy` v`version` and returns
    /// its model id. The same artifact registered again (a run resumed
    /// after dying between registering and recording it) must succeed.
    fn register(&self, strategy: &str, version: u64, dir: &Path) -> Result<String, RegisterError>;
}

/// Why a registrar refused or failed (its own error, kept as the source).
pub type RegisterError = Box<dyn std::error::Error + Send + Sync>;

/// Told as steps start and finish (progress bars, logs).
pub trait Progress {
    /// `step` started (its `expected_ms` says how long it took last time).
    fn started(&self, _run: &RunManifest, _step: &StepEntry) {}
    /// `step` finished (done, cached, skipped or failed).
    fn finished(&self, _run: &RunManifest, _step: &StepEntry) {}
}

/// No progress reporting.
#[derive(Debug, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// The step.
    pub step: Step,
    /// Its key.
    pub key: StepKey,
    /// Whether its output is in the store already (no work).
    pub cached: bool,
}

/// The flow over one environment's configuration and storage.
#[derive(Debug)]
pub struct Flow<'a> {
    cfg: &'a AppConfig,
    root: PathBuf,
    store: Store,
}

impl<'a> Flow<'a> {
    /// The flow of `cfg` (runs under storage.yaml's `runs_root`).
    pub fn new(cfg: &'a AppConfig) -> Self {
        let root = cfg.storage.runs_root.clone();
        Self {
            cfg,
            store: Store::new(root.join("steps")),
            root,
        }
    }

    /// `runs_root`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The step store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// What a run of `spec` would do now: every step's key and whether its
    /// output exists (registration is never cached across runs).
    pub fn plan(&self, spec: &RunSpec) -> Result<Vec<Planned>, FlowError> {
        let ctx = Context::new(self.cfg, spec)?;
        steps::plan(&ctx)?
            .into_iter()
            .map(|(step, key, _)| {
                let cached = step != Step::Register && self.store.peek(step.name(), &key)?.is_some();
                Ok(Planned { step, key, cached })
            })
            .collect()
    }

    /// How many units the fanned-out steps of a run of `spec` have: the
    /// validation's folds and the θ grid's points.
    pub fn unit_counts(&self, spec: &RunSpec) -> Result<(usize, usize), FlowError> {
        let ctx = Context::new(self.cfg, spec)?;
        Ok((
            steps::unit_count(&ctx, Step::Validation),
            steps::unit_count(&ctx, Step::Theta),
        ))
    }

    /// Creates a run of `spec` (its folder and manifest; no work yet).
    pub fn create(&self, spec: RunSpec) -> Result<RunManifest, FlowError> {
        let ctx = Context::new(self.cfg, &spec)?;
        let plan = steps::plan(&ctx)?;
        let run_id = new_run_id(&spec.strategy, now_ms());
        std::fs::create_dir_all(&self.root).map_err(|source| FlowError::Io {
            path: self.root.clone(),
            source,
        })?;
        let dir = self.root.join(&run_id);
        // Never another run's folder.
        std::fs::create_dir(&dir).map_err(|source| FlowError::Io { path: dir, source })?;
        let run = RunManifest {
            run_id,
            spec,
            status: RunStatus::Running,
            current_step: None,
            code_version: CODE_VERSION.to_owned(),
            feature_schema_hash: mlcore_features::schema_hash().to_owned(),
            started_at_ms: now_ms(),
            finished_at_ms: None,
            resumed: 0,
            steps: plan.into_iter().map(|(s, k, i)| pending(s, k, i)).collect(),
            verdict: None,
            model_id: None,
            artifact: None,
            failure: None,
        };
        run.save(&self.root)?;
        Ok(run)
    }

    /// Takes the strategy's lock, then creates a run of `spec`: a start
    /// refused because the strategy is being retrained leaves nothing
    /// behind, and nobody can take the run between its creation and its
    /// first step. Run it with [`Flow::execute_locked`].
    pub fn create_locked(&self, spec: RunSpec) -> Result<(RunManifest, StrategyLock), FlowError> {
        let lock = lock::acquire(&self.root, &spec.strategy, "a run being created")?;
        let run = self.create(spec)?;
        lock.name_holder(&run.run_id)?;
        Ok((run, lock))
    }

    /// Takes the lock of `run`'s strategy for it (to resume it in the
    /// background after saying so).
    pub fn lock(&self, run: &RunManifest) -> Result<StrategyLock, FlowError> {
        Ok(lock::acquire(&self.root, &run.spec.strategy, &run.run_id)?)
    }

    /// A run's manifest.
    pub fn load(&self, run_id: &str) -> Result<RunManifest, FlowError> {
        if !valid_run_id(run_id) || !RunManifest::path(&self.root, run_id).exists() {
            return Err(FlowError::NoRun(run_id.to_owned()));
        }
        Ok(RunManifest::read(&self.root, run_id)?)
    }

    /// Every run, newest first.
    pub fn list(&self) -> Result<Vec<RunManifest>, FlowError> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(source) => {
                return Err(FlowError::Io {
                    path: self.root.clone(),
                    source,
                })
            }
        };
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if valid_run_id(&id) && RunManifest::path(&self.root, &id).exists() {
                out.push(RunManifest::read(&self.root, &id)?);
            }
        }
        out.sort_by(|a, b| {
            b.started_at_ms
                .cmp(&a.started_at_ms)
                .then(b.run_id.cmp(&a.run_id))
        });
        Ok(out)
    }

    /// Whether a process is working on `run` now (a `running` run nobody
    /// holds the lock of was interrupted, and can be resumed).
    pub fn is_live(&self, run: &RunManifest) -> bool {
        run.status == RunStatus::Running
            && lock::holder(&self.root, &run.spec.strategy).is_some_and(|h| h.starts_with(&run.run_id))
    }

    /// Runs (or resumes) `run` to its end under the strategy's lock: steps
    /// whose output is in the store are reused, the others run. Returns the
    /// final manifest — `failed` with the failing step named when a step
    /// failed; `Err` only when the run could not start (lock held, plan
    /// impossible).
    pub fn execute(
        &self,
        run: RunManifest,
        registrar: &dyn Registrar,
        progress: &dyn Progress,
    ) -> Result<RunManifest, FlowError> {
        self.drive(run, None, None, registrar, progress)
    }

    /// [`Flow::execute`] of a run whose lock the caller already holds
    /// (from [`Flow::create_locked`]).
    pub fn execute_locked(
        &self,
        run: RunManifest,
        lock: StrategyLock,
        registrar: &dyn Registrar,
        progress: &dyn Progress,
    ) -> Result<RunManifest, FlowError> {
        self.drive(run, None, Some(lock), registrar, progress)
    }

    /// Runs `run`'s step `only` (the steps before it must have their
    /// outputs in the store already; those after it are left for later
    /// calls): how a scale-out drives the flow a step at a time. Running
    /// `register` this way finishes the run.
    pub fn execute_step(
        &self,
        run: RunManifest,
        only: Step,
        registrar: &dyn Registrar,
        progress: &dyn Progress,
    ) -> Result<RunManifest, FlowError> {
        self.drive(run, Some(only), None, registrar, progress)
    }

    /// Computes one unit of `run` (a validation fold, a θ grid trial) into
    /// the store, where its step finds it. Units are independent and
    /// content-addressed: any number run at once, on any machine sharing
    /// the store, without the run's lock.
    pub fn unit(&self, run: &RunManifest, unit: Unit) -> Result<Sealed, FlowError> {
        mlcore_models::runtime::init(&self.cfg.storage.onnxruntime_library)
            .map_err(|e| FlowError::Input(format!("ONNX Runtime: {e}")))?;
        let ctx = Context::new(self.cfg, &run.spec)?;
        let plan = steps::plan(&ctx)?;
        let mut dirs = BTreeMap::new();
        for (step, key, _) in plan.iter().filter(|(s, ..)| *s < unit.step()) {
            dirs.insert(*step, self.require(*step, key, unit.step())?);
        }
        let step_key = plan
            .iter()
            .find(|(s, ..)| *s == unit.step())
            .map(|(_, k, _)| k.clone())
            .ok_or_else(|| FlowError::Input("the plan lacks the unit's step".into()))?;
        let key = unit.key(&step_key);
        if let Lookup::Done(sealed) = self.store.lookup(unit.kind(), &key)? {
            return Ok(sealed);
        }
        let inputs = serde_json::json!({"step": step_key, "unit": format!("{unit:?}")});
        let upstream = |s: Step| dirs.get(&s).cloned().unwrap_or_default();
        self.store.produce(unit.kind(), &key, &inputs, |out| {
            steps::unit_output(&ctx, unit, &upstream, out)
        })
    }

    /// The folder of `step`'s output, which `before` needs: an error
    /// naming both when it is not in the store.
    fn require(&self, step: Step, key: &StepKey, before: Step) -> Result<PathBuf, FlowError> {
        match self.store.lookup(step.name(), key)? {
            Lookup::Done(_) => Ok(self.store.dir(step.name(), key)),
            _ => Err(FlowError::Input(format!(
                "step `{}` has no output for these inputs yet; run it before `{}`",
                step.name(),
                before.name()
            ))),
        }
    }

    fn drive(
        &self,
        run: RunManifest,
        only: Option<Step>,
        held: Option<StrategyLock>,
        registrar: &dyn Registrar,
        progress: &dyn Progress,
    ) -> Result<RunManifest, FlowError> {
        let _lock = match held {
            Some(l) => l,
            None => lock::acquire(&self.root, &run.spec.strategy, &run.run_id)?,
        };
        // A resume re-reads the manifest under the lock: the copy passed in
        // may be stale.
        let mut run = run;
        let mut resuming = false;
        if RunManifest::path(&self.root, &run.run_id).exists() {
            let on_disk = RunManifest::read(&self.root, &run.run_id)?;
            if on_disk.finished_at_ms.is_some() || on_disk.steps.iter().any(|s| s.started_at_ms.is_some()) {
                run = on_disk;
                resuming = true;
            }
        }
        let started = Instant::now();
        let mut dirs = BTreeMap::new();
        match self.drive_locked(&mut run, resuming, only, registrar, progress, &mut dirs) {
            Ok(()) => Ok(run),
            Err(Stop::Refuse(e)) => Err(e),
            // Whatever failed once the run was ours fails the run, named at
            // the step it was in, so nothing is left `running` and the
            // caller announces it.
            Err(Stop::Fail(e)) => {
                let step = run.current_step.clone().unwrap_or_else(|| "start".to_owned());
                let message = chain(&e);
                if let Some(s) = Step::from_name(&step) {
                    let entry = entry(&mut run, s);
                    entry.state = StepState::Failed;
                    entry.note = Some(message.clone());
                }
                run.failure = Some(Failure {
                    message: format!("step `{step}` failed: {message}"),
                    step,
                });
                run.status = RunStatus::Failed;
                run.current_step = None;
                run.finished_at_ms = Some(now_ms());
                run.verdict = run.failure.as_ref().map(|f| f.message.clone());
                if let Err(e) = run.save(&self.root) {
                    run_warning(&format!("recording the failure of {}: {e}", run.run_id));
                }
                if let Some(e) = run.steps.iter().find(|e| e.state == StepState::Failed) {
                    progress.finished(&run, e);
                }
                self.ledger(&run, &dirs, started.elapsed().as_secs_f64());
                Ok(run)
            }
        }
    }

    #[allow(clippy::too_many_lines)] // one pass over the plan, in order
    fn drive_locked(
        &self,
        run: &mut RunManifest,
        resuming: bool,
        only: Option<Step>,
        registrar: &dyn Registrar,
        progress: &dyn Progress,
        dirs: &mut BTreeMap<Step, PathBuf>,
    ) -> Result<(), Stop> {
        mlcore_models::runtime::init(&self.cfg.storage.onnxruntime_library)
            .map_err(|e| FlowError::Input(format!("ONNX Runtime: {e}")))?;
        self.store.sweep()?;
        let spec = run.spec.clone();
        let ctx = Context::new(self.cfg, &spec)?;
        let plan = steps::plan(&ctx)?;
        // A finished run whose every step is still current has nothing to
        // do: resuming it touches nothing (not even its report). One whose
        // plan moved (the configuration or the data changed) is not
        // re-done under its old version and time: that is a new run.
        let finished = matches!(run.status, RunStatus::Succeeded | RunStatus::Rejected);
        if finished {
            let current = plan.iter().all(|(step, key, _)| {
                run.step(*step).is_some_and(|e| {
                    e.key == *key
                        && (matches!(e.state, StepState::Skipped)
                            || *step == Step::Register
                            || matches!(self.store.peek(step.name(), key), Ok(Some(_))))
                })
            });
            if current {
                return Ok(());
            }
            return Err(Stop::Refuse(FlowError::Input(format!(
                "run {} finished ({}), and its inputs have changed since: start a new run",
                run.run_id,
                run.status.as_str()
            ))));
        }
        // The configuration may have changed since the run started: steps
        // whose key moved start over.
        let old: BTreeMap<String, StepEntry> = run.steps.drain(..).map(|s| (s.name.clone(), s)).collect();
        for (step, key, inputs) in &plan {
            run.steps.push(match old.get(step.name()) {
                Some(e) if e.key == *key => e.clone(),
                _ => pending(*step, key.clone(), inputs.clone()),
            });
        }
        // A scale-out driving the run a step at a time is not resuming it.
        if resuming && only.is_none() {
            run.resumed += 1;
        }
        run.status = RunStatus::Running;
        run.failure = None;
        run.finished_at_ms = None;
        run.save(&self.root)?;

        let started = Instant::now();
        let mut lost = false;
        let mut partial = false;
        for (step, key, inputs) in plan {
            if let Some(only) = only {
                if step > only {
                    partial = true;
                    break;
                }
                if step < only && !matches!(step, Step::Sign | Step::Register) {
                    let dir = self.require(step, &key, only)?;
                    if step == Step::Challenge {
                        let c: Challenge = steps::read_json(&dir, "challenge.json")?;
                        lost = c.verdict.is_some_and(|v| !v.won);
                    }
                    dirs.insert(step, dir);
                    continue;
                }
                if step == Step::Register && !lost && !dirs.contains_key(&Step::Sign) {
                    let sign = key_of(run, Step::Sign);
                    dirs.insert(Step::Sign, self.require(Step::Sign, &sign, only)?);
                }
            }
            let expected = self.store.last_duration_ms(step.name());
            {
                let e = entry(run, step);
                if step == Step::Register && e.state == StepState::Done {
                    // Registered by an earlier attempt of this run.
                    continue;
                }
                e.state = StepState::Running;
                e.started_at_ms = Some(now_ms());
                e.expected_ms = expected;
                e.note = None;
            }
            run.current_step = Some(step.name().to_owned());
            run.save(&self.root)?;
            if let Some(e) = run.step(step) {
                progress.started(run, e);
            }
            let t0 = Instant::now();
            let outcome = if lost && matches!(step, Step::Sign | Step::Register) {
                let what = if step == Step::Sign { "sign" } else { "register" };
                Outcome::Skipped(format!(
                    "the candidate lost to the active model: nothing to {what}"
                ))
            } else if step == Step::Register {
                let dir = dirs
                    .get(&Step::Sign)
                    .cloned()
                    .unwrap_or_default()
                    .join("artifact");
                let id = registrar
                    .register(&spec.strategy, spec.version, &dir)
                    .map_err(|e| FlowError::Register(e.to_string(), e))?;
                stall_point(step);
                run.model_id = Some(id);
                run.artifact = Some(dir);
                Outcome::Registered
            } else {
                self.step(&ctx, step, &key, &inputs, dirs)?
            };
            let e = entry(run, step);
            e.duration_ms = Some(u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX));
            match outcome {
                Outcome::Sealed(sealed, cached) => {
                    let dir = self.store.dir(step.name(), &key);
                    e.state = if cached {
                        StepState::Cached
                    } else {
                        StepState::Done
                    };
                    e.dir = Some(dir.clone());
                    e.outputs = sealed.outputs;
                    e.rows = sealed.rows;
                    e.produced_in_ms = Some(sealed.duration_ms);
                    dirs.insert(step, dir);
                }
                Outcome::Skipped(why) => {
                    e.state = StepState::Skipped;
                    e.note = Some(why);
                }
                Outcome::Registered => e.state = StepState::Done,
            }
            if step == Step::Challenge {
                if let Some(dir) = dirs.get(&Step::Challenge) {
                    let c: Challenge = steps::read_json(dir, "challenge.json")?;
                    lost = c.verdict.is_some_and(|v| !v.won);
                }
                if lost {
                    // Nothing of this run is (or will be) the registered model.
                    run.model_id = None;
                    run.artifact = None;
                }
            }
            if step == Step::Sign && !lost {
                run.artifact = dirs.get(&Step::Sign).map(|d| d.join("artifact"));
            }
            run.save(&self.root)?;
            if let Some(e) = run.step(step) {
                progress.finished(run, e);
            }
        }
        run.current_step = None;
        if partial {
            run.save(&self.root)?;
            return Ok(());
        }
        run.status = if lost {
            RunStatus::Rejected
        } else {
            RunStatus::Succeeded
        };
        let summary = report::write(&self.root.join(&run.run_id), run, dirs)?;
        run.verdict = Some(summary.verdict);
        run.finished_at_ms = Some(now_ms());
        run.save(&self.root)?;
        self.ledger(run, dirs, started.elapsed().as_secs_f64());
        Ok(())
    }

    fn step(
        &self,
        ctx: &Context<'_>,
        step: Step,
        key: &StepKey,
        inputs: &Value,
        dirs: &BTreeMap<Step, PathBuf>,
    ) -> Result<Outcome, FlowError> {
        if let Lookup::Done(sealed) = self.store.lookup(step.name(), key)? {
            return Ok(Outcome::Sealed(sealed, true));
        }
        let upstream = |s: Step| dirs.get(&s).cloned().unwrap_or_default();
        // Units (folds, trials) a scale-out already put in the store.
        let units = |u: Unit| {
            let k = u.key(key);
            matches!(self.store.lookup(u.kind(), &k), Ok(Lookup::Done(_)))
                .then(|| self.store.dir(u.kind(), &k))
        };
        let sealed = self.store.produce(step.name(), key, inputs, |out| {
            let rows = steps::execute(ctx, step, &upstream, &units, out)?;
            stall_point(step);
            Ok::<_, FlowError>(rows)
        })?;
        Ok(Outcome::Sealed(sealed, false))
    }

    fn ledger(&self, run: &RunManifest, dirs: &BTreeMap<Step, PathBuf>, duration_s: f64) {
        let entry = report::ledger_entry(run, dirs, duration_s);
        if let Err(e) = ledger::append(&self.root, &entry) {
            // The run's own manifest is the record; the ledger is an index.
            run_warning(&format!("runs/index.csv: {e}"));
        }
    }
}

#[allow(clippy::print_stderr)]
fn run_warning(message: &str) {
    eprintln!("warning: {message}");
}

/// The variable naming the step [`stall_point`] stops in.
pub const STALL_VAR: &str = "MLCORE_RETRAIN_STALL_IN";

/// A test hook for the worst moment to die: with `MLCORE_RETRAIN_STALL_IN`
/// naming `step`, the process stops after the step's work and before its
/// output is sealed (for `register`: after registering, before the run
/// records it), says so on stderr, and waits to be killed. The resume
/// tests kill -9 it there, in every step. Unset, it costs one lookup per step.
#[allow(clippy::print_stderr)]
fn stall_point(step: Step) {
    if std::env::var(STALL_VAR).is_ok_and(|v| v == step.name()) {
        eprintln!("stalled in {}", step.name());
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

/// Why a drive stopped early.
enum Stop {
    /// Not started: the run stays as it was (a finished run whose inputs
    /// changed).
    Refuse(FlowError),
    /// Failed: the run is marked failed at its current step.
    Fail(FlowError),
}

impl<E: Into<FlowError>> From<E> for Stop {
    fn from(e: E) -> Self {
        Self::Fail(e.into())
    }
}

enum Outcome {
    Sealed(Sealed, bool),
    Skipped(String),
    Registered,
}

fn pending(step: Step, key: StepKey, inputs: Value) -> StepEntry {
    StepEntry {
        name: step.name().to_owned(),
        key,
        state: StepState::Pending,
        inputs,
        dir: None,
        outputs: BTreeMap::new(),
        rows: None,
        started_at_ms: None,
        duration_ms: None,
        produced_in_ms: None,
        expected_ms: None,
        note: None,
    }
}

fn key_of(run: &RunManifest, step: Step) -> StepKey {
    run.step(step)
        .map(|e| e.key.clone())
        .unwrap_or_else(|| StepKey(String::new()))
}

fn entry(run: &mut RunManifest, step: Step) -> &mut StepEntry {
    let i = run
        .steps
        .iter()
        .position(|s| s.name == step.name())
        .unwrap_or_else(|| {
            run.steps.push(pending(step, StepKey(String::new()), Value::Null));
            run.steps.len() - 1
        });
    &mut run.steps[i]
}

/// An error with its sources, on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
