//! `mlcore-host`: what this host does to latency. Reads only.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mlcore_host::{stalls, steal};

/// Host forensics for ml-assets-core: the idle setting, Redis co-location,
/// and the machine's noise (stalls and steal time per core).
#[derive(Debug, Parser)]
#[command(name = "mlcore-host", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// What to change on this host before serving (idle setting, where Redis may run).
    Advice {
        /// The Redis the daemon publishes to.
        #[arg(long, env = "MLCORE_REDIS_URL")]
        redis: Option<String>,
        /// The daemon's hot cores (`daemon.yaml` threads), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1")]
        hot_cores: Vec<usize>,
    },
    /// How much each core loses to stalls, and what the host took (steal).
    Noise {
        /// Seconds of probing per core.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut out = Vec::new();
    match cli.command {
        Command::Advice { redis, hot_cores } => {
            let mut conn = match &redis {
                Some(url) => Some(
                    redis::Client::open(url.as_str())
                        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
                        .with_context(|| "connecting to Redis")?,
                ),
                None => None,
            };
            let target = conn.as_mut().zip(redis.as_deref());
            let said = mlcore_host::advice(target, &hot_cores);
            if said.is_empty() {
                out.push("nothing to change".to_owned());
            }
            out.extend(said);
        }
        Command::Noise { seconds } => {
            anyhow::ensure!(
                seconds.is_finite() && (0.01..=600.0).contains(&seconds),
                "--seconds must be between 0.01 and 600, got {seconds}"
            );
            let before = steal::CpuTimes::read();
            for (core, s) in stalls::probe_cores(Duration::from_secs_f64(seconds)) {
                out.push(s.summary(core));
            }
            out.push(format!("host: {}", steal::describe(&steal::since(before))));
        }
    }
    #[allow(clippy::print_stdout)] // the report is the tool's output
    for line in out {
        println!("{line}");
    }
    Ok(())
}
