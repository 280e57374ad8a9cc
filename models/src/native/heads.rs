//! A fitted head's parameters, the form the trainer hands over and the
//! artifact ships beside the head's ONNX file (`<head>.native.json`), with
//! the node-by-node reference predictors the export and the compiled
//! evaluator are checked against.

use super::NativeError;

/// Platt scaling of a raw margin: `σ(a·m + b)`. `a = 1, b = 0` is none.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Platt {
    /// Slope.
    pub a: f32,
    /// Intercept.
    pub b: f32,
}

impl Platt {
    /// No calibration.
    pub const IDENTITY: Self = Self { a: 1.0, b: 0.0 };

    /// The calibrated probability of `margin`.
    #[inline]
    pub fn apply(&self, margin: f32) -> f32 {
        sigmoid(self.a * margin + self.b)
    }
}

#[inline]
fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// A fitted logistic regression.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogisticHead {
    /// One weight per feature.
    pub weights: Vec<f32>,
    /// Intercept.
    pub intercept: f32,
    /// Calibration of the margin.
    pub platt: Platt,
}

impl LogisticHead {
    /// Native prediction of one row.
    pub fn predict_row(&self, x: &[f32]) -> f32 {
        let margin: f32 = self.weights.iter().zip(x).map(|(w, v)| w * v).sum::<f32>() + self.intercept;
        self.platt.apply(margin)
    }

    /// Refuses non-finite parameters and a head of no features (its rows
    /// would be empty: nothing to split a batch into).
    pub fn check(&self) -> Result<(), NativeError> {
        if self.weights.is_empty() {
            return Err(NativeError::Invalid("a head of no features".into()));
        }
        if self.weights.iter().any(|w| !w.is_finite()) || !self.intercept.is_finite() {
            return Err(NativeError::Invalid("non-finite weight".into()));
        }
        Ok(())
    }
}

/// One node of a regression tree, in flat (array) form.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub enum TreeNode {
    /// `x[feature] < threshold` goes to `left`, else `right` (indices into
    /// the tree). A NaN feature fails the comparison and goes right, as in
    /// ONNX's `BRANCH_LT`.
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
#[serde(deny_unknown_fields)]
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

impl TreeEnsembleHead {
    /// Native margin of one row (trees summed in order, in f32, like the
    /// trainer), node by node: the reference.
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

    /// Checks that the trees are trees: indices in range, every node
    /// reached once from the root (no cycle, no shared subtree), features
    /// below `n_features` (at least one), finite thresholds and leaves. A
    /// head that passes cannot make [`TreeEnsembleHead::margin_row`] loop or
    /// index out of bounds, nor a batch of its rows be empty rows.
    pub fn check(&self) -> Result<(), NativeError> {
        let bad = |t: usize, what: &str| NativeError::Invalid(format!("tree {t}: {what}"));
        if self.n_features == 0 {
            return Err(NativeError::Invalid("a head of no features".into()));
        }
        if !self.base.is_finite() || !self.platt.a.is_finite() || !self.platt.b.is_finite() {
            return Err(NativeError::Invalid("non-finite base or calibration".into()));
        }
        for (t, tree) in self.trees.iter().enumerate() {
            if tree.is_empty() {
                return Err(bad(t, "empty"));
            }
            let mut seen = vec![false; tree.len()];
            let mut stack = vec![0usize];
            while let Some(i) = stack.pop() {
                let Some(node) = tree.get(i) else {
                    return Err(bad(t, &format!("a split points at node {i} of {}", tree.len())));
                };
                if std::mem::replace(&mut seen[i], true) {
                    return Err(bad(t, &format!("node {i} is reached twice (not a tree)")));
                }
                match *node {
                    TreeNode::Split {
                        feature,
                        threshold,
                        left,
                        right,
                    } => {
                        if feature >= self.n_features {
                            return Err(bad(
                                t,
                                &format!("split on feature {feature} of {}", self.n_features),
                            ));
                        }
                        if !threshold.is_finite() {
                            return Err(bad(t, "non-finite threshold"));
                        }
                        stack.push(left);
                        stack.push(right);
                    }
                    TreeNode::Leaf(v) if !v.is_finite() => return Err(bad(t, "non-finite leaf")),
                    TreeNode::Leaf(_) => {}
                }
            }
            if let Some(i) = seen.iter().position(|s| !s) {
                return Err(bad(t, &format!("node {i} is not reached from the root")));
            }
        }
        Ok(())
    }
}
