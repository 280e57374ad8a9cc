//! The dashboard bundle: `out/dashboard/<dataset>.json` for each dataset
//! ([`datasets`]) and `manifest.json` (a sequence that grows by one per
//! export, each file's sha256, and provenance: the command, the commit,
//! the inputs), validated against `dashboard_manifest.schema.json`.
//!
//! A bundle is written whole into a staging folder and swapped in, then
//! copied to `dashboard_export_history/<sequence>-<job_id>/` (kept for
//! `history_weeks`). [`verify`] checks a bundle against its manifest;
//! [`restore`] puts back the newest bundle of the history that verifies.

pub mod datasets;
pub mod upload;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use datasets::Dataset;

use crate::files::{read_json, sha256_file, write_json};
use crate::layout::Layout;
use crate::runlog::JobId;
use crate::time::rfc3339;
use crate::{schema, ObserveError};

/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";

/// How a bundle was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The command line.
    pub command: String,
    /// The build's commit (`unknown` when the build did not record one).
    pub commit_sha: String,
    /// The files read.
    pub inputs: Vec<String>,
}

/// One dataset's entry in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Its name.
    pub dataset: String,
    /// `<dataset>.json`.
    pub file: String,
    /// The bundle's sequence.
    pub sequence: u64,
    /// When it was built.
    pub generated_at: String,
    /// Rows.
    pub rows: usize,
    /// sha256 of the file.
    pub checksum_sha256: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// `1.0.0`.
    pub schema_version: String,
    /// One more than the previous bundle's.
    pub sequence: u64,
    /// RFC 3339.
    pub generated_at: String,
    /// The export that wrote it.
    pub job_id: String,
    /// The datasets.
    pub datasets: Vec<Entry>,
    /// How it was made.
    pub provenance: Provenance,
}

/// The manifest of the bundle in `dir`, checked against its schema.
pub fn read_manifest(dir: &Path) -> Result<Manifest, ObserveError> {
    let path = dir.join(MANIFEST);
    let doc: Value = read_json(&path)?;
    schema::validate(schema::DASHBOARD_MANIFEST, &path.display().to_string(), &doc)?;
    serde_json::from_value(doc).map_err(|e| ObserveError::input(&path, e.to_string()))
}

/// Checks every file of the bundle in `dir` against its manifest.
pub fn verify(dir: &Path) -> Result<Manifest, ObserveError> {
    let m = read_manifest(dir)?;
    let mut problems = Vec::new();
    for e in &m.datasets {
        let path = dir.join(&e.file);
        match sha256_file(&path) {
            Ok(sum) if sum == e.checksum_sha256 => {}
            Ok(sum) => problems.push(format!(
                "{}: sha256 {sum}, manifest says {}",
                e.file, e.checksum_sha256
            )),
            Err(_) => problems.push(format!("{}: missing", e.file)),
        }
    }
    if problems.is_empty() {
        Ok(m)
    } else {
        Err(ObserveError::Bundle {
            path: dir.to_owned(),
            problems,
        })
    }
}

/// The history's bundles, newest (highest sequence) first.
pub fn history(layout: &Layout) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(layout.dashboard_history()) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs.reverse();
    dirs
}

