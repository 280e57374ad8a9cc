//! The SLO over consecutive runs: a run whose samples' p95 exceeds the
//! threshold breaches it; `warning_after` breaching runs in a row raise a
//! warning, `critical_after` a critical alert; a run within the SLO resets
//! the count. A run without samples leaves the count as it was (silence is
//! the heartbeat monitor's to report, not a latency). The count, the
//! streams' cursors and the last breach persist in the job's state file;
//! the heartbeat says when the next run is due.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::ObserveError;

/// `latency_job_state.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyState {
    /// Breaching runs in a row, up to the last run.
    pub consecutive_breaches: u32,
    /// When the last breaching run happened, RFC 3339.
    pub last_breach_at: Option<String>,
    /// Per stream key: the id of the last entry sampled.
    pub cursors: BTreeMap<String, String>,
    /// Per daemon `/metrics` target: its `trigger_to_ack` buckets at the
    /// last run.
    #[serde(default)]
    pub histograms: BTreeMap<String, super::histogram::Buckets>,
    /// The highest level alerted since latency was last within the SLO:
    /// the next run within it sends the resolution.
    #[serde(default)]
    pub open_alert: Option<Level>,
    /// An append under way: written before the samples are, cleared after.
    /// Found by the next run, it means the last one died mid-write: the
    /// file goes back to its length and the cursors to where they were, so
    /// those entries are sampled again, once.
    #[serde(default)]
    pub pending: Option<PendingAppend>,
}

/// What an interrupted append is undone to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PendingAppend {
    /// `signal_latency.csv`'s length before the append.
    pub len_before: u64,
    /// The cursors before the sampling.
    pub cursors_before: BTreeMap<String, String>,
}

impl LatencyState {
    /// Undoes an append the last run did not finish (see `pending`):
    /// truncates `live` back and restores the cursors. Returns whether
    /// there was one.
    pub fn recover(&mut self, live: &Path) -> Result<bool, ObserveError> {
        let Some(p) = self.pending.take() else {
            return Ok(false);
        };
        if std::fs::metadata(live).is_ok_and(|m| m.len() > p.len_before) {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(live)
                .map_err(ObserveError::io(live))?;
            f.set_len(p.len_before).map_err(ObserveError::io(live))?;
        }
        self.cursors = p.cursors_before;
        Ok(true)
    }

    /// The state (default when the file does not exist yet).
    pub fn load(path: &Path) -> Result<Self, ObserveError> {
        if path.exists() {
            crate::files::read_json(path)
        } else {
            Ok(Self::default())
        }
    }
}

/// How urgent a breach streak is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Within the SLO, or not breached long enough.
    Ok,
    /// `warning_after` breaching runs in a row.
    Warning,
    /// `critical_after` breaching runs in a row.
    Critical,
}

/// The SLO's thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slo {
    /// p95 above this breaches, ms.
    pub p95_ms: f64,
    /// Breaches in a row for a warning.
    pub warning_after: u32,
    /// Breaches in a row for a critical alert.
    pub critical_after: u32,
}

/// What one run concluded.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The run's p95 (`None`: no samples).
    pub p95_ms: Option<f64>,
    /// Whether this run breached.
    pub breached: bool,
    /// Breaching runs in a row, this one included.
    pub consecutive: u32,
    /// What to raise.
    pub level: Level,
}

/// Counts this run (`p95_ms` of its samples) into `state`.
pub fn evaluate(state: &mut LatencyState, p95_ms: Option<f64>, slo: &Slo, now: &str) -> Evaluation {
    let breached = p95_ms.is_some_and(|p| p > slo.p95_ms);
    match (p95_ms, breached) {
        (Some(_), true) => {
            state.consecutive_breaches += 1;
            state.last_breach_at = Some(now.to_owned());
        }
        (Some(_), false) => state.consecutive_breaches = 0,
        (None, _) => {}
    }
    let n = state.consecutive_breaches;
    let level = if breached && n >= slo.critical_after {
        Level::Critical
    } else if breached && n >= slo.warning_after {
        Level::Warning
    } else {
        Level::Ok
    };
    Evaluation {
        p95_ms,
        breached,
        consecutive: n,
        level,
    }
}

