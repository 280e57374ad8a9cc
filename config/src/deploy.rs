//! A deployed `configs/` folder's record, `DEPLOYED.json`: which commit the
//! files are, which change request put them there, and each file's sha256.
//!
//! The deployer (the control plane's `apply`, or `config init`) writes the
//! files one by one, each atomically, then this record, atomically, last. A
//! reader takes the folder only when the files it reads match the record's
//! hashes, so it never takes half of a deployment (`mlcore-daemon`'s `live`
//! module reads it that way).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::tree::{write_atomic, ConfigTree, DEPLOYED_FILE};

/// `DEPLOYED.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The commit deployed.
    pub version: String,
    /// The change request that deployed it (`init` for the first).
    pub change_id: String,
    /// When, ms since the epoch.
    pub applied_at_ms: u64,
    /// sha256 of each file, by path relative to the folder.
    pub files: BTreeMap<String, String>,
}

/// The record of `dir`; `None` when it has none.
pub fn read(dir: &Path) -> Result<Option<Record>, String> {
    match std::fs::read(dir.join(DEPLOYED_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{DEPLOYED_FILE} is not a deployment record: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{DEPLOYED_FILE} cannot be read: {e}")),
    }
}

/// Writes `tree` into `dir` as `version`, then its record.
pub fn write(
    dir: &Path,
    tree: &ConfigTree,
    version: &str,
    change_id: &str,
    now_ms: u64,
) -> std::io::Result<()> {
    tree.write(dir)?;
    let record = Record {
        version: version.to_owned(),
        change_id: change_id.to_owned(),
        applied_at_ms: now_ms,
        files: tree.hashes(),
    };
    let json = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
    write_atomic(&dir.join(DEPLOYED_FILE), &json)
}

/// The folder's files and record, read until they agree: a folder without a
/// record as it is; a deployment in progress waited for, up to `within`;
/// then the files that still do not match their record are refused.
pub fn snapshot(dir: &Path, within: Duration) -> Result<(ConfigTree, Option<Record>), String> {
    let deadline = Instant::now() + within;
    loop {
        let record = read(dir)?;
        let tree = ConfigTree::read(dir).map_err(|e| e.to_string())?;
        match record {
            Some(r) if r.files != tree.hashes() => {
                if Instant::now() >= deadline {
                    return Err(format!(
                        "the files of {} do not match its {DEPLOYED_FILE} for {} (a deployment that did not finish?)",
                        dir.display(),
                        r.version
                    ));
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            record => return Ok((tree, record)),
        }
    }
}
