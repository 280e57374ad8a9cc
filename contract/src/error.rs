//! Contract errors.

/// Why a contract operation failed (refusals by the guard are not errors:
/// they are outcomes, see [`super::PublishOutcome`]).
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    /// The guard library is not loaded and could not be (re)loaded: nothing
    /// was written.
    #[error("the signal guard (Redis Function library {library}) is not loaded: {reason}")]
    GuardMissing {
        /// Library name.
        library: &'static str,
        /// What Redis said.
        reason: String,
    },
    /// The guard refused the input as malformed; nothing was written.
    #[error("the guard refused the input: {0}")]
    BadInput(String),
    /// Input refused before it was sent (same rules as the guard's).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Redis answered something the contract does not allow.
    #[error("unexpected reply from Redis: {0}")]
    Protocol(String),
    /// Connection or command failure.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}
