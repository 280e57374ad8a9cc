//! The optional upload of a finished bundle: a command (argv, `{bundle}`
//! replaced by the bundle's folder) run without a shell, its exit status
//! checked, killed past its timeout, retried after a wait.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the upload came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// Runs of the command.
    pub attempts: u32,
    /// `None` when it succeeded; otherwise the last failure.
    pub error: Option<String>,
}

/// How the upload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Runs after the first failure.
    pub retries: u32,
    /// Wait before each retry.
    pub wait: Duration,
    /// A run still going after this is killed (and counts as failed).
    pub timeout: Duration,
}

/// One run: `Ok` when it exited 0, else why not.
fn once(program: &str, args: &[String], timeout: Duration) -> Result<(), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // A group of its own: a timeout kills what it started too (a
        // shell's children), not only the command.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("`{program}` could not start: {e}"))?;
    // Read stderr beside the wait, all of it (a reader that stopped would
    // kill a chatty command with SIGPIPE), keeping the first 64 KiB.
    let mut pipe = child.stderr.take();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        if let Some(p) = pipe.as_mut() {
            let _ = p.by_ref().take(64 * 1024).read_to_end(&mut kept);
            let _ = std::io::copy(p, &mut std::io::sink());
        }
        let _ = tx.send(String::from_utf8_lossy(&kept).into_owned());
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if started.elapsed() >= timeout => {
                let group = i32::try_from(child.id())
                    .ok()
                    .and_then(rustix::process::Pid::from_raw);
                match group {
                    Some(g) => {
                        let _ = rustix::process::kill_process_group(g, rustix::process::Signal::KILL);
                    }
                    None => {
                        let _ = child.kill();
                    }
                }
                let _ = child.wait();
                break Err(format!(
                    "`{program}` still running after {} ms: killed",
                    timeout.as_millis()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => break Err(format!("`{program}`: {e}")),
        }
    };
    // A background child still holding stderr must not hold the upload.
    let stderr = rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
    match status? {
        s if s.success() => Ok(()),
        s => Err(format!("`{program}` exited with {s}: {}", stderr.trim())),
    }
}

/// Runs `argv` for `bundle` until it exits 0, at most `1 + retries` times.
pub fn run(argv: &[String], bundle: &Path, policy: Policy) -> Uploaded {
    let args: Vec<String> = argv
        .iter()
        .map(|a| a.replace("{bundle}", &bundle.display().to_string()))
        .collect();
    let Some((program, rest)) = args.split_first() else {
        return Uploaded {
            attempts: 0,
            error: Some("no upload command".into()),
        };
    };
    let mut last = String::new();
    for attempt in 1..=policy.retries + 1 {
        match once(program, rest, policy.timeout) {
            Ok(()) => {
                return Uploaded {
                    attempts: attempt,
                    error: None,
                }
            }
            Err(e) => last = e,
        }
        if attempt <= policy.retries {
            std::thread::sleep(policy.wait);
        }
    }
    Uploaded {
        attempts: policy.retries + 1,
        error: Some(last),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hung_upload_is_killed_and_a_failing_one_says_why() {
        let policy = Policy {
            retries: 1,
            wait: Duration::from_millis(1),
            timeout: Duration::from_millis(200),
        };
        let argv = |s: &str| vec!["sh".to_owned(), "-c".to_owned(), s.to_owned()];
        let started = Instant::now();
        let hung = run(&argv("sleep 30"), Path::new("/tmp"), policy);
        assert_eq!(hung.attempts, 2);
        assert!(hung.error.unwrap().contains("killed"));
        assert!(started.elapsed() < Duration::from_secs(5));
        let failing = run(
            &argv("echo 'no route to storage' >&2; exit 4"),
            Path::new("/tmp"),
            policy,
        );
        let e = failing.error.unwrap();
        assert!(e.contains("no route to storage") && e.contains('4'), "{e}");
        assert_eq!(
            run(&argv("test -d {bundle}"), Path::new("/tmp"), policy).error,
            None
        );
    }
}
