//! The crate graph keeps its promises (docs/ARCHITECTURE.md): a trading
//! consumer's contract crate and the daemon's binary pull in nothing they
//! do not use. Checked on the resolved graph (`cargo tree`, normal
//! dependencies: what ends up linked), so a dependency that slips in
//! through another crate is caught too.

use std::process::Command;

/// Every package `package` links (normal and build dependencies, all
/// features the workspace enables), by name.
fn linked(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = mlcore_testkit::workspace_root();
    let out = Command::new(cargo)
        .current_dir(&root)
        .args([
            "tree",
            "--frozen",
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "-p",
        ])
        .arg(package)
        .output()
        .unwrap_or_else(|e| panic!("cargo tree: {e}"));
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn assert_none_of(package: &str, banned: &[&str]) {
    let deps = linked(package);
    assert!(deps.len() > 3, "{package} resolved to {deps:?}");
    let found: Vec<&String> = deps.iter().filter(|d| banned.contains(&d.as_str())).collect();
    assert!(found.is_empty(), "{package} links {found:?}, which it must not");
}

/// Learners, Parquet, the ONNX writer and protobuf: research only.
const RESEARCH_ONLY: &[&str] = &[
    "mlcore-research",
    "lightgbm3",
    "lightgbm3-sys",
    "linfa",
    "linfa-logistic",
    "ndarray",
    "parquet",
    "protobuf",
    "onnx-protobuf",
];

#[test]
fn the_daemon_links_no_training_export_parquet_or_protobuf_code() {
    let mut banned = RESEARCH_ONLY.to_vec();
    banned.extend([
        "sqlx",
        "mlcore-control",
        "mlcore-testkit",
        "mlcore-retrain",
        "plotters",
        "rayon",
        // The config repository is the control plane's: the daemon reads
        // the deployed folder, never git.
        "git2",
        "libgit2-sys",
    ]);
    assert_none_of("mlcore-daemon", &banned);
}

#[test]
fn a_consumer_of_the_contract_gets_neither_onnx_runtime_nor_research_code() {
    let mut banned = RESEARCH_ONLY.to_vec();
    banned.extend([
        "ort",
        "ort-sys",
        "mlcore-models",
        "mlcore-config",
        "sqlx",
        "axum",
        "tokio",
    ]);
    assert_none_of("mlcore-contract", &banned);
}

#[test]
fn the_decision_crate_is_plain_arithmetic_over_the_configuration() {
    let mut banned = RESEARCH_ONLY.to_vec();
    banned.extend(["ort", "redis", "mlcore-models", "mlcore-contract", "tokio"]);
    assert_none_of("mlcore-decision", &banned);
}

#[test]
fn the_graph_check_sees_what_a_crate_links() {
    // The check above is only worth something if it would see a banned
    // crate: research does link them.
    let deps = linked("mlcore-research");
    for d in ["parquet", "protobuf", "lightgbm3"] {
        assert!(
            deps.iter().any(|x| x == d),
            "mlcore-research should link {d}: {deps:?}"
        );
    }
}
