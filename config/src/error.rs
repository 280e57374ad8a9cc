//! Configuration errors: every problem found, each with a stable code.
//!
//! Codes have the form `{DOMAIN}_{CATEGORY}_{CODE}` so that log searches and
//! runbooks can key on them; the display form always names the file and the key
//! path so an operator can go straight to the line to fix.

use std::fmt;
use std::path::PathBuf;

/// The stable machine code of one configuration problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigCode {
    /// The environment name is not one of `dev`, `stg`, `prod`.
    EnvUnknown,
    /// A required file (or the environment's folder) does not exist.
    FileMissing,
    /// A file exists but could not be read.
    FileUnreadable,
    /// A file in an environment folder has no counterpart in `base/`.
    FileUnknown,
    /// A file is not valid YAML.
    YamlInvalid,
    /// A required key is absent.
    KeyMissing,
    /// A key is not part of the schema.
    KeyUnknown,
    /// A value has the wrong type or an unknown variant.
    TypeInvalid,
    /// A `$VAR` secret reference names a variable that is not set.
    SecretUnset,
    /// A secret holds a literal value outside `dev`.
    SecretLiteral,
    /// A secret reference is malformed (for example `$` alone).
    SecretInvalid,
    /// A value is well-typed but violates a rule (range, cross-reference, ...).
    ValueInvalid,
}

impl ConfigCode {
    /// The code as it appears in logs and CLI output.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::EnvUnknown => "CONFIG_ENV_UNKNOWN",
            Self::FileMissing => "CONFIG_FILE_MISSING",
            Self::FileUnreadable => "CONFIG_FILE_UNREADABLE",
            Self::FileUnknown => "CONFIG_FILE_UNKNOWN",
            Self::YamlInvalid => "CONFIG_YAML_INVALID",
            Self::KeyMissing => "CONFIG_KEY_MISSING",
            Self::KeyUnknown => "CONFIG_KEY_UNKNOWN",
            Self::TypeInvalid => "CONFIG_TYPE_INVALID",
            Self::SecretUnset => "CONFIG_SECRET_UNSET",
            Self::SecretLiteral => "CONFIG_SECRET_LITERAL",
            Self::SecretInvalid => "CONFIG_SECRET_INVALID",
            Self::ValueInvalid => "CONFIG_VALUE_INVALID",
        }
    }
}

impl fmt::Display for ConfigCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem: what, where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Stable code.
    pub code: ConfigCode,
    /// The file to fix (the environment override when the key came from it).
    pub file: PathBuf,
    /// Dotted key path inside the file (`theta.theta1`, `strategies[0].symbols`);
    /// empty when the problem concerns the whole file.
    pub key: String,
    /// Human explanation.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.file.display())?;
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Loading failed; holds every problem found, not just the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// All problems, in file order.
    pub problems: Vec<ConfigProblem>,
}

impl ConfigError {
    /// Whether any problem carries `code`.
    pub fn has(&self, code: ConfigCode) -> bool {
        self.problems.iter().any(|p| p.code == code)
    }

    /// The first problem with `code`, if any.
    pub fn find(&self, code: ConfigCode) -> Option<&ConfigProblem> {
        self.problems.iter().find(|p| p.code == code)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration refused ({} problem", self.problems.len())?;
        if self.problems.len() != 1 {
            f.write_str("s")?;
        }
        f.write_str(")")?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}
