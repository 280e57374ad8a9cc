//! Observability automation (docs/runbook/observability.md): the jobs that
//! sample signal latency, build and deliver the weekly health report, and
//! export the dashboard datasets — run from the CLI (`observe ...`,
//! `run-daily --observability`) or on `serve`'s schedule.
//!
//! Every run takes its job's lock (held → `skipped`), appends one record
//! to `automation_runs.log` whatever happens, and on success invalidates
//! the analytics API's cache. The files and their rules are
//! `mlcore-observe`'s; this module brings Redis (the signal streams, the
//! cache), the alert channels and the webhook.

mod dashboard;
pub mod dq;
mod latency;
mod weekly;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};
use mlcore_config::AppConfig;
use mlcore_observe::dashboard::Dataset;
use mlcore_observe::{lock, runlog, Job, JobId, Layout, ObserveError, RunRecord, RunStatus};
use serde_json::Value;

use crate::alerts::Notifier;
use crate::redis_link::RedisLink;

/// The commit this build came from (the dashboard's provenance).
pub const BUILD_COMMIT: &str = env!("MLCORE_BUILD_COMMIT");

/// Why a job failed.
#[derive(Debug, thiserror::Error)]
pub enum AutomationError {
    /// Its files.
    #[error(transparent)]
    Observe(#[from] ObserveError),
    /// Redis (sampling the streams).
    #[error("Redis: {0}")]
    Redis(#[from] mlcore_contract::ContractError),
    /// The webhook refused or never answered.
    #[error("webhook delivery failed after {attempts} attempts: {message}")]
    Delivery {
        /// Attempts made.
        attempts: u32,
        /// The last failure, and where the payload was kept.
        message: String,
    },
    /// The upload command failed.
    #[error("upload failed after {attempts} attempts: {message}")]
    Upload {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        message: String,
    },
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// A blocking part of the job panicked (a bug: the panic's message).
    #[error("the job panicked: {0}")]
    Panicked(String),
}

impl AutomationError {
    /// The stable code written as `error_code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Observe(e) => e.code(),
            Self::Redis(_) => "OBS_REDIS",
            Self::Delivery { .. } => "OBS_WEBHOOK_FAILED",
            Self::Upload { .. } => "OBS_UPLOAD_FAILED",
            Self::Http(_) => "OBS_HTTP_CLIENT",
            Self::Panicked(_) => "OBS_PANICKED",
        }
    }

    fn attempts(&self) -> u32 {
        match self {
            Self::Delivery { attempts, .. } | Self::Upload { attempts, .. } => *attempts,
            _ => 0,
        }
    }
}

/// What a run asks for beyond the configuration.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Write the latency alert's payload to `out/latency_alerts/` instead
    /// of sending it.
    pub dry_run_alert: bool,
    /// Write the weekly report to `out/weekly_report/` instead of sending it.
    pub dry_run_webhook: bool,
    /// Skip the dashboard's upload command.
    pub dry_run_upload: bool,
    /// The weekly report's week (its Monday; default: this week).
    pub week_start: Option<NaiveDate>,
    /// The dashboard's datasets (default: all).
    pub datasets: Vec<Dataset>,
}

impl Options {
    /// Every delivery written to files instead (`run-daily --dry-run`).
    pub fn dry_run() -> Self {
        Self {
            dry_run_alert: true,
            dry_run_webhook: true,
            dry_run_upload: true,
            ..Self::default()
        }
    }

    fn dry_run_of(&self, job: Job) -> bool {
        match job {
            Job::Latency => self.dry_run_alert,
            Job::WeeklyReport => self.dry_run_webhook,
            Job::Dashboard => self.dry_run_upload,
        }
    }
}

/// What a job did, for its record.
#[derive(Debug, Default)]
struct Outcome {
    artefacts: Vec<String>,
    alerts: Vec<Value>,
    attempts: u32,
    summary: Value,
}

/// The jobs' context.
#[derive(Debug)]
pub struct Automation {
    config: Arc<AppConfig>,
    layout: Layout,
    redis: RedisLink,
    notifier: Notifier,
    http: reqwest::Client,
    command: String,
}

impl Automation {
    /// The jobs for `config`; `command` is recorded in the dashboard's
    /// provenance.
    pub fn new(config: Arc<AppConfig>, command: String) -> Result<Self, crate::services::StartError> {
        let s = &config.storage;
        Ok(Self {
            layout: Layout::new(&s.ops_root, &s.out_root, &s.runs_root),
            redis: RedisLink::new(&config.redis)?,
            notifier: Notifier::new(config.notifications.clone())?,
            http: reqwest::Client::builder().build()?,
            command,
            config,
        })
    }

