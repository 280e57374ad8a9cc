//! Exporting fitted heads to ONNX, with native predictors that the export is
//! checked against.
//!
//! A head maps a `[N, F]` float32 input `x` to a `[N, 1]` float32 probability
//! `prob`. Learners live with the trainer; they hand over plain parameters
//! ([`LogisticHead`], [`TreeEnsembleHead`]) so that this crate — shared with
//! the daemon — stays free of training dependencies.
//!
//! - Logistic regression: `MatMul → Add → calibration → Sigmoid` (standard ops).
//! - Gradient-boosted trees: `ai.onnx.ml.TreeEnsembleRegressor` producing the
//!   raw margin, then calibration and `Sigmoid`.
//! - Calibration (Platt): `p = σ(a·margin + b)` is folded into the graph, so
//!   the served probability is the calibrated one.

use super::graph::{Attr, Dim, GraphBuilder};

/// Platt scaling of a raw margin: `σ(a·m + b)`. `a = 1, b = 0` is none.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Platt {
    /// Slope.
    pub a: f32,
    /// Intercept.
    pub b: f32,
}

impl Platt {
    /// No calibration.
    pub const IDENTITY: Self = Self { a: 1.0, b: 0.0 };

    fn apply(&self, margin: f32) -> f32 {
        sigmoid(self.a * margin + self.b)
    }
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// A fitted logistic regression.
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticHead {
    /// One weight per feature.
    pub weights: Vec<f32>,
    /// Intercept.
    pub intercept: f32,
    /// Calibration of the margin.
    pub platt: Platt,
}

/// One node of a regression tree, in flat (array) form.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum TreeNode {
    /// `x[feature] < threshold` goes to `left`, else `right` (indices into the tree).
    Split {
        /// Feature index.
        feature: usize,
        /// Threshold.
        threshold: f32,
        /// Node taken when the comparison holds.
        left: usize,
        /// Node taken otherwise.
        right: usize,
    },
    /// A leaf's contribution to the margin (already scaled by the learning rate).
    Leaf(f32),
}

/// A fitted gradient-boosted tree ensemble: margin = `base + Σ leaf`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TreeEnsembleHead {
    /// Trees; node 0 of each is its root.
    pub trees: Vec<Vec<TreeNode>>,
    /// Base margin.
    pub base: f32,
    /// Calibration of the margin.
    pub platt: Platt,
    /// Features per row.
    pub n_features: usize,
}

/// Why a head cannot be exported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// The parameters are inconsistent.
    #[error("invalid head: {0}")]
    Invalid(String),
    /// Serialisation failed.
    #[error("protobuf: {0}")]
    Protobuf(String),
}

impl LogisticHead {
    /// Native prediction of one row.
    pub fn predict_row(&self, x: &[f32]) -> f32 {
        let margin: f32 = self.weights.iter().zip(x).map(|(w, v)| w * v).sum::<f32>() + self.intercept;
        self.platt.apply(margin)
    }

    /// The ONNX model.
    pub fn to_onnx(&self, name: &str) -> Result<Vec<u8>, ExportError> {
        let f = i64::try_from(self.weights.len())
            .map_err(|_| ExportError::Invalid("too many features".into()))?;
        if self.weights.iter().any(|w| !w.is_finite()) || !self.intercept.is_finite() {
            return Err(ExportError::Invalid("non-finite weight".into()));
        }
        // Fold Platt into the linear map: a·(x·w + c) + b = x·(a·w) + (a·c + b).
        let w: Vec<f32> = self.weights.iter().map(|w| w * self.platt.a).collect();
        let c = self.platt.a * self.intercept + self.platt.b;
        let mut g = GraphBuilder::new(name);
        g.input("x", &[Dim::Named("N"), Dim::Fixed(f)])
            .output("prob", &[Dim::Named("N"), Dim::Fixed(1)])
            .initializer("w", &[f, 1], &w)
            .initializer("c", &[1], &[c])
            .node("MatMul", &["x", "w"], &["xw"], &[])
            .node("Add", &["xw", "c"], &["margin"], &[])
            .node("Sigmoid", &["margin"], &["prob"], &[]);
        g.build("mlcore-models", "logistic regression, Platt-calibrated")
            .map_err(|e| ExportError::Protobuf(e.to_string()))
    }
}

impl TreeEnsembleHead {
    /// Native margin of one row (trees summed in order, in f32, like the trainer).
    pub fn margin_row(&self, x: &[f32]) -> f32 {
        let mut m = self.base;
        for tree in &self.trees {
            let mut i = 0;
            loop {
                match tree[i] {
                    TreeNode::Leaf(v) => {
                        m += v;
                        break;
                    }
                    TreeNode::Split {
                        feature,
                        threshold,
                        left,
                        right,
                    } => {
                        i = if x[feature] < threshold { left } else { right };
                    }
                }
            }
        }
        m
    }

