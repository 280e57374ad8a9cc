//! The compiled form a head is evaluated in on the hot path.
//!
//! Tree ensembles are evaluated as QuickScorer does (Lucchese et al.,
//! SIGIR 2015), vectorised across the rows of a block: no walk down the
//! trees, no data-dependent branch at all.
//!
//! - A tree's leaves are numbered left to right, and a set of its leaves is
//!   a `u32` (so a tree has at most 32 leaves: LightGBM's default 31 fits).
//! - A split `x[f] < t` that a row **fails** rules out every leaf of its
//!   left subtree; the split carries the mask of the leaves that remain
//!   (all but those). A row's exit leaf is the leftmost leaf no failed
//!   split ruled out: the lowest set bit of the AND of the masks of the
//!   splits it fails — whatever order the splits are applied in.
//! - So for a block of up to 32 rows, feature-major (a feature's column is
//!   4 vectors of 8 lanes), each split of each tree costs one vector
//!   compare of its threshold with the column, an OR with its mask and an
//!   AND into the tree's running masks: 3 instructions per 8 rows, for
//!   every split of every tree. Then each row adds the value of its exit
//!   leaf (`trailing_zeros`) to its margin, tree after tree, in tree order
//!   and in f32, as the trainer's reference predictor does: the same
//!   probabilities to the bit (unit test). ONNX Runtime adds the base after
//!   the trees and has its own sigmoid: within 1e-6 (the parity check).
//!
//! A NaN feature fails every test, as ONNX's `BRANCH_LT` sends it right.
//!
//! Why not the alternatives (measured on the sample model's 86-tree ai1,
//! 32 varied rows, against ONNX Runtime's 87 µs): walking each row down
//! each tree (ONNX Runtime, and the reference) mispredicts a branch at most
//! levels; interleaving 32 such walks in lockstep with branch-free steps
//! took 37 µs (about 14 instructions per row and level); walking the tree
//! once for the block with row masks took 30–40 µs (varied rows reach most
//! nodes); complete-tree layouts (`2^depth` slots) blow leaf-wise trees
//! (depth up to 17) out of the cache; generated code would need a compiler
//! at load time. See `docs/models.md`.

use wide::{f32x8, u32x8};

use super::heads::{LogisticHead, Platt, TreeEnsembleHead, TreeNode};
use super::{NativeError, NativeHead};

/// Rows evaluated together (lanes of 4 vectors): the daemon's universe of
/// 32 symbols in one block.
const BLOCK: usize = 32;
/// Vectors of 8 lanes per block.
const VECTORS: usize = BLOCK / 8;
/// The most features a compiled head takes (the transposed block lives on
/// the stack: 8 KiB).
pub const MAX_FEATURES: usize = 64;
/// The most leaves a tree of a compiled head has (a leaf set is a `u32`).
pub const MAX_LEAVES: usize = 32;

/// A split of a compiled tree: the rows with `!(x[feature] < threshold)`
/// keep only the leaves in `keep`.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Split {
    feature: u32,
    threshold: f32,
    keep: u32,
}

/// One tree's splits and leaves, as ranges of the ensemble's arrays.
#[derive(Debug, Clone, Copy)]
struct Tree {
    splits: (u32, u32),
    /// Its first leaf (leaves are in left-to-right order).
    leaves: u32,
}

/// A tree ensemble compiled for batched evaluation.
#[derive(Debug, Clone)]
pub struct CompiledTrees {
    splits: Box<[Split]>,
    /// Every tree's leaf values, each tree's left to right.
    leaves: Box<[f32]>,
    trees: Box<[Tree]>,
    base: f32,
    platt: Platt,
    n_features: usize,
}

/// The leaves under `node` (numbered from `next`, left to right), as a
/// mask; pushes the leaves' values and the splits' kept sets.
fn number(
    tree: &[TreeNode],
    node: usize,
    next: &mut u32,
    leaves: &mut Vec<f32>,
    splits: &mut Vec<Split>,
) -> Result<u32, NativeError> {
    match tree[node] {
        TreeNode::Leaf(v) => {
            if *next as usize >= MAX_LEAVES {
                return Err(NativeError::Invalid(format!(
                    "a tree has more than {MAX_LEAVES} leaves: the native backend takes up to {MAX_LEAVES}"
                )));
            }
            leaves.push(v);
            let bit = 1u32 << *next;
            *next += 1;
            Ok(bit)
        }
        TreeNode::Split {
            feature,
            threshold,
            left,
            right,
        } => {
            let l = number(tree, left, next, leaves, splits)?;
            let r = number(tree, right, next, leaves, splits)?;
            splits.push(Split {
                feature: u32::try_from(feature).map_err(|_| NativeError::Invalid("feature index".into()))?,
                threshold,
                keep: !l,
            });
            Ok(l | r)
        }
    }
}

