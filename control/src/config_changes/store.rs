//! The configuration's history: a bare git repository (libgit2 through
//! `git2`; no `git` executable needed) whose tree is the `configs/` folder
//! — `base/<file>`, `envs/<env>/<file>`. A change request is a branch
//! `cr/<id>` with one commit per edit; merging is a real three-way merge
//! into the environment's branch (a conflict is refused, never resolved by
//! guessing); a revert is a commit whose tree is computed by git's revert.
//!
//! `git2::Repository` is neither `Send` nor shareable: every operation opens
//! the repository on the calling (blocking) thread, and writers take a
//! process-wide lock so two requests never race on one ref.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use git2::{BranchType, ObjectType, Oid, Repository, Signature, TreeBuilder};
use mlcore_config::ConfigTree;

/// A git failure, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// libgit2 refused.
    #[error("config repository {path}: {during}: {source}")]
    Git {
        /// The repository.
        path: PathBuf,
        /// What was being done.
        during: String,
        /// libgit2's error.
        #[source]
        source: git2::Error,
    },
    /// A merge or revert touched the same lines as another change.
    #[error("{0} conflicts with what is on the branch now; rebase it: propose it again from the current configuration")]
    Conflict(String),
    /// A file in the repository is not UTF-8 text or not a config path.
    #[error("config repository {path}: `{file}` is not a config file: {why}")]
    Content {
        /// The repository.
        path: PathBuf,
        /// The file.
        file: String,
        /// Why.
        why: String,
    },
    /// The initial content could not be read.
    #[error("seeding the config repository from {dir}: {why} (run `mlcore-control config init`)")]
    Seed {
        /// The folder.
        dir: PathBuf,
        /// Why.
        why: String,
    },
}

static WRITE: Mutex<()> = Mutex::new(());

/// The repository at a path, for one environment's branch.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
    branch: String,
}

/// Who a commit is by.
pub fn signature(actor: &str) -> Result<Signature<'static>, git2::Error> {
    Signature::now(actor, &format!("{actor}@mlcore-control"))
}

impl Store {
    /// The store at `path` following `branch`.
    pub fn new(path: &Path, branch: &str) -> Self {
        Self {
            path: path.to_owned(),
            branch: branch.to_owned(),
        }
    }

