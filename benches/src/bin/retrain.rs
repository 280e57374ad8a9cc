//! `mlcore-retrain-bench`: the retraining flow's time and each step's share
//! on a synthetic market of 32 symbols × 15, 30 and 60 trading days, with
//! both cores and with one, and what resuming a finished run costs.
//!
//! Each measurement runs in a child process of its own (this binary with
//! `--child`), pinned by `taskset` to the cores it may use (rayon sizes its
//! pool from them), with a step store of its own: nothing is reused between
//! measurements. The flow is `mlcore-retrain`'s, in-process, as
//! `mlcore-control retrain` runs it, except registration, which here
//! verifies the signed artifact against trust.yaml instead of writing the
//! registry (no database in a benchmark). Datasets are generated once and
//! kept under the target dir.
//!
//! `mlcore-retrain-bench [--days 15,30,60] [--interval-ms 60000] [--json OUT]`

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use mlcore_config::{Environment, MapEnv, Process};
use mlcore_models::artifact::{self, ArtifactFiles, TrustStore, VerifyContext};
use mlcore_retrain::run::{RunManifest, RunSpec};
use mlcore_retrain::{Flow, NoProgress, RegisterError, Registrar};
use serde::{Deserialize, Serialize};

#[derive(Debug, Parser)]
#[command(name = "mlcore-retrain-bench")]
struct Args {
    /// Trading days of each dataset, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "15,30,60")]
    days: Vec<u32>,
    /// Quote interval per symbol, ms.
    #[arg(long, default_value_t = 60_000)]
    interval_ms: u32,
    /// Decision cadence of the training samples, ms.
    #[arg(long, default_value_t = 300_000)]
    decision_every_ms: u64,
    /// Most trees per LightGBM fit.
    #[arg(long, default_value_t = 200)]
    max_trees: usize,
    /// Write the figures (JSON) here too.
    #[arg(long)]
    json: Option<PathBuf>,
    /// (internal) Run one measurement: `DATASET RUNS_ROOT`.
    #[arg(long, num_args = 2, hide = true)]
    child: Option<Vec<PathBuf>>,
}

/// One measurement.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Measured {
    days: u32,
    cores: usize,
    quotes: u64,
    samples: u64,
    total_s: f64,
    steps: Vec<(String, f64)>,
    status: String,
    resume_s: f64,
    resume_wrote_nothing: bool,
}

/// Verifies the signed candidate as the registry would, without a database.
struct Verify(TrustStore);