/// The alert a breach streak raises, in the weekly report's alert shape
/// (`id`, `severity`, `message`, `evidence_url`, `notified_channels`) plus
/// the figures and the dedup key the alerting channels use.
pub fn alert(e: &Evaluation, slo: &Slo, job_id: &str, evidence: &str) -> Option<Value> {
    let severity = match e.level {
        Level::Ok => return None,
        Level::Warning => "warning",
        Level::Critical => "critical",
    };
    Some(json!({
        "id": "latency_breach",
        "severity": severity,
        "message": format!(
            "signal latency p95 {:.3} ms above the SLO of {} ms for {} runs in a row",
            e.p95_ms.unwrap_or_default(), slo.p95_ms, e.consecutive
        ),
        "evidence_url": evidence,
        "notified_channels": [],
        "dedup_key": "mlcore:latency_breach:global",
        "job_id": job_id,
        "p95_ms": e.p95_ms,
        "slo_p95_ms": slo.p95_ms,
        "consecutive_breaches": e.consecutive,
    }))
}

/// The resolution of an alerted breach streak: latency is within the SLO
/// again (same id and dedup key, `resolve: true`, severity `info`).
pub fn resolution(e: &Evaluation, slo: &Slo, job_id: &str, evidence: &str) -> Value {
    json!({
        "id": "latency_breach",
        "severity": "info",
        "message": format!(
            "signal latency back within the SLO: p95 {:.3} ms against {} ms",
            e.p95_ms.unwrap_or_default(), slo.p95_ms
        ),
        "evidence_url": evidence,
        "notified_channels": [],
        "dedup_key": "mlcore:latency_breach:global",
        "resolve": true,
        "job_id": job_id,
        "p95_ms": e.p95_ms,
        "slo_p95_ms": slo.p95_ms,
    })
}

/// `latency_job_heartbeat.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The run that wrote it.
    pub job_id: String,
    /// When, RFC 3339.
    pub generated_at: String,
    /// `ok`, `error` or `skipped`.
    pub status: String,
    /// When the next run is due, RFC 3339.
    pub next_run_at: String,
    /// The last breaching run, RFC 3339.
    pub last_breach_at: Option<String>,
    /// Breaching runs in a row.
    pub consecutive_breaches: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_append_is_taken_back_with_its_cursors() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("signal_latency.csv");
        std::fs::write(&live, "header\nrow 1\nrow 2 of a batch that died\n").unwrap();
        let before: BTreeMap<String, String> = [("k".to_owned(), "1-0".to_owned())].into();
        let mut st = LatencyState {
            cursors: [("k".to_owned(), "9-0".to_owned())].into(),
            pending: Some(PendingAppend {
                len_before: "header\nrow 1\n".len() as u64,
                cursors_before: before.clone(),
            }),
            ..LatencyState::default()
        };
        assert!(st.recover(&live).unwrap());
        assert_eq!(std::fs::read_to_string(&live).unwrap(), "header\nrow 1\n");
        assert_eq!((st.cursors, st.pending), (before, None));
        assert!(!LatencyState::default().recover(&live).unwrap());
    }

    #[test]
    fn two_then_three_consecutive_breaches_warn_then_go_critical_and_a_good_run_resets() {
        let slo = Slo {
            p95_ms: 1.0,
            warning_after: 2,
            critical_after: 3,
        };
        let mut st = LatencyState::default();
        let levels: Vec<Level> = [
            Some(2.0),
            Some(2.0),
            Some(2.0),
            None,
            Some(2.0),
            Some(0.5),
            Some(2.0),
        ]
        .into_iter()
        .map(|p| evaluate(&mut st, p, &slo, "t").level)
        .collect();
        use Level::*;
        assert_eq!(levels, [Ok, Warning, Critical, Ok, Critical, Ok, Ok]);
        assert_eq!(st.consecutive_breaches, 1);
        let e = evaluate(&mut st, Some(3.0), &slo, "t2");
        let a = alert(&e, &slo, "job", "ops/signal_latency_rollup.csv").unwrap();
        assert_eq!(a["severity"], "warning");
        assert_eq!(a["consecutive_breaches"], 2);
        assert_eq!(st.last_breach_at.as_deref(), Some("t2"));
        let e = evaluate(&mut st, Some(0.1), &slo, "t3");
        assert!(alert(&e, &slo, "job", "x").is_none());
    }
}
