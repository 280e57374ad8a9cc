//! A run: `runs/<run_id>/manifest.json` says what was asked, which step is
//! running, and for every step its key, inputs, outputs (with hashes),
//! rows and timing. Rewritten atomically after every change, so a reader
//! (the API, an operator, `--resume`) never sees half of it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::{write_atomic, StepKey, StoreError};
use crate::Step;

/// What a run was asked to do; fixed when it starts, reused on resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Environment.
    pub env: String,
    /// Strategy id.
    pub strategy: String,
    /// The version the model gets if it is adopted.
    pub version: u64,
    /// Creation time written into the signed manifest, ms.
    pub created_at_ms: u64,
    /// The active model's artifact folder at the start (the champion), if any.
    pub champion: Option<PathBuf>,
    /// Who or what started it (`cli`, `api`, `schedule`).
    pub trigger: String,
    /// The principal (or `schedule`).
    pub actor: String,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Steps are running (or the process running them died: see the lock).
    Running,
    /// A candidate was signed and registered.
    Succeeded,
    /// Every step ran, and the candidate lost to the active model: not signed.
    Rejected,
    /// A step failed.
    Failed,
}

impl RunStatus {
    /// `succeeded`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
        }
    }
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not reached yet.
    Pending,
    /// Running now.
    Running,
    /// Ran in this run.
    Done,
    /// Its output under the same key already existed: reused, no work.
    Cached,
    /// Not needed (nothing to sign after a lost challenge).
    Skipped,
    /// Failed.
    Failed,
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepEntry {
    /// Step name.
    pub name: String,
    /// Content address.
    pub key: StepKey,
    /// State.
    pub state: StepState,
    /// What the key hashes.
    pub inputs: serde_json::Value,
    /// The output folder.
    pub dir: Option<PathBuf>,
    /// Files written, relative path → sha256.
    pub outputs: std::collections::BTreeMap<String, String>,
    /// Rows it produced.
    pub rows: Option<u64>,
    /// When it started in this run, ms since the epoch.
    pub started_at_ms: Option<u64>,
    /// How long it took in this run (0 when cached), ms.
    pub duration_ms: Option<u64>,
    /// How long producing the output took when it was produced, ms.
    pub produced_in_ms: Option<u64>,
    /// How long the last run of this step took (any key): the progress
    /// bar's expectation.
    pub expected_ms: Option<u64>,
    /// Why it failed or was skipped.
    pub note: Option<String>,
}

/// A failed step and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The step.
    pub step: String,
    /// The error, with its chain.
    pub message: String,
}

/// `runs/<run_id>/manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    /// `YYYYMMDDThhmmssZ-<strategy>-<hex>`.
    pub run_id: String,
    /// What was asked.
    pub spec: RunSpec,
    /// Where it is.
    pub status: RunStatus,
    /// The step running now.
    pub current_step: Option<String>,
    /// Code version.
    pub code_version: String,
    /// Feature schema hash the models are trained for.
    pub feature_schema_hash: String,
    /// When it started, ms.
    pub started_at_ms: u64,
    /// When it last finished (a resumed run finishes again), ms.
    pub finished_at_ms: Option<u64>,
    /// How many times it was resumed.
    pub resumed: u32,
    /// Every step, in order.
    pub steps: Vec<StepEntry>,
    /// One line: what the run concluded.
    pub verdict: Option<String>,
    /// The registered model's id.
    pub model_id: Option<String>,
    /// The signed artifact's folder.
    pub artifact: Option<PathBuf>,
    /// The failure, when it failed.
    pub failure: Option<Failure>,
}

impl RunManifest {
    /// The manifest of `run_id` under `runs`.
    pub fn path(runs: &Path, run_id: &str) -> PathBuf {
        runs.join(run_id).join("manifest.json")
    }

    /// Reads a run's manifest.
    pub fn read(runs: &Path, run_id: &str) -> Result<Self, StoreError> {
        let path = Self::path(runs, run_id);
        let text = std::fs::read_to_string(&path).map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| StoreError::Record {
            path,
            message: e.to_string(),
        })
    }

    /// Writes it atomically.
    pub fn save(&self, runs: &Path) -> Result<(), StoreError> {
        let path = Self::path(runs, &self.run_id);
        let text = serde_json::to_string_pretty(self).map_err(|e| StoreError::Record {
            path: path.clone(),
            message: e.to_string(),
        })? + "\n";
        write_atomic(&path, text.as_bytes())
    }

    /// The entry of `step`.
    pub fn step(&self, step: Step) -> Option<&StepEntry> {
        self.steps.iter().find(|s| s.name == step.name())
    }

    /// Steps finished (done, cached or skipped) of all.
    pub fn progress(&self) -> (usize, usize) {
        let done = self
            .steps
            .iter()
            .filter(|s| matches!(s.state, StepState::Done | StepState::Cached | StepState::Skipped))
            .count();
        (done, self.steps.len())
    }
}

/// Whether `id` is a well-formed run id (no path tricks).
pub fn valid_run_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A new run id: `YYYYMMDDThhmmssZ-<strategy>-<8 hex>`, the suffix random
/// (two runs started in the same second never share an id; `create` also
/// refuses a folder that exists).
pub fn new_run_id(strategy: &str, now_ms: u64) -> String {
    use std::hash::{BuildHasher, Hasher};
    let (y, m, d, h, mi, s) = crate::ledger::utc(now_ms);
    // RandomState is seeded from the OS per instance.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(now_ms);
    hasher.write_u32(std::process::id());
    let salt = hasher.finish() as u32;
    let strategy: String = strategy
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{y:04}{m:02}{d:02}T{h:02}{mi:02}{s:02}Z-{strategy}-{salt:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_dated_and_safe() {
        let id = new_run_id("fx g10/../x", 1_796_378_400_123);
        assert!(id.starts_with("20261204T100000Z-fx_g10____x-"), "{id}");
        assert!(valid_run_id(&id));
        assert!(!valid_run_id("../etc"));
        assert!(!valid_run_id(""));
        assert_ne!(new_run_id("fx", 1), new_run_id("fx", 1), "random suffix");
    }
}
