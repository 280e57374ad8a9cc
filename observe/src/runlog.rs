//! `automation_runs.log`: every job run writes one JSON line — its
//! `job_id` (`YYYYMMDDThhmmssZ-<job>`), status, duration, artefacts,
//! alerts, delivery attempts and, on failure, `error_code` and
//! `error_message` — so a log shipper and the weekly report read one
//! format.

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ObserveError;

/// The automated jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Job {
    /// Signal latency monitoring.
    Latency,
    /// The weekly health report.
    WeeklyReport,
    /// The dashboard dataset export.
    Dashboard,
}

impl Job {
    /// Every job, in the order `run-daily` runs them (the rollups first:
    /// the others read them).
    pub const ALL: [Self; 3] = [Self::Latency, Self::Dashboard, Self::WeeklyReport];

    /// The name in job ids, lock files and the CLI.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Latency => "latency",
            Self::WeeklyReport => "weekly_report",
            Self::Dashboard => "dashboard",
        }
    }
}

/// `YYYYMMDDThhmmssZ-<job>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// The id of `job` started at `at`.
    pub fn new(job: Job, at: DateTime<Utc>) -> Self {
        Self(format!("{}-{}", at.format("%Y%m%dT%H%M%SZ"), job.name()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// When the run started (from the id's timestamp).
    pub fn started(&self) -> Option<DateTime<Utc>> {
        let stamp = self.0.get(..16)?;
        chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ")
            .ok()
            .map(|t| t.and_utc())
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Did its work.
    Ok,
    /// Failed (`error_code`, `error_message`).
    Error,
    /// Another run held the lock.
    Skipped,
}

/// One line of `automation_runs.log`, and the JSON summary a job prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `YYYYMMDDThhmmssZ-<job>`.
    pub job_id: JobId,
    /// Which job.
    pub job: Job,
    /// How it ended.
    pub status: RunStatus,
    /// Wall time, ms.
    pub duration_ms: u64,
    /// Files written, named under their root (`ops/...`, `out/...`).
    pub artefacts: Vec<String>,
    /// Alerts raised (the weekly report's alert shape).
    pub alerts: Vec<Value>,
    /// Delivery attempts (webhook or upload; 0 when nothing was sent).
    pub attempts: u32,
    /// Whether deliveries were written to files instead of sent.
    #[serde(default)]
    pub dry_run: bool,
    /// On failure: a stable code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// On failure: what went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// What the job reports beyond the common fields.
    #[serde(default)]
    pub summary: Value,
}

/// Appends `record` as one line (one `write` under an exclusive lock, so
/// concurrent jobs never interleave).
pub fn append(path: &Path, record: &RunRecord) -> Result<(), ObserveError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(ObserveError::io(dir))?;
    }
    let mut line = serde_json::to_string(record).map_err(|e| ObserveError::input(path, e.to_string()))?;
    line.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(ObserveError::io(path))?;
    f.lock().map_err(ObserveError::io(path))?;
    f.write_all(line.as_bytes()).map_err(ObserveError::io(path))
}

/// Every record of the log (none when it does not exist). A line that is
/// not a record is an error naming its line number: the log is the
/// automation's evidence, and a damaged one should be looked at.
pub fn read(path: &Path) -> Result<Vec<RunRecord>, ObserveError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ObserveError::io(path)(e)),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| ObserveError::input(path, format!("line {}: {e}", i + 1)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_carry_their_start_and_records_round_trip() {
        let at = crate::time::parse("2026-06-27T00:30:05Z").unwrap();
        let id = JobId::new(Job::Latency, at);
        assert_eq!(id.as_str(), "20260627T003005Z-latency");
        assert_eq!(id.started(), Some(at));
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ops/automation_runs.log");
        let mut r = RunRecord {
            job_id: id,
            job: Job::Latency,
            status: RunStatus::Ok,
            duration_ms: 3100,
            artefacts: vec!["ops/signal_latency.csv".into()],
            alerts: vec![],
            attempts: 0,
            dry_run: false,
            error_code: None,
            error_message: None,
            summary: serde_json::json!({"samples_written": 3}),
        };
        append(&log, &r).unwrap();
        r.status = RunStatus::Skipped;
        append(&log, &r).unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(!text.lines().next().unwrap().contains("error_code"), "{text}");
        let back = read(&log).unwrap();
        assert_eq!(back[1], r);
        std::fs::write(&log, format!("{text}not json\n")).unwrap();
        assert!(read(&log).unwrap_err().to_string().contains("line 3"));
    }
}
