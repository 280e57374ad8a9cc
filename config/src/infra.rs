//! `redis.yaml`, `database.yaml`, `storage.yaml`: where state lives.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::secret::Secret;

/// The whole of `redis.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:pass@]host:port/db` (a secret: it may hold credentials).
    pub url: Secret,
    /// Seed nodes when `mode` is `cluster`.
    pub cluster_nodes: Vec<String>,
    /// `standalone` or `cluster`.
    pub mode: RedisMode,
    /// Key namespace: every key starts with `<namespace>:`.
    pub namespace: String,
    /// Connect timeout.
    pub connect_timeout_ms: u64,
    /// Per-command timeout.
    pub command_timeout_ms: u64,
    /// Approximate cap of each strategy's signal stream (`XADD MAXLEN ~`).
    pub stream_maxlen: u64,
    /// Heartbeat cadence and expiry.
    pub heartbeat: HeartbeatConfig,
    /// How often ops state is re-read in case a pub/sub message was missed.
    pub reconcile_interval_ms: u64,
    /// Reconnect backoff bounds.
    pub reconnect: BackoffConfig,
    /// Whether the processes may load the guard library themselves.
    pub guard_install: GuardInstall,
    /// Which contract version the daemon publishes with and the control
    /// plane changes modes through (both libraries are loaded while v2 is
    /// migrated away from: docs/redis-contract.md, "Migrating to v3").
    pub contract: GuardContract,
    /// What runs contract v3's publish call inside Redis: the Lua function
    /// or the native module (docs/redis-contract.md, "The guard as a
    /// module").
    pub guard_engine: GuardEngine,
}

/// What runs the publish call of contract v3 inside Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardEngine {
    /// `FCALL mlcore_publish_v3` (`guard_v3.lua`): any Redis 7, managed
    /// services included.
    Function,
    /// `mlcore.publish_v3` of the `mlcore_guard` module
    /// (`libmlcore_guard_module.so`, loaded with `loadmodule`): the same
    /// contract at a fraction of the function's cost; needs a Redis that
    /// may load modules, and contract v3.
    Module,
}

/// The version of the Redis contract a process writes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardContract {
    /// Per-symbol signal hashes, JSON stream entries (`mlcore_publish_v2`).
    V2,
    /// One snapshot hash per strategy, binary records (`mlcore_publish_v3`).
    V3,
}

/// Who loads the guard library into Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardInstall {
    /// A deployment step (`mlcore-control redis install-guard`, as a Redis
    /// user that may `FUNCTION LOAD`); the daemon and the control plane
    /// only check that the guard they need answers, so their own users
    /// need no `FUNCTION` permission (`deployments/redis/users.acl`).
    Explicit,
    /// The processes load the guard when it is missing or older (dev: one
    /// Redis user does everything).
    Auto,
}

impl GuardInstall {
    /// Whether a process may load the guard.
    pub const fn may_install(self) -> bool {
        matches!(self, Self::Auto)
    }
}

/// Standalone server or Redis Cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisMode {
    /// One server (or a proxy in front of several).
    Standalone,
    /// Redis Cluster; keys of one strategy share a slot through `{S}` hash tags.
    Cluster,
}

/// Heartbeat cadence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// Write interval.
    pub interval_ms: u64,
    /// Key expiry; a silent daemon disappears after this.
    pub ttl_ms: u64,
}

/// Exponential backoff bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    /// First wait.
    pub initial_ms: u64,
    /// Ceiling.
    pub max_ms: u64,
}

/// The whole of `database.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgresql://user:pass@host:port/db`.
    pub dsn: Secret,
    /// Connection pool.
    pub pool: PoolConfig,
    /// Server-side statement timeout.
    pub statement_timeout_ms: u64,
    /// Schema search path; must start with `core`, `audit`.
    pub search_path: Vec<String>,
    /// Retention of audit events.
    pub retention: RetentionConfig,
}

/// Pool sizing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Connections kept open.
    pub min: u32,
    /// Upper bound.
    pub max: u32,
    /// Wait for a free connection before failing.
    pub acquire_timeout_ms: u64,
}

/// How long audit events are kept in the database (the WORM archive keeps all).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Ordinary events.
    pub audit_days: u32,
    /// Critical events (ops actions, model activations).
    pub critical_days: u32,
}

/// The whole of `storage.yaml`. Relative paths are resolved against the folder
/// that holds `configs/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Signed model artifacts.
    pub models_root: PathBuf,
    /// Write-once audit archive.
    pub worm_root: PathBuf,
    /// Backups.
    pub backups_root: PathBuf,
    /// Market data partitions.
    pub datasets_root: PathBuf,
    /// Retraining runs (`runs/<run_id>/`, `index.csv`) and the steps'
    /// content-addressed outputs they share.
    pub runs_root: PathBuf,
    /// Observability automation's state: `automation_runs.log`, the latency
    /// samples and rollups, heartbeats, locks, report and bundle history
    /// (the Python design's `ops/`).
    pub ops_root: PathBuf,
    /// What the automation publishes: `dashboard/` and dry runs' payloads
    /// (the Python design's `out/`).
    pub out_root: PathBuf,
    /// The ONNX Runtime shared library (`libonnxruntime.so.1.31.1`).
    pub onnxruntime_library: PathBuf,
}

impl StorageConfig {
    pub(crate) fn resolve_relative(&mut self, base: &std::path::Path) {
        for p in [
            &mut self.models_root,
            &mut self.worm_root,
            &mut self.backups_root,
            &mut self.datasets_root,
            &mut self.runs_root,
            &mut self.ops_root,
            &mut self.out_root,
            &mut self.onnxruntime_library,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }
}
