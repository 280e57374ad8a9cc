//! Learners: gradient-boosted trees (`gbdt` crate) and logistic regression
//! (`linfa-logistic`), converted into the export types of `mlcore-models`,
//! plus Platt calibration (a one-feature logistic regression on the margin).

use crate::onnx::export::{LogisticHead, Platt, TreeEnsembleHead, TreeNode};
use gbdt::config::Config;
use gbdt::decision_tree::{Data, DataVec};
use gbdt::gradient_boost::GBDT;
use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use mlcore_features::N_FEATURES;
use ndarray::{Array1, Array2};

/// Why a learner could not fit.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// The labels hold one class only.
    #[error("{what}: labels hold a single class ({n} rows); need both")]
    OneClass {
        /// Which fit.
        what: &'static str,
        /// Rows.
        n: usize,
    },
    /// The learner failed.
    #[error("{what}: {reason}")]
    Learner {
        /// Which fit.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// GBDT hyper-parameters.
#[derive(Debug, Clone, Copy)]
pub struct GbdtParams {
    /// Trees.
    pub trees: usize,
    /// Depth of each tree.
    pub depth: u32,
    /// Learning rate.
    pub learning_rate: f32,
    /// Minimum rows in a leaf.
    pub min_leaf: usize,
}

fn check_classes(what: &'static str, y: &[bool]) -> Result<(), FitError> {
    let pos = y.iter().filter(|v| **v).count();
    if pos == 0 || pos == y.len() {
        return Err(FitError::OneClass { what, n: y.len() });
    }
    Ok(())
}

/// Fits gradient-boosted trees (log-likelihood loss, labels ±1) and returns
/// the ensemble as a margin model: `gbdt` predicts `σ(2F)`, so the margin is
/// `2F` — base `2·bias`, leaves `2·η·value`, exact in f32.
pub fn fit_gbdt(
    x: &[f32],
    y: &[bool],
    weights: Option<&[f64]>,
    p: GbdtParams,
) -> Result<TreeEnsembleHead, FitError> {
    check_classes("gbdt", y)?;
    let mut cfg = Config::new();
    cfg.set_feature_size(N_FEATURES);
    cfg.set_max_depth(p.depth);
    cfg.set_iterations(p.trees);
    cfg.set_shrinkage(p.learning_rate);
    cfg.set_min_leaf_size(p.min_leaf);
    cfg.set_loss("LogLikelyhood");
    // Full data and feature sampling: no randomness, so training is reproducible.
    cfg.set_data_sample_ratio(1.0);
    cfg.set_feature_sample_ratio(1.0);
    cfg.set_training_optimization_level(2);
    let mut data: DataVec = x
        .chunks_exact(N_FEATURES)
        .zip(y)
        .enumerate()
        .map(|(i, (row, l))| {
            let w = weights.and_then(|w| w.get(i)).map_or(1.0, |w| *w as f32);
            Data::new_training_data(row.to_vec(), w, if *l { 1.0 } else { -1.0 }, None)
        })
        .collect();
    let mut model = GBDT::new(&cfg);
    model.fit(&mut data);
    let head = to_ensemble(&model, p.learning_rate)?;
    // The conversion must reproduce gbdt's own predictions.
    let check: DataVec = data.into_iter().take(2000).collect();
    let reference = model.predict(&check);
    for (d, want) in check.iter().zip(&reference) {
        let got = head.predict_row(&d.feature);
        if (got - want).abs() > 1e-5 {
            return Err(FitError::Learner {
                what: "gbdt export",
                reason: format!("converted ensemble predicts {got}, gbdt predicts {want}"),
            });
        }
    }
    Ok(head)
}

/// Reads the fitted trees through `gbdt`'s own serialisation (its node
/// fields are private): `trees[t].tree.tree[i] = {value: {feature_index,
/// feature_value, pred, is_leaf, ..}, index, left, right}`.
fn to_ensemble(model: &GBDT, learning_rate: f32) -> Result<TreeEnsembleHead, FitError> {
    let err = |reason: String| FitError::Learner {
        what: "gbdt export",
        reason,
    };
    let v = serde_json::to_value(model).map_err(|e| err(e.to_string()))?;
    let bias = v["bias"].as_f64().ok_or_else(|| err("no bias".into()))? as f32;
    let trees = v["trees"].as_array().ok_or_else(|| err("no trees".into()))?;
    let mut out = Vec::with_capacity(trees.len());
    for (t, tree) in trees.iter().enumerate() {
        let nodes = tree["tree"]["tree"]
            .as_array()
            .ok_or_else(|| err(format!("tree {t} has no nodes")))?;
        // gbdt indexes nodes by `index`; children 0 means none.
        let mut flat = Vec::with_capacity(nodes.len());
        for (i, n) in nodes.iter().enumerate() {
            let idx = n["index"]
                .as_u64()
                .ok_or_else(|| err(format!("tree {t} node {i}: no index")))? as usize;
            if idx != i {
                return Err(err(format!("tree {t}: node {i} has index {idx}")));
            }
            let val = &n["value"];
            let node = if val["is_leaf"].as_bool().unwrap_or(false) {
                let pred = val["pred"]
                    .as_f64()
                    .ok_or_else(|| err(format!("tree {t} node {i}: no pred")))?
                    as f32;
                TreeNode::Leaf(2.0 * (learning_rate * pred))
            } else {
                let child = |k: &str| n[k].as_u64().filter(|c| *c > 0).map(|c| c as usize);
                let (Some(left), Some(right)) = (child("left"), child("right")) else {
                    return Err(err(format!("tree {t} node {i}: split without two children")));
                };
                TreeNode::Split {
                    feature: val["feature_index"]
                        .as_u64()
                        .ok_or_else(|| err("no feature_index".into()))? as usize,
                    threshold: val["feature_value"]
                        .as_f64()
                        .ok_or_else(|| err("no feature_value".into()))? as f32,
                    left,
                    right,
                }
            };
            flat.push(node);
        }
        out.push(flat);
    }
    Ok(TreeEnsembleHead {
        trees: out,
        base: 2.0 * bias,
        platt: Platt::IDENTITY,
        n_features: N_FEATURES,
    })
}

fn to_array(x: &[f32], cols: usize) -> Array2<f64> {
    let rows = x.len() / cols.max(1);
    Array2::from_shape_fn((rows, cols), |(r, c)| f64::from(x[r * cols + c]))
}

/// Fits an L2-regularised logistic regression on standardised inputs and
/// folds the standardisation back into the weights.
pub fn fit_logistic(x: &[f32], y: &[bool], alpha: f64) -> Result<LogisticHead, FitError> {
    check_classes("logistic", y)?;
    let cols = N_FEATURES;
    let raw = to_array(x, cols);
    let mean = raw
        .mean_axis(ndarray::Axis(0))
        .unwrap_or_else(|| Array1::zeros(cols));
    let std = raw
        .std_axis(ndarray::Axis(0), 0.0)
        .mapv(|s| if s > 1e-12 { s } else { 1.0 });
    let z = (&raw - &mean) / &std;
    let (w, c) = logistic(z, y, alpha, "logistic")?;
    let weights: Vec<f32> = (0..cols).map(|j| (w[j] / std[j]) as f32).collect();
    let intercept = (c - (0..cols).map(|j| w[j] * mean[j] / std[j]).sum::<f64>()) as f32;
    Ok(LogisticHead {
        weights,
        intercept,
        platt: Platt::IDENTITY,
    })
}

/// Platt scaling: fits `σ(a·margin + b)` to the labels.
pub fn fit_platt(margins: &[f32], y: &[bool]) -> Result<Platt, FitError> {
    check_classes("platt", y)?;
    let x = to_array(margins, 1);
    let (w, c) = logistic(x, y, 1e-6, "platt")?;
    Ok(Platt {
        a: w[0] as f32,
        b: c as f32,
    })
}

/// Weights and intercept for the probability of `true`.
fn logistic(x: Array2<f64>, y: &[bool], alpha: f64, what: &'static str) -> Result<(Vec<f64>, f64), FitError> {
    let targets = Array1::from_iter(y.iter().copied());
    let ds = Dataset::new(x, targets);
    let fitted = LogisticRegression::default()
        .alpha(alpha)
        .max_iterations(200)
        .fit(&ds)
        .map_err(|e| FitError::Learner {
            what,
            reason: e.to_string(),
        })?;
    // linfa's positive class is the first label it met: orient to `true`.
    let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
    Ok((
        fitted.params().iter().map(|w| sign * w).collect(),
        sign * fitted.intercept(),
    ))
}
