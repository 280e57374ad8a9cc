//! Loading ONNX Runtime.
//!
//! `ort` is built with `load-dynamic`: the shared library is opened at run time
//! from the path in `storage.yaml` (`onnxruntime_library`). The environment is
//! created once per process and kept for its lifetime, because `ort` only holds
//! a weak reference to it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

/// Why ONNX Runtime could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The library file does not exist.
    #[error("ONNX Runtime library not found at {path}: run scripts/setup-ort.sh (it extracts libonnxruntime.so.1.31.1 from the onnxruntime wheel)")]
    LibraryMissing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The library exists but could not be loaded.
    #[error("ONNX Runtime library at {path} could not be loaded: {reason}")]
    LibraryLoad {
        /// The file.
        path: PathBuf,
        /// What the loader said.
        reason: String,
    },
    /// The process already loaded ONNX Runtime from another path.
    #[error("ONNX Runtime is already loaded from {loaded}, cannot load {requested}")]
    AlreadyLoaded {
        /// The path in use.
        loaded: PathBuf,
        /// The path asked for.
        requested: PathBuf,
    },
    /// An error from ONNX Runtime itself.
    #[error("ONNX Runtime: {0}")]
    Ort(String),
}

impl From<ort::Error> for RuntimeError {
    fn from(e: ort::Error) -> Self {
        Self::Ort(e.to_string())
    }
}

struct Loaded {
    path: PathBuf,
    // Held for the life of the process: `ort` keeps only a weak reference.
    env: ort::environment::Environment,
}

static RUNTIME: OnceLock<Result<Loaded, String>> = OnceLock::new();

/// Loads ONNX Runtime from `library` (idempotent for the same path).
pub fn init(library: &Path) -> Result<(), RuntimeError> {
    if !library.is_file() {
        return Err(RuntimeError::LibraryMissing {
            path: library.to_owned(),
        });
    }
    let loaded = RUNTIME.get_or_init(|| {
        let env = ort::init_from(library)
            .map_err(|e| e.to_string())?
            .with_name("mlcore")
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Loaded {
            path: library.to_owned(),
            env,
        })
    });
    match loaded {
        Ok(l) if l.path == library => Ok(()),
        Ok(l) => Err(RuntimeError::AlreadyLoaded {
            loaded: l.path.clone(),
            requested: library.to_owned(),
        }),
        Err(reason) => Err(RuntimeError::LibraryLoad {
            path: library.to_owned(),
            reason: reason.clone(),
        }),
    }
}

/// Builds a session for the hot path: one intra-op thread with spinning off
/// (the caller owns the thread and its core), full graph optimisation.
pub fn hot_path_session(model: &[u8]) -> Result<Session, RuntimeError> {
    let Some(Ok(loaded)) = RUNTIME.get() else {
        return Err(RuntimeError::Ort(
            "ONNX Runtime is not loaded: call runtime::init first".into(),
        ));
    };
    let build = || -> ort::Result<Session> {
        Session::builder(&loaded.env)?
            .with_intra_threads(1)?
            .with_inter_threads(1)?
            .with_intra_op_spinning(false)?
            .with_optimization_level(GraphOptimizationLevel::Level3)?
            .commit_from_memory(model)
    };
    Ok(build()?)
}

/// The canary model: a two-feature logistic regression `σ(x₀ + x₁)` as
/// ONNX bytes (input `x`, output `prob`). Written once by
/// `mlcore-research`'s graph builder (its test `the_canary_is_what_the_graph_builder_writes`
/// keeps the two equal), so a process that scores models need not link
/// the ONNX writer or protobuf to prove ONNX Runtime works.
pub const CANARY_ONNX: &[u8] = include_bytes!("canary.onnx");

/// Scores the canary's fixed row `[0.25, 0.25]`: `σ(0.5) ≈ 0.6225` when
/// ONNX Runtime (loaded by [`init`]) works.
pub fn score_canary() -> Result<f32, RuntimeError> {
    let mut session = hot_path_session(CANARY_ONNX)?;
    let input = ort::value::TensorRef::from_array_view(([1usize, 2], &[0.25f32, 0.25][..]))?;
    let outputs = session.run(ort::inputs!["x" => input])?;
    let (_, probs) = outputs["prob"].try_extract_tensor::<f32>()?;
    probs
        .first()
        .copied()
        .ok_or_else(|| RuntimeError::Ort("the canary scored no row".into()))
}
