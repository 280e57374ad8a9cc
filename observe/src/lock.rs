//! One run of a job at a time: an exclusive `flock` on the job's lock file,
//! taken without waiting and dropped by the kernel with its holder (a
//! killed run never leaves a stale lock).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use crate::ObserveError;

/// A held lock; released on drop.
#[derive(Debug)]
pub struct JobLock {
    _file: File,
}

/// The lock file, created with its folder.
fn open(path: &Path) -> Result<File, ObserveError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(ObserveError::io(dir))?;
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(ObserveError::io(path))
}

/// Takes the lock at `path`, or `None` when another run holds it.
pub fn try_lock(path: &Path) -> Result<Option<JobLock>, ObserveError> {
    let file = open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(JobLock { _file: file })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(ObserveError::io(path)(e)),
    }
}

/// Takes the lock at `path`, waiting for a run that holds it (for
/// commands that must not interleave with a run, e.g. restoring a bundle).
pub fn lock(path: &Path) -> Result<JobLock, ObserveError> {
    let file = open(path)?;
    file.lock().map_err(ObserveError::io(path))?;
    Ok(JobLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_refuses_a_second_run_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".latency.lock");
        let held = try_lock(&path).unwrap().unwrap();
        assert!(try_lock(&path).unwrap().is_none());
        drop(held);
        assert!(try_lock(&path).unwrap().is_some());
    }
}