    fn err(&self, during: impl Into<String>) -> impl FnOnce(git2::Error) -> StoreError + '_ {
        let during = during.into();
        move |source| StoreError::Git {
            path: self.path.clone(),
            during,
            source,
        }
    }

    fn open(&self) -> Result<Repository, StoreError> {
        Repository::open_bare(&self.path).map_err(self.err("opening"))
    }

    /// Opens the repository, creating it (bare) with one commit of `seed`'s
    /// content on the branch when it does not exist yet. Returns whether it
    /// was created.
    pub fn open_or_seed(&self, seed: &Path) -> Result<bool, StoreError> {
        if Repository::open_bare(&self.path).is_ok() {
            let repo = self.open()?;
            if repo.find_branch(&self.branch, BranchType::Local).is_ok() {
                return Ok(false);
            }
        }
        let _w = WRITE.lock();
        let tree = ConfigTree::read(seed).map_err(|e| StoreError::Seed {
            dir: seed.to_owned(),
            why: e.to_string(),
        })?;
        if tree.files().next().is_none() {
            return Err(StoreError::Seed {
                dir: seed.to_owned(),
                why: "no configuration files there".into(),
            });
        }
        let repo = match Repository::open_bare(&self.path) {
            Ok(r) => r,
            Err(_) => Repository::init_bare(&self.path).map_err(self.err("creating"))?,
        };
        let oid = write_tree(&repo, &tree).map_err(self.err("writing the first tree"))?;
        let t = repo.find_tree(oid).map_err(self.err("reading the first tree"))?;
        let sig = signature("mlcore-control").map_err(self.err("signing"))?;
        repo.commit(
            Some(&format!("refs/heads/{}", self.branch)),
            &sig,
            &sig,
            &format!("configuration as deployed in {}", seed.display()),
            &t,
            &[],
        )
        .map_err(self.err("committing the first tree"))?;
        Ok(true)
    }

    /// The branch's head commit.
    pub fn head(&self) -> Result<String, StoreError> {
        let repo = self.open()?;
        let id = repo
            .refname_to_id(&format!("refs/heads/{}", self.branch))
            .map_err(self.err(format!("reading branch {}", self.branch)))?;
        Ok(id.to_string())
    }

    /// The tree of `commit`.
    pub fn tree_at(&self, commit: &str) -> Result<ConfigTree, StoreError> {
        let repo = self.open()?;
        let c = find_commit(&repo, commit).map_err(self.err(format!("finding {commit}")))?;
        let tree = c.tree().map_err(self.err("reading a tree"))?;
        read_tree(&repo, &tree, &self.path)
    }

    /// Creates branch `name` at `from` with a commit of `tree` (when it
    /// differs), returning the branch's head.
    pub fn create_branch(
        &self,
        name: &str,
        from: &str,
        tree: &ConfigTree,
        actor: &str,
        message: &str,
    ) -> Result<String, StoreError> {
        let _w = WRITE.lock();
        let repo = self.open()?;
        let base = find_commit(&repo, from).map_err(self.err(format!("finding {from}")))?;
        repo.branch(name, &base, false)
            .map_err(self.err(format!("creating branch {name}")))?;
        drop(base);
        commit_on(&repo, &self.path, name, tree, actor, message)
    }

    /// Commits `tree` on branch `name` (its new head).
    pub fn commit(
        &self,
        name: &str,
        tree: &ConfigTree,
        actor: &str,
        message: &str,
    ) -> Result<String, StoreError> {
        let _w = WRITE.lock();
        let repo = self.open()?;
        commit_on(&repo, &self.path, name, tree, actor, message)
    }

    /// The tree a merge of `commit` into the branch's head would give,
    /// without writing anything (what a submit validates).
    pub fn merged_tree(&self, commit: &str) -> Result<ConfigTree, StoreError> {
        let repo = self.open()?;
        let oid = self.merge_index(&repo, commit)?;
        let tree = repo.find_tree(oid).map_err(self.err("reading the merged tree"))?;
        read_tree(&repo, &tree, &self.path)
    }

    fn merge_index(&self, repo: &Repository, commit: &str) -> Result<Oid, StoreError> {
        let head = repo
            .refname_to_id(&format!("refs/heads/{}", self.branch))
            .map_err(self.err("reading the branch"))?;
        let ours = repo
            .find_commit(head)
            .map_err(self.err("reading the branch head"))?;
        let theirs = find_commit(repo, commit).map_err(self.err(format!("finding {commit}")))?;
        let mut index = repo
            .merge_commits(&ours, &theirs, None)
            .map_err(self.err("merging"))?;
        if index.has_conflicts() {
            return Err(StoreError::Conflict(commit.to_owned()));
        }
        index
            .write_tree_to(repo)
            .map_err(self.err("writing the merged tree"))
    }

    /// Merges `commit` into the branch with a merge commit; returns it.
    pub fn merge(&self, commit: &str, actor: &str, message: &str) -> Result<String, StoreError> {
        let _w = WRITE.lock();
        let repo = self.open()?;
        let tree_oid = self.merge_index(&repo, commit)?;
        let tree = repo
            .find_tree(tree_oid)
            .map_err(self.err("reading the merged tree"))?;
        let refname = format!("refs/heads/{}", self.branch);
        let head = repo
            .refname_to_id(&refname)
            .map_err(self.err("reading the branch"))?;
        let ours = repo
            .find_commit(head)
            .map_err(self.err("reading the branch head"))?;
        let theirs = find_commit(&repo, commit).map_err(self.err(format!("finding {commit}")))?;
        let sig = signature(actor).map_err(self.err("signing"))?;
        let oid = repo
            .commit(Some(&refname), &sig, &sig, message, &tree, &[&ours, &theirs])
            .map_err(self.err("committing the merge"))?;
        Ok(oid.to_string())
    }

    /// The tree the branch's head would have with `merge_commit` (a merge
    /// this store made) reverted.
    pub fn reverted_tree(&self, merge_commit: &str) -> Result<ConfigTree, StoreError> {
        let repo = self.open()?;
        let head = repo
            .refname_to_id(&format!("refs/heads/{}", self.branch))
            .map_err(self.err("reading the branch"))?;
        let ours = repo
            .find_commit(head)
            .map_err(self.err("reading the branch head"))?;
        let target = find_commit(&repo, merge_commit).map_err(self.err(format!("finding {merge_commit}")))?;
        let mainline = if target.parent_count() > 1 { 1 } else { 0 };
        let mut index = repo
            .revert_commit(&target, &ours, mainline, None)
            .map_err(self.err("reverting"))?;
        if index.has_conflicts() {
            return Err(StoreError::Conflict(format!("reverting {merge_commit}")));
        }
        let oid = index
            .write_tree_to(&repo)
            .map_err(self.err("writing the reverted tree"))?;
        let tree = repo
            .find_tree(oid)
            .map_err(self.err("reading the reverted tree"))?;
        read_tree(&repo, &tree, &self.path)
    }

    /// The first parent of `commit` (for a merge: the branch before it).
    pub fn first_parent(&self, commit: &str) -> Result<String, StoreError> {
        let repo = self.open()?;
        let c = find_commit(&repo, commit).map_err(self.err(format!("finding {commit}")))?;
        let p = c
            .parent_id(0)
            .map_err(self.err(format!("reading the parent of {commit}")))?;
        Ok(p.to_string())
    }

    /// Commits `tree` directly on the environment's branch (the automatic
    /// revert of a refused apply: the branch must say what is deployed).
    pub fn commit_on_branch(
        &self,
        tree: &ConfigTree,
        actor: &str,
        message: &str,
    ) -> Result<String, StoreError> {
        let branch = self.branch.clone();
        self.commit(&branch, tree, actor, message)
    }
}

