//! The client of an external Config API (`control.yaml config_api`): each
//! state change of a config change request is sent there as
//! `PUT {base_url}/change-requests/{id}` with the request as JSON and the
//! bearer token from `$VAR`.
//!
//! Timeouts per attempt; bounded retries with exponential backoff on what
//! may pass (5xx, 429, timeouts, refused or reset connections — a PUT is
//! idempotent); any other answer is final. Deliveries of one request may
//! overlap (each state change sends its own): the body carries
//! `updated_at_ms`, by which the server keeps the newest. TLS is verified by default against the public roots or
//! a configured CA; `verify_ssl: false` is refused by the loader outside
//! dev. The mirror never holds up a request's workflow: `serve` sends in the
//! background and alerts when a delivery is given up.

use std::time::Duration;

use mlcore_config::ConfigApiConfig;
use serde::Serialize;

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigApiError {
    /// The client could not be built (a CA file that does not read).
    #[error("config API client: {0}")]
    Setup(String),
    /// The server answered with a status that will not change on retry.
    #[error("config API answered {status} after {attempts} attempt(s): {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The answer's body (truncated).
        body: String,
        /// Attempts made.
        attempts: u32,
    },
    /// Every attempt failed with something retryable.
    #[error("config API unreachable after {attempts} attempt(s): {last}")]
    Exhausted {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// A failure retrying cannot fix (a certificate refused, a bad URL).
    #[error("config API: {0}")]
    Transport(String),
}

/// A delivery that succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// HTTP status.
    pub status: u16,
    /// Attempts it took (1: no retry).
    pub attempts: u32,
}

/// The client.
#[derive(Debug, Clone)]
pub struct ConfigApi {
    http: reqwest::Client,
    cfg: ConfigApiConfig,
}

impl ConfigApi {
    /// A client for `cfg`.
    pub fn new(cfg: &ConfigApiConfig) -> Result<Self, ConfigApiError> {
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs_f64(cfg.timeout_seconds))
            .connect_timeout(Duration::from_secs_f64(cfg.timeout_seconds));
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| ConfigApiError::Setup(format!("CA file {}: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| ConfigApiError::Setup(format!("CA file {}: {e}", ca.display())))?;
            b = b.tls_built_in_root_certs(false).add_root_certificate(cert);
        }
        if !cfg.verify_ssl {
            b = b.danger_accept_invalid_certs(true);
        }
        Ok(Self {
            http: b.build().map_err(|e| ConfigApiError::Setup(e.to_string()))?,
            cfg: cfg.clone(),
        })
    }

    /// Sends `body` as the state of request `id`.
    pub async fn put_change(&self, id: &str, body: &impl Serialize) -> Result<Delivered, ConfigApiError> {
        let url = format!("{}/change-requests/{id}", self.cfg.base_url.trim_end_matches('/'));
        let mut wait = Duration::from_millis(self.cfg.backoff_ms);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let sent = self
                .http
                .put(&url)
                .bearer_auth(self.cfg.token.expose())
                .json(body)
                .send()
                .await;
            let retry_because = match sent {
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success() {
                        return Ok(Delivered {
                            status: status.as_u16(),
                            attempts,
                        });
                    }
                    let text: String = resp.text().await.unwrap_or_default().chars().take(300).collect();
                    if !(status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS) {
                        return Err(ConfigApiError::Refused {
                            status: status.as_u16(),
                            body: text,
                            attempts,
                        });
                    }
                    format!("HTTP {status}: {text}")
                }
                Err(e) if e.is_timeout() => format!("timed out after {} s", self.cfg.timeout_seconds),
                // Judged without the URL, which could hold any word. A PUT
                // is idempotent: a connection refused or reset is retried.
                Err(e) => {
                    let e = e.without_url();
                    if (e.is_connect() || e.is_request()) && !is_tls(&e) {
                        format!("connection failed: {}", chain(&e))
                    } else {
                        return Err(ConfigApiError::Transport(chain(&e)));
                    }
                }
            };
            if attempts > self.cfg.retries {
                return Err(ConfigApiError::Exhausted {
                    attempts,
                    last: retry_because,
                });
            }
            tracing::debug!(url = %url, attempt = attempts, reason = %retry_because, "config API: retrying");
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2);
        }
    }
}

/// The error and its sources on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// A certificate (or handshake) failure: retrying will not change it.
fn is_tls(e: &reqwest::Error) -> bool {
    let text = chain(e).to_lowercase();
    ["certificate", "tls", "handshake", "unknownissuer", "invalid peer"]
        .iter()
        .any(|w| text.contains(w))
}
