//! Writing a version into the folder the environment's processes read, and
//! waiting for the daemons to take it.
//!
//! The files are written one by one (each atomically), then the record
//! `DEPLOYED.json` — version, change id, every file's sha256. A reader
//! trusts the folder only when the files match the record, so it never
//! takes half of a deployment. Then `config_applied` goes out on the events
//! channel; daemons take the version live (or refuse it) and say so in
//! their heartbeats, which is what [`wait_for_daemons`] reads.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::services::Services;

/// The deployment record, its reader and its writer.
pub use mlcore_config::deploy::{write, Record};

/// The record of `dir`, if it has one that reads.
pub fn read(dir: &Path) -> Option<Record> {
    mlcore_config::deploy::read(dir).ok().flatten()
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
    /// Why the heartbeats could not be read (Redis), when they could not:
    /// then nothing is confirmed.
    pub unconfirmed: Option<String>,
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
    /// Every running daemon took it (none running: nothing to confirm).
    pub fn ok(&self) -> bool {
        self.refused.is_empty() && self.silent.is_empty() && self.unconfirmed.is_none()
    }

    /// What went wrong, in a sentence.
    pub fn failure(&self, timeout_ms: u64) -> String {
        self.refused
            .iter()
            .map(|r| format!("{} refused: {}", r.instance, r.reason))
            .chain(
                self.silent
                    .iter()
                    .map(|d| format!("{d} did not take it within {timeout_ms} ms")),
            )
            .chain(
                self.unconfirmed
                    .iter()
                    .map(|e| format!("the daemons' heartbeats could not be read: {e}")),
            )
            .collect::<Vec<_>>()
            .join("; ")
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
        let mut t = Taken {
            took: Vec::new(),
            refused: Vec::new(),
            silent: Vec::new(),
            restart_required: Vec::new(),
            took_ms: None,
            unconfirmed: None,
        };
        let beats = match svc.redis.heartbeats().await {
            Ok(b) => b,
            Err(e) => {
                // Redis unreadable: nothing confirmed; tried again until the
                // deadline, then it counts as a failure.
                t.unconfirmed = Some(e.to_string());
                Vec::new()
            }
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
        if (t.silent.is_empty() && t.unconfirmed.is_none()) || tokio::time::Instant::now() >= deadline {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
