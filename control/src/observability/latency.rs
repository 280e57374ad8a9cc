//! Signal latency monitoring: every signal stream's entries since the last
//! run (v2 and v3 streams of each strategy), each one's trigger → Redis
//! latency (`written_at_us` − `generated_at_ms`, the decision's trigger
//! time), appended to the samples; the touched hours rolled up; rotation
//! and retention; the SLO over consecutive runs, alerting at 2 and 3; and
//! beside them what the daemons' own `trigger_to_ack` histograms counted.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use mlcore_config::Severity;
use mlcore_observe::latency::{histogram, rollup, samples, slo};
use mlcore_observe::time::{from_ms, hour_start, rfc3339};
use mlcore_observe::{files, JobId};
use serde_json::{json, Value};

use super::{Automation, AutomationError, Options, Outcome};
use crate::alerts::{Alert, Delivery};

impl Automation {
    /// Samples every signal stream since its cursor.
    async fn sample(
        &self,
        state: &mut slo::LatencyState,
        now: DateTime<Utc>,
    ) -> Result<(Vec<samples::Sample>, Value), AutomationError> {
        let cfg = &self.config.control.observability.latency;
        let keys = self.redis.keys();
        let first = (now - Duration::minutes(i64::from(cfg.every_minutes))).timestamp_millis();
        let mut out = Vec::new();
        let (mut streams, mut unreadable, mut truncated) = (0usize, 0usize, Vec::new());
        for strategy in &self.config.universe.strategies {
            let k = keys.strategy(strategy.id.as_str());
            for (key, version) in [(&k.signals, "v2"), (&k.stream_v3, "v3")] {
                let after = state
                    .cursors
                    .get(key.as_str())
                    .cloned()
                    .unwrap_or_else(|| format!("{first}-0"));
                let entries = self
                    .redis
                    .stream_after(key, &after, cfg.max_samples_per_stream)
                    .await?;
                streams += 1;
                if entries.len() == cfg.max_samples_per_stream {
                    truncated.push(key.clone());
                }
                let source = format!("stream:{}:{version}", strategy.id.as_str());
                for (_, fields) in &entries {
                    let int = |name: &str| {
                        fields
                            .get(name)
                            .and_then(|v| std::str::from_utf8(v).ok())
                            .and_then(|v| v.parse::<i64>().ok())
                    };
                    let (gen, written) = (int("generated_at_ms"), int("written_at_us"));
                    let (Some(gen), Some(written)) = (gen, written) else {
                        unreadable += 1;
                        continue;
                    };
                    let latency_ms = written as f64 / 1000.0 - gen as f64;
                    if !(latency_ms.is_finite() && latency_ms >= 0.0) {
                        unreadable += 1;
                        continue;
                    }
                    out.push(samples::Sample {
                        at_ms: written / 1000,
                        source: source.clone(),
                        latency_ms,
                    });
                }
                if let Some((id, _)) = entries.last() {
                    state.cursors.insert(key.clone(), id.clone());
                }
            }
        }
        Ok((
            out,
            json!({"streams": streams, "unreadable_entries": unreadable, "truncated_streams": truncated}),
        ))
    }

    /// What each daemon's `trigger_to_ack` histogram counted since the
    /// last run. A target that does not answer is reported, not fatal: a
    /// daemon down is the heartbeat monitor's alert.
    async fn histograms(&self, state: &mut slo::LatencyState) -> Vec<Value> {
        let mut out = Vec::new();
        for target in &self.config.control.observability.latency.metrics_targets {
            let scraped = async {
                let r = self
                    .http
                    .get(target)
                    .timeout(std::time::Duration::from_secs(5))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if !r.status().is_success() {
                    return Err(format!("HTTP {}", r.status()));
                }
                let text = r.text().await.map_err(|e| e.to_string())?;
                histogram::parse(&text)
                    .ok_or_else(|| "no stage_latency_seconds{stage=\"trigger_to_ack\"} buckets".to_owned())
            }
            .await;
            match scraped {
                Ok(now) => {
                    let d = histogram::delta(&now, state.histograms.get(target));
                    let ms = |q: f64| {
                        d.quantile(q)
                            .map(|s| mlcore_observe::latency::round_us(s * 1000.0))
                    };
                    out.push(json!({
                        "target": target,
                        "decisions": d.count,
                        "p50_ms": ms(0.50),
                        "p95_ms": ms(0.95),
                        "p99_ms": ms(0.99),
                    }));
                    state.histograms.insert(target.clone(), now);
                }
                Err(error) => {
                    tracing::warn!(target = %target, error = %error, "a daemon's metrics could not be read");
                    out.push(json!({"target": target, "error": error}));
                }
            }
        }
        out
    }

