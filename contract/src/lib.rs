//! `mlcore-contract`: the Redis contract trading consumers rely on.
//!
//! A consumer depends on this crate alone: it pulls in the Redis client and
//! serde, never ONNX Runtime, Parquet, protobuf or a learner.
//!
//! - [`keys`]: the key layout (`{strategy}` hash tags: one Cluster slot per
//!   strategy).
//! - [`guard`]: the Redis Function library every signal write and mode
//!   change goes through (source in `guard.lua`), and its client.
//! - [`signal`], [`ops`], [`heartbeat`], [`model`]: what is stored — signals,
//!   ops modes, daemon heartbeats, the registry's active-model pointer with
//!   its rollback authorisation — and the events announced on `ns:events`.
//! - [`acl`]: least-privilege Redis users per process, as ACL rules.
//! - [`conn`]: one server or a Cluster behind one connection type
//!   ([`Endpoint`] says where), and commands packed once and sent together.
//!
//! `docs/redis-contract.md` is the consumer-facing description; keep both in
//! step. Everything here works over any [`redis::ConnectionLike`].
//!
//! Feature `config`: build an [`Endpoint`] from `redis.yaml`
//! (`mlcore-config`), for the project's own processes.

pub mod acl;
pub mod conn;
mod error;
pub mod guard;
pub mod heartbeat;
pub mod keys;
pub mod model;
pub mod ops;
pub mod signal;

pub use conn::{Endpoint, PackedCommands, RedisConn};
pub use error::ContractError;
pub use guard::{
    CodeSpent, Guard, GuardEngine, ModeChange, PublishBuffers, PublishOutcome, SetModeOutcome,
    MAX_DECISIONS_PER_CALL,
};
pub use heartbeat::{Heartbeat, ModelRefusal};
pub use keys::{Keys, StrategyKeys};
pub use model::{ModelPointer, RollbackAuthorization, RollbackGrant};
pub use ops::{OpsMode, OpsState};
pub use signal::{Side, Signal, SignalBatch, StoredSignal};
