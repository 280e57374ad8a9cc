//! `mlcore-daemon check`: the real binary loads the dev config, loads ONNX
//! Runtime from the path in storage.yaml and scores the canary model.

use std::path::Path;
use std::process::Command;

#[test]
fn check_scores_the_canary_through_onnx_runtime() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(env!("CARGO_BIN_EXE_mlcore-daemon"))
        .current_dir(&root)
        .args(["--config-dir", "configs", "check", "--env", "dev"])
        .env("MLCORE_REDIS_URL", "redis://127.0.0.1:6379/0")
        .env("MLCORE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // σ(0.5) = 0.622459
    assert!(stdout.contains("canary_prob=0.622459"), "{stdout}");
}

#[test]
fn check_refuses_when_the_library_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    mlcore_testkit::copy_tree(&root.join("configs"), &dir.path().join("configs")).unwrap();
    std::fs::write(
        dir.path().join("configs/envs/dev/storage.yaml"),
        "onnxruntime_library: missing/libonnxruntime.so\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mlcore-daemon"))
        .current_dir(dir.path())
        .args(["--config-dir", "configs", "check", "--env", "dev"])
        .env("MLCORE_REDIS_URL", "redis://127.0.0.1:6379/0")
        .env("MLCORE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("ONNX Runtime library not found") && stderr.contains("setup-ort.sh"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// In prod the daemon needs its Redis URL and nothing else of the
/// environment's secrets (no DSN, API tokens, alerting or market-data keys).
#[test]
fn check_needs_only_the_daemons_own_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    mlcore_testkit::copy_tree(&root.join("configs"), &dir.path().join("configs")).unwrap();
    // prod's own library path is the deployment's; point it at the test's.
    std::fs::write(
        dir.path().join("configs/envs/prod/storage.yaml"),
        format!(
            "onnxruntime_library: {}\n",
            mlcore_testkit::ort_library().display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mlcore-daemon"))
        .current_dir(dir.path())
        .args(["--config-dir", "configs", "check", "--env", "prod"])
        .env_clear()
        .env("MLCORE_REDIS_URL", "redis://127.0.0.1:6379/0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
