//! Learners: gradient-boosted trees (LightGBM, through `lightgbm3`) and logistic regression
//! (`linfa-logistic`), converted into the export types of `mlcore-models`,
//! plus Platt calibration (a one-feature logistic regression on the margin).

use crate::onnx::export::{LogisticHead, Platt, TreeEnsembleHead, TreeNode};
use lightgbm3::{Booster, Dataset as LgbDataset};
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

/// Gradient-boosted trees: LightGBM's parameters that matter here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GbmParams {
    /// Leaves per tree (LightGBM grows leaf-wise).
    pub num_leaves: usize,
    /// Shrinkage.
    pub learning_rate: f64,
    /// Fewest rows in a leaf.
    pub min_data_in_leaf: usize,
    /// Most trees; with a validation set, training stops earlier once 50
    /// rounds pass without a better validation log loss.
    pub max_trees: usize,
}

impl Default for GbmParams {
    /// LightGBM's defaults but a smaller learning rate, which the early
    /// stop makes affordable.
    fn default() -> Self {
        Self {
            num_leaves: 31,
            learning_rate: 0.05,
            min_data_in_leaf: 50,
            max_trees: 1000,
        }
    }
}

fn check_classes(what: &'static str, y: &[bool]) -> Result<(), FitError> {
    let pos = y.iter().filter(|v| **v).count();
    if pos == 0 || pos == y.len() {
        return Err(FitError::OneClass { what, n: y.len() });
    }
    Ok(())
}

/// Fits gradient-boosted trees with LightGBM (binary log loss, labels
/// 0/1, optional sample weights, early stopping on `valid` when given),
/// single-threaded and deterministic so the same data gives the same trees,
/// and returns them as a margin model for the ONNX export. The conversion
/// is checked against LightGBM's own raw scores.
pub fn fit_gbm(
    x: &[f32],
    y: &[bool],
    weights: Option<&[f64]>,
    valid: Option<(&[f32], &[bool])>,
    p: GbmParams,
) -> Result<TreeEnsembleHead, FitError> {
    check_classes("gbm", y)?;
    let err = |e: lightgbm3::Error| FitError::Learner {
        what: "gbm",
        reason: e.to_string(),
    };
    let labels = |y: &[bool]| -> Vec<f32> { y.iter().map(|l| f32::from(u8::from(*l))).collect() };
    let n = N_FEATURES as i32;
    let mut train = LgbDataset::from_slice(x, &labels(y), n, true).map_err(err)?;
    if let Some(w) = weights {
        let w: Vec<f32> = w.iter().map(|v| *v as f32).collect();
        train.set_weights(&w).map_err(err)?;
    }
    let valid = match valid {
        Some((vx, vy)) => {
            Some(LgbDataset::from_slice_with_reference(vx, &labels(vy), n, true, Some(&train)).map_err(err)?)
        }
        None => None,
    };
    let mut params = serde_json::json!({
        "objective": "binary",
        "metric": "binary_logloss",
        "learning_rate": p.learning_rate,
        "num_leaves": p.num_leaves,
        "min_data_in_leaf": p.min_data_in_leaf,
        "num_iterations": p.max_trees.max(1),
        "num_threads": 1,
        "deterministic": true,
        "force_row_wise": true,
        "seed": 0,
        "verbosity": -1,
    });
    if valid.is_some() {
        params["early_stopping_rounds"] = 50.into();
    }
    let booster = Booster::train_with_valid(train, valid, &params).map_err(err)?;
    let model = booster.save_string().map_err(err)?;
    let head = to_ensemble(&model)?;
    // The conversion must reproduce LightGBM's own margins.
    let check = (x.len() / N_FEATURES).min(2000);
    let reference = booster
        .raw_scores(&x[..check * N_FEATURES], n, true)
        .map_err(err)?;
    for (r, want) in reference.iter().enumerate() {
        let got = head.margin_row(&x[r * N_FEATURES..(r + 1) * N_FEATURES]);
        if (f64::from(got) - want).abs() > 1e-4 * want.abs().max(1.0) {
            return Err(FitError::Learner {
                what: "gbm export",
                reason: format!("row {r}: converted ensemble's margin {got}, LightGBM's {want}"),
            });
        }
    }
    Ok(head)
}

