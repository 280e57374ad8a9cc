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

/// A refusal recorded for the first time (or a newer one by the same
/// daemon): what the monitor alerts on.
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

/// Records what `beats` report: each loaded `model_id@version` as served,
/// each refusal against the registered model of that strategy and version
/// (refusals of artifacts the registry does not know are only counted, by
/// the daemon and the `artifact_refused` alert).
/// Returns the refusals not recorded before.
pub async fn record(svc: &Services, beats: &[Heartbeat]) -> Result<Vec<NewRefusal>, RegistryError> {
    let mut fresh = Vec::new();
    for hb in beats {
        for tag in hb.models.values() {
            // `model_id@version`; the model id names the artifact (a
            // version served before it was registered counts once it is).
            let Some((id, _)) = tag.rsplit_once('@') else {
                continue;
            };
            sqlx::query(
                "INSERT INTO core.model_loads (model_id, instance, outcome, first_at_ms, last_at_ms) \
                 VALUES ($1, $2, 'served', $3, $3) \
                 ON CONFLICT (model_id, instance, outcome) DO UPDATE \
                 SET last_at_ms = GREATEST(core.model_loads.last_at_ms, excluded.last_at_ms)",
            )
            .bind(id)
            .bind(&hb.instance)
            .bind(hb.at_ms as i64)
            .execute(&svc.pool)
            .await
            .map_err(db_err("recording a served model"))?;
        }
        for (strategy, refusal) in &hb.refusals {
            // Inserted, or updated by a newer refusal: returned; the same
            // refusal seen in the next heartbeat: nothing.
            let row = sqlx::query(
                "INSERT INTO core.model_loads (model_id, instance, outcome, reason, first_at_ms, last_at_ms) \
                 SELECT id, $3, 'refused', $4, $5, $5 FROM core.model_registry WHERE strategy = $1 AND version = $2 \
                 ON CONFLICT (model_id, instance, outcome) DO UPDATE \
                 SET reason = excluded.reason, last_at_ms = excluded.last_at_ms \
                 WHERE core.model_loads.last_at_ms < excluded.last_at_ms \
                 RETURNING model_id, \
                   EXISTS (SELECT 1 FROM core.model_active a WHERE a.model_id = core.model_loads.model_id) AS active",
            )
            .bind(strategy)
            .bind(refusal.version as i64)
            .bind(&hb.instance)
            .bind(&refusal.reason)
            .bind(refusal.at_ms as i64)
            .fetch_optional(&svc.pool)
            .await
            .map_err(db_err("recording a refused model"))?;
            if let Some(row) = row {
                fresh.push(NewRefusal {
                    model_id: row.try_get("model_id").unwrap_or_default(),
                    strategy: strategy.clone(),
                    version: refusal.version,
                    instance: hb.instance.clone(),
                    reason: refusal.reason.clone(),
                    active: row.try_get("active").unwrap_or(false),
                });
            }
        }
    }
    Ok(fresh)
}

/// Records what the live daemons report now (best effort: with Redis down
/// there is nothing new to learn, and what was recorded stands).
pub async fn record_live(svc: &Services) -> Result<Vec<NewRefusal>, RegistryError> {
    let beats: Vec<Heartbeat> = match svc.redis.heartbeats().await {
        Ok(all) => all.into_iter().filter_map(|(_, _, hb)| hb).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "daemon heartbeats unreadable; model loads not refreshed");
            Vec::new()
        }
    };
    record(svc, &beats).await
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
