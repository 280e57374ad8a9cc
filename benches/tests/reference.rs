//! The side-by-side reference runs: `mlcore-reference-bench` drives the
//! Python reference (`benches/python/reference.py`, onnxruntime + redis-py)
//! and the daemon's stack on the same artifact, matrices and guard, with
//! both contract versions, and prints the ratios. (Tests run a debug build,
//! so the ratios here say nothing: the figures come from the release
//! build, docs/performance.md.)

#![allow(clippy::unwrap_used)] // test helpers: a broken fixture should panic

use std::process::Command;

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mlcore-reference-bench"))
        .args(["--pairs", "1", "--decisions", "200"])
        .args(args)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    printed
}

/// The median throughput ratio the bench prints (Rust over Python).
fn throughput_ratio(printed: &str) -> f64 {
    let line = printed
        .lines()
        .find(|l| l.starts_with("median of"))
        .unwrap_or_else(|| panic!("no median line in {printed}"));
    let after = line.split("throughput ").nth(1).unwrap();
    after.split('×').next().unwrap().parse().unwrap()
}

#[test]
fn the_python_reference_and_the_daemons_stack_run_side_by_side() {
    assert!(
        std::env::var_os("MLCORE_REFERENCE_PYTHON").is_some(),
        "MLCORE_REFERENCE_PYTHON is unset: run through scripts/test.sh (scripts/setup-python-tools.sh)"
    );
    for args in [&[][..], &["--contract", "v2", "--backend", "onnx"]] {
        let printed = run(args);
        assert!(throughput_ratio(&printed) > 0.0, "{printed}");
        assert!(printed.contains("1 | "), "no pair line: {printed}");
    }
}
