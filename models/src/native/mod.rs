//! The native backend: a head's parameters compiled at load time and
//! evaluated without ONNX Runtime.
//!
//! An artifact may ship, beside a head's ONNX file, the same head's
//! parameters (`<head>.native.json`, signed like every file) and rows of its
//! own validation data (`validation_rows.f32`). The scorer compiles the
//! parameters ([`compiled`]), scores the validation rows with both backends
//! and takes the native path only when no probability differs by more than
//! [`PARITY_TOLERANCE`]; otherwise it stays on ONNX Runtime and says why.
//! ONNX Runtime remains the general backend and the reference: every head has
//! an ONNX file, and heads of other kinds only ever run there.
//!
//! - [`heads`]: the parameters (`TreeEnsembleHead`, `LogisticHead`,
//!   `Platt`) and their node-by-node reference predictors; the trainer
//!   produces them and the ONNX export is written from them.
//! - [`compiled`]: the flat, branch-free form evaluated on the hot path.

pub mod compiled;
pub mod heads;

pub use compiled::{CompiledHead, CompiledTrees, InstructionSet};
pub use heads::{LogisticHead, Platt, TreeEnsembleHead, TreeNode};

/// The largest difference between a native and an ONNX Runtime probability
/// on the artifact's validation rows that still lets a head run natively.
pub const PARITY_TOLERANCE: f32 = 1e-6;

/// The artifact file holding `head`'s native parameters.
pub fn file_name(head: &str) -> String {
    format!("{head}.native.json")
}

/// A head's parameters as the artifact ships them (`{"trees": …}` or
/// `{"logistic": …}`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum NativeHead {
    /// A gradient-boosted tree ensemble.
    Trees(TreeEnsembleHead),
    /// A logistic regression.
    Logistic(LogisticHead),
}

impl NativeHead {
    /// Reads a head's native file.
    pub fn from_json(bytes: &[u8]) -> Result<Self, NativeError> {
        serde_json::from_slice(bytes).map_err(|e| NativeError::Invalid(e.to_string()))
    }

    /// The native file's bytes.
    pub fn to_json(&self) -> Result<Vec<u8>, NativeError> {
        serde_json::to_vec(self).map_err(|e| NativeError::Invalid(e.to_string()))
    }
}

/// Encodes rows (row-major f32) as the artifact's `validation_rows.f32`:
/// little-endian f32s.
pub fn encode_rows(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Decodes `validation_rows.f32` into rows of `n_features`.
pub fn decode_rows(bytes: &[u8], n_features: usize) -> Result<Vec<f32>, NativeError> {
    if n_features == 0 || !bytes.len().is_multiple_of(4 * n_features) {
        return Err(NativeError::Invalid(format!(
            "validation rows: {} bytes are not whole rows of {n_features} f32 features",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Why a native head cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NativeError {
    /// The parameters are not a well-formed head.
    #[error("invalid native head: {0}")]
    Invalid(String),
    /// Input of the wrong size.
    #[error("input has {got} values, expected {rows} rows × {features} features")]
    Shape {
        /// Values given.
        got: usize,
        /// Rows asked.
        rows: usize,
        /// Features per row.
        features: usize,
    },
    /// Rows of a width the native backend does not take.
    #[error("{0} features a row: the native backend takes 1 to {max}", max = compiled::MAX_FEATURES)]
    Width(usize),
    /// Input that is not whole rows.
    #[error("input has {got} values: not whole rows of {features} features")]
    NotWholeRows {
        /// Values given.
        got: usize,
        /// Features per row.
        features: usize,
    },
    /// More rows than there is room for.
    #[error("{rows} rows: room for {max}")]
    Capacity {
        /// Rows given.
        rows: usize,
        /// Rows there is room for.
        max: usize,
    },
    /// An instruction set this CPU does not run.
    #[error("this CPU does not run the {0} instruction set")]
    Unavailable(&'static str),
}
