//! `mlcore-learner-bench`: our learners beside LightGBM on the same rows.
//!
//! Generates the synthetic market, builds the trainer's samples and
//! time-ordered split (train, validation = the trainer's calibration
//! segment, test), fits ai1 as the trainer does (LightGBM through the
//! `lightgbm3` bindings, uniqueness-weighted, early-stopped on the
//! validation rows, exported and read back as the ONNX export's trees) and
//! ai2 likewise (and with a logistic regression, the trainer's ai2 before
//! this benchmark showed it behind), then runs `scripts/python/lightgbm_reference.py`
//! (LightGBM from the pinned virtualenv, `$MLCORE_LIGHTGBM_PYTHON`) on the
//! same matrix and splits, and prints test AUC, log loss and training time
//! side by side with the goals: AUC within 0.005 of LightGBM's,
//! training time within 2× of it. Both sides single-threaded.
//!
//! `mlcore-learner-bench [--seed 7] [--days 3] [--interval-ms 5000] [--json OUT]`

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use mlcore_features::N_FEATURES;
use mlcore_market::civil;
use mlcore_research::synth::{Generator, SynthSpec};
use mlcore_research::train::learners::{self, GbmParams};
use mlcore_research::train::samples::{self, Segment};
use mlcore_research::train::{auc, log_loss};

#[derive(Debug, Parser)]
#[command(name = "mlcore-learner-bench")]
struct Args {
    /// Synthetic market seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Weekdays of quotes.
    #[arg(long, default_value_t = 3)]
    days: u32,
    /// Quote interval, ms.
    #[arg(long, default_value_t = 5_000)]
    interval_ms: u32,
    /// The Python with LightGBM (scripts/setup-python-tools.sh).
    #[arg(long, env = "MLCORE_LIGHTGBM_PYTHON")]
    python: PathBuf,
    /// Write the figures (JSON) here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Test AUC, log loss and training seconds of one fit.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Fit {
    auc: f64,
    log_loss: f64,
    train_seconds: f64,
}

