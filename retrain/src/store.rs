//! Content-addressed step outputs: `<runs_root>/steps/<step>/<key>/`, where
//! the key hashes everything the step's output depends on (its upstream
//! steps' keys, the configuration it reads, its parameters, the code
//! version). A folder exists under its key only once complete: a step
//! writes into a private temporary folder, records the sha256 of every
//! file in `step.json`, syncs, and renames the folder into place in one
//! atomic `rename(2)`. While it works, the writer holds an exclusive
//! `flock` on a sibling `.lock` file; a temporary folder whose lock anyone
//! can take belongs to a writer that died (kill -9, a lost pod) and is
//! removed by the next run — on any machine sharing the store, which a
//! pid could not tell. A reused folder is checked against its recorded
//! hashes first; one that differs is set aside and redone.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The code version in every key: the crate version and a hash of the
/// source of every crate that shapes a step's output (`build.rs`), so an
/// edit changes the keys whether or not it was committed.
pub const CODE_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+src.", env!("MLCORE_CODE_HASH"));

/// The git commit the code was built from (for people; not in keys).
pub const CODE_COMMIT: &str = env!("MLCORE_CODE_COMMIT");

/// The record of a finished step.
pub const RECORD: &str = "step.json";

/// A step's content address: sha256 (hex) of the canonical JSON of its
/// name, the code version and its inputs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StepKey(pub String);

impl StepKey {
    /// The key of `step` with `inputs`.
    pub fn of(step: &str, inputs: &serde_json::Value) -> Self {
        let doc = serde_json::json!({"step": step, "code": CODE_VERSION, "inputs": inputs});
        // Canonical JSON of a `Value` cannot fail (no non-string keys).
        let text = serde_json_canonicalizer::to_string(&doc).unwrap_or_else(|_| doc.to_string());
        Self(hex::encode(Sha256::digest(text.as_bytes())))
    }

    /// The first 12 digits, for humans.
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(12)]
    }
}

