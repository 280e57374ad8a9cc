//! `mlcore-control`: parse arguments, dispatch, exit with the command's code.

use clap::Parser;
use mlcore_control::cli::{Cli, Command, ConfigCommand};
use mlcore_control::commands;
use mlcore_models::config::ProcessEnv;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Config(ConfigCommand::Check { env, quiet }) => commands::config_check(
            &cli.config_dir,
            &env,
            quiet,
            &ProcessEnv,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        )?,
    };
    std::process::exit(code);
}
