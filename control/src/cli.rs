//! The command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// ml-assets-core control plane.
#[derive(Debug, Parser)]
#[command(name = "mlcore-control", version, about)]
pub struct Cli {
    /// The `configs/` folder (holding `base/` and `envs/`).
    #[arg(long, global = true, env = "MLCORE_CONFIG_DIR", default_value = "configs")]
    pub config_dir: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// `config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate one environment and print the resolved tree (secrets redacted).
    /// Exit code 0 only when the configuration is valid.
    Check {
        /// Environment: dev, stg or prod.
        #[arg(long)]
        env: String,
        /// Print only the verdict, not the resolved tree.
        #[arg(long)]
        quiet: bool,
    },
}
