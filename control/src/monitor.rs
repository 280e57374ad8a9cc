//! Alerts the control plane raises by itself, checked every second by
//! `serve`: a daemon heartbeat missing beyond `heartbeat_missing_after_ms`
//! (critical; resolved when it returns), a daemon reporting newly refused
//! artifacts (warning), a registered model a daemon refused (critical when
//! it is the registry's active model, else warning; recorded in
//! `core.model_loads` with what the daemons served), and pending approvals
//! about to expire (warning).

use std::collections::{BTreeMap, BTreeSet};

use mlcore_config::Severity;
use mlcore_contract::Heartbeat;
use serde_json::json;
use sqlx::Row;

use crate::alerts::Alert;
use crate::services::Services;

/// What has already been alerted, so each condition alerts once.
#[derive(Debug, Default)]
pub struct Watch {
    silent: BTreeSet<String>,
    refused: BTreeMap<String, u64>,
    expiring: BTreeSet<String>,
}

/// One pass: returns the alerts raised (also sent through the notifier).
pub async fn tick(svc: &Services, watch: &mut Watch) -> Vec<Alert> {
    let now = svc.now_ms();
    let mut alerts = Vec::new();
    let beats: Vec<(String, u64, Option<Heartbeat>)> = svc.redis.heartbeats().await.unwrap_or_default();
    let limit = svc.config.control.heartbeat_missing_after_ms;
    for (instance, last_ms, hb) in &beats {
        let silent = hb.is_none() || now.saturating_sub(*last_ms) > limit;
        if silent && watch.silent.insert(instance.clone()) {
            alerts.push(Alert {
                severity: Severity::Critical,
                kind: "heartbeat_missing".into(),
                scope: instance.clone(),
                summary: format!("daemon {instance} silent for {} ms", now.saturating_sub(*last_ms)),
                details: json!({"last_heartbeat_ms": last_ms}),
                resolve: false,
            });
        } else if !silent && watch.silent.remove(instance) {
            alerts.push(Alert {
                severity: Severity::Critical,
                kind: "heartbeat_missing".into(),
                scope: instance.clone(),
                summary: format!("daemon {instance} is back"),
                details: json!({"last_heartbeat_ms": last_ms}),
                resolve: true,
            });
        }
        if let Some(hb) = hb {
            let seen = watch.refused.entry(instance.clone()).or_insert(0);
            if hb.refused_artifacts > *seen {
                alerts.push(Alert {
                    severity: Severity::Warning,
                    kind: "artifact_refused".into(),
                    scope: instance.clone(),
                    summary: format!(
                        "daemon {instance} refused {} model artifact(s)",
                        hb.refused_artifacts - *seen
                    ),
                    details: json!({"refused_total": hb.refused_artifacts}),
                    resolve: false,
                });
                *seen = hb.refused_artifacts;
            }
        }
    }
    let live: Vec<Heartbeat> = beats.into_iter().filter_map(|(_, _, hb)| hb).collect();
    crate::model_loads::record(svc, &live).await;
    match crate::model_loads::unalerted(svc).await {
        Ok(fresh) => alerts.extend(fresh.into_iter().map(|r| Alert {
            severity: if r.active {
                Severity::Critical
            } else {
                Severity::Warning
            },
            kind: "model_refused".into(),
            scope: r.strategy.clone(),
            summary: format!(
                "daemon {} refused {} (v{}){}: {}",
                r.instance,
                r.model_id,
                r.version,
                if r.active {
                    ", the registry's active model"
                } else {
                    ""
                },
                r.reason
            ),
            details: json!({
                "instance": r.instance,
                "model_id": r.model_id,
                "version": r.version,
                "active": r.active,
                "reason": r.reason,
            }),
            resolve: false,
        })),
        Err(e) => tracing::warn!(error = %e, "model refusals not alerted"),
    }
    let warn_ms = svc.config.control.approvals.expiry_warning_s * 1000;
    let rows = sqlx::query("SELECT id, action, scope, expires_at_ms FROM core.ops_requests WHERE status = 'pending' AND expires_at_ms > $1 AND expires_at_ms <= $2")
        .bind(now as i64)
        .bind((now + warn_ms) as i64)
        .fetch_all(&svc.pool)
        .await
        .unwrap_or_default();
    for row in rows {
        let id: String = row.try_get("id").unwrap_or_default();
        if watch.expiring.insert(id.clone()) {
            let action: String = row.try_get("action").unwrap_or_default();
            let scope: String = row.try_get("scope").unwrap_or_default();
            alerts.push(Alert {
                severity: Severity::Warning,
                kind: "approval_expiring".into(),
                scope: scope.clone(),
                summary: format!("{action} on {scope} ({id}) expires soon without approval"),
                details: json!({"request_id": id, "expires_at_ms": row.try_get::<i64, _>("expires_at_ms").unwrap_or(0)}),
                resolve: false,
            });
        }
    }
    for a in &alerts {
        svc.alerts.raise(a.clone());
    }
    alerts
}
