//! The code version the flow's content addresses include: a hash of the
//! source of every crate whose code shapes a step's output (and of
//! Cargo.lock, which pins the learners), so an edit — committed or not —
//! changes the keys of what it could change; and, for people, the git
//! commit it was built from (`MLCORE_CODE_COMMIT` overrides it, e.g. in an
//! image built without `.git`).

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// The crates whose sources a step's output depends on.
const CRATES: [&str; 8] = [
    "market", "config", "features", "models", "decision", "contract", "research", "retrain",
];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let root = Path::new(&manifest_dir).join("..");
    let mut all = Vec::new();
    for c in CRATES {
        let src = root.join(c).join("src");
        println!("cargo:rerun-if-changed={}", src.display());
        files(&src, &mut all);
    }
    let lock = root.join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    all.push(lock);
    all.sort();
    let mut h = Sha256::new();
    for f in &all {
        let rel = f.strip_prefix(&root).unwrap_or(f);
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0]);
        h.update(std::fs::read(f).unwrap_or_default());
        h.update([0]);
    }
    let digest = h.finalize();
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    println!("cargo:rustc-env=MLCORE_CODE_HASH={hex}");
    println!("cargo:rerun-if-env-changed=MLCORE_CODE_COMMIT");
    let commit = std::env::var("MLCORE_CODE_COMMIT")
        .ok()
        .or_else(|| git(&["rev-parse", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MLCORE_CODE_COMMIT={commit}");
}
