//! An artifact's files, read into memory from a folder or a tar.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest artifact file accepted (models are a few MB).
const MAX_FILE_BYTES: u64 = 256 << 20;

/// Why an artifact could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// Filesystem error.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The folder or tar holds something an artifact may not.
    #[error("{path}: {reason}")]
    Layout {
        /// The artifact.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// File name → content. Flat: an artifact has no subfolders.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArtifactFiles(pub BTreeMap<String, Vec<u8>>);

impl ArtifactFiles {
    /// sha256 (hex) of `manifest.json`: what the registry pointer names and
    /// the daemon's state file remembers.
    pub fn manifest_sha256(&self) -> Option<String> {
        use sha2::Digest;
        self.get(super::MANIFEST)
            .map(|m| hex::encode(sha2::Sha256::digest(m)))
    }

    /// Reads a folder, or a `.tar` file, into memory.
    pub fn read(path: &Path) -> Result<Self, FilesError> {
        let io = |source| FilesError::Io {
            path: path.to_owned(),
            source,
        };
        let layout = |reason: String| FilesError::Layout {
            path: path.to_owned(),
            reason,
        };
        let meta = fs::metadata(path).map_err(io)?;
        let mut out = BTreeMap::new();
        if meta.is_dir() {
            for entry in fs::read_dir(path).map_err(io)? {
                let entry = entry.map_err(io)?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let ty = entry.file_type().map_err(io)?;
                if !ty.is_file() {
                    return Err(layout(format!(
                        "`{name}` is not a regular file (artifacts are flat)"
                    )));
                }
                if entry.metadata().map_err(io)?.len() > MAX_FILE_BYTES {
                    return Err(layout(format!("`{name}` is larger than {MAX_FILE_BYTES} bytes")));
                }
                out.insert(name, fs::read(entry.path()).map_err(io)?);
            }
        } else {
            let file = fs::File::open(path).map_err(io)?;
            let mut archive = tar::Archive::new(file);
            for entry in archive.entries().map_err(io)? {
                let mut entry = entry.map_err(io)?;
                let kind = entry.header().entry_type();
                let name = entry
                    .path()
                    .map_err(io)?
                    .to_string_lossy()
                    .trim_start_matches("./")
                    .to_owned();
                if kind.is_dir() && (name.is_empty() || !name.trim_end_matches('/').contains('/')) {
                    continue;
                }
                // Accept `name` or `<folder>/name`; nothing deeper, nothing
                // absolute, no `.` or `..` anywhere.
                let plain = |part: &str| !part.is_empty() && part != "." && part != "..";
                let base = match name.split('/').collect::<Vec<_>>().as_slice() {
                    [n] if plain(n) => (*n).to_owned(),
                    [dir, n] if plain(dir) && plain(n) => (*n).to_owned(),
                    _ => return Err(layout(format!("tar entry `{name}` is not a flat artifact file"))),
                };
                if !kind.is_file() {
                    return Err(layout(format!("tar entry `{name}` is not a regular file")));
                }
                if entry.size() > MAX_FILE_BYTES {
                    return Err(layout(format!("tar entry `{name}` is too large")));
                }
                let mut buf = Vec::new();
                entry.read_to_end(&mut buf).map_err(io)?;
                if out.insert(base.clone(), buf).is_some() {
                    return Err(layout(format!("`{base}` appears twice in the tar")));
                }
            }
        }
        Ok(Self(out))
    }

    /// Writes the files into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> Result<(), FilesError> {
        fs::create_dir_all(dir).map_err(|source| FilesError::Io {
            path: dir.to_owned(),
            source,
        })?;
        for (name, bytes) in &self.0 {
            let p = dir.join(name);
            fs::write(&p, bytes).map_err(|source| FilesError::Io {
                path: p.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// A file's bytes.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name).map(Vec::as_slice)
    }
}
