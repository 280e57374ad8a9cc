//! `mlcore-models`: what the daemon and the control plane share.
//!
//! - [`config`]: the strict YAML configuration (base + environment overrides,
//!   `$VAR` secrets, every problem reported with a `CONFIG_*` code).
//! - [`onnx`]: loading ONNX Runtime from its shared library, building ONNX
//!   graphs from Rust (for export), and running sessions.
//! - [`contract`]: the Redis contract trading consumers rely on — key layout,
//!   the guard (a Redis Function library), ops modes, heartbeats.
//!
//! Feature `test-util` exposes [`testutil`]: how tests find the shared Redis
//! and PostgreSQL and keep their keys apart.

pub mod config;
pub mod contract;

pub mod artifact;
pub mod dataset;
pub mod features;
pub mod market;
pub mod onnx;
pub mod scoring;
pub mod synth;
#[cfg(feature = "test-util")]
pub mod testutil;
