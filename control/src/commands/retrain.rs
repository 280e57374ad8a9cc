//! `retrain`: a run of the retraining flow in this process, with a
//! progress bar per step on a terminal (one plain line per step
//! otherwise), registered through the registry and announced like a run
//! the API starts.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use mlcore_config::EnvSource;
use mlcore_retrain::run::{RunManifest, RunSpec, RunStatus, StepEntry, StepState};
use mlcore_retrain::{Flow, Progress, Step, Unit};

use super::load_config;
use crate::cli::RetrainArgs;
use crate::retrain;

/// Exit code of a run whose candidate lost to the active model (not an
/// error: nothing was signed).
pub const EXIT_REJECTED: i32 = 10;
/// Exit code of a run that failed in a step.
pub const EXIT_FAILED: i32 = 11;

/// Runs, resumes or plans a retraining run.
pub fn retrain(
    config_dir: &Path,
    args: &RetrainArgs,
    vars: &dyn EnvSource,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let cfg = load_config(config_dir, &args.env, vars, mlcore_config::Process::Control)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let svc = rt.block_on(crate::services::Services::connect(cfg))?;
    let flow = Flow::new(&svc.config);
    let run = match &args.resume {
        Some(id) => {
            let run = flow.load(id)?;
            if run.spec.strategy != args.strategy {
                anyhow::bail!("run {id} retrains {}, not {}", run.spec.strategy, args.strategy);
            }
            Some(run)
        }
        None => None,
    };
    let spec = match &run {
        Some(r) => r.spec.clone(),
        None => rt.block_on(retrain::spec(&svc, &args.strategy, "cli", &args.actor))?,
    };
    if let (Some(run), true) = (&run, args.show) {
        writeln!(out, "{}", serde_json::to_string(run)?)?;
        return Ok(0);
    }
    if args.dry_run && args.json {
        let plan = flow.plan(&spec)?;
        let units = flow.unit_counts(&spec)?;
        let json = serde_json::json!({
            "run_id": run.as_ref().map(|r| &r.run_id),
            "strategy": spec.strategy,
            "version": spec.version,
            "steps": plan.iter().map(|p| serde_json::json!({"name": p.step.name(), "key": p.key, "cached": p.cached})).collect::<Vec<_>>(),
            "units": {"fold": units.0, "trial": units.1},
        });
        writeln!(out, "{json}")?;
        return Ok(0);
    }
    if args.dry_run {
        let plan = flow.plan(&spec)?;
        writeln!(
            out,
            "retrain {} v{} (dry run{}): champion {}",
            spec.strategy,
            spec.version,
            run.as_ref()
                .map(|r| format!(", resuming {}", r.run_id))
                .unwrap_or_default(),
            spec.champion
                .as_ref()
                .map_or("none".into(), |p| p.display().to_string())
        )?;
        for p in &plan {
            let what = if p.cached { "cached (no work)" } else { "would run" };
            writeln!(out, "  {:<10} {}  {what}", p.step.name(), p.key.short())?;
        }
        let work = plan.iter().filter(|p| !p.cached).count();
        writeln!(out, "{work} of {} steps would run", plan.len())?;
        return Ok(0);
    }
    if let (Some(run), Some(unit)) = (&run, &args.unit) {
        let unit = parse_unit(unit)?;
        let sealed = flow.unit(run, unit)?;
        writeln!(
            out,
            "{} {} of {}: {} in {} ms",
            unit.kind(),
            match unit {
                Unit::Fold(i) | Unit::Trial(i) => i,
            },
            run.run_id,
            sealed.key.short(),
            sealed.duration_ms
        )?;
        return Ok(0);
    }
    if args.create {
        // A scale-out drives it a step at a time (each step takes the lock).
        let spec = RunSpec {
            trigger: retrain::SCALE_OUT.into(),
            ..spec
        };
        let (run, _lock) = flow.create_locked(spec)?;
        writeln!(out, "{}", serde_json::json!({"run_id": run.run_id}))?;
        return Ok(0);
    }
    let only = match &args.step {
        Some(name) => Some(
            Step::from_name(name)
                .with_context(|| format!("--step `{name}`: one of {}", retrain::step_names().join(", ")))?,
        ),
        None => None,
    };
    let (run, lock) = match run {
        Some(r) => (r, None),
        None => {
            let (run, lock) = flow.create_locked(spec)?;
            (run, Some(lock))
        }
    };
    writeln!(
        out,
        "run {} ({}): {}",
        run.run_id,
        if run.steps.iter().any(|s| s.started_at_ms.is_some()) {
            "resumed"
        } else {
            "new"
        },
        flow.root().join(&run.run_id).display()
    )?;
    out.flush()?;
    let progress = Bars::new(std::io::stderr().is_terminal() && !args.quiet);
    let handle = rt.handle().clone();
    let done = retrain::execute(&svc, &handle, run, lock, only, &progress)
        .with_context(|| format!("retraining {}", args.strategy))?;
    progress.clear();
    let mut lines = progress.lines.lock().map(|l| l.clone()).unwrap_or_default();
    if lines.is_empty() {
        // Resumed a finished run: nothing ran; say what it holds.
        lines = done.steps.iter().map(line).collect();
    }
    if !progress.interactive {
        for l in &lines {
            writeln!(out, "{l}")?;
        }
    }
    writeln!(
        out,
        "{}: {}",
        done.status.as_str(),
        done.verdict.as_deref().unwrap_or("")
    )?;
    let dir = flow.root().join(&done.run_id);
    if done.status != RunStatus::Failed {
        writeln!(out, "report: {}", dir.join("report.html").display())?;
    }
    writeln!(out, "manifest: {}", dir.join("manifest.json").display())?;
    Ok(match done.status {
        RunStatus::Succeeded | RunStatus::Running => 0,
        RunStatus::Rejected => EXIT_REJECTED,
        RunStatus::Failed => EXIT_FAILED,
    })
}

