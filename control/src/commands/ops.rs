//! `ops set-mode`: a direct compare-and-set of a strategy's mode through the
//! guard — the break-glass path for an operator at the Redis host (the API
//! with RBAC, approvals and audit is `mlcore-control serve`).

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use mlcore_models::config::EnvSource;
use mlcore_models::contract::{Guard, Keys, ModeChange, OpsMode, RedisConn, SetModeOutcome};

use super::load_config;
use crate::cli::SetModeArgs;

/// Exit code when another change won the compare-and-set.
pub const EXIT_CONFLICT: i32 = 5;

/// Sets the mode of one strategy, or of every strategy with `--all`.
pub fn ops_set_mode(
    config_dir: &Path,
    args: &SetModeArgs,
    vars: &dyn EnvSource,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let cfg = load_config(config_dir, &args.env, vars)?;
    let mode: OpsMode = args.mode.parse().map_err(anyhow::Error::msg)?;
    let mut conn = RedisConn::connect(&cfg.redis).context("connecting to Redis")?;
    Guard::load(&mut conn)?;
    let guard = Guard::new(Keys::new(&cfg.redis.namespace), cfg.redis.stream_maxlen);
    let strategies: Vec<String> = match (&args.strategy, args.all) {
        (Some(s), false) => vec![s.clone()],
        (None, true) => cfg.universe.strategies.iter().map(|s| s.id.clone()).collect(),
        _ => anyhow::bail!("give exactly one of --strategy or --all"),
    };
    let request_id = format!("cli-{}", super::now_ms());
    let mut code = 0;
    for s in &strategies {
        let current = guard.read_mode(&mut conn, s)?;
        let change = ModeChange {
            strategy: s,
            expected_version: current.version,
            mode,
            reason: &args.reason,
            actor: &args.actor,
            request_id: &request_id,
        };
        match guard.set_mode(&mut conn, &change)? {
            SetModeOutcome::Applied { version } => {
                writeln!(out, "{s}: {} -> {mode} (version {version})", current.mode)?
            }
            SetModeOutcome::Conflict { current_version } => {
                writeln!(
                    out,
                    "{s}: conflict, another change made version {current_version}; nothing written"
                )?;
                code = EXIT_CONFLICT;
            }
        }
    }
    Ok(code)
}
