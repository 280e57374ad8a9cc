//! Observability automation (the Python design's phase 3): what three jobs
//! write so that operators know the system's health from dashboards and
//! notifications alone, and the checks on it.
//!
//! - [`latency`]: trigger → Redis samples in `signal_latency.csv` (rotated
//!   into `signal_latency_archive/YYYY/MM/<job_id>.csv`), hourly rollups in
//!   `signal_latency_rollup.csv`, the SLO's consecutive-breach count.
//! - [`weekly`]: the weekly health report — built from `runs/index.csv`, the
//!   runs' `portfolio_summary.json` and the rollups, validated against the
//!   JSON Schema in `observe/schemas/`, signed (HMAC-SHA256 over canonical
//!   JSON), kept in `weekly_report_history/`.
//! - [`dashboard`]: the datasets (`ev_history`, `slippage`, `turnover`,
//!   `latency_rollups`) with a manifest (sequence, checksums, provenance),
//!   their history, and `verify` / restore.
//! - [`runlog`]: one JSON line per job run in `automation_runs.log`;
//!   [`lock`]: one run of a job at a time; [`layout`]: where everything
//!   lives under `storage.yaml`'s `ops_root`, `out_root` and `runs_root`.
//!
//! Files only: the control plane samples Redis, sends the webhook, raises
//! alerts and serves the analytics API over what this crate writes.

pub mod dashboard;
pub mod error;
pub mod files;
pub mod inputs;
pub mod latency;
pub mod layout;
pub mod lock;
pub mod runlog;
pub mod schema;
pub mod time;
pub mod weekly;

pub use error::ObserveError;
pub use layout::Layout;
pub use runlog::{Job, JobId, RunRecord, RunStatus};
