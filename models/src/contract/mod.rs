//! The Redis contract: what trading consumers rely on.
//!
//! Key layout ([`keys`]), the guard — a Redis Function library through which
//! every signal is written and every mode change made ([`guard`], source in
//! `guard.lua`), the ops modes ([`ops`]), the signal types ([`signal`]) and
//! daemon heartbeats ([`heartbeat`]) and the registry's active-model
//! pointer ([`model`]); the one Redis setting that changes what the guard
//! costs ([`tuning`]). `docs/redis-contract.md` is the
//! consumer-facing description; keep both in step.
//!
//! Everything here works over any [`redis::ConnectionLike`]: a plain
//! connection or a Cluster connection.

pub mod conn;
mod error;
pub mod guard;
pub mod heartbeat;
pub mod keys;
pub mod model;
pub mod ops;
pub mod pipe;
pub mod resp;
pub mod signal;
pub mod tuning;

pub use conn::RedisConn;
pub use error::ContractError;
pub use guard::{Guard, ModeChange, PublishBuffers, PublishOutcome, SetModeOutcome, MAX_DECISIONS_PER_CALL};
pub use heartbeat::Heartbeat;
pub use keys::{Keys, StrategyKeys};
pub use model::ModelPointer;
pub use ops::{OpsMode, OpsState};
pub use pipe::{PublishPipe, MAX_IN_FLIGHT};
pub use signal::{Side, Signal, SignalBatch, StoredSignal};
