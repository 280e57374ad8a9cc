//! `sources.yaml`: market data providers for training data, with failover.

use serde::{Deserialize, Serialize};

use super::secret::Secret;

/// The whole of `sources.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesConfig {
    /// Providers, tried by ascending `priority`.
    pub providers: Vec<ProviderConfig>,
    /// Failover across providers.
    pub failover: FailoverConfig,
}

/// One market data provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Identifier, e.g. `twelvedata`.
    pub name: String,
    /// Lower is tried first.
    pub priority: u32,
    /// Whether the provider takes part in failover.
    pub enabled: bool,
    /// Connection settings.
    pub settings: ProviderSettings,
}

/// Provider connection settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    /// API base URL.
    pub base_url: String,
    /// API key.
    pub api_key: Secret,
    /// HTTP timeout.
    pub timeout_ms: u64,
    /// Retries inside this provider.
    pub max_retries: u32,
    /// Wait between those retries.
    pub retry_backoff_ms: u64,
}

/// Failover across providers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverConfig {
    /// Provider attempts in total.
    pub max_attempts: u32,
    /// Wait between providers.
    pub backoff_ms: u64,
}
