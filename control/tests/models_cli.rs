//! The model CLI end to end: `data synth` → `train` (dev key, dev trust) →
//! `models verify` / `inspect`, and refusals with their exit codes.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a broken fixture should panic

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn control(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mlcore-control"))
        .current_dir(root())
        .args(args)
        .env("MLCORE_REDIS_URL", "redis://127.0.0.1:6379/0")
        .env("MLCORE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn synth_train_verify_inspect_and_refuse() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let model = tmp.path().join("model");
    let (data_s, model_s) = (data.to_str().unwrap(), model.to_str().unwrap());

    let o = control(&[
        "data",
        "synth",
        "--seed",
        "5",
        "--symbols",
        "32",
        "--days",
        "1",
        "--interval-ms",
        "60000",
        "--out",
        data_s,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(data.join("dataset_index.json").exists());
    let again = control(&["data", "synth", "--seed", "5", "--days", "1", "--out", data_s]);
    assert!(!again.status.success() && text(&again).contains("already holds a dataset"));

    // One partition is quarantined: training excludes and reports it.
    let q = data.join("symbol=USDHKD/date=2026-01-05/__quarantine.json");
    std::fs::write(&q, r#"{"reason": "vendor outage"}"#).unwrap();

    let o = control(&[
        "train",
        "--env",
        "dev",
        "--dataset",
        data_s,
        "--out",
        model_s,
        "--key",
        "deployments/dev-keys/dev-2026.key",
        "--strategy",
        "fx_g10",
        "--version",
        "4",
        "--max-trees",
        "20",
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("quarantined (excluded): USDHKD 2026-01-05: vendor outage"),
        "{out}"
    );
    assert!(out.contains("signed by dev-2026 and verified"), "{out}");

    let o = control(&["models", "verify", "--env", "dev", "--artifact", model_s]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("verified: fx_g10-v4 v4"));

    // The dev key is not trusted in prod.
    let o = Command::new(env!("CARGO_BIN_EXE_mlcore-control"))
        .current_dir(root())
        .args(["models", "verify", "--env", "prod", "--artifact", model_s])
        .envs(PROD_VARS.iter().copied())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        text(&o).contains("unknown signing key `dev-2026`"),
        "{}",
        text(&o)
    );

    // Rollback refused without authorisation.
    let o = control(&[
        "models",
        "verify",
        "--env",
        "dev",
        "--artifact",
        model_s,
        "--highest-accepted",
        "4",
    ]);
    assert_eq!(o.status.code(), Some(4));
    assert!(text(&o).contains("rollback refused"), "{}", text(&o));

    let o = control(&["models", "inspect", "--artifact", model_s]);
    assert!(o.status.success() && text(&o).contains("\"feature_schema_hash\""));

    // Tampering with a head is caught.
    let mut onnx = std::fs::read(model.join("ai1.onnx")).unwrap();
    onnx[10] ^= 1;
    std::fs::write(model.join("ai1.onnx"), onnx).unwrap();
    let o = control(&["models", "verify", "--env", "dev", "--artifact", model_s]);
    assert_eq!(o.status.code(), Some(4));
    assert!(text(&o).contains("file `ai1.onnx` has sha256"), "{}", text(&o));

    // Re-signing makes it verify again (an operator's deliberate act).
    let o = control(&[
        "models",
        "sign",
        "--artifact",
        model_s,
        "--key",
        "deployments/dev-keys/dev-2026.key",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        control(&["models", "verify", "--env", "dev", "--artifact", model_s])
            .status
            .success()
    );
}

const PROD_VARS: [(&str, &str); 15] = [
    ("MLCORE_REDIS_URL", "redis://127.0.0.1:6379/0"),
    ("MLCORE_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
    ("MLCORE_SLACK_WEBHOOK_URL", "https://hooks.example/x"),
    ("MLCORE_PAGERDUTY_ROUTING_KEY", "x"),
    ("MLCORE_WEBHOOK_HMAC_SECRET", "x"),
    ("MLCORE_TWELVEDATA_API_KEY", "x"),
    ("MLCORE_SECONDARY_API_KEY", "x"),
    ("MLCORE_TOKEN_VIEWER", "viewer-token-0123456789"),
    ("MLCORE_TOKEN_OPERATOR", "operator-token-0123456789"),
    ("MLCORE_TOKEN_APPROVER", "approver-token-0123456789"),
    ("MLCORE_TOKEN_ADMIN", "admin-token-0123456789"),
    ("MLCORE_TOTP_APPROVER", "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
    ("MLCORE_TOTP_ADMIN", "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
    ("MLCORE_OBS_WEEKLY_WEBHOOK_URL", "https://hooks.example/weekly"),
    ("MLCORE_OBS_WEBHOOK_SECRET", "x"),
];

#[test]
fn keygen_writes_a_private_key_readable_only_by_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let o = control(&["models", "keygen", "--id", "ops-2027", "--out", dir]);
    assert!(o.status.success(), "{}", text(&o));
    let mode = std::fs::metadata(tmp.path().join("ops-2027.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(text(&o).contains("public_key:"));
    // Never overwrites.
    assert!(!control(&["models", "keygen", "--id", "ops-2027", "--out", dir])
        .status
        .success());
}

/// A tar that is not a flat artifact — an entry with `../`, a sub-folder —
/// is refused with the refusal's exit code (4), like a bad signature, not
/// treated as an error (1).
#[test]
fn a_tar_that_is_not_a_flat_artifact_is_refused_with_exit_code_4() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, entry) in [("escape", "../evil.onnx"), ("nested", "a/b/ai1.onnx")] {
        let path = tmp.path().join(format!("{name}.tar"));
        // A tar header written by hand: the `tar` crate refuses to write
        // such names, which is the point of refusing to read them.
        let mut header = [0u8; 512];
        header[..entry.len()].copy_from_slice(entry.as_bytes());
        header[100..108].copy_from_slice(b"0000644\0");
        header[108..116].copy_from_slice(b"0000000\0");
        header[116..124].copy_from_slice(b"0000000\0");
        header[124..136].copy_from_slice(b"00000000004\0");
        header[136..148].copy_from_slice(b"00000000000\0");
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(b"evil");
        bytes.resize(512 * 2, 0);
        bytes.resize(512 * 4, 0);
        std::fs::write(&path, bytes).unwrap();
        let o = control(&[
            "models",
            "verify",
            "--env",
            "dev",
            "--artifact",
            path.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(4), "{name}: {}", text(&o));
        assert!(
            text(&o).contains("refused") && text(&o).contains("not a flat artifact file"),
            "{name}: {}",
            text(&o)
        );
    }
}

/// `research cv` end to end on a synthetic dataset: the point-in-time
/// check passes, each walk-forward fold reports its index ranges and
/// trains only on the past, and the stitched out-of-sample figures come
/// out as JSON (stdout and `--out`); a scheme it does not know is named.
#[test]
fn research_cv_reports_folds_and_out_of_sample_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let report = tmp.path().join("cv.json");
    let data_s = data.to_str().unwrap();
    let o = control(&[
        "data",
        "synth",
        "--seed",
        "11",
        "--days",
        "2",
        "--interval-ms",
        "30000",
        "--out",
        data_s,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let cv = |scheme: &str| {
        control(&[
            "research",
            "cv",
            "--env",
            "dev",
            "--dataset",
            data_s,
            "--strategy",
            "fx_g10",
            "--scheme",
            scheme,
            "--folds",
            "3",
            "--max-trees",
            "10",
            "--decision-every-ms",
            "300000",
            "--horizon",
            "6",
            "--out",
            report.to_str().unwrap(),
        ])
    };
    let o = cv("expanding");
    assert!(o.status.success(), "{}", text(&o));
    let printed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(printed, written);
    let folds = printed["report"]["folds"].as_array().unwrap();
    assert_eq!(folds.len(), 3);
    for f in folds {
        let test_start = f["test"][0].as_u64().unwrap();
        assert!(f["train_rows"].as_u64().unwrap() > 0, "{f}");
        assert!(
            f["train"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r[1].as_u64().unwrap() <= test_start),
            "walk-forward trains on the past only: {f}"
        );
    }
    let r = &printed["report"];
    assert!(r["oos_rows"].as_u64().unwrap() > 0);
    for k in ["auc", "log_loss", "brier", "ece"] {
        assert!(r[k].as_f64().is_some_and(f64::is_finite), "{k}: {r}");
    }
    assert!(!r["reliability"].as_array().unwrap().is_empty());
    assert_eq!(printed["point_in_time_rows_checked"], 50);

    let o = cv("random");
    assert!(!o.status.success());
    assert!(text(&o).contains("--scheme `random`"), "{}", text(&o));
}

/// `train --env dev` of `data` into `out` as `version`, with `extra`
/// arguments.
fn train_run(data: &Path, out: &Path, version: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--env",
        "dev",
        "--dataset",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--key",
        "deployments/dev-keys/dev-2026.key",
        "--strategy",
        "fx_g10",
        "--version",
        version,
        "--max-trees",
        "60",
    ];
    args.extend_from_slice(extra);
    control(&args)
}

/// [`train_run`], which must succeed; its output.
fn train_model(data: &Path, out: &Path, version: &str, extra: &[&str]) -> String {
    let o = train_run(data, out, version, extra);
    assert!(o.status.success(), "{}", text(&o));
    text(&o)
}

/// `data synth --seed S --days 3 --interval-ms 15000` into `out`, with
/// `extra` arguments.
fn synth(out: &Path, seed: &str, extra: &[&str]) {
    let mut args = vec![
        "data",
        "synth",
        "--seed",
        seed,
        "--days",
        "3",
        "--interval-ms",
        "15000",
        "--out",
    ];
    args.push(out.to_str().unwrap());
    args.extend_from_slice(extra);
    let o = control(&args);
    assert!(o.status.success(), "{}", text(&o));
}

/// `data synth` then `train --search-theta` into `tmp`; the artifact's
/// folder, the dataset's and the train output.
fn searched_model(tmp: &Path, effect: &str) -> (PathBuf, PathBuf, String) {
    let data = tmp.join(format!("data-{effect}"));
    let model = tmp.join(format!("model-{effect}"));
    synth(&data, "11", &["--effect", effect]);
    let trained = train_model(&data, &model, "1", &["--search-theta", "--trials", "15"]);
    (model, data, trained)
}

fn manifest_metrics(model: &Path) -> serde_json::Value {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("manifest.json")).unwrap()).unwrap();
    m["metrics"].clone()
}

#[test]
fn a_searched_model_trades_the_planted_reversal_after_costs_and_reports_its_stress() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data, trained) = searched_model(tmp.path(), "1");
    assert!(trained.contains("θ search: adopted"), "{trained}");
    let metrics = manifest_metrics(&model);
    assert_eq!(metrics["theta_search_adopted"], 1.0, "{metrics}");
    assert!(metrics["oos_sharpe_lo"].as_f64().unwrap() > 0.0, "{metrics}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("manifest.json")).unwrap()).unwrap();
    let (t1, t2) = (
        manifest["theta"]["theta1"].as_f64().unwrap(),
        manifest["theta"]["theta2"].as_f64().unwrap(),
    );
    // core_policy.yaml: θ1 0.55, θ2 0.60, max_step 0.05, inside the bounds.
    let in_space =
        |a: f64, b: f64| (0.5..=0.6 + 1e-9).contains(&a) && (0.55 - 1e-9..=0.65 + 1e-9).contains(&b);
    assert!(in_space(t1, t2), "{manifest}");
    // `research <stage> --env dev --artifact MODEL --dataset DATA ...`.
    let research = |stage: &str, extra: &[&str]| {
        let mut args = vec![
            "research",
            stage,
            "--env",
            "dev",
            "--artifact",
            model.to_str().unwrap(),
        ];
        args.extend_from_slice(&["--dataset", data.to_str().unwrap()]);
        args.extend_from_slice(extra);
        control(&args)
    };

    // The search alone, as JSON: every trial inside the space, the verdict,
    // and the chosen θ on the half it never saw — what train sealed.
    let report = tmp.path().join("theta.json");
    let o = research("theta", &["--trials", "15", "--out", report.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let theta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let trials = theta["search"]["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 25 + 15, "5 × 5 grid, then 15 TPE trials");
    assert!(trials
        .iter()
        .all(|t| in_space(t["theta1"].as_f64().unwrap(), t["theta2"].as_f64().unwrap())));
    assert_eq!(theta["search"]["adopted"], true, "{}", theta["search"]["verdict"]);
    assert_eq!(
        theta["held_out"]["sharpe"], metrics["oos_sharpe"],
        "the same search as train's"
    );

    let out = tmp.path().join("bt");
    let o = research("backtest", &["--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let printed = text(&o);
    for case in ["base", "spread_x3", "vol_shock", "price_gap", "stale_data"] {
        assert!(
            printed.contains(&format!("\n{case} ")),
            "{case} missing: {printed}"
        );
    }
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("portfolio_summary.json")).unwrap()).unwrap();
    let base = &s["base"];
    // The backtest decides with the model's searched θ, on its held-out window.
    assert_eq!((s["theta1"].as_f64(), s["theta2"].as_f64()), (Some(t1), Some(t2)));
    assert_eq!(
        base["sharpe"], metrics["oos_sharpe"],
        "the search measured the same backtest"
    );
    assert!(base["sharpe_ci90"][0].as_f64().unwrap() > 0.0, "{base}");
    assert!(base["total_return"].as_f64().unwrap() > 0.0, "{base}");
    assert!(base["decisions_not_flat"].as_f64().unwrap() > 0.3, "{base}");
    assert!(base["fills"].as_u64().unwrap() > 100, "{base}");
    // β-neutral within core_policy's beta_tolerance, every decision.
    assert!(
        base["max_abs_residual_beta"].as_f64().unwrap() <= 0.01 + 1e-12,
        "{base}"
    );
    let spread = &s["scenarios"]["spread_x3"];
    assert!(
        spread["sharpe"].as_f64().unwrap() < base["sharpe"].as_f64().unwrap(),
        "wider spreads cost more: {spread}"
    );
    assert!(spread["realised_slippage_bps"].as_f64() > base["realised_slippage_bps"].as_f64());
    let stale = &s["scenarios"]["stale_data"];
    assert!(
        stale["fills"].as_u64() < base["fills"].as_u64(),
        "no quotes, no fills: {stale}"
    );
    let positions = std::fs::read_to_string(out.join("positions.csv")).unwrap();
    assert!(positions.starts_with("ts_ns,symbol,side,weight,qty,return_prob,risk_score\n"));
    assert!(positions.lines().filter(|l| !l.contains(",flat,")).count() > 100);
    let daily = std::fs::read_to_string(out.join("daily_pnl.csv")).unwrap();
    let total: f64 = daily
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(
        (total - base["total_return"].as_f64().unwrap()).abs() < 1e-9,
        "daily P&L adds up"
    );
}

#[test]
fn a_market_without_the_planted_effect_yields_nothing_adoptable() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, _, trained) = searched_model(tmp.path(), "0");
    assert!(!trained.contains("θ search: adopted"), "{trained}");
    assert!(trained.contains("the champion's θ stays"), "{trained}");
    let metrics = manifest_metrics(&model);
    assert_eq!(metrics["theta_search_adopted"], 0.0, "{metrics}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["theta"]["theta1"], 0.55,
        "the configured θ stays: {manifest}"
    );
}

#[test]
fn a_challenger_must_beat_the_active_model_on_the_same_window() {
    let tmp = tempfile::tempdir().unwrap();
    let (planted, data, _) = searched_model(tmp.path(), "1");
    // The same data and parameters again: the same trees and θ, a gain of
    // exactly nothing, which is not a win.
    let again = tmp.path().join("again");
    let out = train_model(
        &data,
        &again,
        "2",
        &[
            "--search-theta",
            "--trials",
            "15",
            "--champion",
            planted.to_str().unwrap(),
        ],
    );
    assert!(out.contains("champion/challenger: the champion stays"), "{out}");
    let m = manifest_metrics(&again);
    assert_eq!(m["challenge_won"], 0.0, "{m}");
    assert_eq!(m["challenge_sharpe_gain"], 0.0, "{m}");
    assert_eq!(m["challenge_champion_version"], 1.0, "{m}");

    // A model of a market without the effect, on the same dates, as the
    // champion: the planted model beats it on the planted market.
    let null_data = tmp.path().join("null-data");
    synth(&null_data, "11", &["--effect", "0"]);
    let null_model = tmp.path().join("null-model");
    train_model(&null_data, &null_model, "3", &[]);
    let winner = tmp.path().join("winner");
    let out = train_model(&data, &winner, "4", &["--champion", null_model.to_str().unwrap()]);
    assert!(out.contains("champion/challenger: the challenger wins"), "{out}");
    let m = manifest_metrics(&winner);
    assert_eq!(m["challenge_won"], 1.0, "{m}");
    assert!(m["challenge_sharpe_gain_lo"].as_f64().unwrap() > 0.0, "{m}");
    assert!(
        m["challenge_challenger_sharpe"].as_f64().unwrap() > m["challenge_champion_sharpe"].as_f64().unwrap(),
        "{m}"
    );

    // The window must be out of sample for the champion: a model trained on
    // later data cannot be judged on an earlier window.
    let later = tmp.path().join("later-data");
    synth(&later, "12", &["--start", "2026-02-02"]);
    let later_model = tmp.path().join("later-model");
    train_model(&later, &later_model, "5", &[]);
    let refused = tmp.path().join("refused");
    let o = train_run(
        &data,
        &refused,
        "6",
        &["--champion", later_model.to_str().unwrap()],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("not out of sample for it"), "{}", text(&o));
    assert!(!refused.exists(), "nothing written");
}
