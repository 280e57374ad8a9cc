//! The first trainer: dataset → features → labels → time-ordered split →
//! fit (ai1 and ai2: gradient-boosted trees, LightGBM) → Platt
//! calibration → ONNX export → parity check against ONNX Runtime → sign →
//! verify.
//!
//! Deterministic: the same dataset, parameters and `created_at_ms` give a
//! byte-identical artifact. (Purged CV, walk-forward, backtest and θ search
//! belong to the retraining pipeline, which builds on this.)

pub mod learners;
mod metrics;
pub mod samples;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::dataset::{Dataset, DatasetError, Quarantined};
use crate::labels;
use crate::onnx::export::{ToOnnx, TreeEnsembleHead};
use mlcore_features::{self as features, N_FEATURES};
use mlcore_models::artifact::{
    self, ArtifactFiles, HeadSpec, Manifest, SecretKeyFile, ThetaParams, TrainingWindow, TrustStore,
    VerifyContext,
};
use mlcore_models::native::{self, NativeHead};
use mlcore_models::runtime;

pub use learners::{FitError, GbmParams};
pub use metrics::{auc, brier, log_loss, reliability, ReliabilityBin};

/// Test rows an artifact carries for the loader's native/ONNX Runtime
/// parity check (at most; fewer when the test segment is shorter).
const VALIDATION_ROWS: usize = 512;

/// What to train.
#[derive(Debug)]
pub struct TrainSpec {
    /// Dataset root (with `dataset_index.json`).
    pub dataset: PathBuf,
    /// What the manifest says of the model: strategy, version, time,
    /// validity, θ.
    pub model: ModelMeta,
    /// Symbols in universe order.
    pub symbols: Vec<String>,
    /// Index of the benchmark symbol.
    pub benchmark: usize,
    /// Decision cadence for samples, ms.
    pub decision_every_ms: u64,
    /// Label horizon, quotes.
    pub horizon: usize,
    /// Each symbol's round-trip cost (spread + commission, bps, universe
    /// order): what ai3's meta-label must beat.
    pub costs_bps: Vec<f64>,
    /// Tree parameters of every head.
    pub gbm: GbmParams,
}

/// What training produced.
#[derive(Debug)]
pub struct TrainReport {
    /// The sealed manifest.
    pub manifest: Manifest,
    /// The artifact's files (written to the output folder).
    pub files: ArtifactFiles,
    /// Partitions excluded by quarantine markers.
    pub quarantined: Vec<Quarantined>,
    /// Rows per segment (train, calibration, test).
    pub rows: (usize, usize, usize),
    /// Each head's reliability diagram on the test rows (10 bins), by head.
    pub reliability: BTreeMap<String, Vec<ReliabilityBin>>,
}

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The dataset could not be read.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// Too little data.
    #[error("not enough data: {0}")]
    NotEnoughData(String),
    /// A learner failed.
    #[error(transparent)]
    Fit(#[from] FitError),
    /// Export, parity or sealing failed.
    #[error("{0}")]
    Export(String),
    /// The fresh artifact did not verify.
    #[error("the trained artifact does not verify: {0}")]
    Verify(#[from] artifact::VerifyError),
}

/// Three fitted heads and their figures on the test rows: what training
/// hands to the export.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Fitted {
    /// Up-move probability (triple barrier), calibrated.
    pub ai1: TreeEnsembleHead,
    /// Adverse-excursion risk, calibrated.
    pub ai2: TreeEnsembleHead,
    /// Whether acting on ai1's side pays its round trip (meta-label), calibrated.
    pub ai3: TreeEnsembleHead,
    /// Test-row metrics (AUC, log loss, Brier, ECE, base rates, rows).
    pub metrics: BTreeMap<String, f64>,
    /// Each head's reliability diagram on the test rows (10 bins), by head.
    pub reliability: BTreeMap<String, Vec<ReliabilityBin>>,
}

/// What the manifest says of a model besides its heads.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMeta {
    /// Strategy id.
    pub strategy: String,
    /// Version (monotonic per strategy).
    pub version: u64,
    /// Creation time, ms.
    pub created_at_ms: u64,
    /// Validity from creation, days.
    pub valid_days: u32,
    /// θ.
    pub theta: ThetaParams,
}