    /// Native prediction of one row.
    pub fn predict_row(&self, x: &[f32]) -> f32 {
        self.platt.apply(self.margin_row(x))
    }

    fn check(&self) -> Result<(), ExportError> {
        for (t, tree) in self.trees.iter().enumerate() {
            if tree.is_empty() {
                return Err(ExportError::Invalid(format!("tree {t} is empty")));
            }
            for node in tree {
                match *node {
                    TreeNode::Split {
                        feature,
                        threshold,
                        left,
                        right,
                    } => {
                        if feature >= self.n_features
                            || left >= tree.len()
                            || right >= tree.len()
                            || !threshold.is_finite()
                        {
                            return Err(ExportError::Invalid(format!("tree {t} has a split out of range")));
                        }
                    }
                    TreeNode::Leaf(v) if !v.is_finite() => {
                        return Err(ExportError::Invalid(format!("tree {t} has a non-finite leaf")))
                    }
                    TreeNode::Leaf(_) => {}
                }
            }
        }
        Ok(())
    }

    /// The ONNX model: `TreeEnsembleRegressor` (margin) → `a·m + b` → `Sigmoid`.
    pub fn to_onnx(&self, name: &str) -> Result<Vec<u8>, ExportError> {
        self.check()?;
        let f =
            i64::try_from(self.n_features).map_err(|_| ExportError::Invalid("too many features".into()))?;
        let mut a = TreeAttrs::default();
        for (t, tree) in self.trees.iter().enumerate() {
            for (i, node) in tree.iter().enumerate() {
                a.treeids.push(t as i64);
                a.nodeids.push(i as i64);
                match *node {
                    TreeNode::Split {
                        feature,
                        threshold,
                        left,
                        right,
                    } => {
                        a.featureids.push(feature as i64);
                        a.values.push(threshold);
                        a.modes.push("BRANCH_LT".into());
                        a.true_ids.push(left as i64);
                        a.false_ids.push(right as i64);
                    }
                    TreeNode::Leaf(v) => {
                        a.featureids.push(0);
                        a.values.push(0.0);
                        a.modes.push("LEAF".into());
                        a.true_ids.push(0);
                        a.false_ids.push(0);
                        a.target_tree.push(t as i64);
                        a.target_node.push(i as i64);
                        a.target_weights.push(v);
                    }
                }
            }
        }
        let n_targets = a.target_weights.len();

        let mut g = GraphBuilder::new(name);
        g.input("x", &[Dim::Named("N"), Dim::Fixed(f)])
            .output("prob", &[Dim::Named("N"), Dim::Fixed(1)])
            .ml_node(
                "TreeEnsembleRegressor",
                &["x"],
                &["margin"],
                &[
                    ("n_targets", Attr::Int(1)),
                    ("aggregate_function", Attr::Str("SUM".into())),
                    ("post_transform", Attr::Str("NONE".into())),
                    ("base_values", Attr::Floats(vec![self.base])),
                    ("nodes_treeids", Attr::Ints(a.treeids)),
                    ("nodes_nodeids", Attr::Ints(a.nodeids)),
                    ("nodes_featureids", Attr::Ints(a.featureids)),
                    ("nodes_values", Attr::Floats(a.values)),
                    ("nodes_modes", Attr::Strs(a.modes)),
                    ("nodes_truenodeids", Attr::Ints(a.true_ids)),
                    ("nodes_falsenodeids", Attr::Ints(a.false_ids)),
                    ("target_ids", Attr::Ints(vec![0; n_targets])),
                    ("target_treeids", Attr::Ints(a.target_tree)),
                    ("target_nodeids", Attr::Ints(a.target_node)),
                    ("target_weights", Attr::Floats(a.target_weights)),
                ],
            )
            .initializer("platt_a", &[1], &[self.platt.a])
            .initializer("platt_b", &[1], &[self.platt.b])
            .node("Mul", &["margin", "platt_a"], &["scaled"], &[])
            .node("Add", &["scaled", "platt_b"], &["logit"], &[])
            .node("Sigmoid", &["logit"], &["prob"], &[]);
        g.build("mlcore-models", "gradient-boosted trees, Platt-calibrated")
            .map_err(|e| ExportError::Protobuf(e.to_string()))
    }
}

#[derive(Default)]
struct TreeAttrs {
    treeids: Vec<i64>,
    nodeids: Vec<i64>,
    featureids: Vec<i64>,
    values: Vec<f32>,
    modes: Vec<String>,
    true_ids: Vec<i64>,
    false_ids: Vec<i64>,
    target_tree: Vec<i64>,
    target_node: Vec<i64>,
    target_weights: Vec<f32>,
}
