//! `mlcore-telemetry`: how the ml-assets-core processes report, through
//! the ecosystem's crates rather than hand-written formats.
//!
//! - [`logging`]: `tracing` events as JSON lines on stderr through a
//!   non-blocking writer; the level from the configuration, `RUST_LOG`
//!   when set; records of libraries that use `log` (sqlx, mio, ort) come
//!   through too.
//! - [`exposition`]: a Prometheus registry with the processes' prefix and
//!   default labels, text exposition, and [`exposition::encode_histogram`]
//!   for latency histograms kept in nanoseconds and exposed in seconds.
//! - [`process`]: the standard, unprefixed `process_*` metrics read from
//!   `/proc/self`.

pub mod exposition;
pub mod logging;
pub mod process;