fn find_commit<'r>(repo: &'r Repository, id: &str) -> Result<git2::Commit<'r>, git2::Error> {
    repo.find_commit(Oid::from_str(id)?)
}

fn commit_on(
    repo: &Repository,
    path: &Path,
    branch: &str,
    tree: &ConfigTree,
    actor: &str,
    message: &str,
) -> Result<String, StoreError> {
    let err = |during: &str| {
        let during = during.to_owned();
        move |source| StoreError::Git {
            path: path.to_owned(),
            during,
            source,
        }
    };
    let refname = format!("refs/heads/{branch}");
    let head = repo.refname_to_id(&refname).map_err(err("reading the branch"))?;
    let parent = repo.find_commit(head).map_err(err("reading the branch head"))?;
    let oid = write_tree(repo, tree).map_err(err("writing the tree"))?;
    if parent.tree_id() == oid {
        return Ok(head.to_string());
    }
    let t = repo.find_tree(oid).map_err(err("reading the tree"))?;
    let sig = signature(actor).map_err(err("signing"))?;
    let id = repo
        .commit(Some(&refname), &sig, &sig, message, &t, &[&parent])
        .map_err(err("committing"))?;
    Ok(id.to_string())
}

/// Writes `tree` as git trees: `base/`, `envs/<env>/` (an environment
/// without files keeps a `.keep`, as git holds no empty folder).
fn write_tree(repo: &Repository, tree: &ConfigTree) -> Result<Oid, git2::Error> {
    fn folder<'a>(
        repo: &Repository,
        files: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Result<Oid, git2::Error> {
        let mut b: TreeBuilder<'_> = repo.treebuilder(None)?;
        let mut any = false;
        for (name, text) in files {
            let blob = repo.blob(text.as_bytes())?;
            b.insert(name, blob, 0o100_644)?;
            any = true;
        }
        if !any {
            let blob = repo.blob(b"")?;
            b.insert(".keep", blob, 0o100_644)?;
        }
        b.write()
    }
    let mut root = repo.treebuilder(None)?;
    let base = folder(
        repo,
        tree.files()
            .filter_map(|(p, t)| p.strip_prefix("base/").map(|n| (n, t))),
    )?;
    root.insert("base", base, 0o040_000)?;
    let mut envs = repo.treebuilder(None)?;
    let mut any_env = false;
    for env in tree.envs() {
        let prefix = format!("envs/{env}/");
        let oid = folder(
            repo,
            tree.files()
                .filter_map(|(p, t)| p.strip_prefix(prefix.as_str()).map(|n| (n, t))),
        )?;
        envs.insert(env, oid, 0o040_000)?;
        any_env = true;
    }
    if any_env {
        let oid = envs.write()?;
        root.insert("envs", oid, 0o040_000)?;
    }
    root.write()
}

