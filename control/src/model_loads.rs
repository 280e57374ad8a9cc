//! What the daemons did with each registered model (`core.model_loads`),
//! learnt from their heartbeats: which versions they *served* and which
//! artifacts they *refused*, with the reason.
//!
//! The registry's `active` says what was decided; this says what ran. A
//! model every daemon refused is still the registry's active model, and
//! `GET /v1/models` shows the refusals next to it; `serve`'s monitor
//! alerts on each new refusal; and a rollback goes back only to a version
//! some daemon actually served. Heartbeats carry the refusal (not only the
//! `model_refused` event), so a control plane that was down when it
//! happened still records it.

use std::collections::BTreeMap;

use mlcore_contract::Heartbeat;
use sqlx::Row;

use crate::registry::{db_err, RegistryError};
use crate::services::Services;

/// A refusal not alerted yet (the first by a daemon for a model, or a
/// newer one): what the monitor alerts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefusal {
    /// Registry id of the refused model.
    pub model_id: String,
    /// Strategy.
    pub strategy: String,
    /// Version.
    pub version: u64,
    /// The daemon that refused it.
    pub instance: String,
    /// Why.
    pub reason: String,
    /// Whether it is the strategy's active model in the registry.
    pub active: bool,
}

/// One daemon's refusal, as `GET /v1/models` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Refusal {
    /// Daemon instance.
    pub instance: String,
    /// Why it refused.
    pub reason: String,
    /// When, ms since the epoch (the daemon's clock).
    pub at_ms: i64,
}

/// What the daemons did with one model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loads {
    /// Daemons that ever reported it loaded.
    pub served_by: Vec<String>,
    /// Daemons that refused it.
    pub refused_by: Vec<Refusal>,
}

/// Longest refusal reason kept, in characters.
const REASON_MAX: usize = 2000;

/// Records what `beats` report: each loaded `model_id@version` as served
/// when the registry holds that model for that strategy and version, each
/// refusal against the registered model of that strategy and version
/// (refusals of artifacts the registry does not know are only counted, by
/// the daemon and the `artifact_refused` alert); a refusal of a pointer
/// that named another manifest than the registered one says so first (the
/// artifact is not at fault; the pointer is). A heartbeat is written by
/// whoever can write Redis: nothing here names a model the registry does
/// not hold, and a row that cannot be stored is logged and skipped, never
/// in the way of the others.
pub async fn record(svc: &Services, beats: &[Heartbeat]) {
    for hb in beats {
        for (strategy, tag) in &hb.models {
            let Some((id, version)) = tag.rsplit_once('@') else {
                continue;
            };
            let Ok(version) = version.parse::<i64>() else {
                continue;
            };
            let done = sqlx::query(
                "INSERT INTO core.model_loads (model_id, instance, outcome, first_at_ms, last_at_ms) \
                 SELECT id, $4, 'served', $5, $5 FROM core.model_registry \
                 WHERE id = $1 AND strategy = $2 AND version = $3 \
                 ON CONFLICT (model_id, instance, outcome) DO NOTHING",
            )
            .bind(id)
            .bind(strategy)
            .bind(version)
            .bind(&hb.instance)
            .bind(hb.at_ms as i64)
            .execute(&svc.pool)
            .await;
            if let Err(e) = done {
                tracing::warn!(error = %e, instance = %hb.instance, model = %tag, "served model not recorded");
            }
        }
        for (strategy, refusal) in &hb.refusals {
            // A newer refusal replaces the reason; the same one seen in the
            // next heartbeat changes nothing.
            // PostgreSQL refuses a NUL; no reason needs a control character.
            let reason: String = refusal
                .reason
                .chars()
                .take(REASON_MAX)
                .map(|c| {
                    if c.is_control() && !matches!(c, '\n' | '\t') {
                        '\u{FFFD}'
                    } else {
                        c
                    }
                })
                .collect();
            let done = sqlx::query(
                "INSERT INTO core.model_loads (model_id, instance, outcome, reason, first_at_ms, last_at_ms) \
                 SELECT id, $3, 'refused', \
                   CASE WHEN $6::text IS NOT NULL AND $6 <> manifest_sha256 \
                     THEN 'the pointer named manifest ' || $6 || ', not the registered one (a pointer written outside the registry?): ' || $4 \
                     ELSE $4 END, \
                   $5, $5 \
                 FROM core.model_registry WHERE strategy = $1 AND version = $2 \
                 ON CONFLICT (model_id, instance, outcome) DO UPDATE \
                 SET reason = excluded.reason, last_at_ms = excluded.last_at_ms \
                 WHERE core.model_loads.last_at_ms < excluded.last_at_ms",
            )
            .bind(strategy)
            .bind(refusal.version as i64)
            .bind(&hb.instance)
            .bind(&reason)
            .bind(refusal.at_ms as i64)
            .bind(refusal.manifest_sha256.as_deref())
            .execute(&svc.pool)
            .await;
            if let Err(e) = done {
                tracing::warn!(error = %e, instance = %hb.instance, strategy = %strategy, "refused model not recorded");
            }
        }
    }
}

