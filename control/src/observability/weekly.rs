//! The weekly health report: built and validated from files, signed over
//! its canonical JSON, POSTed to the webhook with `X-OBS-Signature` (5xx,
//! 429, timeouts and refused connections retried with exponential
//! backoff), then kept in `weekly_report_history/` for `history_days`. A
//! report that could not be delivered is kept in `out/weekly_report/` so
//! it can be sent again by hand.

use std::time::Duration;

use chrono::{DateTime, Utc};
use mlcore_observe::files::{sha256_hex, write_atomic};
use mlcore_observe::weekly::{self, sign};
use mlcore_observe::JobId;
use serde_json::json;

use super::{Automation, AutomationError, Options, Outcome};

impl Automation {
    pub(super) async fn weekly(
        &self,
        job: JobId,
        now: DateTime<Utc>,
        opts: &Options,
    ) -> Result<Outcome, AutomationError> {
        let cfg = &self.config.control.observability.weekly_report;
        let l = &self.layout;
        let params = weekly::Params {
            now,
            week_start: opts.week_start.unwrap_or_else(|| weekly::default_week(now)),
            slo_p95_ms: self.config.control.observability.latency.slo_p95_ms,
            drawdown_budget: cfg.drawdown_budget,
            warning_fraction: cfg.drawdown_warning_fraction,
        };
        let layout = l.clone();
        let doc = tokio::task::spawn_blocking(move || weekly::build(&layout, &params))
            .await
            .map_err(|e| AutomationError::Panicked(format!("building the report: {e}")))??;
        let signature = sign::signature(cfg.webhook_secret.expose().as_bytes(), &doc)?;
        let body = sign::canonical(&doc)?;
        let checksum = sha256_hex(&body);
        let mut artefacts = Vec::new();
        let keep_unsent = |artefacts: &mut Vec<String>| -> Result<String, AutomationError> {
            let path = l.weekly_dry_runs().join(format!("{job}.json"));
            write_atomic(&path, &body)?;
            write_atomic(&path.with_extension("sig"), format!("{signature}\n").as_bytes())?;
            artefacts.push(l.display(&path));
            Ok(l.display(&path))
        };
        let (delivery, attempts) = match (&cfg.webhook_url, opts.dry_run_webhook) {
            (_, true) => {
                keep_unsent(&mut artefacts)?;
                ("dry_run", 0)
            }
            (None, false) => {
                tracing::warn!("no weekly report webhook configured (observability.weekly_report.webhook_url): the report is kept, not sent");
                ("not_configured", 0)
            }
            (Some(url), false) => match self.deliver(url.expose(), &body, &signature).await {
                Ok(attempts) => ("sent", attempts),
                Err((attempts, message)) => {
                    let kept = keep_unsent(&mut artefacts)?;
                    return Err(AutomationError::Delivery {
                        attempts,
                        message: format!("{message}; the signed report is kept in {kept}"),
                    });
                }
            },
        };
        // The history keeps what went out (or, with no webhook, what there
        // is to keep); a dry run never replaces a delivered report.
        if delivery != "dry_run" {
            for p in weekly::save(&l.weekly_history(), &doc, &signature)? {
                artefacts.push(l.display(&p));
            }
        }
        let pruned = if delivery == "dry_run" {
            Vec::new()
        } else {
            weekly::prune(&l.weekly_history(), now, cfg.history_days)?
        };
        Ok(Outcome {
            artefacts,
            alerts: Vec::new(),
            attempts,
            summary: json!({
                "week_start": doc["week_start"],
                "payload_checksum_sha256": checksum,
                "signature": signature,
                "delivery": delivery,
                "budget_status": doc["portfolio"]["budget_status"],
                "latency_p95_ms": doc["latency"]["p95_ms"],
                "runs": doc["runs"].as_array().map_or(0, Vec::len),
                "alerts": doc["alerts"].as_array().map_or(0, Vec::len),
                "history_pruned": pruned.len(),
            }),
        })
    }

    /// POSTs the report; returns the attempts it took, or the attempts and
    /// the last failure.
    async fn deliver(&self, url: &str, body: &[u8], signature: &str) -> Result<u32, (u32, String)> {
        let cfg = &self.config.control.observability.weekly_report;
        let mut wait = Duration::from_millis(cfg.retry_wait_ms);
        let total = cfg.max_retries + 1;
        let mut last = String::new();
        for attempt in 1..=total {
            let sent = self
                .http
                .post(url)
                .timeout(Duration::from_millis(cfg.timeout_ms))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(sign::HEADER, signature)
                .body(body.to_vec())
                .send()
                .await;
            let retry = match sent {
                Ok(r) if r.status().is_success() => return Ok(attempt),
                Ok(r) => {
                    let status = r.status();
                    let text: String = r.text().await.unwrap_or_default().chars().take(200).collect();
                    last = format!("HTTP {status}: {text}");
                    status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                }
                Err(e) => {
                    // The URL is a secret: never in the log or the record.
                    let retry = e.is_timeout() || e.is_connect();
                    last = e.without_url().to_string();
                    retry
                }
            };
            if !retry {
                return Err((attempt, last));
            }
            if attempt < total {
                tracing::warn!(attempt, error = %last, wait_ms = wait.as_millis() as u64, "weekly report delivery failed; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        Err((total, last))
    }
}
