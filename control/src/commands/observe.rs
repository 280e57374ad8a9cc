//! `observe ...` and `run-daily --observability`: the observability jobs
//! from the command line. The record of each run (the line appended to
//! `automation_runs.log`) is the JSON on stdout; what a person reads goes
//! to stderr.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use mlcore_config::EnvSource;
use mlcore_observe::{dashboard, Job, RunRecord, RunStatus};
use tokio::runtime::Runtime;

use super::load_config;
use crate::cli::{ObserveCommand, RunDailyArgs};
use crate::observability::{Automation, Options};

/// Exit code of a job that failed.
pub const EXIT_JOB_FAILED: i32 = 12;
/// Exit code of a dashboard bundle that does not match its manifest (and
/// was not restored).
pub const EXIT_BUNDLE_BAD: i32 = 13;

/// The jobs and the runtime they run on (the Redis client's connection
/// manager is made inside it).
fn automation(config_dir: &Path, env: &str, vars: &dyn EnvSource) -> anyhow::Result<(Runtime, Automation)> {
    let cfg = load_config(config_dir, env, vars, mlcore_config::Process::Control)?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let a = {
        let _in_runtime = rt.enter();
        Automation::new(Arc::new(cfg), command)?
    };
    Ok((rt, a))
}

fn describe(r: &RunRecord, err: &mut dyn Write) -> std::io::Result<()> {
    let status = match r.status {
        RunStatus::Ok => "ok",
        RunStatus::Error => "FAILED",
        RunStatus::Skipped => "skipped",
    };
    writeln!(err, "{}: {status} in {} ms", r.job_id, r.duration_ms)?;
    if let Some(m) = &r.error_message {
        writeln!(
            err,
            "  {}{m}",
            r.error_code
                .as_deref()
                .map(|c| format!("{c}: "))
                .unwrap_or_default()
        )?;
    }
    for a in &r.artefacts {
        writeln!(err, "  wrote {a}")?;
    }
    for a in &r.alerts {
        writeln!(
            err,
            "  alert {} ({}): {}",
            a["id"].as_str().unwrap_or("?"),
            a["severity"].as_str().unwrap_or("?"),
            a["message"].as_str().unwrap_or("")
        )?;
    }
    if r.attempts > 0 {
        writeln!(err, "  delivery attempts: {}", r.attempts)?;
    }
    Ok(())
}

fn code(records: &[RunRecord]) -> i32 {
    if records.iter().any(|r| r.status == RunStatus::Error) {
        EXIT_JOB_FAILED
    } else {
        0
    }
}

/// `observe latency|weekly-report|dashboard|verify-dashboard`.
pub fn observe(
    config_dir: &Path,
    cmd: &ObserveCommand,
    vars: &dyn EnvSource,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<i32> {
    let (env, job, opts) = match cmd {
        ObserveCommand::Latency { env, dry_run_alert } => (
            env,
            Job::Latency,
            Options {
                dry_run_alert: *dry_run_alert,
                ..Options::default()
            },
        ),
        ObserveCommand::WeeklyReport {
            env,
            week_start,
            dry_run_webhook,
        } => (
            env,
            Job::WeeklyReport,
            Options {
                dry_run_webhook: *dry_run_webhook,
                week_start: *week_start,
                ..Options::default()
            },
        ),
        ObserveCommand::Dashboard {
            env,
            datasets,
            dry_run_upload,
        } => (
            env,
            Job::Dashboard,
            Options {
                dry_run_upload: *dry_run_upload,
                datasets: datasets.clone(),
                ..Options::default()
            },
        ),
        ObserveCommand::VerifyDashboard { env, bundle, restore } => {
            return verify_dashboard(config_dir, env, bundle.as_deref(), *restore, vars, out, err)
        }
    };
    let (rt, a) = automation(config_dir, env, vars)?;
    let record = rt.block_on(a.run(job, &opts));
    writeln!(out, "{}", serde_json::to_string(&record)?)?;
    describe(&record, err)?;
    Ok(code(std::slice::from_ref(&record)))
}

/// `run-daily --observability [--dry-run]`.
pub fn run_daily(
    config_dir: &Path,
    args: &RunDailyArgs,
    vars: &dyn EnvSource,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<i32> {
    let (rt, a) = automation(config_dir, &args.env, vars)?;
    let opts = if args.dry_run {
        Options::dry_run()
    } else {
        Options::default()
    };
    let records = rt.block_on(a.run_daily(&opts));
    writeln!(out, "{}", serde_json::to_string(&records)?)?;
    for r in &records {
        describe(r, err)?;
    }
    Ok(code(&records))
}

fn verify_dashboard(
    config_dir: &Path,
    env: &str,
    bundle: Option<&Path>,
    restore: bool,
    vars: &dyn EnvSource,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<i32> {
    let (_rt, a) = automation(config_dir, env, vars)?;
    let layout = a.layout();
    // Not between an export's two renames, and no export while restoring.
    let lock_file = layout.lock(Job::Dashboard);
    let _held = match mlcore_observe::lock::try_lock(&lock_file)? {
        Some(held) => held,
        None => {
            writeln!(
                err,
                "waiting for the running dashboard export to finish ({})",
                lock_file.display()
            )?;
            mlcore_observe::lock::lock(&lock_file)?
        }
    };
    let dir = bundle.map_or_else(|| layout.dashboard(), Path::to_owned);
    match dashboard::verify(&dir) {
        Ok(m) => {
            writeln!(
                out,
                "{}",
                serde_json::json!({"bundle": dir, "status": "ok", "sequence": m.sequence, "datasets": m.datasets.len()})
            )?;
            writeln!(
                err,
                "{}: sequence {} verifies ({} datasets)",
                dir.display(),
                m.sequence,
                m.datasets.len()
            )?;
            Ok(0)
        }
        Err(e) if !restore => {
            writeln!(
                out,
                "{}",
                serde_json::json!({"bundle": dir, "status": "bad", "error": e.to_string()})
            )?;
            writeln!(err, "{e}\n  restore the last good bundle: mlcore-control observe verify-dashboard --env {env} --restore")?;
            Ok(EXIT_BUNDLE_BAD)
        }
        Err(e) => {
            writeln!(err, "{e}")?;
            let job = mlcore_observe::JobId::new(Job::Dashboard, chrono::Utc::now());
            let (m, from) = dashboard::restore(layout, job.as_str())?;
            writeln!(
                out,
                "{}",
                serde_json::json!({"bundle": layout.dashboard(), "status": "restored", "sequence": m.sequence, "from": from})
            )?;
            writeln!(err, "restored sequence {} from {}", m.sequence, from.display())?;
            Ok(0)
        }
    }
}
