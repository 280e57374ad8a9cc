//! `mlcore-control config check` as a process: exit codes and output.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic on broken fixtures, which is what a test wants

use std::path::Path;
use std::process::Command;

fn check(env: &str, vars: &[(&str, &str)]) -> std::process::Output {
    check_as(env, "all", vars)
}

fn check_as(env: &str, process: &str, vars: &[(&str, &str)]) -> std::process::Output {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mlcore-control"));
    cmd.args([
        "--config-dir",
        configs.to_str().unwrap(),
        "config",
        "check",
        "--env",
        env,
        "--process",
        process,
    ]);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn valid_environment_exits_zero_and_prints_redacted_tree() {
    let out = check(
        "dev",
        &[
            ("MLCORE_REDIS_URL", "redis://:pw-123@127.0.0.1:1/0"),
            ("MLCORE_PG_DSN", "postgresql://u:pgpw@h/db"),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("configuration valid: env=dev"));
    assert!(stdout.contains("<redacted $MLCORE_REDIS_URL>"));
    assert!(!stdout.contains("pw-123") && !stdout.contains("pgpw"));
}

#[test]
fn invalid_environment_exits_nonzero_naming_each_unset_variable() {
    let out = check("prod", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr.contains("CONFIG_SECRET_UNSET"), "{stderr}");
    assert!(
        stderr.contains("MLCORE_REDIS_URL") && stderr.contains("MLCORE_TOKEN_ADMIN"),
        "{stderr}"
    );
}

#[test]
fn unknown_environment_exits_nonzero() {
    let out = check("qa", &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CONFIG_ENV_UNKNOWN"));
}

#[test]
fn one_process_view_needs_only_that_process_secrets() {
    let redis = [("MLCORE_REDIS_URL", "redis://127.0.0.1:1/0")];
    let out = check_as("prod", "daemon", &redis);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same variables are not enough for the control plane, and it says which are missing.
    let out = check_as("prod", "control", &redis);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr.contains("MLCORE_PG_DSN") && stderr.contains("MLCORE_TOKEN_ADMIN"),
        "{stderr}"
    );
    assert!(!stderr.contains("MLCORE_TWELVEDATA_API_KEY"), "{stderr}");
    let out = check_as("prod", "nobody", &redis);
    assert_eq!(out.status.code(), Some(2), "a process name clap refuses");
}