fn read_tree(repo: &Repository, tree: &git2::Tree<'_>, path: &Path) -> Result<ConfigTree, StoreError> {
    let mut out = ConfigTree::default();
    let content = |file: String, why: String| StoreError::Content {
        path: path.to_owned(),
        file,
        why,
    };
    let git = |source| StoreError::Git {
        path: path.to_owned(),
        during: "reading a tree".into(),
        source,
    };
    let read_folder = |t: &git2::Tree<'_>, prefix: &str, out: &mut ConfigTree| -> Result<(), StoreError> {
        for entry in t.iter() {
            let name = entry.name().unwrap_or_default().to_owned();
            if name.starts_with('.') || entry.kind() != Some(ObjectType::Blob) {
                continue;
            }
            let object = entry.to_object(repo).map_err(git)?;
            let blob = object
                .as_blob()
                .ok_or_else(|| content(format!("{prefix}{name}"), "not a file".into()))?;
            let text = std::str::from_utf8(blob.content())
                .map_err(|e| content(format!("{prefix}{name}"), e.to_string()))?
                .to_owned();
            out.insert(&format!("{prefix}{name}"), text)
                .map_err(|e| content(format!("{prefix}{name}"), e.to_string()))?;
        }
        Ok(())
    };
    if let Some(base) = tree.get_name("base") {
        let t = base.to_object(repo).map_err(git)?.peel_to_tree().map_err(git)?;
        read_folder(&t, "base/", &mut out)?;
    }
    if let Some(envs) = tree.get_name("envs") {
        let t = envs.to_object(repo).map_err(git)?.peel_to_tree().map_err(git)?;
        for env in t.iter() {
            if env.kind() != Some(ObjectType::Tree) {
                continue;
            }
            let name = env.name().unwrap_or_default().to_owned();
            let et = env.to_object(repo).map_err(git)?.peel_to_tree().map_err(git)?;
            out.add_env(&name);
            read_folder(&et, &format!("envs/{name}/"), &mut out)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let mut t = ConfigTree::default();
        t.insert(
            "base/core_policy.yaml",
            "theta:\n  theta1: 0.55\n  theta2: 0.6\nrisk:\n  max_gross: 1.0\n".into(),
        )
        .unwrap();
        t.add_env("dev");
        t.add_env("prod");
        t.insert("envs/prod/core_policy.yaml", "risk:\n  max_gross: 0.5\n".into())
            .unwrap();
        t.write(d.path()).unwrap();
        d
    }

    #[test]
    fn branches_merge_three_ways_conflicts_are_refused_and_reverts_restore() {
        let seed = seed_dir();
        let repo = tempfile::tempdir().unwrap();
        let store = Store::new(&repo.path().join("configs.git"), "main");
        assert!(store.open_or_seed(seed.path()).unwrap());
        assert!(!store.open_or_seed(seed.path()).unwrap(), "seeded once");
        let base = store.head().unwrap();
        let original = store.tree_at(&base).unwrap();
        assert_eq!(
            original,
            ConfigTree::read(seed.path()).unwrap(),
            "empty env folders survive"
        );

        // Two requests from the same base touching different lines merge.
        let edit = |from: &str, to: &str| {
            let mut t = original.clone();
            let text = t.get("base/core_policy.yaml").unwrap().replace(from, to);
            t.insert("base/core_policy.yaml", text).unwrap();
            t
        };
        let a = store
            .create_branch(
                "cr/1",
                &base,
                &edit("theta1: 0.55", "theta1: 0.57"),
                "alice",
                "θ1",
            )
            .unwrap();
        let b = store
            .create_branch(
                "cr/2",
                &base,
                &edit("max_gross: 1.0", "max_gross: 0.9"),
                "bob",
                "cap",
            )
            .unwrap();
        let m1 = store.merge(&a, "carol", "merge cr/1").unwrap();
        assert_ne!(m1, base);
        let merged = store.merged_tree(&b).unwrap();
        let text = merged.get("base/core_policy.yaml").unwrap();
        assert!(
            text.contains("theta1: 0.57") && text.contains("max_gross: 0.9"),
            "{text}"
        );
        let m2 = store.merge(&b, "carol", "merge cr/2").unwrap();

        // The same line changed two ways: refused.
        let c = store
            .create_branch(
                "cr/3",
                &base,
                &edit("theta1: 0.55", "theta1: 0.60"),
                "dave",
                "θ1 again",
            )
            .unwrap();
        assert!(matches!(store.merged_tree(&c), Err(StoreError::Conflict(_))));

        // Reverting the first merge keeps the second.
        let reverted = store.reverted_tree(&m1).unwrap();
        let text = reverted.get("base/core_policy.yaml").unwrap();
        assert!(
            text.contains("theta1: 0.55") && text.contains("max_gross: 0.9"),
            "{text}"
        );
        assert_eq!(store.head().unwrap(), m2);
    }
}
