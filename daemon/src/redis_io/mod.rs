//! The daemon's own Redis I/O, beside the contract's client: the
//! publisher's connection with pipelines in flight ([`pipe`]), replies read
//! into reused buffers ([`resp`]), and the one server setting that changes
//! what a guard call costs ([`tuning`]). Nothing else needs them, so they
//! live here rather than in `mlcore-contract`.

pub mod pipe;
pub mod resp;
pub mod tuning;

pub use pipe::{PublishPipe, MAX_IN_FLIGHT};
