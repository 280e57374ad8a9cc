//! What can go wrong, each with a stable code for `automation_runs.log`'s
//! `error_code`.

use std::path::PathBuf;

/// An observability job's failure.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An input file is not what it should be.
    #[error("{path}: {message}")]
    Input {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the line or field.
        message: String,
    },
    /// A document does not conform to its JSON Schema.
    #[error("{document} does not conform to {schema}: {}", .errors.join("; "))]
    Schema {
        /// What was validated.
        document: String,
        /// The schema's file name.
        schema: &'static str,
        /// Each violation: where (a JSON pointer) and what.
        errors: Vec<String>,
    },
    /// A dataset row is out of its range.
    #[error("dataset {dataset}, row {row}: {message}")]
    Range {
        /// The dataset.
        dataset: &'static str,
        /// Row index.
        row: usize,
        /// Which field and why.
        message: String,
    },
    /// A bundle's files do not match its manifest.
    #[error("bundle {path}: {}", .problems.join("; "))]
    Bundle {
        /// The bundle's folder.
        path: PathBuf,
        /// Each file that is missing or differs.
        problems: Vec<String>,
    },
    /// A document could not be put in canonical form.
    #[error("canonical JSON: {0}")]
    Encode(String),
    /// Nothing to restore from.
    #[error("no bundle in {0} verifies; nothing to restore")]
    NothingToRestore(PathBuf),
}

impl ObserveError {
    /// The stable code written as `error_code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Io { .. } => "OBS_IO",
            Self::Input { .. } => "OBS_INPUT",
            Self::Schema { .. } => "OBS_SCHEMA",
            Self::Range { .. } => "OBS_RANGE",
            Self::Bundle { .. } => "OBS_BUNDLE",
            Self::Encode(_) => "OBS_ENCODE",
            Self::NothingToRestore(_) => "OBS_NOTHING_TO_RESTORE",
        }
    }

    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn input(path: &std::path::Path, message: impl Into<String>) -> Self {
        Self::Input {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}