fn measure(test: &Segment, labels: &[bool], seconds: f64, predict: impl Fn(&[f32]) -> f32) -> Fit {
    let p: Vec<f32> = (0..test.rows()).map(|i| predict(test.row(i))).collect();
    Fit {
        auc: auc(&p, labels).unwrap_or(0.5),
        log_loss: log_loss(&p, labels),
        train_seconds: seconds,
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let spec = SynthSpec {
        seed: a.seed,
        symbols: 32,
        start_day: civil::parse("2026-01-05").context("start day")?,
        days: a.days,
        interval_ms: a.interval_ms,
        effect: 1.0,
    };
    let mut generator = Generator::new(spec.clone())?;
    let mut quotes = Vec::new();
    for day in spec.trading_days() {
        quotes.extend(generator.day_merged(day));
    }
    let split = samples::build(&quotes, spec.symbols, 0, 60_000_000_000, 12, (0.7, 0.1));
    let (train, valid, test) = (&split.train, &split.calibration, &split.test);
    println!(
        "rows train/valid/test: {}/{}/{} ({} features)",
        train.rows(),
        valid.rows(),
        test.rows(),
        N_FEATURES
    );
    let gbm = GbmParams::default();
    let started = Instant::now();
    let ai1 = learners::fit_gbm(
        &train.x,
        &train.up,
        Some(&train.weight),
        Some((&valid.x, &valid.up)),
        gbm,
    )?;
    let ai1_fit = measure(test, &test.up, started.elapsed().as_secs_f64(), |r| {
        ai1.predict_row(r)
    });
    let started = Instant::now();
    let ai2 = learners::fit_logistic(&train.x, &train.adverse, 1.0)?;
    let ai2_logistic = measure(test, &test.adverse, started.elapsed().as_secs_f64(), |r| {
        ai2.predict_row(r)
    });
    let started = Instant::now();
    let ai2g = learners::fit_gbm(
        &train.x,
        &train.adverse,
        None,
        Some((&valid.x, &valid.adverse)),
        gbm,
    )?;
    let ai2_gbm = measure(test, &test.adverse, started.elapsed().as_secs_f64(), |r| {
        ai2g.predict_row(r)
    });

    // The same rows for LightGBM.
    let dir = tempfile::tempdir()?;
    let segments = [train, valid, test];
    let rows: usize = segments.iter().map(|s| s.rows()).sum();
    let mut x = Vec::with_capacity(rows * N_FEATURES * 4);
    let (mut y1, mut y2, mut w) = (Vec::new(), Vec::new(), Vec::new());
    for s in segments {
        for v in &s.x {
            x.extend_from_slice(&v.to_le_bytes());
        }
        y1.extend(s.up.iter().map(|l| u8::from(*l)));
        y2.extend(s.adverse.iter().map(|l| u8::from(*l)));
        for v in &s.weight {
            w.extend_from_slice(&v.to_le_bytes());
        }
    }
    let (t, v) = (train.rows(), train.rows() + valid.rows());
    for (name, bytes) in [("x.f32", &x), ("ai1.u8", &y1), ("ai2.u8", &y2), ("w.f64", &w)] {
        std::fs::write(dir.path().join(name), bytes)?;
    }
    let split_json = serde_json::json!({
        "rows": rows, "features": N_FEATURES,
        "train": [0, t], "valid": [t, v], "test": [v, rows],
    });
    std::fs::write(dir.path().join("split.json"), split_json.to_string())?;
    let script = mlcore_testkit::workspace_root().join("scripts/python/lightgbm_reference.py");
    let out = Command::new(&a.python)
        .arg(&script)
        .arg(dir.path())
        .output()
        .with_context(|| format!("running {}", a.python.display()))?;
    if !out.status.success() {
        bail!(
            "LightGBM reference failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let lgb: serde_json::Value = serde_json::from_slice(&out.stdout).context("LightGBM's JSON")?;
    let figure = |head: &str, k: &str| lgb[head][k].as_f64().unwrap_or(f64::NAN);

    println!(
        "{:<22} {:>8} {:>9} {:>9}   (LightGBM {} single-threaded, early-stopped on valid)",
        "head / learner",
        "AUC",
        "log loss",
        "train s",
        lgb["lightgbm"].as_str().unwrap_or("?")
    );
    let line = |name: &str, f: &Fit| {
        println!(
            "{name:<22} {:>8.4} {:>9.4} {:>9.2}",
            f.auc, f.log_loss, f.train_seconds
        )
    };
    let reference = |head: &str| Fit {
        auc: figure(head, "auc"),
        log_loss: figure(head, "log_loss"),
        train_seconds: figure(head, "train_seconds"),
    };
    let (l1, l2) = (reference("ai1"), reference("ai2"));
    line("ai1 ours (lightgbm3)", &ai1_fit);
    line("ai1 LightGBM", &l1);
    line("ai2 logistic", &ai2_logistic);
    line("ai2 ours (lightgbm3)", &ai2_gbm);
    line("ai2 LightGBM", &l2);
    let verdict = |ours: &Fit, theirs: &Fit| {
        let d_auc = ours.auc - theirs.auc;
        let ratio = ours.train_seconds / theirs.train_seconds.max(1e-9);
        format!(
            "ΔAUC {d_auc:+.4} ({}), time ×{ratio:.2} ({})",
            if d_auc >= -0.005 {
                "within 0.005"
            } else {
                "MISSES 0.005"
            },
            if ratio <= 2.0 { "within 2×" } else { "MISSES 2×" }
        )
    };
    println!("ai1: ours vs LightGBM (Python): {}", verdict(&ai1_fit, &l1));
    println!(
        "ai2 as a logistic regression vs LightGBM (Python): {}",
        verdict(&ai2_logistic, &l2)
    );
    println!(
        "ai2: ours (trees) vs LightGBM (Python): {}",
        verdict(&ai2_gbm, &l2)
    );
    if let Some(path) = &a.json {
        let all = serde_json::json!({
            "ai1_ours": ai1_fit, "ai2_logistic": ai2_logistic, "ai2_trees": ai2_gbm,
            "lightgbm": lgb, "rows": [train.rows(), valid.rows(), test.rows()],
        });
        let mut f = std::fs::File::create(path)?;
        writeln!(f, "{all}")?;
    }
    Ok(())
}
