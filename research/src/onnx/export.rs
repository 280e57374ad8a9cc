//! Exporting fitted heads to ONNX.
//!
//! A head maps a `[N, F]` float32 input `x` to a `[N, 1]` float32 probability
//! `prob`. Learners hand over plain parameters ([`LogisticHead`],
//! [`TreeEnsembleHead`], defined in `mlcore_models::native` with their
//! reference predictors, which every export is checked against and which the
//! daemon's native backend compiles); writing ONNX stays here, out of the
//! daemon.
//!
//! - Logistic regression: `MatMul → Add → calibration → Sigmoid` (standard ops).
//! - Gradient-boosted trees: `ai.onnx.ml.TreeEnsembleRegressor` producing the
//!   raw margin, then calibration and `Sigmoid`.
//! - Calibration (Platt): `p = σ(a·margin + b)` is folded into the graph, so
//!   the served probability is the calibrated one.

use super::graph::{Attr, Dim, GraphBuilder};
pub use mlcore_models::native::{LogisticHead, Platt, TreeEnsembleHead, TreeNode};

/// A head that can be written as an ONNX model.
pub trait ToOnnx {
    /// The ONNX model (`x: [N, F] f32 → prob: [N, 1] f32`).
    fn to_onnx(&self, name: &str) -> Result<Vec<u8>, ExportError>;
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

impl ToOnnx for LogisticHead {
    fn to_onnx(&self, name: &str) -> Result<Vec<u8>, ExportError> {
        let f = i64::try_from(self.weights.len())
            .map_err(|_| ExportError::Invalid("too many features".into()))?;
        self.check().map_err(|e| ExportError::Invalid(e.to_string()))?;
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

impl ToOnnx for TreeEnsembleHead {
    /// `TreeEnsembleRegressor` (margin) → `a·m + b` → `Sigmoid`.
    fn to_onnx(&self, name: &str) -> Result<Vec<u8>, ExportError> {
        self.check().map_err(|e| ExportError::Invalid(e.to_string()))?;
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
