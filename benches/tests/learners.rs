//! The learners reach LightGBM: `mlcore-learner-bench` on a day of the
//! synthetic market, against LightGBM from PyPI on the same rows — ai1 and
//! ai2 within 0.005 AUC of it (the goal; the same library, so in
//! practice equal).

#![allow(clippy::unwrap_used)] // test helpers: a broken fixture should panic

use std::process::Command;

#[test]
fn our_heads_score_within_0_005_auc_of_lightgbm_on_the_same_rows() {
    let python = std::env::var_os("MLCORE_LIGHTGBM_PYTHON").map_or_else(
        || mlcore_testkit::workspace_root().join(".tools/lightgbm/bin/python"),
        std::path::PathBuf::from,
    );
    assert!(
        python.exists(),
        "LightGBM's Python is not installed at {}: run `bash scripts/setup-python-tools.sh` (scripts/test.sh does)",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("learners.json");
    let out = Command::new(env!("CARGO_BIN_EXE_mlcore-learner-bench"))
        .args(["--days", "2", "--interval-ms", "15000", "--python"])
        .arg(&python)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{printed}");
    assert!(
        printed.contains("ai1 LightGBM") && printed.contains("ai2 ours (lightgbm3)"),
        "{printed}"
    );
    let f: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let auc = |v: &serde_json::Value| v["auc"].as_f64().unwrap();
    for (ours, theirs) in [("ai1_ours", "ai1"), ("ai2_trees", "ai2")] {
        let (a, b) = (auc(&f[ours]), auc(&f["lightgbm"][theirs]));
        assert!(
            (a - b).abs() <= 0.005,
            "{ours}: AUC {a} against LightGBM's {b}\n{printed}"
        );
    }
    let ai1 = auc(&f["ai1_ours"]);
    assert!(
        ai1 > 0.6,
        "ai1 should learn the planted reversal: AUC {ai1}\n{printed}"
    );
}
