//! The dashboard export: the bundle, its history, the optional upload
//! (its exit status checked and retried), and the heartbeat.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mlcore_observe::dashboard::{self, upload, Dataset, Heartbeat};
use mlcore_observe::files::write_json;
use mlcore_observe::time::rfc3339;
use mlcore_observe::JobId;
use serde_json::json;

use super::{Automation, AutomationError, Options, Outcome, BUILD_COMMIT};

impl Automation {
    pub(super) async fn dashboard(
        &self,
        job: JobId,
        now: DateTime<Utc>,
        opts: &Options,
    ) -> Result<Outcome, AutomationError> {
        let cfg = self.config.control.observability.dashboard.clone();
        let l = self.layout.clone();
        let which = if opts.datasets.is_empty() {
            Dataset::ALL.to_vec()
        } else {
            opts.datasets.clone()
        };
        let command = self.command.clone();
        let (id, dry_run) = (job.clone(), opts.dry_run_upload);
        let heartbeat = |status: &str,
                         sequence: Option<u64>,
                         datasets: BTreeMap<String, String>,
                         upload: &str| Heartbeat {
            job_id: job.to_string(),
            generated_at: rfc3339(now),
            status: status.into(),
            sequence,
            datasets,
            upload_status: upload.into(),
        };
        let layout = l.clone();
        let names = which.clone();
        let exported = tokio::task::spawn_blocking(move || {
            let spec = dashboard::ExportSpec {
                which: &names,
                job: &id,
                now,
                command: &command,
                commit_sha: BUILD_COMMIT,
                ev_history_runs: cfg.ev_history_runs,
                history_weeks: cfg.history_weeks,
            };
            dashboard::export(&layout, &spec)
        })
        .await
        .map_err(|e| AutomationError::Panicked(format!("the export: {e}")))?;
        let exported = match exported {
            Ok(x) => x,
            Err(e) => {
                let last_good = dashboard::read_manifest(&l.dashboard()).ok().map(|m| m.sequence);
                let failed = which
                    .iter()
                    .map(|d| (d.name().to_owned(), e.to_string()))
                    .collect();
                write_json(
                    &l.dashboard_heartbeat(),
                    &heartbeat("error", last_good, failed, "none"),
                )?;
                return Err(e.into());
            }
        };
        let cfg = &self.config.control.observability.dashboard;
        let (upload_status, attempts, upload_error) = match (&cfg.upload_command, dry_run) {
            (None, _) => ("none", 0, None),
            (Some(_), true) => ("dry_run", 0, None),
            (Some(argv), false) => {
                let (argv, bundle) = (argv.clone(), exported.history_dir.clone());
                let policy = upload::Policy {
                    retries: cfg.upload_retries,
                    wait: Duration::from_millis(cfg.upload_retry_wait_ms),
                    timeout: Duration::from_millis(cfg.upload_timeout_ms),
                };
                let up = tokio::task::spawn_blocking(move || upload::run(&argv, &bundle, policy))
                    .await
                    .unwrap_or(upload::Uploaded {
                        attempts: 0,
                        error: Some("the upload task panicked".into()),
                    });
                match up.error {
                    None => ("ok", up.attempts, None),
                    Some(e) => ("error", up.attempts, Some(e)),
                }
            }
        };
        let ok: BTreeMap<String, String> = which
            .iter()
            .map(|d| (d.name().to_owned(), "ok".to_owned()))
            .collect();
        let status = if upload_error.is_some() { "error" } else { "ok" };
        write_json(
            &l.dashboard_heartbeat(),
            &heartbeat(status, Some(exported.manifest.sequence), ok, upload_status),
        )?;
        if let Some(message) = upload_error {
            return Err(AutomationError::Upload { attempts, message });
        }
        let mut artefacts: Vec<String> = exported
            .manifest
            .datasets
            .iter()
            .map(|e| l.display(&l.dashboard().join(&e.file)))
            .collect();
        artefacts.push(l.display(&l.dashboard().join(dashboard::MANIFEST)));
        artefacts.push(l.display(&exported.history_dir));
        artefacts.push(l.display(&l.dashboard_heartbeat()));
        Ok(Outcome {
            artefacts,
            alerts: Vec::new(),
            attempts,
            summary: json!({
                "sequence": exported.manifest.sequence,
                "datasets": exported.manifest.datasets.iter().map(|e| json!({"dataset": e.dataset, "rows": e.rows, "checksum_sha256": e.checksum_sha256})).collect::<Vec<_>>(),
                "upload_status": upload_status,
                "history_pruned": exported.pruned.len(),
                "commit_sha": BUILD_COMMIT,
            }),
        })
    }
}
