//! `mlcore-retrain`: retraining as a flow operators start, watch, resume
//! and trust (docs/retraining.md).
//!
//! `core_retrain_flow` runs the research crate's stages as eleven steps —
//! dataset gate → features → labels → validation (purged k-fold) →
//! training → export with parity →
//! θ search → backtest with stress → champion/challenger → sign →
//! register — each content-addressed in the [`store`]: its output folder
//! is keyed by the hash of its inputs, written atomically, reused when the
//! key matches and redone when it does not. A run's [`run::RunManifest`]
//! records every step; [`report`] turns a finished run into the files
//! people read; [`ledger`] keeps `runs/index.csv`; [`lock`] allows one run
//! per strategy at a time.
//!
//! No database, Redis or HTTP here: the control plane registers the
//! candidate ([`Registrar`]), announces the outcome and serves the runs.

pub mod columns;
mod flow;
pub mod ledger;
pub mod lock;
pub mod report;
pub mod run;
pub mod steps;
pub mod store;

pub use flow::{Flow, NoProgress, Planned, Progress, RegisterError, Registrar};
pub use steps::Unit;

use std::path::PathBuf;

/// The flow's steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// The dataset index's checksums and quarantine: the data-quality gate.
    Dataset,
    /// Feature rows at every decision (the daemon's feature engine).
    Features,
    /// Triple-barrier, adverse-excursion labels and the time split.
    Labels,
    /// Purged k-fold cross-validation of ai1 (folds in parallel).
    Validation,
    /// ai1, ai2, ai3 fitted and calibrated; test metrics.
    Train,
    /// ONNX export with the parity check, sealed as a candidate.
    Export,
    /// θ searched on the first half of the held-out window.
    Theta,
    /// The chosen θ backtested on the second half, with stress scenarios.
    Backtest,
    /// The candidate against the active model on that same half.
    Challenge,
    /// The adopted candidate sealed and signed with the release key.
    Sign,
    /// Registered as a candidate in the model registry.
    Register,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Step; 11] = [
        Step::Dataset,
        Step::Features,
        Step::Labels,
        Step::Validation,
        Step::Train,
        Step::Export,
        Step::Theta,
        Step::Backtest,
        Step::Challenge,
        Step::Sign,
        Step::Register,
    ];

    /// Its name (folder, manifest, CLI).
    pub fn name(self) -> &'static str {
        match self {
            Step::Dataset => "dataset",
            Step::Features => "features",
            Step::Labels => "labels",
            Step::Validation => "validation",
            Step::Train => "train",
            Step::Export => "export",
            Step::Theta => "theta",
            Step::Backtest => "backtest",
            Step::Challenge => "challenge",
            Step::Sign => "sign",
            Step::Register => "register",
        }
    }

    /// The step called `name`.
    pub fn from_name(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Why the flow (or one of its steps) failed.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// Filesystem error.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The step store or a run manifest.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// A column file.
    #[error(transparent)]
    Column(#[from] columns::ColumnError),
    /// The run's lock.
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    /// The dataset.
    #[error(transparent)]
    Dataset(#[from] mlcore_research::dataset::DatasetError),
    /// The data-quality gate said no.
    #[error("data-quality gate: {0}")]
    Gate(String),
    /// Training or export.
    #[error(transparent)]
    Train(#[from] mlcore_research::train::TrainError),
    /// The θ search or the challenge.
    #[error(transparent)]
    HeldOut(#[from] mlcore_research::heldout::HeldOutError),
    /// The backtest.
    #[error(transparent)]
    Backtest(#[from] mlcore_research::backtest::BacktestError),
    /// An artifact's files.
    #[error(transparent)]
    Files(#[from] mlcore_models::artifact::files::FilesError),
    /// A key file.
    #[error(transparent)]
    Key(#[from] mlcore_models::artifact::KeyFileError),
    /// Verification.
    #[error(transparent)]
    Verify(#[from] mlcore_models::artifact::VerifyError),
    /// Sealing or signing.
    #[error("signing: {0}")]
    Sign(String),
    /// An input that cannot be used (a missing strategy, a bad file).
    #[error("{0}")]
    Input(String),
    /// Registration (the control plane's answer).
    #[error("registering: {0}")]
    Register(String, #[source] flow::RegisterError),
    /// The report.
    #[error("report: {0}")]
    Report(String),
    /// No such run.
    #[error("no run `{0}`")]
    NoRun(String),
}
