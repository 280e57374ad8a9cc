//! `ops set-mode`: a direct compare-and-set of a strategy's mode through the
//! guard — the break-glass path for an operator at the Redis host (the API
//! with RBAC and approvals is `mlcore-control serve`). No approval, but never
//! silent: each use is written to the audit log as `ops_break_glass`; when
//! PostgreSQL cannot take it, the change stands (break-glass must work when
//! the control plane's database is down) and the command says so and exits
//! with [`EXIT_NOT_AUDITED`].

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use mlcore_config::EnvSource;
use mlcore_contract::{Guard, Keys, ModeChange, OpsMode, RedisConn, SetModeOutcome};

use super::load_config;
use crate::cli::SetModeArgs;

/// Exit code when another change won the compare-and-set.
pub const EXIT_CONFLICT: i32 = 5;
/// Exit code when the change applied but could not be audited.
pub const EXIT_NOT_AUDITED: i32 = 8;

/// Sets the mode of one strategy, or of every strategy with `--all`.
pub fn ops_set_mode(
    config_dir: &Path,
    args: &SetModeArgs,
    vars: &dyn EnvSource,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let cfg = load_config(config_dir, &args.env, vars, mlcore_config::Process::BreakGlass)?;
    let mode: OpsMode = args.mode.parse().map_err(anyhow::Error::msg)?;
    let mut conn = RedisConn::connect(&(&cfg.redis).into()).context("connecting to Redis")?;
    let may_install = cfg.redis.guard_install.may_install();
    Guard::ensure(&mut conn, may_install)?;
    let guard = Guard::new(Keys::new(&cfg.redis.namespace), cfg.redis.stream_maxlen).installing(may_install);
    let strategies: Vec<String> = match (&args.strategy, args.all) {
        (Some(s), false) => vec![s.clone()],
        (None, true) => cfg.universe.strategies.iter().map(|s| s.id.to_string()).collect(),
        _ => anyhow::bail!("give exactly one of --strategy or --all"),
    };
    let request_id = format!("cli-{}", super::now_ms());
    let mut code = 0;
    let mut results = serde_json::Map::new();
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
                results.insert(
                    s.clone(),
                    serde_json::json!({"from": current.mode.as_str(), "to": mode.as_str(), "version": version}),
                );
                writeln!(out, "{s}: {} -> {mode} (version {version})", current.mode)?
            }
            SetModeOutcome::Conflict { current_version } => {
                results.insert(s.clone(), serde_json::json!({"conflict": current_version}));
                writeln!(
                    out,
                    "{s}: conflict, another change made version {current_version}; nothing written"
                )?;
                code = EXIT_CONFLICT;
            }
        }
    }
    let scope = args.strategy.clone().unwrap_or_else(|| "global".into());
    let event = crate::audit::NewEvent {
        at_ms: super::now_ms(),
        record_type: "ops_break_glass".into(),
        critical: true,
        actor: args.actor.clone(),
        action: format!("set_mode {mode}"),
        scope,
        before: serde_json::Value::Null,
        after: serde_json::Value::Object(results),
        result: if code == 0 { "ok".into() } else { "conflict".into() },
        request_id,
    };
    let audited = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let pool = crate::db::connect(&cfg.database)
                .await
                .map_err(|e| e.to_string())?;
            let appended = crate::audit::append(&pool, &cfg.storage.worm_root, event).await;
            pool.close().await;
            appended.map_err(|e| e.to_string())
        });
    match audited {
        Ok(e) => writeln!(out, "audited as event {}", e.seq)?,
        Err(why) => {
            writeln!(
                out,
                "WARNING: the change stands but is NOT in the audit log ({why}); record it by hand"
            )?;
            if code == 0 {
                code = EXIT_NOT_AUDITED;
            }
        }
    }
    Ok(code)
}