/// LightGBM's text model as export nodes. Each `Tree=` block lists its
/// internal nodes (`split_feature`, `threshold`, `decision_type`,
/// `left_child`, `right_child`; a negative child `c` is leaf `−c − 1`) and
/// `leaf_value`s, shrinkage applied and the initial score folded into the
/// first tree. A numerical split sends `x ≤ threshold` left; the export's
/// `x < t` with `t` the smallest f32 above the f64 threshold is the same
/// test for every f32 `x`. Categorical splits and zero-as-missing never
/// occur here (no categorical features, LightGBM's default missing
/// handling) and are refused if they do; rows are never missing (the
/// feature engine writes finite numbers), so NaN branches are not carried.
fn to_ensemble(model: &str) -> Result<TreeEnsembleHead, FitError> {
    let err = |reason: String| FitError::Learner {
        what: "gbm export",
        reason,
    };
    let mut trees = Vec::new();
    let mut block: Vec<(&str, &str)> = Vec::new();
    let mut flush = |block: &mut Vec<(&str, &str)>| -> Result<(), FitError> {
        if block.is_empty() {
            return Ok(());
        }
        let get = |k: &str| block.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        let nums = |k: &str| -> Result<Vec<f64>, FitError> {
            get(k).map_or(Ok(Vec::new()), |v| {
                v.split_whitespace()
                    .map(|t| t.parse::<f64>().map_err(|e| err(format!("{k}: {t}: {e}"))))
                    .collect()
            })
        };
        let leaves = nums("leaf_value")?;
        let (feature, threshold, kind) = (nums("split_feature")?, nums("threshold")?, nums("decision_type")?);
        let (left, right) = (nums("left_child")?, nums("right_child")?);
        let internal = feature.len();
        if [threshold.len(), kind.len(), left.len(), right.len()] != [internal; 4]
            || leaves.len() != internal + 1
        {
            return Err(err(format!(
                "a tree with {internal} splits and {} leaves",
                leaves.len()
            )));
        }
        let child = |c: f64| -> usize {
            if c < 0.0 {
                internal + (-c - 1.0) as usize
            } else {
                c as usize
            }
        };
        let mut nodes = Vec::with_capacity(2 * internal + 1);
        for i in 0..internal {
            let d = kind[i] as u32;
            if d & 1 != 0 || (d >> 2) & 3 == 1 {
                return Err(err(format!(
                    "decision_type {d}: a categorical or zero-as-missing split"
                )));
            }
            nodes.push(TreeNode::Split {
                feature: feature[i] as usize,
                threshold: f32_above(threshold[i]),
                left: child(left[i]),
                right: child(right[i]),
            });
        }
        nodes.extend(leaves.iter().map(|v| TreeNode::Leaf(*v as f32)));
        if internal == 0 {
            // A single leaf is its own root.
            nodes.truncate(1);
        }
        trees.push(nodes);
        block.clear();
        Ok(())
    };
    let mut in_tree = false;
    for line in model.lines() {
        if line.starts_with("Tree=") {
            flush(&mut block)?;
            in_tree = true;
        } else if line.starts_with("end of trees") {
            break;
        } else if in_tree {
            if let Some((k, v)) = line.split_once('=') {
                block.push((k, v));
            }
        }
    }
    flush(&mut block)?;
    if trees.is_empty() {
        return Err(err("the model has no tree".into()));
    }
    Ok(TreeEnsembleHead {
        trees,
        base: 0.0,
        platt: Platt::IDENTITY,
        n_features: N_FEATURES,
    })
}

/// The smallest f32 above `v`: for every f32 `x`, `x ≤ v ⇔ x < f32_above(v)`.
fn f32_above(v: f64) -> f32 {
    let f = v as f32;
    if f64::from(f) > v || !f.is_finite() {
        f
    } else {
        f.next_up()
    }
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
