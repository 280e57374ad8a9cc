//! A decision in flight: one preallocated buffer that travels ingress →
//! worker → publisher and back to its strategy's pool. Nothing on the way
//! allocates; an empty pool means overload, which is counted.

use std::sync::Arc;
use std::time::Instant;

use mlcore_features::N_FEATURES;

use mlcore_decision::universe::Universe;
use mlcore_decision::{Scratch, Summary, SymbolInput, SymbolParams};

/// What the worker decided with.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMeta {
    /// Model id.
    pub model_id: String,
    /// Version.
    pub version: u64,
    /// sha256 of its `manifest.json` (what the registry pointer names).
    pub manifest_sha256: String,
    /// θ1 of the model.
    pub theta1: f64,
    /// θ2 of the model.
    pub theta2: f64,
}

/// One decision's buffers.
#[derive(Debug)]
pub struct Job {
    /// Strategy index.
    pub strategy: u16,
    /// Trigger time from the feed, ns since the epoch.
    pub trigger_ts_ns: i64,
    /// When the trigger frame was decoded (for trigger → ack latency).
    pub decoded_at: Instant,
    /// Feature matrix, row-major.
    pub features: Vec<f32>,
    /// Per-symbol inputs (model outputs filled by the worker).
    pub inputs: Vec<SymbolInput>,
    /// Per-symbol parameters for this decision (β may be a rolling estimate).
    pub params: Vec<SymbolParams>,
    /// Portfolio buffers and targets.
    pub scratch: Scratch,
    /// Portfolio summary.
    pub summary: Summary,
    /// The model that decided (`None`: no model, nothing to publish).
    pub model: Option<Arc<ModelMeta>>,
    /// The decision tables this decision is made with, from ingress to the
    /// publisher (`crate::live`); `None` until ingress prepares it.
    pub tables: Option<Arc<Universe>>,
}

impl Job {
    /// Buffers for `n` symbols.
    pub fn new(strategy: u16, params: &[SymbolParams]) -> Self {
        let n = params.len();
        Self {
            strategy,
            trigger_ts_ns: 0,
            decoded_at: Instant::now(),
            features: vec![0.0; n * N_FEATURES],
            inputs: vec![SymbolInput::NOT_READY; n],
            params: params.to_vec(),
            scratch: Scratch::new(n),
            summary: Summary::default(),
            model: None,
            tables: None,
        }
    }
}
