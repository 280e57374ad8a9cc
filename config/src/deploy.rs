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
