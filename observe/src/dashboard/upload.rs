//! The optional upload of a finished bundle: a command (argv, `{bundle}`
//! replaced by the bundle's folder) run without a shell, its exit status
//! checked, retried after a wait.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What the upload came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// Runs of the command.
    pub attempts: u32,
    /// `None` when it succeeded; otherwise the last failure.
    pub error: Option<String>,
}

/// Runs `argv` for `bundle` until it exits 0, at most `1 + retries` times.
pub fn run(argv: &[String], bundle: &Path, retries: u32, wait: Duration) -> Uploaded {
    let args: Vec<String> = argv
        .iter()
        .map(|a| a.replace("{bundle}", &bundle.display().to_string()))
        .collect();
    let mut last = String::from("no command");
    for attempt in 1..=retries + 1 {
        let Some((program, rest)) = args.split_first() else {
            break;
        };
        match Command::new(program).args(rest).output() {
            Ok(out) if out.status.success() => {
                return Uploaded {
                    attempts: attempt,
                    error: None,
                }
            }
            Ok(out) => {
                last = format!(
                    "`{program}` exited with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Err(e) => last = format!("`{program}` could not start: {e}"),
        }
        if attempt <= retries {
            std::thread::sleep(wait);
        }
    }
    Uploaded {
        attempts: retries + 1,
        error: Some(last),
    }
}
