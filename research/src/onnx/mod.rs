//! Writing ONNX: a small typed builder over the protobuf messages
//! ([`graph`], deterministic bytes) and the exporters of fitted heads
//! ([`export`]).

pub mod export;
pub mod graph;