impl Registrar for Verify {
    fn register(&self, strategy: &str, version: u64, dir: &Path) -> Result<String, RegisterError> {
        let files = ArtifactFiles::read(dir)?;
        let now = mlcore_retrain::store::now_ms();
        let v = artifact::verify(files, &VerifyContext::new(&self.0, now))?;
        if v.manifest.strategy != strategy || v.manifest.version != version {
            return Err(format!("{} is not {strategy} v{version}", v.manifest.model_id).into());
        }
        Ok(v.manifest.model_id)
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn child(args: &Args, dataset: &Path, runs: &Path) -> anyhow::Result<()> {
    let mut cfg = mlcore_config::load_for(
        &workspace().join("configs"),
        Environment::Dev,
        &MapEnv::new(),
        Process::Offline,
    )?;
    cfg.storage.runs_root = runs.to_owned();
    let r = &mut cfg.control.retrain;
    r.dataset = dataset.to_owned();
    r.decision_every_ms = args.decision_every_ms;
    r.trees.max_trees = args.max_trees;
    let trust = TrustStore::from_config(&cfg.trust)?;
    let flow = Flow::new(&cfg);
    let spec = RunSpec {
        env: "dev".into(),
        strategy: "fx_g10".into(),
        version: 1,
        created_at_ms: mlcore_retrain::store::now_ms(),
        champion: None,
        trigger: "bench".into(),
        actor: "mlcore-retrain-bench".into(),
    };
    let run = flow.create(spec)?;
    let registrar = Verify(trust);
    let t0 = Instant::now();
    let done = flow.execute(run, &registrar, &NoProgress)?;
    let total_s = t0.elapsed().as_secs_f64();
    if let Some(f) = &done.failure {
        bail!("the run failed: {}", f.message);
    }
    let path = RunManifest::path(flow.root(), &done.run_id);
    let before = std::fs::read(&path)?;
    let t1 = Instant::now();
    flow.execute(done.clone(), &registrar, &NoProgress)?;
    let resume_s = t1.elapsed().as_secs_f64();
    let after = std::fs::read(&path)?;
    let rows = |name: &str| {
        done.steps
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.rows)
            .unwrap_or(0)
    };
    let m = Measured {
        days: 0,
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        quotes: rows("dataset"),
        samples: rows("features"),
        total_s,
        steps: done
            .steps
            .iter()
            .map(|s| (s.name.clone(), s.duration_ms.unwrap_or(0) as f64 / 1000.0))
            .collect(),
        status: done.status.as_str().to_owned(),
        resume_s,
        resume_wrote_nothing: before == after,
    };
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}

fn dataset(args: &Args, days: u32) -> anyhow::Result<PathBuf> {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from);
    let dir = target
        .join("retrain-bench-data")
        .join(format!("synth-s7-32x{days}d-{}ms", args.interval_ms));
    if !dir.join(mlcore_research::dataset::INDEX_FILE).exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        println!("generating {} (once)", dir.display());
        mlcore_testkit::synth_dataset(&dir, 7, 32, days, args.interval_ms);
    }
    Ok(dir)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(paths) = &args.child {
        return child(&args, &paths[0], &paths[1]);
    }
    let exe = std::env::current_exe()?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let max_days = args.days.iter().copied().max().unwrap_or(60);
    let mut plan: Vec<(u32, usize)> = args.days.iter().map(|d| (*d, cores)).collect();
    if cores > 1 {
        plan.push((max_days, 1));
    }
    let mut results = Vec::new();
    for (days, use_cores) in plan {
        let data = dataset(&args, days)?;
        let runs = tempfile::tempdir()?;
        let cpus = (0..use_cores)
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let out = Command::new("taskset")
            .args(["-c", &cpus])
            .arg(&exe)
            .arg("--child")
            .arg(&data)
            .arg(runs.path())
            .args(["--interval-ms", &args.interval_ms.to_string()])
            .args(["--decision-every-ms", &args.decision_every_ms.to_string()])
            .args(["--max-trees", &args.max_trees.to_string()])
            .output()
            .context("taskset (util-linux) runs each measurement on its cores")?;
        if !out.status.success() {
            bail!(
                "{days} days on {use_cores} cores failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut m: Measured = serde_json::from_str(text.lines().last().unwrap_or_default())?;
        m.days = days;
        println!(
            "{days:>3} days, {} core(s): {:>7.1} s total ({} quotes, {} samples, {}); resume of the finished run {:.3} s, wrote nothing: {}",
            m.cores, m.total_s, m.quotes, m.samples, m.status, m.resume_s, m.resume_wrote_nothing
        );
        let shares: Vec<String> = m
            .steps
            .iter()
            .map(|(name, s)| format!("{name} {s:.1} s ({:.0} %)", 100.0 * s / m.total_s.max(1e-9)))
            .collect();
        println!("      {}", shares.join(" · "));
        results.push(m);
    }
    if let (Some(two), Some(one)) = (
        results.iter().find(|m| m.days == max_days && m.cores > 1),
        results.iter().find(|m| m.days == max_days && m.cores == 1),
    ) {
        println!(
            "{max_days} days: {:.2}× faster on {} cores than on 1",
            one.total_s / two.total_s.max(1e-9),
            two.cores
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)? + "\n")?;
    }
    Ok(())
}
