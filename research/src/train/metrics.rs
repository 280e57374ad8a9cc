//! Evaluation metrics.

/// Area under the ROC curve (Mann–Whitney U, ties counted half). `None`
/// when one class is absent.
pub fn auc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    let mut pairs: Vec<(f32, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = labels.iter().filter(|l| **l).count() as f64;
    let negatives = labels.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    // Sum of positive ranks, with average ranks for ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i;
        while j < pairs.len() && pairs[j].0 == pairs[i].0 {
            j += 1;
        }
        let avg_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += pairs[i..j].iter().filter(|p| p.1).count() as f64 * avg_rank;
        i = j;
    }
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

/// Mean log loss of probabilities.
pub fn log_loss(probs: &[f32], labels: &[bool]) -> f64 {
    let eps = 1e-7;
    let total: f64 = probs
        .iter()
        .zip(labels)
        .map(|(p, l)| {
            let p = f64::from(*p).clamp(eps, 1.0 - eps);
            if *l {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum();
    total / probs.len().max(1) as f64
}

/// Mean squared error of probabilities against outcomes.
pub fn brier(probs: &[f32], labels: &[bool]) -> f64 {
    let total: f64 = probs
        .iter()
        .zip(labels)
        .map(|(p, l)| (f64::from(*p) - if *l { 1.0 } else { 0.0 }).powi(2))
        .sum();
    total / probs.len().max(1) as f64
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReliabilityBin {
    /// Lower edge of the predicted-probability bin.
    pub from: f64,
    /// Upper edge.
    pub to: f64,
    /// Samples in it.
    pub count: usize,
    /// Their mean predicted probability.
    pub mean_predicted: f64,
    /// The fraction of them that were positive.
    pub observed: f64,
}

/// The reliability diagram over `bins` equal-width bins (empty bins left
/// out), and the expected calibration error: the count-weighted mean of
/// |observed − predicted| over the bins.
pub fn reliability(probs: &[f32], labels: &[bool], bins: usize) -> (Vec<ReliabilityBin>, f64) {
    let bins = bins.max(1);
    let mut acc = vec![(0usize, 0.0f64, 0usize); bins];
    for (p, l) in probs.iter().zip(labels) {
        let p = f64::from(*p).clamp(0.0, 1.0);
        let b = ((p * bins as f64) as usize).min(bins - 1);
        acc[b].0 += 1;
        acc[b].1 += p;
        acc[b].2 += usize::from(*l);
    }
    let n = probs.len().max(1) as f64;
    let mut ece = 0.0;
    let diagram = acc
        .iter()
        .enumerate()
        .filter(|(_, a)| a.0 > 0)
        .map(|(b, &(count, sum, pos))| {
            let bin = ReliabilityBin {
                from: b as f64 / bins as f64,
                to: (b + 1) as f64 / bins as f64,
                count,
                mean_predicted: sum / count as f64,
                observed: pos as f64 / count as f64,
            };
            ece += count as f64 / n * (bin.observed - bin.mean_predicted).abs();
            bin
        })
        .collect();
    (diagram, ece)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brier_and_calibration_error_of_known_forecasts() {
        assert_eq!(brier(&[1.0, 0.0], &[true, false]), 0.0);
        assert!((brier(&[0.5, 0.5], &[true, false]) - 0.25).abs() < 1e-12);
        // Forecast 0.8 for ten samples, eight positive: perfectly calibrated.
        let probs = [0.8f32; 10];
        let labels: Vec<bool> = (0..10).map(|i| i < 8).collect();
        let (bins, ece) = reliability(&probs, &labels, 10);
        assert_eq!(bins.len(), 1);
        assert_eq!(bins[0].count, 10);
        assert!(ece < 1e-6, "{ece}");
        // Forecast 0.9 where half are positive: ECE 0.4.
        let labels: Vec<bool> = (0..10).map(|i| i < 5).collect();
        let (_, ece) = reliability(&[0.9f32; 10], &labels, 10);
        assert!((ece - 0.4).abs() < 1e-6, "{ece}");
    }

    #[test]
    fn auc_of_perfect_random_and_inverted_rankings() {
        let labels = [false, false, true, true];
        assert_eq!(auc(&[0.1, 0.2, 0.8, 0.9], &labels), Some(1.0));
        assert_eq!(auc(&[0.9, 0.8, 0.2, 0.1], &labels), Some(0.0));
        assert_eq!(auc(&[0.5, 0.5, 0.5, 0.5], &labels), Some(0.5));
        assert_eq!(auc(&[0.5], &[true]), None);
    }
}
