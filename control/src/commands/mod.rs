//! Command implementations. Each returns a process exit code and writes to
//! the writers passed in, so tests can capture output.

mod audit_db;
mod config;
mod config_changes;
mod data;
mod models;
mod observe;
mod ops;
mod ops_api;
mod redis;
mod research;
mod retrain;
mod train;

use std::path::Path;

use mlcore_config::{AppConfig, ConfigError, EnvSource, Environment, Process};

pub use self::audit_db::{audit_retain, audit_verify, db_migrate, serve, EXIT_TAMPERED};
pub use self::config::config_check;
pub use self::config_changes::{config_change, config_init, EXIT_APPLY_FAILED};
pub use self::data::synth;
pub use self::models::{models_inspect, models_keygen, models_sign, models_verify};
pub use self::observe::{observe, run_daily, EXIT_BUNDLE_BAD, EXIT_JOB_FAILED};
pub use self::ops::{ops_set_mode, EXIT_CONFLICT, EXIT_NOT_AUDITED, EXIT_SECOND_FACTOR};
pub use self::ops_api::{ops_api, ApiCall, EXIT_API_REFUSED};
pub use self::redis::{redis_acl, redis_install_guard};
pub use self::research::{research_backtest, research_cv, research_theta};
pub use self::retrain::{retrain, EXIT_FAILED, EXIT_REJECTED};
pub use self::train::train;

/// Exit code for an invalid configuration (distinct from usage errors, 2).
pub const EXIT_INVALID_CONFIG: i32 = 3;
/// Exit code for a refused artifact.
pub const EXIT_REFUSED: i32 = 4;

/// Loads an environment's configuration as `process` needs it (only its
/// secrets must be set).
pub fn load_config(
    config_dir: &Path,
    env: &str,
    vars: &dyn EnvSource,
    process: Process,
) -> Result<AppConfig, ConfigError> {
    let env: Environment = env.parse()?;
    // A deployed copy of the configuration (config change requests write
    // one) resolves relative paths against the checkout it belongs to.
    match vars.var("MLCORE_PROJECT_ROOT") {
        Some(root) => {
            let tree = mlcore_config::ConfigTree::read(config_dir)?;
            mlcore_config::load_tree(&tree, config_dir, Path::new(&root), env, vars, process)
        }
        None => mlcore_config::load_for(config_dir, env, vars, process),
    }
}

pub use crate::services::now_ms;
