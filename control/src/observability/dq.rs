//! The data quality of the dataset in use (`GET /v1/reports/dq`): its
//! quarantined partitions with their reasons, and checks of its index —
//! symbols known, one partition per symbol and day, rows and times, files
//! present, checksums. Data-quality gates over every partition's content
//! come later; this reads what the dataset layout records today.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use mlcore_observe::files;
use serde::Serialize;
use serde_json::{json, Value};

/// The data quality of a dataset (`GET /v1/reports/dq`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DataQuality {
    /// The dataset in use (`control.yaml` `retrain.dataset`).
    pub dataset: String,
    /// Whether every check passed.
    pub ok: bool,
    /// Where the data came from (from its index).
    pub source: Option<String>,
    /// Partitions the index lists.
    pub partitions: usize,
    /// Partitions in use.
    pub included: usize,
    /// Partitions left out, with why (`symbol`, `date`, `path`, `reason`).
    #[schema(value_type = Vec<Object>)]
    pub quarantined: Vec<Value>,
    /// Each check (`check`, `ok`, `detail`).
    #[schema(value_type = Vec<Object>)]
    pub checks: Vec<Value>,
}

/// Data quality of a dataset folder: its index, quarantine records and
/// the index's checks.
pub fn report(root: &Path, name: &str) -> DataQuality {
    use mlcore_research::dataset::Dataset;
    let mut checks = Vec::new();
    let mut check = |name: &str, ok: bool, detail: String| {
        checks.push(json!({"check": name, "ok": ok, "detail": detail}))
    };
    let ds = match Dataset::open(root) {
        Ok(d) => d,
        Err(e) => {
            // Viewers read this: the path and the parser's position go to
            // the log.
            tracing::warn!(dataset = %root.display(), error = %e, "data quality: the dataset index cannot be read");
            check(
                "index_readable",
                false,
                format!(
                    "{} is missing or unreadable; the control plane's log says why",
                    mlcore_research::dataset::INDEX_FILE
                ),
            );
            return DataQuality {
                dataset: name.to_owned(),
                ok: false,
                source: None,
                partitions: 0,
                included: 0,
                quarantined: Vec::new(),
                checks,
            };
        }
    };
    check(
        "index_readable",
        true,
        format!("{} partitions", ds.index.partitions.len()),
    );
    let symbols: BTreeSet<&str> = ds.index.symbols.iter().map(String::as_str).collect();
    let mut seen = BTreeSet::new();
    let (mut unknown, mut dupes, mut missing, mut mismatched, mut bad_rows) =
        (vec![], vec![], vec![], vec![], vec![]);
    for p in &ds.index.partitions {
        if !symbols.contains(p.symbol.as_str()) {
            unknown.push(p.path.clone());
        }
        if !seen.insert((p.symbol.clone(), p.date.clone())) {
            dupes.push(p.path.clone());
        }
        if p.rows == 0 || p.first_ts_ns > p.last_ts_ns {
            bad_rows.push(p.path.clone());
        }
    }
    for p in &ds.included {
        match files::sha256_file(&root.join(&p.path)) {
            Ok(sum) if sum == p.sha256 => {}
            Ok(_) => mismatched.push(p.path.clone()),
            Err(_) => missing.push(p.path.clone()),
        }
    }
    let list = |v: &[String], none: &str| {
        if v.is_empty() {
            none.to_owned()
        } else {
            v.join(", ")
        }
    };
    for (name, failing, fine) in [
        (
            "symbols_known",
            &unknown,
            "every partition's symbol is in the index",
        ),
        (
            "no_duplicate_partitions",
            &dupes,
            "one partition per symbol and day",
        ),
        ("rows_and_times", &bad_rows, "rows > 0 and first ≤ last timestamp"),
        (
            "partitions_present",
            &missing,
            "every included partition's file exists",
        ),
        (
            "checksums_match",
            &mismatched,
            "every included partition matches its sha256",
        ),
    ] {
        check(name, failing.is_empty(), list(failing, fine));
    }
    // A reason the dataset layer wrote about an unreadable marker names
    // its absolute path: shown relative to the dataset.
    let prefix = format!("{}/", root.display());
    let quarantined: Vec<Value> = ds
        .quarantined
        .iter()
        .map(|q| json!({"symbol": q.entry.symbol, "date": q.entry.date, "path": q.entry.path, "reason": q.reason.replace(&prefix, "")}))
        .collect();
    DataQuality {
        dataset: name.to_owned(),
        ok: checks.iter().all(|c| c["ok"] == true),
        source: Some(ds.index.source.clone()),
        partitions: ds.index.partitions.len(),
        included: ds.included.len(),
        quarantined,
        checks,
    }
}

/// What a report on `root` reads: the index, and each partition's file
/// and folder (a quarantine marker appears in the folder). For the
/// analytics cache's key.
pub fn inputs(root: &Path) -> Vec<PathBuf> {
    let index = root.join(mlcore_research::dataset::INDEX_FILE);
    let mut out = vec![index.clone()];
    if let Ok(ds) = mlcore_research::dataset::Dataset::open(root) {
        let mut dirs = BTreeSet::new();
        for p in &ds.index.partitions {
            let file = root.join(&p.path);
            if let Some(d) = file.parent() {
                dirs.insert(d.to_owned());
            }
            out.push(file);
        }
        // A marker rewritten in place changes its own time, not its
        // folder's.
        out.extend(
            dirs.iter()
                .map(|d| d.join(mlcore_research::dataset::QUARANTINE_FILE)),
        );
        out.extend(dirs);
    }
    out
}
