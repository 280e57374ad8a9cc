//! `mlcore-research`: where signals get their meaning. Used by the control
//! plane's commands; never linked by the daemon (learners, Parquet and the
//! ONNX writer stay out of the serving binary).
//!
//! - [`synth`]: a deterministic synthetic market with a planted effect.
//! - [`dataset`]: market data as Parquet partitions, the dataset index with
//!   checksums, and quarantine.
//! - [`onnx`]: the ONNX graph writer and the exporters of fitted heads, with
//!   the native predictors each export is checked against.
//! - [`train`]: dataset → features → labels → split → fit → calibrate →
//!   export → parity check against ONNX Runtime → sign → verify.
//! - [`labels`]: what each head is taught — triple barrier (ai1), adverse
//!   excursion (ai2), meta-label (ai3), uniqueness weights.
//! - [`validation`]: purged k-fold with embargo, walk-forward, stitched
//!   out-of-sample predictions.
//! - [`replay`]: the order a replay sees the market in, and the capture
//!   file of what a feed sent.
//! - [`backtest`]: the daemon's features, scoring and decisions replayed
//!   over a dataset, with fills, costs, figures and stress scenarios.
//! - [`theta`]: θ search on the backtest (grid, then TPE) within the
//!   policy's bounds and step, with a bootstrap guard.
//! - [`challenge`]: a new model against the active one on the same
//!   out-of-sample window (champion/challenger).
//! - [`heldout`]: the held-out window's halves (θ tuned on the first,
//!   everything out of sample on the second), the θ search and the
//!   challenge over them, and the figures they add to a manifest.

pub mod backtest;
pub mod challenge;
pub mod cv;
pub mod dataset;
pub mod heldout;
pub mod labels;
pub mod onnx;
pub mod replay;
pub mod synth;
pub mod theta;
pub mod train;
pub mod validation;