    /// Where the files live.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Runs `job` once: under its lock, recorded in `automation_runs.log`.
    pub async fn run(&self, job: Job, opts: &Options) -> RunRecord {
        match job {
            Job::Latency => {
                self.recorded(job, opts, |id, now| self.latency(id, now, opts))
                    .await
            }
            Job::WeeklyReport => {
                self.recorded(job, opts, |id, now| self.weekly(id, now, opts))
                    .await
            }
            Job::Dashboard => {
                self.recorded(job, opts, |id, now| self.dashboard(id, now, opts))
                    .await
            }
        }
    }

    /// Every job, in order (`run-daily --observability`).
    pub async fn run_daily(&self, opts: &Options) -> Vec<RunRecord> {
        let mut out = Vec::new();
        for job in Job::ALL {
            out.push(self.run(job, opts).await);
        }
        out
    }

    async fn recorded<'a, F, Fut>(&'a self, job: Job, opts: &Options, work: F) -> RunRecord
    where
        F: FnOnce(JobId, DateTime<Utc>) -> Fut,
        Fut: Future<Output = Result<Outcome, AutomationError>> + 'a,
    {
        let started = Instant::now();
        let now = Utc::now();
        let id = JobId::new(job, now);
        let mut record = RunRecord {
            job_id: id.clone(),
            job,
            status: RunStatus::Ok,
            duration_ms: 0,
            artefacts: Vec::new(),
            alerts: Vec::new(),
            attempts: 0,
            dry_run: opts.dry_run_of(job),
            error_code: None,
            error_message: None,
            summary: Value::Null,
        };
        let result = match lock::try_lock(&self.layout.lock(job)) {
            Ok(Some(_held)) => Some(work(id.clone(), now).await),
            Ok(None) => None,
            Err(e) => Some(Err(e.into())),
        };
        match result {
            None => {
                record.status = RunStatus::Skipped;
                record.error_message = Some(format!(
                    "another {} run holds {}",
                    job.name(),
                    self.layout.display(&self.layout.lock(job))
                ));
                tracing::warn!(job = job.name(), job_id = %id, "skipped: another run holds the lock");
            }
            Some(Ok(o)) => {
                record.artefacts = o.artefacts;
                record.alerts = o.alerts;
                record.attempts = o.attempts;
                record.summary = o.summary;
            }
            Some(Err(e)) => {
                record.status = RunStatus::Error;
                record.attempts = e.attempts();
                record.error_code = Some(e.code().to_owned());
                record.error_message = Some(e.to_string());
                tracing::error!(job = job.name(), job_id = %id, code = e.code(), error = %e, "observability job failed");
            }
        }
        record.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Err(e) = runlog::append(&self.layout.automation_log(), &record) {
            tracing::error!(error = %e, "automation_runs.log could not be written");
            if record.status == RunStatus::Ok {
                record.status = RunStatus::Error;
                record.error_code = Some(e.code().to_owned());
                record.error_message = Some(e.to_string());
            }
        }
        if record.status == RunStatus::Ok {
            // New data: cached analytics answers are stale now.
            if let Err(e) = self.redis.bump_analytics_generation().await {
                tracing::warn!(error = %e, "the analytics cache could not be invalidated; answers may be stale until their TTL");
            }
        }
        record
    }
}

/// Runs the jobs on `control.yaml observability.schedule` (nothing when it
/// is `null`), each at the times its cron expression matches.
pub fn spawn_schedule(config: Arc<AppConfig>) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(schedule) = config.control.observability.schedule.clone() else {
        return Vec::new();
    };
    let automation = match Automation::new(Arc::clone(&config), "mlcore-control serve (schedule)".into()) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            tracing::error!(error = %e, "observability schedule cannot start");
            return Vec::new();
        }
    };
    let mut handles = Vec::new();
    for (job, expr) in [
        (Job::Latency, schedule.latency),
        (Job::Dashboard, schedule.dashboard),
        (Job::WeeklyReport, schedule.weekly_report),
    ] {
        let cron = match mlcore_config::schedule::parse(&expr) {
            Ok(c) => c,
            Err(e) => {
                // The loader validated it; this cannot happen with a loaded config.
                tracing::error!(error = %e, job = job.name(), "observability schedule unusable");
                continue;
            }
        };
        let a = Arc::clone(&automation);
        handles.push(tokio::spawn(async move {
            loop {
                let now = crate::services::now_ms();
                let Some(next) = cron.next_after(now) else {
                    tracing::warn!(cron = %expr, job = job.name(), "the schedule never matches again");
                    return;
                };
                tokio::time::sleep(std::time::Duration::from_millis(next.saturating_sub(now))).await;
                let r = a.run(job, &Options::default()).await;
                tracing::info!(job = job.name(), job_id = %r.job_id, status = ?r.status, "scheduled observability job");
            }
        }));
    }
    handles
}
