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
/// Exit code when the second factor is required and missing or wrong:
/// nothing was changed.
pub const EXIT_SECOND_FACTOR: i32 = 9;

/// The audit record of a break-glass mode change, done or refused.
fn break_glass_event(
    args: &SetModeArgs,
    mode: OpsMode,
    after: serde_json::Value,
    result: &str,
    request_id: String,
) -> crate::audit::NewEvent {
    crate::audit::NewEvent {
        at_ms: super::now_ms(),
        record_type: "ops_break_glass".into(),
        critical: true,
        actor: args.actor.clone(),
        action: format!("set_mode {mode}"),
        scope: args.strategy.clone().unwrap_or_else(|| "global".into()),
        before: serde_json::Value::Null,
        after,
        result: result.into(),
        request_id,
    }
}

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
    Guard::ensure(&mut conn, may_install, cfg.redis.contract.into())?;
    let guard = Guard::new(Keys::new(&cfg.redis.namespace), cfg.redis.stream_maxlen)
        .installing(may_install)
        .with_contract(cfg.redis.contract.into());
    let strategies: Vec<String> = match (&args.strategy, args.all) {
        (Some(s), false) => vec![s.clone()],
        (None, true) => cfg.universe.strategies.iter().map(|s| s.id.to_string()).collect(),
        _ => anyhow::bail!("give exactly one of --strategy or --all"),
    };
    let request_id = format!("cli-{}", super::now_ms());
    if cfg.control.second_factor.required {
        if let Err(why) = second_factor(&cfg, args, &guard, &mut conn, vars) {
            writeln!(out, "refused: {why}; nothing was changed")?;
            let after = serde_json::json!({"second_factor": why.to_string()});
            let refusal = break_glass_event(args, mode, after, "refused", request_id);
            if let Err(e) = append_audit(&cfg, refusal) {
                writeln!(out, "WARNING: the refusal is NOT in the audit log ({e})")?;
            }
            return Ok(EXIT_SECOND_FACTOR);
        }
    }
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
    let result = if code == 0 { "ok" } else { "conflict" };
    let event = break_glass_event(args, mode, serde_json::Value::Object(results), result, request_id);
    match append_audit(&cfg, event) {
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

/// Appends `event` to the audit log; why not, as text.
fn append_audit(
    cfg: &mlcore_config::AppConfig,
    event: crate::audit::NewEvent,
) -> Result<crate::audit::Event, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(async {
            let pool = crate::db::connect(&cfg.database)
                .await
                .map_err(|e| e.to_string())?;
            let appended = crate::audit::append(&pool, &cfg.storage.worm_root, event).await;
            pool.close().await;
            appended.map_err(|e| e.to_string())
        })
}

/// The break-glass second factor: `--actor` is a principal of
/// control.yaml with an enrolled TOTP secret (read from the variable its
/// reference names), `$MLCORE_TOTP_CODE` its current code, spent through
/// the guard as the API spends it: a code used here or there is not
/// accepted again.
fn second_factor(
    cfg: &mlcore_config::AppConfig,
    args: &SetModeArgs,
    guard: &Guard,
    conn: &mut RedisConn,
    vars: &dyn EnvSource,
) -> anyhow::Result<()> {
    use crate::second_factor::{SecondFactor, SecondFactorError};
    let principal = cfg
        .control
        .principals
        .iter()
        .find(|p| p.name == args.actor)
        .with_context(|| {
            format!(
                "`{}` is not a principal of control.yaml (second_factor.required)",
                args.actor
            )
        })?;
    let sf = SecondFactor::for_principal(true, principal, vars)?;
    let code = vars.var("MLCORE_TOTP_CODE");
    let Some(step) = sf.check(&principal.name, code.as_deref(), super::now_ms() / 1000)? else {
        return Ok(());
    };
    match guard.spend_code(conn, &principal.name, step)? {
        mlcore_contract::CodeSpent::Spent => Ok(()),
        mlcore_contract::CodeSpent::Replayed { .. } => Err(SecondFactorError::Replayed.into()),
    }
}
