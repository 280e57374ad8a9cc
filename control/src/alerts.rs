//! Alerting: Slack incoming webhooks, PagerDuty Events v2 and a generic
//! webhook whose JSON body is signed with HMAC-SHA256 (`X-OBS-Signature:
//! sha256=<hex>` over the canonical JSON). Routing by severity comes from
//! `notifications.yaml`; `enabled: false` channels are skipped (and say so).
//! 5xx, 429 and timeouts are retried with exponential backoff. A failed
//! notification is counted and logged; callers fire and forget, so it never
//! blocks or fails the action that raised it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use mlcore_config::{Channel, NotificationsConfig, Severity};
use serde_json::{json, Value};
use sha2::Sha256;

/// An alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// How urgent.
    pub severity: Severity,
    /// Stable kind (`heartbeat_missing`, `ops_mode_change`, ...): with
    /// `scope`, the PagerDuty `dedup_key`.
    pub kind: String,
    /// Strategy, daemon instance or `global`.
    pub scope: String,
    /// One-line summary.
    pub summary: String,
    /// Structured detail.
    pub details: Value,
    /// `true` resolves the PagerDuty incident instead of triggering it.
    pub resolve: bool,
}

impl Alert {
    /// `mlcore:<kind>:<scope>`: the same alert on the same scope is one incident.
    pub fn dedup_key(&self) -> String {
        format!("mlcore:{}:{}", self.kind, self.scope)
    }
}

/// What happened on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Delivered after this many attempts.
    Sent {
        /// Attempts made.
        attempts: u32,
    },
    /// The channel is disabled in `notifications.yaml`.
    Disabled,
    /// Every attempt failed.
    Failed {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        error: String,
    },
}

/// Sends alerts as configured.
#[derive(Debug, Clone)]
pub struct Notifier {
    cfg: NotificationsConfig,
    client: reqwest::Client,
}

/// Hex HMAC-SHA256 of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

impl Notifier {
    /// A notifier for `cfg`.
    pub fn new(cfg: NotificationsConfig) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: reqwest::Client::builder().build()?,
            cfg,
        })
    }

    /// Sends `alert` to every channel its severity routes to.
    pub async fn notify(&self, alert: &Alert) -> Vec<(Channel, Delivery)> {
        let channels = self.cfg.routing.get(&alert.severity).cloned().unwrap_or_default();
        let mut out = Vec::with_capacity(channels.len());
        for ch in channels {
            let d = match ch {
                Channel::Slack => self.slack(alert).await,
                Channel::Pagerduty => self.pagerduty(alert).await,
                Channel::Webhook => self.webhook(alert).await,
            };
            if let Delivery::Failed { error, attempts } = &d {
                tracing::warn!(channel = ?ch, attempts = *attempts, error = %error, "notification failed");
            }
            out.push((ch, d));
        }
        out
    }

    async fn slack(&self, a: &Alert) -> Delivery {
        let s = &self.cfg.slack;
        if !s.enabled {
            return Delivery::Disabled;
        }
        let body = json!({"channel": s.channel, "username": s.username,
                          "text": format!("[{:?}] {} ({})", a.severity, a.summary, a.scope)});
        self.post(s.webhook_url.expose(), body.to_string(), None, s.timeout_ms)
            .await
    }

    async fn pagerduty(&self, a: &Alert) -> Delivery {
        let p = &self.cfg.pagerduty;
        if !p.enabled {
            return Delivery::Disabled;
        }
        let severity = match a.severity {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        };
        let body = json!({
            "routing_key": p.routing_key.expose(),
            "event_action": if a.resolve { "resolve" } else { "trigger" },
            "dedup_key": a.dedup_key(),
            "payload": {"summary": a.summary, "source": p.source, "severity": severity,
                        "component": p.component, "group": p.group, "custom_details": a.details},
        });
        self.post(&p.events_url, body.to_string(), None, p.timeout_ms)
            .await
    }

    async fn webhook(&self, a: &Alert) -> Delivery {
        let w = &self.cfg.webhook;
        if !w.enabled {
            return Delivery::Disabled;
        }
        // serde_json's map is ordered, so this is the canonical form.
        let body = json!({"severity": format!("{:?}", a.severity).to_lowercase(), "kind": a.kind, "scope": a.scope,
                          "summary": a.summary, "details": a.details, "dedup_key": a.dedup_key(), "resolve": a.resolve})
        .to_string();
        let sig = format!(
            "sha256={}",
            signature(w.hmac_secret.expose().as_bytes(), body.as_bytes())
        );
        self.post(&w.url, body, Some(sig), w.timeout_ms).await
    }

    async fn post(&self, url: &str, body: String, signature: Option<String>, timeout_ms: u64) -> Delivery {
        let r = &self.cfg.retry;
        let mut backoff = Duration::from_millis(r.initial_backoff_ms);
        let mut last = String::new();
        for attempt in 1..=r.max_attempts.max(1) {
            let mut req = self
                .client
                .post(url)
                .timeout(Duration::from_millis(timeout_ms))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(sig) = &signature {
                req = req.header("X-OBS-Signature", sig);
            }
            let retry = match req.send().await {
                Ok(resp) if resp.status().is_success() => return Delivery::Sent { attempts: attempt },
                Ok(resp) => {
                    last = format!("HTTP {}", resp.status());
                    resp.status().is_server_error() || resp.status() == reqwest::StatusCode::TOO_MANY_REQUESTS
                }
                Err(e) => {
                    last = e.to_string();
                    e.is_timeout() || e.is_connect()
                }
            };
            if !retry || attempt == r.max_attempts {
                return Delivery::Failed {
                    attempts: attempt,
                    error: last,
                };
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(r.max_backoff_ms));
        }
        Delivery::Failed {
            attempts: r.max_attempts,
            error: last,
        }
    }
}

