//! The active-model pointer: `ns:{S}:model`, written by the control plane
//! when the registry activates (or rolls back to) a version, read by every
//! daemon. A `model_activated` event on `ns:events` wakes the daemons at
//! once; they also re-read the pointer periodically, so a missed event only
//! delays a swap.
//!
//! The pointer names a version under `models_root/<strategy>/v<version>/`
//! and the sha256 of that artifact's `manifest.json`: a daemon loads exactly
//! the artifact the registry verified, or refuses. A rollback carries the
//! signed [`RollbackAuthorization`] the daemon needs to go back a version.

use std::collections::HashMap;

use redis::ConnectionLike;

use super::keys::Keys;
use super::ContractError;

/// What the registry made active for a strategy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelPointer {
    /// Strategy.
    pub strategy: String,
    /// Registry id of the model.
    pub model_id: String,
    /// Artifact version (`v<version>` under the strategy's folder).
    pub version: u64,
    /// sha256 of the artifact's `manifest.json`, hex.
    pub manifest_sha256: String,
    /// Present when this activation goes back a version.
    pub rollback: Option<RollbackAuthorization>,
    /// A rollback pins the version until an approver releases it.
    pub pinned: bool,
    /// Who activated it (requester+approver).
    pub actor: String,
    /// The control-plane request that did it.
    pub request_id: String,
    /// When, ms since the epoch.
    pub updated_at_ms: u64,
}

impl ModelPointer {
    /// Reads the pointer of `strategy`; `None` when the registry never set one.
    pub fn read(
        conn: &mut impl ConnectionLike,
        keys: &Keys,
        strategy: &str,
    ) -> Result<Option<Self>, ContractError> {
        let h: HashMap<String, String> = Self::read_cmd(keys, strategy).query(conn)?;
        Self::from_hash(keys, strategy, &h)
    }

    /// The read of [`ModelPointer::read`]; its reply goes to
    /// [`ModelPointer::from_hash`].
    pub fn read_cmd(keys: &Keys, strategy: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(keys.strategy(strategy).model);
        cmd
    }

    /// The pointer from its hash; `None` when the registry never set one.
    pub fn from_hash(
        keys: &Keys,
        strategy: &str,
        h: &HashMap<String, String>,
    ) -> Result<Option<Self>, ContractError> {
        let key = keys.strategy(strategy).model;
        if h.is_empty() {
            return Ok(None);
        }
        let field = |name: &'static str| {
            h.get(name)
                .cloned()
                .ok_or_else(|| ContractError::Protocol(format!("{key} has no `{name}`")))
        };
        let number = |name: &'static str| -> Result<u64, ContractError> {
            field(name)?
                .parse()
                .map_err(|_| ContractError::Protocol(format!("{key} `{name}` is not a number")))
        };
        let rollback = match h.get("rollback").map(String::as_str) {
            None | Some("") => None,
            Some(json) => Some(
                serde_json::from_str(json)
                    .map_err(|e| ContractError::Protocol(format!("{key} `rollback`: {e}")))?,
            ),
        };
        Ok(Some(Self {
            strategy: strategy.to_owned(),
            model_id: field("model_id")?,
            version: number("version")?,
            manifest_sha256: field("manifest_sha256")?,
            rollback,
            pinned: field("pinned")? == "1",
            actor: field("actor")?,
            request_id: field("request_id")?,
            updated_at_ms: number("updated_at_ms")?,
        }))
    }

    /// Replaces the pointer (every field is written, so nothing of the
    /// previous one survives) and then announces it on `ns:events`; a lost
    /// event only delays daemons until their next periodic read.
    pub fn write(&self, conn: &mut impl ConnectionLike, keys: &Keys) -> Result<(), ContractError> {
        super::conn::run_all(conn, &self.write_pipeline(keys)?)?;
        Ok(())
    }

    /// The commands of [`ModelPointer::write`]: every field, then the event.
    pub fn write_pipeline(&self, keys: &Keys) -> Result<redis::Pipeline, ContractError> {
        let key = keys.strategy(&self.strategy).model;
        let rollback = match &self.rollback {
            Some(a) => serde_json::to_string(a).map_err(|e| ContractError::Invalid {
                field: "rollback",
                reason: e.to_string(),
            })?,
            None => String::new(),
        };
        let event = serde_json::json!({
            "type": "model_activated",
            "strategy": self.strategy,
            "model_id": self.model_id,
            "version": self.version,
            "rollback": self.rollback.is_some(),
            "pinned": self.pinned,
            "actor": self.actor,
            "request_id": self.request_id,
        });
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(&key)
            .arg("model_id")
            .arg(&self.model_id)
            .arg("version")
            .arg(self.version)
            .arg("manifest_sha256")
            .arg(&self.manifest_sha256)
            .arg("rollback")
            .arg(rollback)
            .arg("pinned")
            .arg(if self.pinned { "1" } else { "0" })
            .arg("actor")
            .arg(&self.actor)
            .arg("request_id")
            .arg(&self.request_id)
            .arg("updated_at_ms")
            .arg(self.updated_at_ms)
            .cmd("PUBLISH")
            .arg(keys.events())
            .arg(event.to_string());
        Ok(pipe)
    }

    /// Sets or clears the pin without changing the version (an approver
    /// released it).
    pub fn set_pinned(
        conn: &mut impl ConnectionLike,
        keys: &Keys,
        strategy: &str,
        pinned: bool,
    ) -> Result<(), ContractError> {
        Self::set_pinned_cmd(keys, strategy, pinned).query::<()>(conn)?;
        Ok(())
    }

    /// The write of [`ModelPointer::set_pinned`].
    pub fn set_pinned_cmd(keys: &Keys, strategy: &str, pinned: bool) -> redis::Cmd {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(keys.strategy(strategy).model)
            .arg("pinned")
            .arg(if pinned { "1" } else { "0" });
        cmd
    }
}

/// A daemon's report that it refused an artifact, published on `ns:events`
/// (the control plane's monitor also sees the count in heartbeats).
pub fn publish_refusal(
    conn: &mut impl ConnectionLike,
    keys: &Keys,
    instance: &str,
    strategy: &str,
    version: u64,
    reason: &str,
) -> Result<(), ContractError> {
    let event = serde_json::json!({
        "type": "model_refused",
        "instance": instance,
        "strategy": strategy,
        "version": version,
        "reason": reason,
    });
    redis::cmd("PUBLISH")
        .arg(keys.events())
        .arg(event.to_string())
        .query::<()>(conn)?;
    Ok(())
}

/// The signed fields.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackGrant {
    /// Strategy.
    pub strategy: String,
    /// Model id allowed back.
    pub model_id: String,
    /// Exact version allowed back.
    pub version: u64,
    /// sha256 of that version's `manifest.json`: the very artifact.
    pub manifest_sha256: String,
    /// The version it goes back from: a daemon running anything else (a
    /// later activation happened) refuses the authorisation.
    pub from_version: u64,
    /// sha256 of the `manifest.json` it goes back from.
    pub from_manifest_sha256: String,
    /// When issued, ms since the epoch.
    pub issued_at_ms: u64,
    /// Not usable after this, ms since the epoch.
    pub expires_at_ms: u64,
    /// Control-plane request that approved it: the authorisation's id; a
    /// daemon uses each one once.
    pub request_id: String,
}

/// A grant with its signature.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackAuthorization {
    /// What is allowed.
    pub grant: RollbackGrant,
    /// Signing key id.
    pub key_id: String,
    /// ed25519 over the grant's canonical JSON, hex.
    pub signature: String,
}