    pub(super) async fn latency(
        &self,
        job: JobId,
        now: DateTime<Utc>,
        opts: &Options,
    ) -> Result<Outcome, AutomationError> {
        let cfg = self.config.control.observability.latency.clone();
        let l = self.layout.clone();
        let mut state = slo::LatencyState::load(&l.latency_state())?;
        if state.recover(&l.latency_csv())? {
            tracing::warn!(
                "the last latency run died while appending: its samples are taken back and sampled again"
            );
            files::write_json(&l.latency_state(), &state)?;
        }
        let cursors_before = state.cursors.clone();
        let (new, sampling) = self.sample(&mut state, now).await?;
        let histograms = self.histograms(&mut state).await;
        let mut artefacts = vec![l.display(&l.latency_csv()), l.display(&l.rollup_csv())];

        // The files, on a blocking thread (`serve` runs this on the API's
        // runtime). The cursors are saved right after the samples are
        // appended, so a run that fails later never appends them twice.
        let (samples_new, layout, job_id, mut cursors) = (new.clone(), l.clone(), job.clone(), state.clone());
        let slo_p95_ms = cfg.slo_p95_ms;
        let (rollups_written, kept) = tokio::task::spawn_blocking(move || {
            let l = layout;
            // Write-ahead: the state says an append is under way (and what
            // to undo it to) before the file changes.
            cursors.pending = Some(slo::PendingAppend {
                len_before: std::fs::metadata(l.latency_csv()).map_or(0, |m| m.len()),
                cursors_before,
            });
            files::write_json(&l.latency_state(), &cursors)?;
            samples::append(&l.latency_csv(), &samples_new)?;
            cursors.pending = None;
            files::write_json(&l.latency_state(), &cursors)?;
            // Roll up the hours this run's samples fall in from every
            // sample of those hours, archived ones included.
            let touched: BTreeSet<i64> = samples_new
                .iter()
                .map(|s| hour_start(from_ms(s.at_ms)).timestamp_millis())
                .collect();
            let hours = match (touched.first(), touched.last()) {
                (Some(&first), Some(&last)) => {
                    let all = samples::read_window(
                        &l.latency_csv(),
                        &l.latency_archive(),
                        first,
                        last + 3_600_000,
                    )?;
                    let of_touched: Vec<samples::Sample> = all
                        .into_iter()
                        .filter(|s| touched.contains(&hour_start(from_ms(s.at_ms)).timestamp_millis()))
                        .collect();
                    rollup::aggregate(&of_touched, slo_p95_ms)
                }
                _ => Vec::new(),
            };
            rollup::merge(&l.rollup_csv(), &hours, now, cfg.rollup_retention_days)?;
            let kept = samples::maintain(
                &l.latency_csv(),
                &l.latency_archive(),
                &job_id,
                now,
                cfg.rotate_bytes,
                cfg.raw_retention_days,
            )?;
            Ok::<_, mlcore_observe::ObserveError>((hours.len(), kept))
        })
        .await
        .map_err(|e| AutomationError::Panicked(format!("writing the samples: {e}")))??;
        if let Some(to) = &kept.rotated_to {
            artefacts.push(l.display(to));
        }

        // The SLO over this run's samples.
        let thresholds = slo::Slo {
            p95_ms: cfg.slo_p95_ms,
            warning_after: cfg.warning_after,
            critical_after: cfg.critical_after,
        };
        let mut lat: Vec<f64> = new.iter().map(|s| s.latency_ms).collect();
        let pcts = rollup::percentiles(&mut lat);
        let open_before = state.open_alert;
        let eval = slo::evaluate(&mut state, pcts.map(|p| p.1), &thresholds, &rfc3339(now));
        let evidence = l.display(&l.rollup_csv());
        let raised = slo::alert(&eval, &thresholds, job.as_str(), &evidence);
        let resolved = match (&raised, open_before, eval.p95_ms) {
            (None, Some(level), Some(_)) if !eval.breached => Some((
                level,
                slo::resolution(&eval, &thresholds, job.as_str(), &evidence),
            )),
            _ => None,
        };
        // What the channels were told, in real runs only: a dry run neither
        // opens nor closes an incident.
        let mut resolution_delivered = false;
        let mut alerts = Vec::new();
        for (mut payload, severity, resolve) in raised
            .map(|p| (p, eval.level, false))
            .into_iter()
            .chain(resolved.map(|(level, p)| (p, level, true)))
        {
            if opts.dry_run_alert {
                let suffix = if resolve { "-resolved" } else { "" };
                let path = l.latency_alerts().join(format!("{job}{suffix}.json"));
                files::write_json(&path, &payload)?;
                artefacts.push(l.display(&path));
            } else {
                let (sent, all_delivered) = self.raise(severity, &payload, resolve).await;
                payload["notified_channels"] = json!(sent);
                resolution_delivered |= resolve && all_delivered;
            }
            alerts.push(payload);
        }
        if !opts.dry_run_alert {
            state.open_alert = match eval.level {
                // Closed once every channel took the resolution; a failed
                // one is tried again by the next run within the SLO.
                slo::Level::Ok if resolution_delivered => None,
                slo::Level::Ok => state.open_alert,
                level => Some(state.open_alert.map_or(level, |o| o.max(level))),
            };
        }
        files::write_json(&l.latency_state(), &state)?;
        let heartbeat = slo::Heartbeat {
            job_id: job.to_string(),
            generated_at: rfc3339(now),
            status: "ok".into(),
            next_run_at: rfc3339(now + Duration::minutes(i64::from(cfg.every_minutes))),
            last_breach_at: state.last_breach_at.clone(),
            consecutive_breaches: state.consecutive_breaches,
        };
        files::write_json(&l.latency_heartbeat(), &heartbeat)?;
        artefacts.push(l.display(&l.latency_heartbeat()));
        Ok(Outcome {
            artefacts,
            alerts,
            attempts: 0,
            summary: json!({
                "samples_written": new.len(),
                "rollups_written": rollups_written,
                "breach_count": eval.consecutive,
                "breached": eval.breached,
                "level": eval.level,
                "p50_ms": pcts.map(|p| p.0),
                "p95_ms": pcts.map(|p| p.1),
                "p99_ms": pcts.map(|p| p.2),
                "slo_p95_ms": cfg.slo_p95_ms,
                "next_rotation_bytes": cfg.rotate_bytes.saturating_sub(kept.size_after),
                "expired_rows": kept.expired_rows,
                "archives_pruned": kept.pruned.len(),
                "sampling": sampling,
                "histograms": histograms,
            }),
        })
    }

    /// Sends the breach alert (or its resolution) through
    /// `notifications.yaml`'s routing (Slack, PagerDuty with the dedup key,
    /// the signed webhook) and waits for the deliveries; returns the
    /// channels that took it and whether none failed. A resolution goes
    /// where the alert went (the alert's severity) and closes the
    /// PagerDuty incident.
    async fn raise(&self, level: slo::Level, payload: &Value, resolve: bool) -> (Vec<String>, bool) {
        let alert = Alert {
            severity: match level {
                slo::Level::Critical => Severity::Critical,
                _ => Severity::Warning,
            },
            kind: "latency_breach".into(),
            scope: "global".into(),
            summary: payload["message"]
                .as_str()
                .unwrap_or("signal latency and its SLO")
                .to_owned(),
            details: payload.clone(),
            resolve,
        };
        let deliveries = self.notifier.notify(&alert).await;
        let all_delivered = !deliveries
            .iter()
            .any(|(_, d)| matches!(d, Delivery::Failed { .. }));
        let sent = deliveries
            .into_iter()
            .filter(|(_, d)| matches!(d, Delivery::Sent { .. }))
            .map(|(ch, _)| format!("{ch:?}").to_lowercase())
            .collect();
        (sent, all_delivered)
    }
}
