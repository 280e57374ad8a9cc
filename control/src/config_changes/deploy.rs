//! Writing a version into the folder the environment's processes read, and
//! waiting for the daemons to take it.
//!
//! The files are written one by one (each atomically), then the record
//! `DEPLOYED.json` — version, change id, every file's sha256. A reader
//! trusts the folder only when the files match the record, so it never
//! takes half of a deployment. Then `config_applied` goes out on the events
//! channel; daemons take the version live (or refuse it) and say so in
//! their heartbeats, which is what [`wait_for_daemons`] reads.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use mlcore_config::tree::{write_atomic, DEPLOYED_FILE};
use mlcore_config::ConfigTree;
use serde::{Deserialize, Serialize};

use crate::services::Services;

/// `DEPLOYED.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The commit deployed.
    pub version: String,
    /// The change request that deployed it (`init` for the first).
    pub change_id: String,
    /// When, ms since the epoch.
    pub applied_at_ms: u64,
    /// sha256 of each file, by relative path.
    pub files: BTreeMap<String, String>,
}

/// The record of `dir`, if it has one that reads.
pub fn read(dir: &Path) -> Option<Record> {
    let bytes = std::fs::read(dir.join(DEPLOYED_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes `tree` into `dir`, then its record.
pub fn write(
    dir: &Path,
    tree: &ConfigTree,
    version: &str,
    change_id: &str,
    now_ms: u64,
) -> std::io::Result<()> {
    tree.write(dir)?;
    let record = Record {
        version: version.to_owned(),
        change_id: change_id.to_owned(),
        applied_at_ms: now_ms,
        files: tree.hashes(),
    };
    let json = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
    write_atomic(&dir.join(DEPLOYED_FILE), &json)
}

/// What the running daemons did with a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Taken {
    /// Daemons that decide with it.
    pub took: Vec<String>,
    /// Daemons that refused it, with their reason.
    pub refused: Vec<Refusal>,
    /// Daemons that said nothing about it in time.
    pub silent: Vec<String>,
    /// `file: key`s the daemons run with their old value until restarted.
    pub restart_required: Vec<String>,
    /// Milliseconds from the deployment to the last daemon taking it.
    pub took_ms: Option<u64>,
}

/// A daemon's refusal of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Refusal {
    /// The daemon.
    pub instance: String,
    /// Why, as it said.
    pub reason: String,
}

impl Taken {
    /// Every running daemon took it.
    pub fn ok(&self) -> bool {
        self.refused.is_empty() && self.silent.is_empty()
    }
}

/// Polls the heartbeats until every running daemon reports `version` (or a
/// refusal of it), or `timeout_ms` passes. A daemon is running when its
/// heartbeat is fresher than `heartbeat_missing_after_ms` and not `stopped`.
pub async fn wait_for_daemons(svc: &Services, version: &str, since_ms: u64, timeout_ms: u64) -> Taken {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    let fresh_ms = svc.config.control.heartbeat_missing_after_ms;
    loop {
        let now = svc.now_ms();
        let beats = svc.redis.heartbeats().await.unwrap_or_default();
        let mut t = Taken {
            took: Vec::new(),
            refused: Vec::new(),
            silent: Vec::new(),
            restart_required: Vec::new(),
            took_ms: None,
        };
        for (instance, _, hb) in beats {
            let Some(hb) = hb else { continue };
            if hb.status == "stopped" || hb.at_ms + fresh_ms < now {
                continue;
            }
            let c = &hb.config;
            if c.version == version {
                t.took.push(instance);
                t.took_ms = Some(t.took_ms.unwrap_or(0).max(c.since_ms.saturating_sub(since_ms)));
                for k in &c.restart_required {
                    if !t.restart_required.contains(k) {
                        t.restart_required.push(k.clone());
                    }
                }
            } else if let Some(r) = c.refused.as_ref().filter(|r| r.version == version) {
                t.refused.push(Refusal {
                    instance,
                    reason: r.reason.clone(),
                });
            } else {
                t.silent.push(instance);
            }
        }
        if t.silent.is_empty() || tokio::time::Instant::now() >= deadline {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