/// Trains, exports, signs with `key` and verifies against `trust`:
/// dataset → [`samples::build`] → [`fit`] → [`export`].
pub fn train(
    spec: &TrainSpec,
    key: &SecretKeyFile,
    trust: &TrustStore,
    now_ms: u64,
) -> Result<TrainReport, TrainError> {
    let dataset = Dataset::open(&spec.dataset)?;
    let names: Vec<&str> = spec.symbols.iter().map(String::as_str).collect();
    let quotes = dataset.load_quotes(&names)?;
    if quotes.is_empty() {
        return Err(TrainError::NotEnoughData(format!(
            "no quotes for {} in {}",
            names.join(","),
            spec.dataset.display()
        )));
    }
    let every_ns = i64::try_from(spec.decision_every_ms).unwrap_or(i64::MAX / 2_000_000) * 1_000_000;
    let split = samples::build(
        &quotes,
        names.len(),
        spec.benchmark,
        every_ns,
        spec.horizon,
        SPLIT_FRACTIONS,
    );
    let fitted = fit(&split, spec.gbm, &spec.costs_bps)?;
    let (manifest, files) = export(&fitted, &split, &spec.model, key, trust, now_ms)?;
    Ok(TrainReport {
        manifest,
        files,
        quarantined: dataset.quarantined,
        rows: (split.train.rows(), split.calibration.rows(), split.test.rows()),
        reliability: fitted.reliability,
    })
}

/// Fractions of the decision span for the train and calibration segments
/// (the test segment is the rest).
pub const SPLIT_FRACTIONS: (f64, f64) = (0.7, 0.1);

