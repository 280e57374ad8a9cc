//! Validation without leakage: purged k-fold with an embargo, and
//! walk-forward (expanding or rolling), over time-ordered samples whose
//! labels span time (López de Prado, ch. 7).
//!
//! Sample `i` is observed at `spans[i].0` and its label is known only at
//! `spans[i].1` (both in one time unit, non-decreasing starts). A training
//! sample is **purged** when its span overlaps the test block's time
//! range — its label would have seen the test period — and **embargoed**
//! when it starts within `embargo` after the test block ends (serial
//! correlation leaking back). Every fold keeps its train and test index
//! ranges, which the run's metrics report.

use std::ops::Range;

/// One fold: what to fit on and what to score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fold {
    /// Training samples, as ascending index ranges.
    pub train: Vec<Range<usize>>,
    /// The test block.
    pub test: Range<usize>,
}

impl Fold {
    /// Every training index.
    pub fn train_indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.train.iter().flat_map(Clone::clone)
    }

    /// How many training samples.
    pub fn train_len(&self) -> usize {
        self.train.iter().map(ExactSizeIterator::len).sum()
    }
}

/// How to cut the samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `k` contiguous test blocks; train on everything else, purged and
    /// embargoed.
    PurgedKFold {
        /// Folds.
        k: usize,
    },
    /// `k` test blocks after a first training stretch; train on everything
    /// before each block (purged).
    WalkForwardExpanding {
        /// Test blocks.
        k: usize,
    },
    /// As expanding, but train only on the last `window` samples before
    /// each block.
    WalkForwardRolling {
        /// Test blocks.
        k: usize,
        /// Training samples at most.
        window: usize,
    },
}

/// The folds of `scheme` over samples with `spans`, embargoing `embargo`
/// time units after each test block; `purge: false` only for the control
/// that shows the leak a purge prevents.
pub fn folds(spans: &[(i64, i64)], scheme: Scheme, embargo: i64, purge: bool) -> Vec<Fold> {
    let n = spans.len();
    let blocks = |k: usize, first: usize| -> Vec<Range<usize>> {
        let k = k.max(1);
        let usable = n.saturating_sub(first);
        (0..k)
            .map(|j| first + usable * j / k..first + usable * (j + 1) / k)
            .filter(|r| !r.is_empty())
            .collect()
    };
    // The test block's time span: from its first decision to the last
    // time any of its labels was known (computed once per block: per
    // sample it made the purge quadratic).
    let span_of = |test: &Range<usize>| -> (i64, i64) {
        (
            spans[test.start].0,
            test.clone().map(|j| spans[j].1).max().unwrap_or(i64::MIN),
        )
    };
    let keep = |i: usize, (t0, t1): (i64, i64)| -> bool {
        if !purge {
            return true;
        }
        let (s, e) = spans[i];
        let overlaps = s <= t1 && e >= t0;
        let embargoed = s > t1 && s <= t1 + embargo;
        !(overlaps || embargoed)
    };
    let ranges = |indices: &mut dyn Iterator<Item = usize>| -> Vec<Range<usize>> {
        let mut out: Vec<Range<usize>> = Vec::new();
        for i in indices {
            match out.last_mut() {
                Some(r) if r.end == i => r.end = i + 1,
                _ => out.push(i..i + 1),
            }
        }
        out
    };
    match scheme {
        Scheme::PurgedKFold { k } => blocks(k, 0)
            .into_iter()
            .map(|test| {
                let t = span_of(&test);
                Fold {
                    train: ranges(&mut (0..n).filter(|i| !test.contains(i) && keep(*i, t))),
                    test,
                }
            })
            .collect(),
        Scheme::WalkForwardExpanding { k } | Scheme::WalkForwardRolling { k, .. } => {
            let window = match scheme {
                Scheme::WalkForwardRolling { window, .. } => window,
                _ => usize::MAX,
            };
            // The first block trains only: k + 1 equal parts, k of them tested.
            let first = n / (k.max(1) + 1);
            blocks(k, first)
                .into_iter()
                .map(|test| {
                    let from = test.start.saturating_sub(window);
                    let t = span_of(&test);
                    Fold {
                        train: ranges(&mut (from..test.start).filter(|i| keep(*i, t))),
                        test,
                    }
                })
                .collect()
        }
    }
}

/// Out-of-sample predictions stitched across `folds` (each test index
/// scored by the fold that held it out); `None` where no fold tested it.
pub fn stitch(n: usize, folds: &[Fold], scores: &[Vec<f32>]) -> Vec<Option<f32>> {
    let mut out = vec![None; n];
    for (fold, s) in folds.iter().zip(scores) {
        for (i, p) in fold.test.clone().zip(s) {
            out[i] = Some(*p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sample i observed at 10·i, its label known 25 later (overlaps two).
    fn spans(n: usize) -> Vec<(i64, i64)> {
        (0..n as i64).map(|i| (10 * i, 10 * i + 25)).collect()
    }

    #[test]
    fn purged_kfold_removes_what_saw_the_test_block_and_the_embargo() {
        let f = folds(&spans(20), Scheme::PurgedKFold { k: 4 }, 20, true);
        assert_eq!(f.len(), 4);
        assert_eq!(f[1].test, 5..10);
        // Test times 50..=(90+25): samples 3 and 4 end inside (purged), 10
        // and 11 start inside the label span, 12 and 13 in the embargo.
        assert_eq!(f[1].train, vec![0..3, 14..20]);
        assert!(f.iter().all(|x| x.train_indices().all(|i| !x.test.contains(&i))));
        // Without the purge, only the test block is left out.
        let leaky = folds(&spans(20), Scheme::PurgedKFold { k: 4 }, 20, false);
        assert_eq!(leaky[1].train, vec![0..5, 10..20]);
    }

    #[test]
    fn walk_forward_trains_only_on_the_past() {
        let f = folds(&spans(30), Scheme::WalkForwardExpanding { k: 2 }, 0, true);
        assert_eq!(
            f.iter().map(|x| x.test.clone()).collect::<Vec<_>>(),
            vec![10..20, 20..30]
        );
        // Samples 8 and 9 end after the block starts: purged.
        assert_eq!(f[0].train, vec![0..8]);
        assert_eq!(f[1].train, vec![0..18]);
        let r = folds(
            &spans(30),
            Scheme::WalkForwardRolling { k: 2, window: 6 },
            0,
            true,
        );
        assert_eq!(r[1].train, vec![14..18]);
        assert!(r
            .iter()
            .chain(&f)
            .all(|x| x.train_indices().all(|i| i < x.test.start)));
    }

    #[test]
    fn stitched_predictions_come_from_the_fold_that_held_each_out() {
        let f = folds(&spans(8), Scheme::PurgedKFold { k: 2 }, 0, true);
        let s = stitch(8, &f, &[vec![0.1; 4], vec![0.9; 4]]);
        assert_eq!(s[0], Some(0.1));
        assert_eq!(s[7], Some(0.9));
    }
}
