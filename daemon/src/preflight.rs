//! Start-up checks: refuse to start rather than start half-configured.

use std::path::Path;

use mlcore_config::{self as config, AppConfig, EnvSource, Environment};
use mlcore_models::runtime;

/// What a successful preflight found.
#[derive(Debug)]
pub struct Preflight {
    /// The resolved configuration.
    pub config: AppConfig,
    /// The files it was loaded from (what a live change is compared with).
    pub tree: config::ConfigTree,
    /// The canary model's output for its fixed input (σ(0.5) ≈ 0.6225).
    pub canary_probability: f32,
}

/// Why the daemon refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// ONNX Runtime could not be loaded or failed to score the canary.
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    /// A deployed folder whose files do not match its record.
    #[error("{0}")]
    Deployment(String),
}

/// Loads the configuration and proves ONNX Runtime scores a model.
/// Relative paths in it resolve against `project_root`.
pub fn run(
    config_dir: &Path,
    project_root: &Path,
    env: &str,
    vars: &dyn EnvSource,
) -> Result<Preflight, PreflightError> {
    let env: Environment = env.parse()?;
    // A deployed folder only once its files match its record.
    let (tree, _) = config::deploy::snapshot(config_dir, std::time::Duration::from_secs(2))
        .map_err(PreflightError::Deployment)?;
    let config = config::load_tree(
        &tree,
        config_dir,
        project_root,
        env,
        vars,
        config::Process::Daemon,
    )?;
    runtime::init(&config.storage.onnxruntime_library)?;
    let canary_probability = runtime::score_canary()?;
    Ok(Preflight {
        config,
        tree,
        canary_probability,
    })
}

/// What `mlcore-host` advises about this host for this configuration: the
/// idle setting, and whether the configured Redis (when it answers and is
/// on this host) may run on the daemon's hot cores. Advice, never a
/// refusal: a Redis that does not answer is `run`'s problem, not `check`'s.
pub fn host_advice(config: &AppConfig) -> Vec<String> {
    let t = &config.daemon.threads;
    let hot: Vec<usize> = std::iter::once(t.ingress_core)
        .chain(t.worker_cores.iter().copied())
        .chain(std::iter::once(t.publisher_core))
        .collect();
    let url = config.redis.url.expose();
    let mut conn = redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(std::time::Duration::from_millis(500)))
        .ok();
    mlcore_host::advice(conn.as_mut().map(|c| (c, url)), &hot)
}
