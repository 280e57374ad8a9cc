//! A `configs/` folder as bytes in memory: read from disk, from a git
//! commit, or edited by a change request before it exists anywhere else.
//!
//! The loader reads through a [`ConfigTree`] rather than the filesystem so
//! that the same strict checks run on a proposed change (never written to a
//! folder a process reads) and on a daemon's consistent snapshot of a
//! deployed folder (read once, checked against the deployment's hashes,
//! then loaded without touching the disk again).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{ConfigCode, ConfigError, ConfigProblem};

/// The deployment record the control plane writes last into a folder it
/// deploys (`DEPLOYED.json`): which commit the files are, and each file's
/// sha256, so a reader can tell a finished deployment from one in progress.
pub const DEPLOYED_FILE: &str = "DEPLOYED.json";

/// The files of one `configs/` folder: `base/<file>` and
/// `envs/<env>/<file>`, by relative path with `/` separators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigTree {
    files: BTreeMap<String, String>,
    envs: BTreeSet<String>,
}

/// A path a tree cannot hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{path}` is not a config file path (expected base/<file>.yaml or envs/<env>/<file>.yaml)")]
pub struct PathError {
    /// The refused path.
    pub path: String,
}

impl ConfigTree {
    /// Reads `root/base/*` and `root/envs/*/*` (dotfiles skipped). Every
    /// unreadable file is reported, not just the first.
    pub fn read(root: &Path) -> Result<Self, ConfigError> {
        let mut tree = Self::default();
        let mut problems = Vec::new();
        let mut read_dir = |dir: &Path, prefix: &str, tree: &mut Self| {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || !entry.path().is_file() {
                    continue;
                }
                match std::fs::read_to_string(entry.path()) {
                    Ok(text) => {
                        tree.files.insert(format!("{prefix}{name}"), text);
                    }
                    Err(e) => problems.push(ConfigProblem {
                        code: ConfigCode::FileUnreadable,
                        file: entry.path(),
                        key: String::new(),
                        message: e.to_string(),
                    }),
                }
            }
        };
        read_dir(&root.join("base"), "base/", &mut tree);
        if let Ok(envs) = std::fs::read_dir(root.join("envs")) {
            for env in envs.flatten() {
                let name = env.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || !env.path().is_dir() {
                    continue;
                }
                read_dir(&env.path(), &format!("envs/{name}/"), &mut tree);
                tree.envs.insert(name);
            }
        }
        if problems.is_empty() {
            Ok(tree)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Checks that `path` is `base/<name>` or `envs/<env>/<name>` with a
    /// plain file name (no `..`, no hidden files, no deeper folders).
    pub fn check_path(path: &str) -> Result<(), PathError> {
        let plain = |s: &str| {
            !s.is_empty()
                && !s.starts_with('.')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        };
        let ok = match path.split('/').collect::<Vec<_>>().as_slice() {
            ["base", name] => plain(name),
            ["envs", env, name] => plain(env) && plain(name),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(PathError {
                path: path.to_owned(),
            })
        }
    }

    /// Sets a file's text (creating the environment folder when new).
    pub fn insert(&mut self, path: &str, text: String) -> Result<(), PathError> {
        Self::check_path(path)?;
        if let Some(env) = path.strip_prefix("envs/").and_then(|p| p.split('/').next()) {
            self.envs.insert(env.to_owned());
        }
        self.files.insert(path.to_owned(), text);
        Ok(())
    }

    /// Removes a file; its environment folder stays (empty is fine).
    pub fn remove(&mut self, path: &str) -> Option<String> {
        self.files.remove(path)
    }

    /// Records an environment folder (which may hold no file).
    pub fn add_env(&mut self, env: &str) {
        self.envs.insert(env.to_owned());
    }

    /// One file's text.
    pub fn get(&self, path: &str) -> Option<&str> {
        self.files.get(path).map(String::as_str)
    }

    /// Every file, by path.
    pub fn files(&self) -> impl Iterator<Item = (&str, &str)> {
        self.files.iter().map(|(p, t)| (p.as_str(), t.as_str()))
    }

    /// The environment folders present.
    pub fn envs(&self) -> impl Iterator<Item = &str> {
        self.envs.iter().map(String::as_str)
    }

    /// Whether `envs/<env>/` exists.
    pub fn has_env(&self, env: &str) -> bool {
        self.envs.contains(env)
    }

    /// The files of `envs/<env>/`, by file name.
    pub fn env_files<'a>(&'a self, env: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let prefix = format!("envs/{env}/");
        self.files
            .keys()
            .filter_map(move |p| p.strip_prefix(prefix.as_str()))
    }

    /// sha256 of every file's text, by path.
    pub fn hashes(&self) -> BTreeMap<String, String> {
        self.files
            .iter()
            .map(|(p, t)| (p.clone(), sha256_hex(t.as_bytes())))
            .collect()
    }

    /// Writes the tree into `root`: each file that differs through a
    /// temporary and a rename (a reader sees the old or the new bytes of a
    /// file, never a part; a file already holding its text is left alone —
    /// a change of one key costs one file's write and sync, not the
    /// folder's), then removes the files of `root` the tree no longer holds.
    /// A reader that needs the whole tree consistent checks it against
    /// [`DEPLOYED_FILE`], which the deployer writes last.
    pub fn write(&self, root: &Path) -> std::io::Result<()> {
        for env in &self.envs {
            std::fs::create_dir_all(root.join("envs").join(env))?;
        }
        std::fs::create_dir_all(root.join("base"))?;
        for (path, text) in &self.files {
            let target = root.join(path);
            if std::fs::read(&target).is_ok_and(|old| old == text.as_bytes()) {
                continue;
            }
            write_atomic(&target, text.as_bytes())?;
        }
        let on_disk = Self::read(root).map_err(|e| std::io::Error::other(e.to_string()))?;
        for path in on_disk.files.keys() {
            if !self.files.contains_key(path) {
                std::fs::remove_file(root.join(path))?;
            }
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` through a temporary in the same folder, synced,
/// then renamed into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Lower-case hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_base_or_env_files_only() {
        for ok in ["base/core_policy.yaml", "envs/dev/redis.yaml"] {
            assert!(ConfigTree::check_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "../x.yaml",
            "base/../../etc/passwd",
            "envs/dev",
            "base/.hidden",
            "x.yaml",
            "envs/dev/a/b.yaml",
            "base/",
        ] {
            assert!(ConfigTree::check_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_written_tree_reads_back_equal_and_drops_removed_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = ConfigTree::default();
        t.insert("base/a.yaml", "a: 1\n".into()).unwrap();
        t.insert("envs/dev/a.yaml", "a: 2\n".into()).unwrap();
        t.add_env("prod");
        t.write(dir.path()).unwrap();
        assert_eq!(ConfigTree::read(dir.path()).unwrap(), t);
        t.remove("envs/dev/a.yaml");
        t.write(dir.path()).unwrap();
        assert_eq!(ConfigTree::read(dir.path()).unwrap(), t);
        assert!(!dir.path().join("envs/dev/a.yaml").exists());
    }
}
