//! Logs: one JSON object per line on stderr, through `tracing`.
//!
//! Each line carries `timestamp`, `level`, `target`, the event's fields
//! (flattened) and the fields of the span it happened in. The writer is a
//! background thread (`tracing-appender`), so a slow stderr never blocks
//! the thread that logs; lines still queued are flushed when the
//! [`Logging`] guard is dropped, at exit.

use tracing_subscriber::EnvFilter;

/// Keeps the background writer alive; drop it last (it flushes).
#[derive(Debug)]
pub struct Logging {
    _writer: tracing_appender::non_blocking::WorkerGuard,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The level (from the configuration or `RUST_LOG`) is not a filter.
    #[error("log level `{directive}` is not a valid filter: {reason}")]
    Filter {
        /// What was given.
        directive: String,
        /// What the parser said.
        reason: String,
    },
    /// A global subscriber was already installed.
    #[error("logging was already initialised: {0}")]
    Installed(String),
}

/// Installs the JSON subscriber. `RUST_LOG`, when set, wins over
/// `default_level` (the configuration's), so an operator can turn on
/// `sqlx=debug` without editing config files.
pub fn init(default_level: &str) -> Result<Logging, LoggingError> {
    let directive = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default_level.to_owned());
    let filter = EnvFilter::builder()
        .parse(&directive)
        .map_err(|e| LoggingError::Filter {
            directive: directive.clone(),
            reason: e.to_string(),
        })?;
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true)
        .with_env_filter(filter)
        .with_writer(writer)
        .try_init()
        .map_err(|e| LoggingError::Installed(e.to_string()))?;
    Ok(Logging { _writer: guard })
}
