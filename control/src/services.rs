//! What the control plane's domain needs — the configuration, PostgreSQL,
//! the Redis link, alerting, a clock — and nothing of HTTP. The domain
//! modules (`ops`, `approvals`, `registry`, `audit`, `monitor`) take a
//! `&Services`; the `api` layer holds one behind its own state and maps
//! requests to calls and domain errors to responses.

use std::path::Path;
use std::sync::Arc;

use mlcore_config::AppConfig;
use sqlx::PgPool;

use crate::alerts::Alerter;
use crate::audit::{self, AuditError, Event, NewEvent};
use crate::redis_link::RedisLink;

/// The domain's dependencies.
#[derive(Debug)]
pub struct Services {
    /// Resolved configuration.
    pub config: Arc<AppConfig>,
    /// PostgreSQL.
    pub pool: PgPool,
    /// Redis, through the contract.
    pub redis: RedisLink,
    /// Alert delivery (fire and forget).
    pub alerts: Arc<Alerter>,
    /// The external Config API config change requests are mirrored to.
    pub config_api: Option<crate::config_api::ConfigApi>,
}

/// Why the services could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// PostgreSQL.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    /// The HTTP client for alerts.
    #[error("alert client: {0}")]
    Http(#[from] reqwest::Error),
    /// The Redis client (a malformed URL; connecting is lazy).
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// An enrolled second-factor secret cannot be used.
    #[error(transparent)]
    SecondFactor(#[from] crate::second_factor::EnrolmentError),
    /// The Config API client cannot be built.
    #[error(transparent)]
    ConfigApi(#[from] crate::config_api::ConfigApiError),
}

impl Services {
    /// Connects PostgreSQL (migrations must have run) and prepares the
    /// Redis link and the notifier.
    pub async fn connect(config: AppConfig) -> Result<Arc<Self>, StartError> {
        let pool = crate::db::connect(&config.database).await?;
        let alerts = Arc::new(Alerter::new(crate::alerts::Notifier::new(
            config.notifications.clone(),
        )?));
        let redis = RedisLink::new(&config.redis)?;
        let config_api = config
            .control
            .config_api
            .as_ref()
            .map(crate::config_api::ConfigApi::new)
            .transpose()?;
        Ok(Arc::new(Self {
            config: Arc::new(config),
            pool,
            redis,
            alerts,
            config_api,
        }))
    }

    /// Milliseconds since the epoch.
    pub fn now_ms(&self) -> u64 {
        now_ms()
    }

    /// The WORM archive's root.
    pub fn worm_root(&self) -> &Path {
        &self.config.storage.worm_root
    }

    /// Appends `e` to the audit log (hash chain and WORM archive).
    pub async fn audit(&self, e: NewEvent) -> Result<Event, AuditError> {
        audit::append(&self.pool, self.worm_root(), e).await
    }
}

/// Milliseconds since the epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
