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