impl CompiledTrees {
    /// Compiles `head` after [`TreeEnsembleHead::check`] (which makes the
    /// recursion below finite: every node is reached once from its root).
    pub fn compile(head: &TreeEnsembleHead) -> Result<Self, NativeError> {
        head.check()?;
        if head.n_features > MAX_FEATURES {
            return Err(NativeError::Invalid(format!(
                "{} features: the native backend takes up to {MAX_FEATURES}",
                head.n_features
            )));
        }
        let index = |i: usize| {
            u32::try_from(i).map_err(|_| NativeError::Invalid(format!("{i} nodes do not fit u32 indices")))
        };
        let mut splits = Vec::new();
        let mut leaves = Vec::new();
        let mut trees = Vec::with_capacity(head.trees.len());
        for tree in &head.trees {
            let (first_split, first_leaf) = (index(splits.len())?, index(leaves.len())?);
            let mut next = 0;
            number(tree, 0, &mut next, &mut leaves, &mut splits)?;
            trees.push(Tree {
                splits: (first_split, index(splits.len())?),
                leaves: first_leaf,
            });
        }
        Ok(Self {
            splits: splits.into(),
            leaves: leaves.into(),
            trees: trees.into(),
            base: head.base,
            platt: head.platt,
            n_features: head.n_features,
        })
    }

    /// Calibrated probabilities of `out.len()` rows of `x` (row-major).
    /// The caller checked `x.len() == out.len() * n_features`.
    fn predict(&self, x: &[f32], out: &mut [f32]) {
        let f = self.n_features;
        // The block, feature-major: column `j` is `columns[j]`, 32 lanes in
        // 4 vectors.
        let mut columns = [[f32x8::ZERO; VECTORS]; MAX_FEATURES];
        for (block, out) in x.chunks(BLOCK * f).zip(out.chunks_mut(BLOCK)) {
            for (j, column) in columns.iter_mut().enumerate().take(f) {
                for (k, v) in column.iter_mut().enumerate() {
                    // Rows past the block's end read 0; their lanes are
                    // computed and never read.
                    let mut a = [0f32; 8];
                    for (i, a) in a.iter_mut().enumerate() {
                        *a = block.get((8 * k + i) * f + j).copied().unwrap_or(0.0);
                    }
                    *v = f32x8::from(a);
                }
            }
            let mut margin = [self.base; BLOCK];
            for tree in self.trees.iter() {
                let mut remain = [u32x8::splat(u32::MAX); VECTORS];
                for s in &self.splits[tree.splits.0 as usize..tree.splits.1 as usize] {
                    let threshold = f32x8::splat(s.threshold);
                    let keep = u32x8::splat(s.keep);
                    for (r, v) in remain.iter_mut().zip(&columns[s.feature as usize]) {
                        // Lanes that pass the test are all ones: they keep
                        // every leaf; the others keep `keep`.
                        let pass: u32x8 = wide::bytemuck::cast(v.simd_lt(threshold));
                        *r &= pass | keep;
                    }
                }
                let leaves = &self.leaves[tree.leaves as usize..];
                for (m, exit) in margin.iter_mut().zip(remain.iter().flat_map(|r| r.to_array())) {
                    *m += leaves[exit.trailing_zeros() as usize];
                }
            }
            for (o, m) in out.iter_mut().zip(margin) {
                *o = self.platt.apply(m);
            }
        }
    }
}

/// A head in its compiled form.
#[derive(Debug, Clone)]
pub enum CompiledHead {
    /// A tree ensemble.
    Trees(CompiledTrees),
    /// A logistic regression (a dot product per row).
    Logistic(LogisticHead),
}

impl CompiledHead {
    /// Compiles `head`, refusing what is not well formed or takes another
    /// number of features than `n_features`.
    pub fn compile(head: &NativeHead, n_features: usize) -> Result<Self, NativeError> {
        let got = match head {
            NativeHead::Trees(t) => t.n_features,
            NativeHead::Logistic(l) => l.weights.len(),
        };
        if got != n_features {
            return Err(NativeError::Invalid(format!(
                "the head takes {got} features, the manifest says {n_features}"
            )));
        }
        if n_features == 0 {
            return Err(NativeError::Invalid("a head of no features".into()));
        }
        Ok(match head {
            NativeHead::Trees(t) => Self::Trees(CompiledTrees::compile(t)?),
            NativeHead::Logistic(l) => {
                l.check()?;
                Self::Logistic(l.clone())
            }
        })
    }

