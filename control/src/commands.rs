//! Command implementations. Each returns a process exit code; output goes to
//! the writers passed in so tests can capture it.

use std::io::Write;
use std::path::Path;

use mlcore_models::config::{self, EnvSource, Environment};

/// Exit code for an invalid configuration (distinct from usage errors, 2).
pub const EXIT_INVALID_CONFIG: i32 = 3;

/// `config check`: validates `env` and prints the redacted tree.
pub fn config_check(
    config_dir: &Path,
    env: &str,
    quiet: bool,
    vars: &dyn EnvSource,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<i32> {
    let loaded = env
        .parse::<Environment>()
        .and_then(|e| config::load(config_dir, e, vars));
    match loaded {
        Ok(cfg) => {
            writeln!(
                out,
                "# configuration valid: env={} dir={}",
                cfg.environment,
                config_dir.display()
            )?;
            if !quiet {
                out.write_all(cfg.to_redacted_yaml().as_bytes())?;
            }
            Ok(0)
        }
        Err(e) => {
            writeln!(err, "{e}")?;
            Ok(EXIT_INVALID_CONFIG)
        }
    }
}