impl std::fmt::Display for StepKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a finished step recorded (`step.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sealed {
    /// Step name.
    pub step: String,
    /// Its key.
    pub key: StepKey,
    /// The inputs the key hashes.
    pub inputs: serde_json::Value,
    /// Every file written, relative path → sha256.
    pub outputs: BTreeMap<String, String>,
    /// Rows (or decisions, or trials) it produced, when that means something.
    pub rows: Option<u64>,
    /// How long it took, ms.
    pub duration_ms: u64,
    /// When it finished, ms since the epoch.
    pub finished_at_ms: u64,
    /// The code version that produced it.
    pub code: String,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Filesystem error.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// `step.json` is unreadable.
    #[error("{path}: {message}")]
    Record {
        /// The record.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The step store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// What [`Store::lookup`] found.
#[derive(Debug)]
pub enum Lookup {
    /// A complete, intact output.
    Done(Sealed),
    /// Nothing under the key.
    Missing,
    /// An output whose files differ from its record: moved aside to the
    /// path given, to be redone.
    Corrupt(PathBuf),
}

impl Store {
    /// The store under `root` (created when first written).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The folder of `step` under `key`.
    pub fn dir(&self, step: &str, key: &StepKey) -> PathBuf {
        self.root.join(step).join(&key.0)
    }

    /// The record of `step` under `key` if its folder is complete and its
    /// files still hash as recorded (`Ok(None)`: missing or differing).
    /// Reads only: what planning (`--dry-run`) uses.
    pub fn peek(&self, step: &str, key: &StepKey) -> Result<Option<Sealed>, StoreError> {
        let dir = self.dir(step, key);
        let record = dir.join(RECORD);
        let text = match fs::read_to_string(&record) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Io { path: record, source }),
        };
        let sealed: Sealed = serde_json::from_str(&text).map_err(|e| StoreError::Record {
            path: record.clone(),
            message: e.to_string(),
        })?;
        let intact = sealed
            .outputs
            .iter()
            .all(|(name, want)| sha256_file(&dir.join(name)).ok().as_deref() == Some(want.as_str()));
        Ok(intact.then_some(sealed))
    }

    /// The finished output of `step` under `key`, checked against its
    /// record; a folder whose files differ is moved aside.
    pub fn lookup(&self, step: &str, key: &StepKey) -> Result<Lookup, StoreError> {
        let dir = self.dir(step, key);
        if let Some(sealed) = self.peek(step, key)? {
            return Ok(Lookup::Done(sealed));
        }
        if !dir.exists() {
            return Ok(Lookup::Missing);
        }
        let aside = self
            .root
            .join(step)
            .join(format!(".corrupt-{}-{}", key.short(), unique()));
        fs::rename(&dir, &aside).map_err(io(&dir))?;
        Ok(Lookup::Corrupt(aside))
    }

    /// Runs `work` in a fresh temporary folder and seals what it wrote as
    /// `step` under `key`. `work` returns the rows it produced.
    pub fn produce<E: From<StoreError>>(
        &self,
        step: &str,
        key: &StepKey,
        inputs: &serde_json::Value,
        work: impl FnOnce(&Path) -> Result<Option<u64>, E>,
    ) -> Result<Sealed, E> {
        let parent = self.root.join(step);
        fs::create_dir_all(&parent).map_err(io(&parent))?;
        let tmp = parent.join(format!(
            ".tmp-{}-{}-{}",
            key.short(),
            std::process::id(),
            unique()
        ));
        // The lock first, the folder second: a temporary folder without a
        // held lock is always a dead writer's.
        let lock_path = lock_of(&tmp);
        let lock = fs::File::create(&lock_path).map_err(io(&lock_path))?;
        lock.lock().map_err(io(&lock_path))?;
        let _unlock = RemoveOnDrop(lock_path);
        fs::create_dir(&tmp).map_err(io(&tmp))?;
        let started = std::time::Instant::now();
        let rows = match work(&tmp) {
            Ok(rows) => rows,
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        let mut outputs = BTreeMap::new();
        hash_tree(&tmp, &tmp, &mut outputs)?;
        let sealed = Sealed {
            step: step.to_owned(),
            key: key.clone(),
            inputs: inputs.clone(),
            outputs,
            rows,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            finished_at_ms: now_ms(),
            code: CODE_VERSION.to_owned(),
        };
        let record = tmp.join(RECORD);
        let text = serde_json::to_string_pretty(&sealed).map_err(|e| StoreError::Record {
            path: record.clone(),
            message: e.to_string(),
        })? + "\n";
        fs::write(&record, text).map_err(io(&record))?;
        sync_tree(&tmp)?;
        let dir = self.dir(step, key);
        match fs::rename(&tmp, &dir) {
            Ok(()) => {
                sync_dir(&parent)?;
                Ok(sealed)
            }
            // Another writer sealed the same key meanwhile (same inputs):
            // theirs is the output, and its record the one to report.
            Err(_) if dir.join(RECORD).exists() => {
                let _ = fs::remove_dir_all(&tmp);
                match self.peek(step, key)? {
                    Some(theirs) => Ok(theirs),
                    None => Err(StoreError::Record {
                        path: dir.join(RECORD),
                        message: "sealed by another writer, but its files differ from its record".into(),
                    }
                    .into()),
                }
            }
            Err(source) => Err(StoreError::Io { path: dir, source }.into()),
        }
    }

    /// Removes temporary folders whose writer is gone (a step killed
    /// mid-write, here or on another machine sharing the store): those
    /// whose lock anyone can take. Returns how many.
    pub fn sweep(&self) -> Result<usize, StoreError> {
        let mut removed = 0;
        let steps = match fs::read_dir(&self.root) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => {
                return Err(StoreError::Io {
                    path: self.root.clone(),
                    source,
                })
            }
        };
        for step in steps.flatten() {
            let Ok(entries) = fs::read_dir(step.path()) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with(".tmp-") || name.ends_with(".lock") {
                    continue;
                }
                let lock_path = lock_of(&e.path());
                let dead = match fs::File::open(&lock_path) {
                    // Lockable now: its writer is gone.
                    Ok(f) => f.try_lock().is_ok(),
                    // No lock file: a writer removes it only after its
                    // folder is gone, so this one's writer died.
                    Err(_) => true,
                };
                if dead && fs::remove_dir_all(e.path()).is_ok() {
                    let _ = fs::remove_file(&lock_path);
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// How long `step` took the last time it ran (any key): what its
    /// progress bar expects.
    pub fn last_duration_ms(&self, step: &str) -> Option<u64> {
        let entries = fs::read_dir(self.root.join(step)).ok()?;
        entries
            .flatten()
            .filter_map(|e| {
                let text = fs::read_to_string(e.path().join(RECORD)).ok()?;
                let s: Sealed = serde_json::from_str(&text).ok()?;
                Some((s.finished_at_ms, s.duration_ms))
            })
            .max()
            .map(|(_, d)| d)
    }
}

/// The lock file a writer holds while it fills the temporary folder `tmp`.
fn lock_of(tmp: &Path) -> PathBuf {
    let mut name = tmp.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    tmp.with_file_name(name)
}

/// Removes the writer's lock file when it is done (sealed or failed).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn hash_tree(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> Result<(), StoreError> {
    let mut entries: Vec<_> = fs::read_dir(dir).map_err(io(dir))?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        if path.is_dir() {
            hash_tree(root, &path, out)?;
        } else {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            out.insert(rel, sha256_file(&path)?);
        }
    }
    Ok(())
}

fn sync_tree(dir: &Path) -> Result<(), StoreError> {
    for e in fs::read_dir(dir).map_err(io(dir))?.flatten() {
        let path = e.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io(&path))?;
        }
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir).and_then(|f| f.sync_all()).map_err(io(dir))
}

/// sha256 (hex) of a file's bytes.
pub fn sha256_file(path: &Path) -> Result<String, StoreError> {
    let mut f = fs::File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(io(path))?;
    Ok(hex::encode(h.finalize()))
}

/// Writes `bytes` to `path` atomically: a temporary sibling, synced, then
/// renamed over it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension(format!("tmp-{}-{}", std::process::id(), unique()));
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    std::io::Write::write_all(&mut f, bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    u64::try_from(unique() / 1_000_000).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_inputs_and_outputs_appear_whole() {
        let a = StepKey::of("labels", &serde_json::json!({"horizon": 12, "features": "k1"}));
        let same = StepKey::of("labels", &serde_json::json!({"features": "k1", "horizon": 12}));
        let other = StepKey::of("labels", &serde_json::json!({"horizon": 13, "features": "k1"}));
        assert_eq!(a, same, "key order does not matter (canonical JSON)");
        assert_ne!(a, other);

        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path());
        assert!(matches!(store.lookup("labels", &a).unwrap(), Lookup::Missing));
        // A failing step leaves nothing behind.
        let failed: Result<Sealed, StoreError> = store.produce("labels", &a, &serde_json::json!({}), |dir| {
            fs::write(dir.join("half.bin"), b"x").unwrap();
            Err(StoreError::Record {
                path: dir.into(),
                message: "boom".into(),
            })
        });
        assert!(failed.is_err());
        assert_eq!(fs::read_dir(root.path().join("labels")).unwrap().count(), 0);
        let sealed: Sealed = store
            .produce::<StoreError>("labels", &a, &serde_json::json!({"h": 1}), |dir| {
                fs::create_dir(dir.join("test")).unwrap();
                fs::write(dir.join("test/up.u8"), [1u8, 0]).unwrap();
                Ok(Some(2))
            })
            .unwrap();
        assert_eq!(sealed.rows, Some(2));
        assert!(sealed.outputs.contains_key("test/up.u8"));
        assert!(matches!(store.lookup("labels", &a).unwrap(), Lookup::Done(s) if s == sealed));
        // Changed bytes are found and set aside.
        fs::write(store.dir("labels", &a).join("test/up.u8"), [1u8, 1]).unwrap();
        assert!(matches!(store.lookup("labels", &a).unwrap(), Lookup::Corrupt(_)));
        assert!(matches!(store.lookup("labels", &a).unwrap(), Lookup::Missing));
        // A dead writer's temporary folder is swept (its lock is free, or
        // gone); a live writer's is not.
        fs::create_dir_all(root.path().join("labels/.tmp-abc-1-1")).unwrap();
        fs::write(root.path().join("labels/.tmp-abc-1-1.lock"), b"").unwrap();
        fs::create_dir_all(root.path().join("labels/.tmp-abc-2-2")).unwrap();
        let live = root.path().join("labels/.tmp-abc-3-3");
        fs::create_dir_all(&live).unwrap();
        // Another open file description: flock conflicts even in-process.
        let held = fs::File::create(lock_of(&live)).unwrap();
        held.lock().unwrap();
        assert_eq!(store.sweep().unwrap(), 2);
        assert!(live.exists());
        assert!(!root.path().join("labels/.tmp-abc-1-1.lock").exists());
    }
}
