//! Where the automation's files live: the Python design's `ops/` under
//! `storage.yaml` `ops_root`, its `out/` under `out_root`, its `runs/` the
//! retraining flow's `runs_root`.

use std::path::{Path, PathBuf};

use crate::runlog::Job;

/// The three roots and every file under them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// State and logs (`ops/`).
    pub ops: PathBuf,
    /// Published artefacts (`out/`).
    pub out: PathBuf,
    /// Retraining runs (`runs/index.csv`, `runs/<run_id>/`).
    pub runs: PathBuf,
}

impl Layout {
    /// The layout over three roots.
    pub fn new(ops: &Path, out: &Path, runs: &Path) -> Self {
        Self {
            ops: ops.to_owned(),
            out: out.to_owned(),
            runs: runs.to_owned(),
        }
    }

    /// One JSON line per job run.
    pub fn automation_log(&self) -> PathBuf {
        self.ops.join("automation_runs.log")
    }

    /// Raw latency samples.
    pub fn latency_csv(&self) -> PathBuf {
        self.ops.join("signal_latency.csv")
    }

    /// Rotated raw samples: `YYYY/MM/<job_id>.csv`.
    pub fn latency_archive(&self) -> PathBuf {
        self.ops.join("signal_latency_archive")
    }

    /// Hourly rollups.
    pub fn rollup_csv(&self) -> PathBuf {
        self.ops.join("signal_latency_rollup.csv")
    }

    /// The latency job's own state: stream cursors, consecutive breaches.
    pub fn latency_state(&self) -> PathBuf {
        self.ops.join("latency_job_state.json")
    }

    /// The latency job's heartbeat (`next_run_at`, `last_breach_at`).
    pub fn latency_heartbeat(&self) -> PathBuf {
        self.ops.join("latency_job_heartbeat.json")
    }

    /// Alert payloads a `--dry-run-alert` wrote instead of sending.
    pub fn latency_alerts(&self) -> PathBuf {
        self.out.join("latency_alerts")
    }

    /// Reports delivered: `<week_start>.json` and `<week_start>.sig`.
    pub fn weekly_history(&self) -> PathBuf {
        self.ops.join("weekly_report_history")
    }

    /// Reports a `--dry-run-webhook` wrote instead of sending.
    pub fn weekly_dry_runs(&self) -> PathBuf {
        self.out.join("weekly_report")
    }

    /// The current dashboard bundle.
    pub fn dashboard(&self) -> PathBuf {
        self.out.join("dashboard")
    }

    /// Earlier bundles, one folder each.
    pub fn dashboard_history(&self) -> PathBuf {
        self.ops.join("dashboard_export_history")
    }

    /// The dashboard export's heartbeat.
    pub fn dashboard_heartbeat(&self) -> PathBuf {
        self.ops.join("dashboard_export_heartbeat.json")
    }

    /// The lock file a job holds while it runs.
    pub fn lock(&self, job: Job) -> PathBuf {
        self.ops.join(format!(".{}.lock", job.name()))
    }

    /// `path` relative to the root it lies under (`ops/...`, `out/...`,
    /// `runs/...`), as artefacts are named in `automation_runs.log`.
    pub fn display(&self, path: &Path) -> String {
        for (root, name) in [(&self.ops, "ops"), (&self.out, "out"), (&self.runs, "runs")] {
            if let Ok(rest) = path.strip_prefix(root) {
                return format!("{name}/{}", rest.display());
            }
        }
        path.display().to_string()
    }
}