/// Fits ai1, ai2 and ai3 on `split` (early-stopped and Platt-calibrated on
/// its calibration segment) and measures them on its test segment.
/// `costs_bps` is each symbol's round trip, universe order (ai3's label).
pub fn fit(split: &samples::Split, gbm: GbmParams, costs_bps: &[f64]) -> Result<Fitted, TrainError> {
    let rows = (split.train.rows(), split.calibration.rows(), split.test.rows());
    if rows.0 < 200 || rows.1 < 50 || rows.2 < 50 {
        return Err(TrainError::NotEnoughData(format!(
            "train/calibration/test rows {rows:?}; need at least 200/50/50 (more days or a faster cadence)"
        )));
    }
    // ai1: up-move probability.
    // Weighted by each label's average uniqueness (overlapping labels are
    // not independent evidence).
    // Early-stopped on the calibration segment (held out, in time order).
    // ai1 and ai2 are independent: fitted side by side (each LightGBM fit
    // single-threaded and deterministic, so the trees are the same).
    let calibrated = |y: &[bool], y_cal: &[bool]| -> Result<TreeEnsembleHead, TrainError> {
        let mut head = learners::fit_gbm(
            &split.train.x,
            y,
            Some(&split.train.weight),
            Some((&split.calibration.x, y_cal)),
            gbm,
        )?;
        let margins: Vec<f32> = (0..split.calibration.rows())
            .map(|i| head.margin_row(split.calibration.row(i)))
            .collect();
        head.platt = learners::fit_platt(&margins, y_cal)?;
        Ok(head)
    };
    // ai2: risk score = probability of an adverse excursion against the
    // side (what θ2 gates). Trees too: a logistic regression reached an
    // AUC 0.025 below LightGBM's on the same rows (docs/research.md).
    let (ai1, ai2) = rayon::join(
        || calibrated(&split.train.up, &split.calibration.up),
        || calibrated(&split.train.adverse, &split.calibration.adverse),
    );
    let (ai1, ai2) = (ai1?, ai2?);

    // ai3: whether acting on ai1's side pays its round trip (the
    // meta-label); it sizes positions (`sizing.use_ai3`). ai1's side on the
    // training rows is cross-fitted: each half of the segment is scored by
    // an ai1 fitted on the other half, rows within a label horizon of the
    // boundary left out of both fits, so ai3 learns from ai1 as it behaves
    // out of sample. On the calibration and test rows, ai1 itself decides.
    let cost = |seg: &samples::Segment, i: usize| {
        costs_bps.get(usize::from(seg.symbol[i])).copied().unwrap_or(0.0) * 1e-4
    };
    let meta = |seg: &samples::Segment, prob_up: &dyn Fn(usize) -> f32| -> Vec<bool> {
        (0..seg.rows())
            .map(|i| labels::pays(seg.ret[i], prob_up(i) > 0.5, cost(seg, i)))
            .collect()
    };
    // As many trees as the early stop gave ai1 (the halves have no
    // validation rows of their own).
    let halves = GbmParams {
        max_trees: ai1.trees.len().max(1),
        ..gbm
    };
    let sides = cross_fitted_ai1(&split.train, &split.calibration, split.gap_ns, halves)?;
    let meta_train = meta(&split.train, &|i| sides[i]);
    let cal = &split.calibration;
    let meta_cal = meta(cal, &|i| ai1.predict_row(cal.row(i)));
    let mut ai3 = learners::fit_gbm(
        &split.train.x,
        &meta_train,
        Some(&split.train.weight),
        Some((&cal.x, &meta_cal)),
        gbm,
    )?;
    let margins3: Vec<f32> = (0..cal.rows()).map(|i| ai3.margin_row(cal.row(i))).collect();
    ai3.platt = learners::fit_platt(&margins3, &meta_cal)?;

    // Test metrics.
    let test = &split.test;
    let p1: Vec<f32> = (0..test.rows()).map(|i| ai1.predict_row(test.row(i))).collect();
    let p2: Vec<f32> = (0..test.rows()).map(|i| ai2.predict_row(test.row(i))).collect();
    let p3: Vec<f32> = (0..test.rows()).map(|i| ai3.predict_row(test.row(i))).collect();
    let meta_test = meta(test, &|i| p1[i]);
    let risky = &test.adverse;
    let mut metrics = BTreeMap::new();
    metrics.insert(
        "ai1_auc_test".to_owned(),
        metrics::auc(&p1, &test.up).unwrap_or(0.5),
    );
    metrics.insert("ai1_logloss_test".to_owned(), metrics::log_loss(&p1, &test.up));
    metrics.insert("ai1_brier_test".to_owned(), metrics::brier(&p1, &test.up));
    metrics.insert(
        "ai1_ece_test".to_owned(),
        metrics::reliability(&p1, &test.up, 10).1,
    );
    metrics.insert(
        "train_mean_uniqueness".to_owned(),
        split.train.weight.iter().sum::<f64>() / split.train.weight.len().max(1) as f64,
    );
    metrics.insert("ai1_base_rate_test".to_owned(), rate(&test.up));
    metrics.insert("ai2_auc_test".to_owned(), metrics::auc(&p2, risky).unwrap_or(0.5));
    metrics.insert("ai2_logloss_test".to_owned(), metrics::log_loss(&p2, risky));
    metrics.insert("ai2_base_rate_test".to_owned(), rate(risky));
    metrics.insert("ai2_brier_test".to_owned(), metrics::brier(&p2, risky));
    metrics.insert("ai2_ece_test".to_owned(), metrics::reliability(&p2, risky, 10).1);
    metrics.insert(
        "ai3_auc_test".to_owned(),
        metrics::auc(&p3, &meta_test).unwrap_or(0.5),
    );
    metrics.insert("ai3_logloss_test".to_owned(), metrics::log_loss(&p3, &meta_test));
    metrics.insert("ai3_brier_test".to_owned(), metrics::brier(&p3, &meta_test));
    metrics.insert(
        "ai3_ece_test".to_owned(),
        metrics::reliability(&p3, &meta_test, 10).1,
    );
    metrics.insert("ai3_base_rate_test".to_owned(), rate(&meta_test));
    metrics.insert("label_barrier_sigmas".to_owned(), samples::BARRIER_SIGMAS);
    metrics.insert("label_adverse_sigmas".to_owned(), samples::ADVERSE_SIGMAS);
    metrics.insert("rows_train".to_owned(), rows.0 as f64);
    metrics.insert("rows_calibration".to_owned(), rows.1 as f64);
    metrics.insert("rows_test".to_owned(), rows.2 as f64);

    let reliability = [
        ("ai1", &p1, &test.up),
        ("ai2", &p2, risky),
        ("ai3", &p3, &meta_test),
    ]
    .into_iter()
    .map(|(head, p, y)| (head.to_owned(), metrics::reliability(p, y, 10).0))
    .collect();
    Ok(Fitted {
        ai1,
        ai2,
        ai3,
        metrics,
        reliability,
    })
}