/// Raises alerts in the background and counts what became of them: a
/// delivery never blocks or fails the action that raised it.
#[derive(Debug)]
pub struct Alerter {
    /// Replaced whole when a config change moves the routing or channels.
    notifier: arc_swap::ArcSwap<Notifier>,
    sent: AtomicU64,
    failed: AtomicU64,
}

impl Alerter {
    /// Raises through `notifier`.
    pub fn new(notifier: Notifier) -> Self {
        Self {
            notifier: arc_swap::ArcSwap::from_pointee(notifier),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Takes new channels and routing (a config change applied): alerts
    /// raised from now on go by them.
    pub fn reroute(&self, cfg: NotificationsConfig) -> Result<(), reqwest::Error> {
        self.notifier.store(Arc::new(Notifier::new(cfg)?));
        Ok(())
    }

    /// The channels each severity goes to now.
    pub fn routing(&self) -> std::collections::BTreeMap<mlcore_config::Severity, Vec<Channel>> {
        self.notifier.load().cfg.routing.clone()
    }

    /// The notification settings in force.
    pub fn settings(&self) -> NotificationsConfig {
        self.notifier.load().cfg.clone()
    }

    /// Sends `alert` to its channels on a task of its own.
    pub fn raise(self: &Arc<Self>, alert: Alert) {
        let me = Arc::clone(self);
        tokio::spawn(async move { me.deliver(&alert).await });
    }

    /// Sends `alert` to its channels and waits for the deliveries (with
    /// their retries): for a process about to exit (a CLI run), where a
    /// background task would die with it.
    pub async fn deliver(&self, alert: &Alert) {
        let notifier = self.notifier.load_full();
        for (_, d) in notifier.notify(alert).await {
            let counter = match d {
                Delivery::Sent { .. } => &self.sent,
                Delivery::Failed { .. } => &self.failed,
                Delivery::Disabled => continue,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Notifications delivered so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Notifications that failed after every retry so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}
