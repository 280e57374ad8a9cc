//! `mlcore-models`: signed model artifacts and their scoring.
//!
//! - [`artifact`]: an artifact's files, manifest, signing keys, the trusted
//!   keys of `trust.yaml`, verification (every refusal its own error) and
//!   rollback authorisations (signing and checking; their shape is the
//!   contract's, `mlcore_contract::RollbackAuthorization`).
//! - [`runtime`]: loading ONNX Runtime from its shared library once per
//!   process, sessions tuned for the hot path, and the canary model the
//!   daemon's preflight scores.
//! - [`native`]: the native backend: tree ensembles and logistic heads
//!   compiled at load time, checked against ONNX Runtime on the artifact's
//!   validation rows before they serve.
//! - [`scoring`]: one [`scoring::ModelScorer`] per worker thread: batched,
//!   allocation-free runs of every head, natively or through ONNX Runtime.
//!
//! Exporting models (the ONNX graph writer, protobuf) and training live in
//! `mlcore-research`, which the daemon never links.

pub mod artifact;
pub mod native;
pub mod runtime;
pub mod scoring;
