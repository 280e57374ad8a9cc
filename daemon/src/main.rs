//! `mlcore-daemon`: parse arguments, run, exit.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mlcore_config::ProcessEnv;

/// ml-assets-core inference daemon.
#[derive(Debug, Parser)]
#[command(name = "mlcore-daemon", version, about)]
struct Cli {
    /// The `configs/` folder.
    #[arg(long, global = true, env = "MLCORE_CONFIG_DIR", default_value = "configs")]
    config_dir: PathBuf,
    /// What relative paths in the configuration resolve against (default:
    /// the folder holding the `configs/` folder). Set it when the daemon
    /// reads a deployed copy of the configuration elsewhere.
    #[arg(long, global = true, env = "MLCORE_PROJECT_ROOT")]
    project_root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the configuration, load ONNX Runtime and score a canary model.
    Check {
        /// Environment: dev, stg or prod.
        #[arg(long)]
        env: String,
    },
    /// Run the daemon until SIGTERM or SIGINT, then stop cleanly: stop
    /// accepting, finish what is in flight, write the final heartbeat, exit 0.
    Run {
        /// Environment: dev, stg or prod.
        #[arg(long)]
        env: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line, no backtrace.
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {e:#}");
            }
            std::process::ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let project_root = cli.project_root.clone().unwrap_or_else(|| {
        cli.config_dir
            .parent()
            .map_or_else(|| PathBuf::from("."), PathBuf::from)
    });
    match cli.command {
        Command::Check { env } => {
            let pf = mlcore_daemon::preflight::run(&cli.config_dir, &project_root, &env, &ProcessEnv)
                .with_context(|| format!("preflight for env {env}"))?;
            #[allow(clippy::print_stdout)] // the command's report is its output
            {
                println!(
                    "preflight ok: env={} strategies={} onnxruntime={} canary_prob={:.6}",
                    pf.config.environment,
                    pf.config.universe.strategies.len(),
                    pf.config.storage.onnxruntime_library.display(),
                    pf.canary_probability
                );
                for line in mlcore_daemon::preflight::host_advice(&pf.config) {
                    println!("advice: {line}");
                }
            }
        }
        Command::Run { env } => {
            let pf = mlcore_daemon::preflight::run(&cli.config_dir, &project_root, &env, &ProcessEnv)
                .with_context(|| format!("preflight for env {env}"))?;
            let source = mlcore_daemon::live::ConfigSource {
                config_dir: cli.config_dir.clone(),
                project_root: project_root.clone(),
                env: pf.config.environment,
                started: pf.tree.clone(),
            };
            let _logging = mlcore_telemetry::logging::init(pf.config.metrics.log_level.as_str())
                .context("setting up logging")?;
            // Handled from before the start: a stop while models warm up
            // is a clean stop too.
            let shutdown = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::flag::register(signal, std::sync::Arc::clone(&shutdown))
                    .context("handling SIGTERM and SIGINT")?;
            }
            let running = mlcore_daemon::run::start(pf.config, Some(source), shutdown)
                .context("starting the daemon")?;
            #[allow(clippy::print_stdout)] // tells scripts where to connect
            {
                println!(
                    "listening ingress={} http={}",
                    running.ingress_addr, running.http_addr
                );
            }
            running.wait();
        }
    }
    Ok(())
}
