//! PostgreSQL: the pool (from `database.yaml`) and migrations
//! (`control/migrations/`, embedded at build time).

use std::str::FromStr;
use std::time::Duration;

use mlcore_config::DatabaseConfig;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Connection or query failure.
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A pool with the configured size, timeouts and search path.
pub async fn connect(cfg: &DatabaseConfig) -> Result<PgPool, DbError> {
    let options = PgConnectOptions::from_str(cfg.dsn.expose())?.options([
        ("statement_timeout", cfg.statement_timeout_ms.to_string()),
        ("search_path", cfg.search_path.join(",")),
    ]);
    let pool = PgPoolOptions::new()
        .min_connections(cfg.pool.min)
        .max_connections(cfg.pool.max)
        .acquire_timeout(Duration::from_millis(cfg.pool.acquire_timeout_ms))
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Applies every pending migration. Runs on its own connection with the
/// server's default search path, so sqlx's bookkeeping table stays in
/// `public` (the configured path starts with `core`, which the first
/// migration creates).
pub async fn migrate(cfg: &DatabaseConfig) -> Result<usize, DbError> {
    let options = PgConnectOptions::from_str(cfg.dsn.expose())?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    let migrator = sqlx::migrate!("./migrations");
    migrator.run(&pool).await?;
    pool.close().await;
    Ok(migrator.iter().count())
}
