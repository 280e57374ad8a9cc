//! Daemon heartbeats: `ns:daemon:<instance>:hb` (hash with a TTL) and the
//! `ns:daemons` sorted set the control plane lists daemons from.

use std::collections::BTreeMap;

use redis::ConnectionLike;

use super::keys::Keys;
use super::ContractError;

/// What a daemon reports about itself.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Heartbeat {
    /// `daemon.yaml` instance id.
    pub instance: String,
    /// `ok` or `degraded` (e.g. Redis publish failures, no model).
    pub status: String,
    /// When this heartbeat was written (ms since epoch).
    pub at_ms: u64,
    /// Last decision time (ms since epoch, 0 if none).
    pub last_decision_ms: u64,
    /// p99 trigger → acknowledged latency over the last interval, µs.
    pub p99_us: u64,
    /// Decisions made since start.
    pub decisions: u64,
    /// Signals accepted by the guard since start.
    pub signals_accepted: u64,
    /// Decisions dropped by overload since start.
    pub decisions_dropped: u64,
    /// Model artifacts refused since start.
    pub refused_artifacts: u64,
    /// Active model per strategy: `model_id@version`.
    pub models: BTreeMap<String, String>,
    /// Ops mode the daemon is applying per strategy.
    pub modes: BTreeMap<String, String>,
    /// The last artifact refused per strategy since start: the registry
    /// records it against that version (and alerts), so a model every
    /// daemon refused does not pass for one that serves. Kept in the
    /// heartbeat rather than only in the `model_refused` event because a
    /// control plane that was down when the event went out still learns it.
    pub refusals: BTreeMap<String, ModelRefusal>,
    /// The configuration the daemon runs (a config change request's apply
    /// waits for every daemon to report its version here, or a refusal).
    pub config: ConfigReport,
}

/// The configuration version a daemon runs, what of it waits for a restart,
/// and the last version it refused.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ConfigReport {
    /// The deployed commit it decides with (`local`: a folder no change
    /// request deployed; empty: a daemon older than this field).
    pub version: String,
    /// When it took that version (ms since epoch).
    pub since_ms: u64,
    /// `file: key` of the changes since its start that need a restart; it
    /// runs with their old values until then.
    pub restart_required: Vec<String>,
    /// The last version it refused, if any since it took the current one.
    pub refused: Option<ConfigRefusal>,
}

/// A daemon's refusal of one configuration version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConfigRefusal {
    /// The refused version.
    pub version: String,
    /// Why (the loader's problems, or the deployment's).
    pub reason: String,
    /// When (ms since epoch).
    pub at_ms: u64,
}

/// A daemon's refusal of one artifact.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelRefusal {
    /// The refused version.
    pub version: u64,
    /// The manifest the registry's pointer asked for, when it named one.
    pub manifest_sha256: Option<String>,
    /// Why, as the daemon logged it.
    pub reason: String,
    /// When (ms since epoch).
    pub at_ms: u64,
}

impl Heartbeat {
    /// Writes the heartbeat with a TTL and records the instance in the
    /// daemons set (two keys in different slots: a pipeline, not a transaction).
    pub fn write(
        &self,
        conn: &mut impl ConnectionLike,
        keys: &Keys,
        ttl_ms: u64,
    ) -> Result<(), ContractError> {
        let key = keys.heartbeat(&self.instance);
        let encode = |m: &BTreeMap<String, String>| serde_json::to_string(m).unwrap_or_else(|_| "{}".into());
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(&key)
            .arg("instance")
            .arg(&self.instance)
            .arg("status")
            .arg(&self.status)
            .arg("at_ms")
            .arg(self.at_ms)
            .arg("last_decision_ms")
            .arg(self.last_decision_ms)
            .arg("p99_us")
            .arg(self.p99_us)
            .arg("decisions")
            .arg(self.decisions)
            .arg("signals_accepted")
            .arg(self.signals_accepted)
            .arg("decisions_dropped")
            .arg(self.decisions_dropped)
            .arg("refused_artifacts")
            .arg(self.refused_artifacts)
            .arg("models")
            .arg(encode(&self.models))
            .arg("modes")
            .arg(encode(&self.modes))
            .arg("refusals")
            .arg(serde_json::to_string(&self.refusals).unwrap_or_else(|_| "{}".into()))
            .arg("config")
            .arg(serde_json::to_string(&self.config).unwrap_or_else(|_| "{}".into()))
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl_ms)
            .cmd("ZADD")
            .arg(keys.daemons())
            .arg(self.at_ms)
            .arg(&self.instance);
        super::conn::run_all(conn, &pipe)?;
        Ok(())
    }

    /// Reads one daemon's heartbeat; `None` when it has expired.
    pub fn read(
        conn: &mut impl ConnectionLike,
        keys: &Keys,
        instance: &str,
    ) -> Result<Option<Self>, ContractError> {
        let fields: BTreeMap<String, String> = Self::read_cmd(keys, instance).query(conn)?;
        Ok(Self::from_fields(instance, &fields))
    }

    /// The read of [`Heartbeat::read`]; its reply goes to
    /// [`Heartbeat::from_fields`].
    pub fn read_cmd(keys: &Keys, instance: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(keys.heartbeat(instance));
        cmd
    }

    /// The list of daemons by last heartbeat time (a `ZRANGE ... WITHSCORES`,
    /// read as `(instance, ms)` pairs).
    pub fn known_instances_cmd(keys: &Keys) -> redis::Cmd {
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(keys.daemons()).arg(0).arg(-1).arg("WITHSCORES");
        cmd
    }

    /// A heartbeat from its hash's fields; `None` when there are none (the
    /// key expired).
    pub fn from_fields(instance: &str, fields: &BTreeMap<String, String>) -> Option<Self> {
        if fields.is_empty() {
            return None;
        }
        let num = |k: &str| fields.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let map = |k: &str| {
            fields
                .get(k)
                .and_then(|v| serde_json::from_str::<BTreeMap<String, String>>(v).ok())
                .unwrap_or_default()
        };
        Some(Self {
            instance: instance.to_owned(),
            status: fields.get("status").cloned().unwrap_or_default(),
            at_ms: num("at_ms"),
            last_decision_ms: num("last_decision_ms"),
            p99_us: num("p99_us"),
            decisions: num("decisions"),
            signals_accepted: num("signals_accepted"),
            decisions_dropped: num("decisions_dropped"),
            refused_artifacts: num("refused_artifacts"),
            models: map("models"),
            modes: map("modes"),
            // Absent from daemons older than this field: no refusals known.
            refusals: fields
                .get("refusals")
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or_default(),
            config: fields
                .get("config")
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or_default(),
        })
    }

    /// Every instance that ever sent a heartbeat, with its last time (ms).
    pub fn known_instances(
        conn: &mut impl ConnectionLike,
        keys: &Keys,
    ) -> Result<Vec<(String, u64)>, ContractError> {
        Ok(Self::known_instances_cmd(keys).query(conn)?)
    }

    /// Every known instance with its last heartbeat time (ms) and its
    /// heartbeat, `None` once the heartbeat's TTL ran out (a silent daemon).
    pub fn read_all(
        conn: &mut impl ConnectionLike,
        keys: &Keys,
    ) -> Result<Vec<(String, u64, Option<Self>)>, ContractError> {
        Self::known_instances(conn, keys)?
            .into_iter()
            .map(|(instance, at)| {
                let hb = Self::read(conn, keys, &instance)?;
                Ok((instance, at, hb))
            })
            .collect()
    }
}