/// The sequence the next bundle gets: one more than the highest the
/// current bundle or the history holds.
fn next_sequence(layout: &Layout) -> u64 {
    let current = read_manifest(&layout.dashboard())
        .map(|m| m.sequence)
        .unwrap_or(0);
    let past = history(layout)
        .iter()
        .filter_map(|d| d.file_name()?.to_str()?.split('-').next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    current.max(past) + 1
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), ObserveError> {
    std::fs::create_dir_all(to).map_err(ObserveError::io(to))?;
    for e in std::fs::read_dir(from).map_err(ObserveError::io(from))?.flatten() {
        if e.path().is_file() {
            let dest = to.join(e.file_name());
            std::fs::copy(e.path(), &dest).map_err(ObserveError::io(&dest))?;
        }
    }
    Ok(())
}

/// Replaces `live` with the complete folder `staged` (two renames; the old
/// bundle is put back if the second fails, and removed after).
fn swap_in(staged: &Path, live: &Path, job: &str) -> Result<(), ObserveError> {
    let old = live.with_file_name(format!(".dashboard.old-{job}"));
    if live.exists() {
        std::fs::rename(live, &old).map_err(ObserveError::io(live))?;
    }
    if let Err(e) = std::fs::rename(staged, live) {
        if old.exists() {
            // Best effort: the error below is what the caller hears.
            let _ = std::fs::rename(&old, live);
        }
        return Err(ObserveError::io(live)(e));
    }
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(ObserveError::io(&old))?;
    }
    Ok(())
}

/// Removes staging and replaced folders a killed export or restore left
/// beside `live`. A swap killed between its two renames left no `live`
/// and the good bundle as `.dashboard.old-*`: that one is put back first.
fn remove_leftovers(live: &Path) -> Result<(), ObserveError> {
    let Some(dir) = live.parent() else { return Ok(()) };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    if !live.exists() {
        if let Some(old) = entries
            .iter()
            .find(|e| e.file_name().to_string_lossy().starts_with(".dashboard.old-"))
        {
            std::fs::rename(old.path(), live).map_err(ObserveError::io(live))?;
        }
        entries = std::fs::read_dir(dir)
            .map_err(ObserveError::io(dir))?
            .flatten()
            .collect();
    }
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if [".dashboard.staging-", ".dashboard.old-", ".dashboard.restore-"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            std::fs::remove_dir_all(e.path()).map_err(ObserveError::io(&e.path()))?;
        }
    }
    Ok(())
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    /// The new bundle's manifest.
    pub manifest: Manifest,
    /// Its copy in the history.
    pub history_dir: PathBuf,
    /// History bundles deleted for age.
    pub pruned: Vec<PathBuf>,
}

/// What an export is asked for.
#[derive(Debug, Clone)]
pub struct ExportSpec<'a> {
    /// The datasets.
    pub which: &'a [Dataset],
    /// The export's job id.
    pub job: &'a JobId,
    /// When it runs.
    pub now: DateTime<Utc>,
    /// The command line (provenance).
    pub command: &'a str,
    /// The build's commit (provenance).
    pub commit_sha: &'a str,
    /// Finished runs the EV history keeps.
    pub ev_history_runs: usize,
    /// Weeks of bundles the history keeps.
    pub history_weeks: u32,
}

