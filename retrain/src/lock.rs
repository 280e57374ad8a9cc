//! One run of a strategy at a time, whoever starts it (the CLI, the API,
//! the schedule, another machine on the same storage): an exclusive
//! `flock(2)` on `runs_root/locks/<strategy>.lock`. The kernel drops it
//! when the holder exits, however it exits — kill -9 included — so a crash
//! never leaves a strategy locked, and no stale-lock guessing is needed.
//! The file says who holds it, for the refusal message.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct StrategyLock {
    _file: File,
    path: PathBuf,
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another run holds it.
    #[error("{strategy} is being retrained already ({holder}); one run of a strategy at a time")]
    Busy {
        /// The strategy.
        strategy: String,
        /// What the lock file says of its holder.
        holder: String,
    },
    /// Filesystem error.
    #[error("{path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The lock file of `strategy`.
pub fn path(runs_root: &Path, strategy: &str) -> PathBuf {
    runs_root.join("locks").join(format!("{strategy}.lock"))
}

/// Takes `strategy`'s lock for `holder` (e.g. the run id), or says who has it.
pub fn acquire(runs_root: &Path, strategy: &str, holder: &str) -> Result<StrategyLock, LockError> {
    let path = path(runs_root, strategy);
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(LockError::Busy {
                strategy: strategy.to_owned(),
                holder: fs::read_to_string(&path)
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_default(),
            })
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    writeln!(file, "{holder} (pid {})", std::process::id()).map_err(io)?;
    Ok(StrategyLock { _file: file, path })
}

/// Whether someone holds `strategy`'s lock now (a run whose manifest says
/// `running` but whose lock is free was interrupted).
pub fn held(runs_root: &Path, strategy: &str) -> bool {
    let path = path(runs_root, strategy);
    let Ok(file) = File::open(&path) else {
        return false;
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(_) => true,
    }
}

/// What the lock file of `strategy` says of its holder, when someone holds
/// it now (the run id the holder named, then its pid).
pub fn holder(runs_root: &Path, strategy: &str) -> Option<String> {
    held(runs_root, strategy)
        .then(|| fs::read_to_string(path(runs_root, strategy)).ok())
        .flatten()
        .map(|s| s.trim().to_owned())
}

impl StrategyLock {
    /// Names the holder in the lock file (the run id, once known).
    pub fn name_holder(&self, holder: &str) -> Result<(), LockError> {
        let io = |source| LockError::Io {
            path: self.path.clone(),
            source,
        };
        let mut f = &self._file;
        f.set_len(0).map_err(io)?;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0)).map_err(io)?;
        writeln!(f, "{holder} (pid {})", std::process::id()).map_err(io)
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        let root = tempfile::tempdir().unwrap();
        assert!(!held(root.path(), "fx"));
        let first = acquire(root.path(), "fx", "run-1").unwrap();
        assert!(held(root.path(), "fx"));
        let e = acquire(root.path(), "fx", "run-2").unwrap_err().to_string();
        assert!(e.contains("run-1"), "{e}");
        // Another strategy is independent.
        let _other = acquire(root.path(), "eq", "run-3").unwrap();
        drop(first);
        assert!(!held(root.path(), "fx"));
        let _again = acquire(root.path(), "fx", "run-2").unwrap();
    }
}
