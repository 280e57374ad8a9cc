//! `config check`.

use std::io::Write;
use std::path::Path;

use mlcore_config::{EnvSource, Process};

use super::{load_config, EXIT_INVALID_CONFIG};

/// Validates `env` as `process` loads it and prints the redacted tree.
pub fn config_check(
    config_dir: &Path,
    env: &str,
    quiet: bool,
    process: Process,
    vars: &dyn EnvSource,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<i32> {
    match load_config(config_dir, env, vars, process) {
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