/// Exports `fitted` to ONNX, checks ONNX Runtime against the native heads
/// on `split`'s test rows, seals the manifest `meta` describes, signs it
/// with `key` and verifies it against `trust` at `now_ms`.
pub fn export(
    fitted: &Fitted,
    split: &samples::Split,
    meta: &ModelMeta,
    key: &SecretKeyFile,
    trust: &TrustStore,
    now_ms: u64,
) -> Result<(Manifest, ArtifactFiles), TrainError> {
    let (ai1, ai2, ai3) = (&fitted.ai1, &fitted.ai2, &fitted.ai3);
    let mut metrics = fitted.metrics.clone();
    let test = &split.test;
    let p1: Vec<f32> = (0..test.rows()).map(|i| ai1.predict_row(test.row(i))).collect();
    let p2: Vec<f32> = (0..test.rows()).map(|i| ai2.predict_row(test.row(i))).collect();
    let p3: Vec<f32> = (0..test.rows()).map(|i| ai3.predict_row(test.row(i))).collect();
    // Export, and check ONNX Runtime agrees with the native heads.
    let export = |e: crate::onnx::export::ExportError| TrainError::Export(e.to_string());
    let ai1_onnx = ai1.to_onnx("ai1").map_err(export)?;
    let ai2_onnx = ai2.to_onnx("ai2").map_err(export)?;
    let ai3_onnx = ai3.to_onnx("ai3").map_err(export)?;
    let parity_rows = test.rows().min(10_000);
    let x = &test.x[..parity_rows * N_FEATURES];
    for (name, bytes, native) in [
        ("ai1", &ai1_onnx, &p1),
        ("ai2", &ai2_onnx, &p2),
        ("ai3", &ai3_onnx, &p3),
    ] {
        let worst = onnx_max_abs_diff(bytes, x, &native[..parity_rows])?;
        if worst > 1e-5 {
            return Err(TrainError::Export(format!(
                "{name}: ONNX Runtime differs from the native model by {worst:e}"
            )));
        }
        metrics.insert(format!("{name}_onnx_parity_max_abs"), f64::from(worst));
    }

    let schema = features::schema();
    let head = |name: &str, learner: &str| HeadSpec {
        file: format!("{name}.onnx"),
        input: "x".into(),
        output: "prob".into(),
        n_features: N_FEATURES,
        learner: learner.into(),
        calibration: "platt".into(),
        native: Some(native::file_name(name)),
    };
    let manifest = Manifest {
        format: 1,
        model_id: format!("{}-v{}", meta.strategy, meta.version),
        strategy: meta.strategy.clone(),
        version: meta.version,
        created_at_ms: meta.created_at_ms,
        expires_at_ms: meta.created_at_ms + u64::from(meta.valid_days) * 86_400_000,
        feature_schema_hash: schema
            .hash()
            .map_err(|e| TrainError::Export(format!("feature schema: {e}")))?,
        heads: [
            ("ai1".to_owned(), head("ai1", "lightgbm")),
            ("ai2".to_owned(), head("ai2", "lightgbm")),
            ("ai3".to_owned(), head("ai3", "lightgbm")),
        ]
        .into(),
        theta: meta.theta,
        training_window: TrainingWindow {
            start_ms: split.start_ms,
            test_start_ms: split.test_start_ms,
            end_ms: split.end_ms,
        },
        metrics,
        files: BTreeMap::new(),
    };
    let schema_json =
        serde_json::to_string_pretty(&schema).map_err(|e| TrainError::Export(e.to_string()))? + "\n";
    // The native backend's parameters, and test rows for the loader to
    // check them against ONNX Runtime on before they serve.
    let native_json = |h: &TreeEnsembleHead| {
        NativeHead::Trees(h.clone())
            .to_json()
            .map_err(|e| TrainError::Export(e.to_string()))
    };
    let validation_rows = test.rows().min(VALIDATION_ROWS);
    let files = ArtifactFiles(
        [
            ("ai1.onnx".to_owned(), ai1_onnx),
            ("ai2.onnx".to_owned(), ai2_onnx),
            ("ai3.onnx".to_owned(), ai3_onnx),
            (native::file_name("ai1"), native_json(ai1)?),
            (native::file_name("ai2"), native_json(ai2)?),
            (native::file_name("ai3"), native_json(ai3)?),
            (
                artifact::VALIDATION_ROWS.to_owned(),
                native::encode_rows(&test.x[..validation_rows * N_FEATURES]),
            ),
            (artifact::FEATURE_SCHEMA.to_owned(), schema_json.into_bytes()),
        ]
        .into(),
    );
    let (manifest, files) = artifact::seal(manifest, files, key).map_err(TrainError::Export)?;
    let ctx = VerifyContext {
        trust,
        feature_schema_hash: features::schema_hash(),
        now_ms,
        highest_accepted: None,
        rollback: None,
    };
    artifact::verify(files.clone(), &ctx)?;
    Ok((manifest, files))
}

