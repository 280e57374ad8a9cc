//! Test fixtures shared across crates (feature `test-util`).
//!
//! Tests share one Redis and one PostgreSQL with each other and with later
//! runs, so every test takes a unique namespace and cleans up after itself.
//! `scripts/services.sh` exports where the servers are; when a variable is
//! unset the standard local address is used, and a server that does not
//! answer fails the test loudly (never a silent skip).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Redis URL for tests: `$MLCORE_TEST_REDIS_URL`, else the local default.
pub fn redis_url() -> String {
    std::env::var("MLCORE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

/// PostgreSQL DSN for tests: `$MLCORE_TEST_PG_DSN`, else the local default.
pub fn pg_dsn() -> String {
    std::env::var("MLCORE_TEST_PG_DSN")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The workspace root (the folder holding `configs/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The ONNX Runtime library: `$ORT_DYLIB_PATH`, else where
/// `scripts/setup-ort.sh` puts it.
pub fn ort_library() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".ort/lib/libonnxruntime.so.1.31.1"))
}

/// A name no other test (in this or another process) uses: prefix, pid,
/// nanoseconds and a counter.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}_{}_{}_{n}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

/// Copies a folder tree (a private `configs/` to mutate, say).
pub fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), dest)?;
        }
    }
    Ok(())
}