/// Records what the live daemons report now (best effort: with Redis down
/// there is nothing new to learn, and what was recorded stands).
pub async fn record_live(svc: &Services) {
    match svc.redis.heartbeats().await {
        Ok(all) => {
            let beats: Vec<Heartbeat> = all.into_iter().filter_map(|(_, _, hb)| hb).collect();
            record(svc, &beats).await;
        }
        Err(e) => tracing::warn!(error = %e, "daemon heartbeats unreadable; model loads not refreshed"),
    }
}

/// The refusals recorded since the last call, marked alerted: whoever
/// recorded them (the monitor, a listing, an activation), each is handed
/// out once, to the monitor that alerts on it.
pub async fn unalerted(svc: &Services) -> Result<Vec<NewRefusal>, RegistryError> {
    let rows = sqlx::query(
        "UPDATE core.model_loads l SET alerted_at_ms = l.last_at_ms FROM core.model_registry r \
         WHERE r.id = l.model_id AND l.outcome = 'refused' AND l.alerted_at_ms IS DISTINCT FROM l.last_at_ms \
         RETURNING l.model_id, l.instance, l.reason, r.strategy, r.version, \
           EXISTS (SELECT 1 FROM core.model_active a WHERE a.model_id = l.model_id) AS active",
    )
    .fetch_all(&svc.pool)
    .await
    .map_err(db_err("reading the refusals to alert"))?;
    rows.iter()
        .map(|r| {
            Ok(NewRefusal {
                model_id: r.try_get("model_id").map_err(db_err("reading a refusal"))?,
                strategy: r.try_get("strategy").map_err(db_err("reading a refusal"))?,
                version: r
                    .try_get::<i64, _>("version")
                    .map_err(db_err("reading a refusal"))? as u64,
                instance: r.try_get("instance").map_err(db_err("reading a refusal"))?,
                reason: r.try_get("reason").map_err(db_err("reading a refusal"))?,
                active: r.try_get("active").map_err(db_err("reading a refusal"))?,
            })
        })
        .collect()
}

/// Every model's recorded loads, by model id.
pub async fn all(svc: &Services) -> Result<BTreeMap<String, Loads>, RegistryError> {
    let rows = sqlx::query(
        "SELECT model_id, instance, outcome, reason, last_at_ms FROM core.model_loads ORDER BY model_id, instance",
    )
    .fetch_all(&svc.pool)
    .await
    .map_err(db_err("reading the model loads"))?;
    let mut loads: BTreeMap<String, Loads> = BTreeMap::new();
    for r in rows {
        let entry = loads
            .entry(r.try_get("model_id").unwrap_or_default())
            .or_default();
        let instance: String = r.try_get("instance").unwrap_or_default();
        match r.try_get::<String, _>("outcome").as_deref() {
            Ok("served") => entry.served_by.push(instance),
            _ => entry.refused_by.push(Refusal {
                instance,
                reason: r.try_get("reason").unwrap_or_default(),
                at_ms: r.try_get("last_at_ms").unwrap_or(0),
            }),
        }
    }
    Ok(loads)
}