/// ai1's calibrated up-probability for every row of `seg`, each from an
/// ai1 fitted on the other half of the segment (rows within `gap_ns` of the
/// halves' boundary fit neither) and calibrated on `cal`.
fn cross_fitted_ai1(
    seg: &samples::Segment,
    cal: &samples::Segment,
    gap_ns: i64,
    p: GbmParams,
) -> Result<Vec<f32>, TrainError> {
    let n = seg.rows();
    let mid = seg.ts_ns.get(n / 2).copied().unwrap_or(0);
    let rows = |keep: &dyn Fn(i64) -> bool| -> (Vec<f32>, Vec<bool>, Vec<f64>) {
        let mut out = (Vec::new(), Vec::new(), Vec::new());
        for i in (0..n).filter(|&i| keep(seg.ts_ns[i])) {
            out.0.extend_from_slice(seg.row(i));
            out.1.push(seg.up[i]);
            out.2.push(seg.weight[i]);
        }
        out
    };
    let first = rows(&|t| t + gap_ns < mid);
    let second = rows(&|t| t >= mid + gap_ns);
    // Each half calibrated like ai1 itself (Platt on the calibration
    // segment), so "ai1's side" means calibrated p > 0.5 on every row.
    let fit = |(x, y, w): &(Vec<f32>, Vec<bool>, Vec<f64>)| -> Result<_, TrainError> {
        let mut head = learners::fit_gbm(x, y, Some(w), None, p)?;
        let margins: Vec<f32> = (0..cal.rows()).map(|i| head.margin_row(cal.row(i))).collect();
        head.platt = learners::fit_platt(&margins, &cal.up)?;
        Ok(head)
    };
    // The halves are independent: fitted side by side.
    let (on_first, on_second) = rayon::join(|| fit(&first), || fit(&second));
    let (on_first, on_second) = (on_first?, on_second?);
    Ok((0..n)
        .map(|i| {
            let head = if seg.ts_ns[i] < mid { &on_second } else { &on_first };
            head.predict_row(seg.row(i))
        })
        .collect())
}

fn rate(labels: &[bool]) -> f64 {
    labels.iter().filter(|l| **l).count() as f64 / labels.len().max(1) as f64
}

fn onnx_max_abs_diff(model: &[u8], x: &[f32], native: &[f32]) -> Result<f32, TrainError> {
    let ort = |e: String| TrainError::Export(format!("ONNX Runtime: {e}"));
    let mut session = runtime::hot_path_session(model).map_err(|e| ort(e.to_string()))?;
    let rows = native.len();
    let input =
        ort::value::TensorRef::from_array_view(([rows, N_FEATURES], x)).map_err(|e| ort(e.to_string()))?;
    let out = session
        .run(ort::inputs!["x" => input])
        .map_err(|e| ort(e.to_string()))?;
    let (_, probs) = out["prob"]
        .try_extract_tensor::<f32>()
        .map_err(|e| ort(e.to_string()))?;
    Ok(probs
        .iter()
        .zip(native)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max))
}

/// Writes the artifact into `out`, which must not exist yet (never overwrite
/// a model).
pub fn write_artifact(files: &ArtifactFiles, out: &Path) -> Result<(), TrainError> {
    if out.exists() {
        return Err(TrainError::Export(format!(
            "{} already exists; refusing to overwrite an artifact",
            out.display()
        )));
    }
    files.write(out).map_err(|e| TrainError::Export(e.to_string()))
}