    /// Features per row.
    pub fn n_features(&self) -> usize {
        match self {
            Self::Trees(t) => t.n_features,
            Self::Logistic(l) => l.weights.len(),
        }
    }

    /// Writes the probability of each of `out.len()` rows of `x` into
    /// `out`, without allocating.
    ///
    /// # Errors
    /// [`NativeError::Shape`] when `x` does not hold `out.len()` rows.
    pub fn predict(&self, x: &[f32], out: &mut [f32]) -> Result<(), NativeError> {
        let f = self.n_features();
        if x.len() != out.len() * f {
            return Err(NativeError::Shape {
                got: x.len(),
                rows: out.len(),
                features: f,
            });
        }
        match self {
            Self::Trees(t) => t.predict(x, out),
            Self::Logistic(l) => {
                for (row, o) in x.chunks_exact(f).zip(out.iter_mut()) {
                    *o = l.predict_row(row);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> TreeEnsembleHead {
        // Tree 0: x0 < 0.5 ? (x1 < -1 ? 0.25 : -0.5) : 1.0 — unbalanced.
        // Tree 1: a lone leaf.
        TreeEnsembleHead {
            trees: vec![
                vec![
                    TreeNode::Split {
                        feature: 0,
                        threshold: 0.5,
                        left: 2,
                        right: 1,
                    },
                    TreeNode::Leaf(1.0),
                    TreeNode::Split {
                        feature: 1,
                        threshold: -1.0,
                        left: 3,
                        right: 4,
                    },
                    TreeNode::Leaf(0.25),
                    TreeNode::Leaf(-0.5),
                ],
                vec![TreeNode::Leaf(0.125)],
            ],
            base: -0.1,
            platt: Platt { a: 1.5, b: 0.2 },
            n_features: 2,
        }
    }

    #[test]
    fn compiled_equals_the_reference_on_every_path_and_any_batch_size() {
        let h = head();
        let c = CompiledHead::compile(&NativeHead::Trees(h.clone()), 2).unwrap();
        let rows: Vec<[f32; 2]> = (0..70)
            .map(|i| [(i % 7) as f32 * 0.3 - 0.6, (i % 5) as f32 - 2.5])
            .chain([[f32::NAN, 0.0], [0.0, f32::NAN], [0.5, -1.0]])
            .collect();
        let x: Vec<f32> = rows.iter().flatten().copied().collect();
        for n in [1, 31, 32, 33, rows.len()] {
            let mut out = vec![0.0; n];
            c.predict(&x[..n * 2], &mut out).unwrap();
            for (r, o) in rows[..n].iter().zip(&out) {
                assert_eq!(o.to_bits(), h.predict_row(r).to_bits(), "row {r:?}");
            }
        }
    }

    #[test]
    fn malformed_trees_are_refused_with_the_reason() {
        let mut cyc = head();
        cyc.trees[0][2] = TreeNode::Split {
            feature: 1,
            threshold: 0.0,
            left: 0,
            right: 4,
        };
        let mut far = head();
        far.trees[0][0] = TreeNode::Split {
            feature: 0,
            threshold: 0.5,
            left: 2,
            right: 9,
        };
        let mut orphan = head();
        orphan.trees[1].push(TreeNode::Leaf(1.0));
        let mut feature = head();
        feature.trees[0][0] = TreeNode::Split {
            feature: 2,
            threshold: 0.5,
            left: 2,
            right: 1,
        };
        let mut nan = head();
        nan.trees[0][1] = TreeNode::Leaf(f32::NAN);
        for (h, says) in [
            (cyc, "reached twice"),
            (far, "points at node 9"),
            (orphan, "not reached"),
            (feature, "feature 2 of 2"),
            (nan, "non-finite leaf"),
        ] {
            let e = CompiledHead::compile(&NativeHead::Trees(h), 2)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{e}");
        }
        let e = CompiledHead::compile(&NativeHead::Trees(head()), 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("takes 2 features"), "{e}");
        let c = CompiledHead::compile(&NativeHead::Trees(head()), 2).unwrap();
        let e = c.predict(&[0.0; 5], &mut [0.0; 2]).unwrap_err().to_string();
        assert!(e.contains("5 values"), "{e}");
    }
}