/// `fold:I` or `trial:I`.
fn parse_unit(text: &str) -> anyhow::Result<Unit> {
    let parsed = text.split_once(':').and_then(|(kind, i)| {
        let i = i.parse::<usize>().ok()?;
        match kind {
            "fold" => Some(Unit::Fold(i)),
            "trial" => Some(Unit::Trial(i)),
            _ => None,
        }
    });
    parsed.with_context(|| format!("--unit `{text}`: fold:I or trial:I"))
}

/// One finished step, for humans.
fn line(s: &StepEntry) -> String {
    let state = match s.state {
        StepState::Done => "done",
        StepState::Cached => "cached",
        StepState::Skipped => "skipped",
        StepState::Failed => "FAILED",
        StepState::Running => "running",
        StepState::Pending => "pending",
    };
    let took = s
        .duration_ms
        .map(|ms| format!("{:>7.2} s", ms as f64 / 1000.0))
        .unwrap_or_default();
    let rows = s.rows.map(|r| format!("  rows {r}")).unwrap_or_default();
    let note = s.note.as_deref().map(|n| format!("  ({n})")).unwrap_or_default();
    format!(
        "  {:<10} {:<7} {took}  key {}{rows}{note}",
        s.name,
        state,
        s.key.short()
    )
}

/// A bar per step while it runs (length: how long the step took last
/// time, so the ETA means something), finished with the step's line.
struct Bars {
    interactive: bool,
    multi: MultiProgress,
    bars: Mutex<BTreeMap<String, ProgressBar>>,
    lines: Mutex<Vec<String>>,
}

impl Bars {
    fn new(interactive: bool) -> Self {
        let target = if interactive {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Self {
            interactive,
            multi: MultiProgress::with_draw_target(target),
            bars: Mutex::new(BTreeMap::new()),
            lines: Mutex::new(Vec::new()),
        }
    }

    fn clear(&self) {
        let _ = self.multi.clear();
    }
}

impl Progress for Bars {
    fn started(&self, run: &RunManifest, step: &StepEntry) {
        let (done, total) = run.progress();
        let bar = match step.expected_ms {
            Some(ms) => {
                let b = self.multi.add(ProgressBar::new(ms.max(1)));
                b.set_style(
                    ProgressStyle::with_template("{prefix:>14} {msg:<10} [{bar:30}] {elapsed:>4} ETA {eta}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                b
            }
            None => {
                let b = self.multi.add(ProgressBar::new_spinner());
                b.set_style(
                    ProgressStyle::with_template("{prefix:>14} {msg:<10} {spinner} {elapsed:>4}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                b
            }
        };
        bar.set_prefix(format!("step {}/{total}", done + 1));
        bar.set_message(step.name.clone());
        // Time-driven: the bar advances with the clock against the last
        // run's duration (held at 99 % until the step really ends).
        bar.enable_steady_tick(Duration::from_millis(200));
        if let Some(ms) = step.expected_ms {
            let b = bar.clone();
            let start = std::time::Instant::now();
            std::thread::spawn(move || {
                while !b.is_finished() {
                    let elapsed = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                    b.set_position(elapsed.min(ms.saturating_mul(99) / 100));
                    std::thread::sleep(Duration::from_millis(200));
                }
            });
        }
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(step.name.clone(), bar);
        }
    }

    fn finished(&self, _run: &RunManifest, step: &StepEntry) {
        let text = line(step);
        if let Some(bar) = self.bars.lock().ok().and_then(|mut b| b.remove(&step.name)) {
            bar.finish_and_clear();
        }
        if self.interactive {
            let _ = self.multi.println(&text);
        }
        if let Ok(mut lines) = self.lines.lock() {
            lines.push(text);
        }
    }
}