/// Builds the datasets, writes the bundle with its manifest, keeps a copy
/// in the history and prunes bundles older than `history_weeks`.
pub fn export(layout: &Layout, spec: &ExportSpec<'_>) -> Result<Exported, ObserveError> {
    let ExportSpec {
        which,
        job,
        now,
        command,
        commit_sha,
        ev_history_runs,
        history_weeks,
    } = *spec;
    let src = datasets::Sources::read(layout)?;
    let sequence = next_sequence(layout);
    let generated_at = rfc3339(now);
    let live = layout.dashboard();
    // Left by a killed export (the caller holds the job's lock: no other
    // export is running).
    remove_leftovers(&live)?;
    let staged = live.with_file_name(format!(".dashboard.staging-{job}"));
    let mut entries = Vec::new();
    for &d in which {
        let rows = datasets::build(d, &src, ev_history_runs, &layout.runs)?;
        let file = format!("{}.json", d.name());
        let path = staged.join(&file);
        write_json(
            &path,
            &json!({"dataset": d.name(), "sequence": sequence, "generated_at": generated_at, "rows": rows}),
        )?;
        entries.push(Entry {
            dataset: d.name().to_owned(),
            file,
            sequence,
            generated_at: generated_at.clone(),
            rows: rows.len(),
            checksum_sha256: sha256_file(&path)?,
        });
    }
    // The datasets not rebuilt this time stay as they were — from the
    // current bundle, or the newest of the history that verifies when it
    // does not — so a partial export never takes a dataset away.
    let base = verify(&live).ok().map(|m| (live.clone(), m)).or_else(|| {
        history(layout)
            .into_iter()
            .find_map(|d| verify(&d).ok().map(|m| (d, m)))
    });
    if let Some((dir, current)) = base {
        for e in current.datasets {
            if which.iter().any(|d| d.name() == e.dataset) {
                continue;
            }
            let dest = staged.join(&e.file);
            std::fs::copy(dir.join(&e.file), &dest).map_err(ObserveError::io(&dest))?;
            entries.push(e);
        }
    }
    entries.sort_by_key(|e| Dataset::parse(&e.dataset).map(|d| d as usize));
    let manifest = Manifest {
        schema_version: "1.0.0".into(),
        sequence,
        generated_at,
        job_id: job.to_string(),
        datasets: entries,
        provenance: Provenance {
            command: command.to_owned(),
            commit_sha: commit_sha.to_owned(),
            inputs: src.inputs.clone(),
        },
    };
    let doc = serde_json::to_value(&manifest).map_err(|e| ObserveError::input(&staged, e.to_string()))?;
    schema::validate(schema::DASHBOARD_MANIFEST, "the dashboard manifest", &doc)?;
    write_json(&staged.join(MANIFEST), &doc)?;
    verify(&staged)?;
    swap_in(&staged, &live, job.as_str())?;
    let history_dir = layout.dashboard_history().join(format!("{sequence:06}-{job}"));
    copy_dir(&live, &history_dir)?;
    let pruned = prune_history(layout, now, history_weeks)?;
    Ok(Exported {
        manifest,
        history_dir,
        pruned,
    })
}

/// Deletes history bundles whose export started more than `weeks` before
/// `now` (the newest bundle always stays).
pub fn prune_history(layout: &Layout, now: DateTime<Utc>, weeks: u32) -> Result<Vec<PathBuf>, ObserveError> {
    let cutoff = now - Duration::weeks(i64::from(weeks));
    let mut out = Vec::new();
    for dir in history(layout).into_iter().skip(1) {
        let started = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split_once('-'))
            .and_then(|(_, id)| serde_json::from_value::<JobId>(id.into()).ok())
            .and_then(|id| id.started());
        if started.is_some_and(|t| t < cutoff) {
            std::fs::remove_dir_all(&dir).map_err(ObserveError::io(&dir))?;
            out.push(dir);
        }
    }
    Ok(out)
}

/// Puts the newest history bundle that verifies back as the current
/// bundle; returns its manifest and where it came from. The caller holds
/// the dashboard job's lock.
pub fn restore(layout: &Layout, job: &str) -> Result<(Manifest, PathBuf), ObserveError> {
    for dir in history(layout) {
        if let Ok(m) = verify(&dir) {
            let live = layout.dashboard();
            remove_leftovers(&live)?;
            let staged = live.with_file_name(format!(".dashboard.restore-{job}"));
            copy_dir(&dir, &staged)?;
            verify(&staged)?;
            swap_in(&staged, &live, job)?;
            return Ok((m, dir));
        }
    }
    Err(ObserveError::NothingToRestore(layout.dashboard_history()))
}

/// `dashboard_export_heartbeat.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The export that wrote it.
    pub job_id: String,
    /// RFC 3339.
    pub generated_at: String,
    /// `ok` or `error`.
    pub status: String,
    /// The bundle's sequence (the last good one on error).
    pub sequence: Option<u64>,
    /// Per dataset: `ok` or the error.
    pub datasets: std::collections::BTreeMap<String, String>,
    /// `ok`, `error`, `dry_run` or `none` (no upload configured).
    pub upload_status: String,
}
