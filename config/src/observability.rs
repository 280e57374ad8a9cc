//! `notifications.yaml` and `metrics.yaml`: how people find out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::secret::Secret;

/// The whole of `notifications.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Slack incoming webhook.
    pub slack: SlackConfig,
    /// PagerDuty Events v2.
    pub pagerduty: PagerDutyConfig,
    /// Generic HMAC-signed webhook.
    pub webhook: WebhookConfig,
    /// Retries on 5xx, 429 and timeouts.
    pub retry: RetryConfig,
    /// Channels per severity.
    pub routing: BTreeMap<Severity, Vec<Channel>>,
}

/// Alert severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// For the record.
    Info,
    /// Someone should look today.
    Warning,
    /// Someone should look now.
    Critical,
}

/// A notification channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Slack.
    Slack,
    /// PagerDuty.
    Pagerduty,
    /// Generic webhook.
    Webhook,
}

/// Slack incoming webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// `false` suppresses sending (the attempt is still recorded).
    pub enabled: bool,
    /// The webhook URL (a secret: the URL is the credential).
    pub webhook_url: Secret,
    /// Target channel, e.g. `#ml-ops`.
    pub channel: String,
    /// Bot display name.
    pub username: String,
    /// HTTP timeout.
    pub timeout_ms: u64,
}

/// PagerDuty Events v2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyConfig {
    /// `false` suppresses sending.
    pub enabled: bool,
    /// Integration routing key.
    pub routing_key: Secret,
    /// Events API endpoint (overridden in tests by a local server).
    pub events_url: String,
    /// Incident source.
    pub source: String,
    /// Incident component.
    pub component: String,
    /// Incident group.
    pub group: String,
    /// HTTP timeout.
    pub timeout_ms: u64,
}

/// Generic webhook with an HMAC-SHA256 signature header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `false` suppresses sending.
    pub enabled: bool,
    /// Receiver URL.
    pub url: String,
    /// HMAC key for `X-OBS-Signature`.
    pub hmac_secret: Secret,
    /// HTTP timeout.
    pub timeout_ms: u64,
}

/// Exponential backoff for notifications.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Total attempts, first included.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles after.
    pub initial_backoff_ms: u64,
    /// Ceiling on one wait.
    pub max_backoff_ms: u64,
}

/// The whole of `metrics.yaml`: how the processes report (metrics and logs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where the daemon serves `/metrics`, `/healthz`, `/readyz`.
    pub listen: String,
    /// Metric name prefix (`ml_assets_core`: names are `<prefix>_<name>`;
    /// the control plane's are `<prefix>_control_<name>`).
    pub prefix: String,
    /// Histogram bucket upper bounds in seconds, per stage. Fixed buckets
    /// make histograms from several instances combinable.
    pub latency_buckets_seconds: BTreeMap<String, Vec<f64>>,
    /// Labels added to every series.
    pub default_labels: BTreeMap<String, String>,
    /// Log level of both processes; `RUST_LOG`, when set, wins (and may
    /// name targets: `info,sqlx=debug`).
    pub log_level: LogLevel,
}

/// How much the processes log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Diagnostics.
    Debug,
    /// What happened.
    Info,
    /// What went wrong and was handled.
    Warn,
    /// What failed.
    Error,
    /// Nothing.
    Off,
}

impl LogLevel {
    /// The level as a `tracing` filter directive.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
            Self::Off => "off",
        }
    }
}

/// `control.yaml` `observability`: the three automated jobs that keep
/// operators informed from dashboards and notifications alone (signal
/// latency monitoring, the weekly health report, the dashboard datasets;
/// docs/runbook/observability.md), and the analytics API's cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservabilityJobsConfig {
    /// Signal latency monitoring.
    pub latency: LatencyJobConfig,
    /// The weekly health report.
    pub weekly_report: WeeklyReportConfig,
    /// The dashboard datasets.
    pub dashboard: DashboardExportConfig,
    /// How long the analytics API keeps an answer in Redis; a job that
    /// writes new data invalidates every cached answer at once.
    pub analytics_cache_ttl_s: u64,
    /// `serve` runs the jobs by itself at these times (`None`: only from
    /// the CLI or an outside scheduler).
    pub schedule: Option<ObservabilitySchedule>,
}

/// Signal latency monitoring: trigger → Redis from the signal streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyJobConfig {
    /// How often the job is meant to run (the heartbeat's `next_run_at`).
    pub every_minutes: u32,
    /// The SLO: a run whose samples' p95 exceeds this breaches it, ms.
    pub slo_p95_ms: f64,
    /// Consecutive breaching runs that raise a warning.
    pub warning_after: u32,
    /// Consecutive breaching runs that raise a critical alert.
    pub critical_after: u32,
    /// `signal_latency.csv` past this size moves to the archive.
    pub rotate_bytes: u64,
    /// Archived raw samples are deleted after this many days.
    pub raw_retention_days: u32,
    /// Hourly rollups older than this many days are dropped.
    pub rollup_retention_days: u32,
    /// At most this many stream entries read per strategy and run.
    pub max_samples_per_stream: usize,
    /// The daemons' `/metrics` URLs: each run also reports what their
    /// `stage_latency_seconds{stage="trigger_to_ack"}` histograms counted
    /// since the previous run.
    pub metrics_targets: Vec<String>,
}

/// The weekly health report and its webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeeklyReportConfig {
    /// Where the signed report is POSTed (`$VAR`; `None`: nowhere — the
    /// report is still built, validated and kept).
    pub webhook_url: Option<Secret>,
    /// The HMAC-SHA256 key of `X-OBS-Signature` (`$VAR`).
    pub webhook_secret: Secret,
    /// Retries after the first attempt on a 5xx, a 429 or a timeout.
    pub max_retries: u32,
    /// Wait before the first retry, doubled each time, ms.
    pub retry_wait_ms: u64,
    /// Per attempt, ms.
    pub timeout_ms: u64,
    /// Reports (`weekly_report_history/`) are kept this many days.
    pub history_days: u32,
    /// A strategy whose latest backtest drawdown reaches this is in
    /// `breach` of its budget.
    pub drawdown_budget: f64,
    /// ... and in `warning` from this fraction of the budget.
    pub drawdown_warning_fraction: f64,
}

/// The dashboard dataset export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardExportConfig {
    /// Bundles kept in `dashboard_export_history/`, weeks.
    pub history_weeks: u32,
    /// Finished runs the EV history keeps, newest first.
    pub ev_history_runs: usize,
    /// Copies a finished bundle somewhere (argv; `{bundle}` is replaced by
    /// the bundle's folder); its exit status is checked (`None`: no upload).
    pub upload_command: Option<Vec<String>>,
    /// Retries of a failed upload.
    pub upload_retries: u32,
    /// Wait before each retry, ms.
    pub upload_retry_wait_ms: u64,
    /// An upload still running after this is killed (and retried), ms.
    pub upload_timeout_ms: u64,
}

/// When `serve` runs the jobs (cron expressions, UTC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservabilitySchedule {
    /// Latency sampling, e.g. `0 */15 * * * *`.
    pub latency: String,
    /// The dashboard export, e.g. `0 30 0 * * *`.
    pub dashboard: String,
    /// The weekly report, e.g. `0 30 23 * * SAT`.
    pub weekly_report: String,
}
