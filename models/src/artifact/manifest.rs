//! The artifact manifest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `manifest.json`. Every field is signed (via its canonical bytes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Manifest format (1).
    pub format: u32,
    /// Model id.
    pub model_id: String,
    /// Strategy it serves.
    pub strategy: String,
    /// Monotonic version per strategy.
    pub version: u64,
    /// Creation time, ms since the epoch.
    pub created_at_ms: u64,
    /// After this the model must not serve (freeze), ms since the epoch.
    pub expires_at_ms: u64,
    /// sha256 of the canonical feature schema the model was trained on.
    pub feature_schema_hash: String,
    /// Heads by name (`ai1`, `ai2`, optional `ai3`).
    pub heads: BTreeMap<String, HeadSpec>,
    /// θ the model was tuned with.
    pub theta: ThetaParams,
    /// Data used.
    pub training_window: TrainingWindow,
    /// Evaluation metrics (e.g. `ai1_auc_test`).
    pub metrics: BTreeMap<String, f64>,
    /// sha256 of every other file of the artifact.
    pub files: BTreeMap<String, String>,
}

/// One ONNX head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadSpec {
    /// ONNX file name.
    pub file: String,
    /// Input tensor name (`[N, n_features]` float32).
    pub input: String,
    /// Output tensor name (`[N, 1]` float32).
    pub output: String,
    /// Features per row.
    pub n_features: usize,
    /// Learner (`lightgbm`, `logistic`).
    pub learner: String,
    /// Calibration inside the graph (`platt`, `none`).
    pub calibration: String,
    /// The same head's parameters for the native backend
    /// (`<head>.native.json`, `mlcore_models::native`), when the trainer
    /// shipped them. Absent in artifacts made before the native backend:
    /// those heads run on ONNX Runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<String>,
}

/// θ parameters carried with the model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThetaParams {
    /// Probability threshold.
    pub theta1: f64,
    /// Risk threshold.
    pub theta2: f64,
}

/// Training data window, ms since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingWindow {
    /// First sample.
    pub start_ms: u64,
    /// Start of the held-out test period.
    pub test_start_ms: u64,
    /// Last sample.
    pub end_ms: u64,
}

impl Manifest {
    /// The signed bytes: the manifest's canonical JSON (RFC 8785, JCS:
    /// keys sorted by code unit, no whitespace, numbers as ECMAScript
    /// prints them). Fails for a metric that is not a finite number, which
    /// JSON cannot carry: such a manifest cannot be signed or verified.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        // serde_json would write such a number as `null`, which reads back
        // as no number at all: refuse it here, by name.
        let theta = [
            ("theta.theta1", self.theta.theta1),
            ("theta.theta2", self.theta.theta2),
        ];
        let metrics = self.metrics.iter().map(|(k, v)| (k.as_str(), *v));
        if let Some((name, v)) = theta.into_iter().chain(metrics).find(|(_, v)| !v.is_finite()) {
            return Err(serde::ser::Error::custom(format!(
                "{name} is {v}, not a finite number"
            )));
        }
        serde_json_canonicalizer::to_vec(self)
    }
}
