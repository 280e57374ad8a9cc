//! ONNX: the runtime that scores models, and a graph builder that writes them.
//!
//! - [`runtime`]: loads `libonnxruntime.so` once per process (the library is
//!   fetched by `scripts/setup-ort.sh`; nothing is downloaded at build time).
//! - [`graph`]: a small typed builder over the ONNX protobuf messages, used by
//!   exporters and test fixtures. Serialisation is deterministic, so the same
//!   model always gives the same bytes.

pub mod export;
pub mod graph;
pub mod runtime;
