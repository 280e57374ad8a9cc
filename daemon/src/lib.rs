//! `mlcore-daemon`: the inference daemon.
//!
//! - [`preflight`]: start-up checks shared by `check` and `run` — configuration,
//!   ONNX Runtime, and a canary model scored end to end.

pub mod preflight;
