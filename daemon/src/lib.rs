//! `mlcore-daemon`: the inference daemon.
//!
//! Hot path (pinned threads, no allocation or locks per event):
//! [`ingress`] (mio; [`wire`] decode; feature updates; triggers → [`job`]s)
//! → [`worker`]s (ONNX Runtime scoring; the decision crate
//! `mlcore-decision`, which also holds the universe tables and the
//! trigger-time preparation the backtester shares) → [`publisher`] (ops
//! modes, `seq`, `valid_until`; the Redis guard through [`redis_io`]'s
//! pipe).
//!
//! Side threads: [`loader`] (verify, warm and hand over models; heartbeats
//! and histogram merging run in the same loop, see [`run`]), [`ops`] (mode
//! watcher: pub/sub + reconciliation), [`http`] (`/metrics`, `/healthz`,
//! `/readyz`), [`live`] (configuration taken while running: the decision
//! tables swapped whole between decisions). [`stats`] holds the counters and per-thread histograms;
//! [`preflight`] the `check` command (it also prints what `mlcore-host`
//! advises about this host); [`mailbox`] the side → hot hand-off that
//! never makes a hot thread wait.

pub mod clock;
pub mod http;
pub mod ingress;
pub mod job;
pub mod live;
pub mod loader;
pub mod mailbox;
pub mod metrics;
pub mod ops;
pub mod preflight;
pub mod publisher;
pub mod redis_io;
pub mod run;
pub mod stats;
pub mod wire;
pub mod worker;
