//! Start-up checks: refuse to start rather than start half-configured.

use std::path::Path;

use mlcore_models::config::{self, AppConfig, EnvSource, Environment};
use mlcore_models::onnx::{graph, runtime};

/// What a successful preflight found.
#[derive(Debug)]
pub struct Preflight {
    /// The resolved configuration.
    pub config: AppConfig,
    /// The canary model's output for its fixed input (σ(0.5) ≈ 0.6225).
    pub canary_probability: f32,
}

/// Why the daemon refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// ONNX Runtime could not be loaded or failed to score.
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    /// The canary model could not be built or scored.
    #[error("canary model: {0}")]
    Canary(String),
}

/// Loads the configuration and proves ONNX Runtime scores a model.
pub fn run(config_dir: &Path, env: &str, vars: &dyn EnvSource) -> Result<Preflight, PreflightError> {
    let env: Environment = env.parse()?;
    let config = config::load(config_dir, env, vars)?;
    runtime::init(&config.storage.onnxruntime_library)?;
    let canary_probability = score_canary()?;
    Ok(Preflight {
        config,
        canary_probability,
    })
}

/// Builds a two-feature logistic model in memory and scores one row:
/// σ(1·0.25 + 1·0.25 + 0) = σ(0.5).
fn score_canary() -> Result<f32, PreflightError> {
    let bytes = graph::logistic_regression("canary", &[1.0, 1.0], 0.0)
        .map_err(|e| PreflightError::Canary(e.to_string()))?;
    let mut session = runtime::hot_path_session(&bytes)?;
    let input = ort::value::TensorRef::from_array_view(([1usize, 2], &[0.25f32, 0.25][..]))
        .map_err(|e| PreflightError::Canary(e.to_string()))?;
    let outputs = session
        .run(ort::inputs!["x" => input])
        .map_err(|e| PreflightError::Canary(e.to_string()))?;
    let (_, probs) = outputs["prob"]
        .try_extract_tensor::<f32>()
        .map_err(|e| PreflightError::Canary(e.to_string()))?;
    probs
        .first()
        .copied()
        .ok_or_else(|| PreflightError::Canary("empty output".into()))
}
