//! `models keygen | sign | verify | inspect`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use mlcore_config::EnvSource;
use mlcore_models::artifact::files::FilesError;
use mlcore_models::artifact::{
    self, ArtifactFiles, Manifest, RollbackAuthorization, SecretKeyFile, TrustStore, VerifyContext,
};

use super::{load_config, now_ms, EXIT_REFUSED};
use crate::cli::VerifyArgs;

/// Writes `<id>.key` and `<id>.pub` into `out_dir`.
pub fn models_keygen(id: &str, out_dir: &Path, out: &mut dyn Write) -> anyhow::Result<i32> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let key = SecretKeyFile::generate(id)?;
    let public = key.public().map_err(anyhow::Error::msg)?;
    let secret_path = out_dir.join(format!("{id}.key"));
    key.write(&secret_path)?;
    public.write(&out_dir.join(format!("{id}.pub")))?;
    writeln!(
        out,
        "secret key: {} (mode 0600; keep it out of the repository)",
        secret_path.display()
    )?;
    writeln!(out, "add to trust.yaml:")?;
    writeln!(
        out,
        "  - id: {id}\n    public_key: \"{}\"\n    purposes: [model_signing]",
        public.public_key
    )?;
    Ok(0)
}

/// Re-seals an artifact folder with `key`.
pub fn models_sign(artifact_dir: &Path, key_path: &Path, out: &mut dyn Write) -> anyhow::Result<i32> {
    let key = SecretKeyFile::read(key_path)?;
    let files = ArtifactFiles::read(artifact_dir)?;
    let manifest_bytes = files
        .get(artifact::MANIFEST)
        .with_context(|| format!("{} has no manifest.json", artifact_dir.display()))?;
    let manifest: Manifest = serde_json::from_slice(manifest_bytes).context("parsing manifest.json")?;
    let (manifest, files) = artifact::seal(manifest, files, &key).map_err(anyhow::Error::msg)?;
    files.write(artifact_dir)?;
    writeln!(
        out,
        "signed {} v{} with key {} ({} files)",
        manifest.model_id,
        manifest.version,
        key.key_id,
        manifest.files.len()
    )?;
    Ok(0)
}

/// Verifies an artifact against an environment's trust.
pub fn models_verify(
    config_dir: &Path,
    args: &VerifyArgs,
    vars: &dyn EnvSource,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<i32> {
    let cfg = load_config(config_dir, &args.env, vars, mlcore_config::Process::Offline)?;
    let trust = TrustStore::from_config(&cfg.trust)?;
    let auth: Option<RollbackAuthorization> = match &args.rollback_auth {
        Some(p) => Some(
            serde_json::from_slice(&std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)
                .with_context(|| format!("parsing {}", p.display()))?,
        ),
        None => None,
    };
    // An artifact that is not one (a tar with `../` or sub-folders, a
    // special file) is a refusal like any other, with its exit code; only
    // an artifact that cannot be read at all is an error.
    let files = match ArtifactFiles::read(&args.artifact) {
        Ok(f) => f,
        Err(e @ FilesError::Layout { .. }) => {
            writeln!(err, "refused: {e}")?;
            return Ok(EXIT_REFUSED);
        }
        Err(e) => return Err(e.into()),
    };
    let ctx = VerifyContext {
        highest_accepted: args.highest_accepted,
        rollback: auth.as_ref(),
        ..VerifyContext::new(&trust, now_ms())
    };
    match artifact::verify(files, &ctx) {
        Ok(v) => {
            let m = &v.manifest;
            writeln!(
                out,
                "verified: {} v{} strategy={} key={} expires_at_ms={}",
                m.model_id, m.version, m.strategy, v.key_id, m.expires_at_ms
            )?;
            Ok(0)
        }
        Err(e) => {
            writeln!(err, "refused: {e}")?;
            Ok(EXIT_REFUSED)
        }
    }
}

/// Prints the manifest and file list.
pub fn models_inspect(artifact_path: &Path, out: &mut dyn Write) -> anyhow::Result<i32> {
    let files = ArtifactFiles::read(artifact_path)?;
    let manifest = files.get(artifact::MANIFEST).context("no manifest.json")?;
    let value: serde_json::Value = serde_json::from_slice(manifest).context("parsing manifest.json")?;
    writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
    if let Some(sig) = files.get(artifact::SIGNATURE) {
        writeln!(out, "signature: {}", String::from_utf8_lossy(sig).trim())?;
    }
    for (name, bytes) in &files.0 {
        writeln!(out, "file {name} ({} bytes)", bytes.len())?;
    }
    Ok(0)
}
