//! Writing files so a reader never sees half of one, and sha256 of files.

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::ObserveError;

/// Writes `bytes` to `path` through a temporary file in the same folder,
/// synced and renamed over it (the folder is created).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ObserveError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(ObserveError::io(dir))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(ObserveError::io(&tmp))?;
    f.write_all(bytes).map_err(ObserveError::io(&tmp))?;
    f.sync_all().map_err(ObserveError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(ObserveError::io(path))
}

/// `value` as indented JSON with a final newline, written atomically.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), ObserveError> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| ObserveError::input(path, e.to_string()))? + "\n";
    write_atomic(path, text.as_bytes())
}

/// Reads and parses a JSON file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ObserveError> {
    let text = std::fs::read_to_string(path).map_err(ObserveError::io(path))?;
    serde_json::from_str(&text).map_err(|e| ObserveError::input(path, e.to_string()))
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Hex sha256 of a file's content.
pub fn sha256_file(path: &Path) -> Result<String, ObserveError> {
    Ok(sha256_hex(&std::fs::read(path).map_err(ObserveError::io(path))?))
}
