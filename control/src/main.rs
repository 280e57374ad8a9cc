//! `mlcore-control`: parse arguments, dispatch, exit with the command's code.

use clap::Parser;
use mlcore_config::ProcessEnv;
use mlcore_control::cli::{
    AuditCommand, Cli, Command, ConfigCommand, DataCommand, DbCommand, ModelsCommand, OpsCommand,
    RedisCommand, ResearchCommand,
};
use mlcore_control::commands;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
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

fn run(cli: &Cli) -> anyhow::Result<i32> {
    // Not locked for the whole command: `serve` runs for the life of the
    // process, and its worker threads log to stderr (a held lock would
    // block the first of them forever).
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let code = match &cli.command {
        Command::Config(ConfigCommand::Check { env, quiet, process }) => commands::config_check(
            &cli.config_dir,
            env,
            *quiet,
            *process,
            &ProcessEnv,
            &mut out,
            &mut err,
        )?,
        Command::Config(ConfigCommand::Init { env }) => {
            commands::config_init(&cli.config_dir, env, &ProcessEnv, &mut out, &mut err)?
        }
        Command::Config(cmd) => commands::config_change(cmd, &ProcessEnv, &mut out, &mut err)?,
        Command::Data(DataCommand::Synth(args)) => commands::synth(args, &mut out)?,
        Command::Models(ModelsCommand::Keygen { id, out: dir }) => {
            commands::models_keygen(id, dir, &mut out)?
        }
        Command::Models(ModelsCommand::Sign { artifact, key }) => {
            commands::models_sign(artifact, key, &mut out)?
        }
        Command::Models(ModelsCommand::Verify(args)) => {
            commands::models_verify(&cli.config_dir, args, &ProcessEnv, &mut out, &mut err)?
        }
        Command::Models(ModelsCommand::Inspect { artifact }) => commands::models_inspect(artifact, &mut out)?,
        Command::Models(registry) => match registry.api_call() {
            Some(call) => commands::ops_api(call, &ProcessEnv, &mut out, &mut err)?,
            None => anyhow::bail!("unhandled models subcommand"),
        },
        Command::Train(args) => commands::train(&cli.config_dir, args, &ProcessEnv, &mut out)?,
        Command::Ops(OpsCommand::SetMode(args)) => {
            commands::ops_set_mode(&cli.config_dir, args, &ProcessEnv, &mut out)?
        }
        Command::Ops(OpsCommand::Request {
            url,
            action,
            scope,
            reason,
        }) => {
            let body = serde_json::json!({"action": action, "scope": scope, "reason": reason});
            let call = commands::ApiCall {
                url,
                method: "POST",
                path: "/v1/ops/requests".into(),
                body: Some(body),
            };
            commands::ops_api(call, &ProcessEnv, &mut out, &mut err)?
        }
        Command::Ops(OpsCommand::Approve { url, id }) => {
            let call = commands::ApiCall {
                url,
                method: "POST",
                path: format!("/v1/ops/requests/{id}/approve"),
                body: None,
            };
            commands::ops_api(call, &ProcessEnv, &mut out, &mut err)?
        }
        Command::Ops(OpsCommand::Reject { url, id }) => {
            let call = commands::ApiCall {
                url,
                method: "POST",
                path: format!("/v1/ops/requests/{id}/reject"),
                body: None,
            };
            commands::ops_api(call, &ProcessEnv, &mut out, &mut err)?
        }
        Command::Ops(OpsCommand::Status { url }) => {
            let call = commands::ApiCall {
                url,
                method: "GET",
                path: "/v1/ops".into(),
                body: None,
            };
            commands::ops_api(call, &ProcessEnv, &mut out, &mut err)?
        }
        Command::Serve { env } => commands::serve(&cli.config_dir, env, &ProcessEnv, &mut out)?,
        Command::Redis(RedisCommand::InstallGuard { env, url_env }) => {
            commands::redis_install_guard(&cli.config_dir, env, url_env, &ProcessEnv, &mut out)?
        }
        Command::Redis(RedisCommand::Acl { env }) => {
            commands::redis_acl(&cli.config_dir, env, &ProcessEnv, &mut out)?
        }
        Command::Research(ResearchCommand::Backtest(args)) => {
            commands::research_backtest(&cli.config_dir, args, &ProcessEnv, &mut out)?
        }
        Command::Research(ResearchCommand::Theta(args)) => {
            commands::research_theta(&cli.config_dir, args, &ProcessEnv, &mut out)?
        }
        Command::Research(ResearchCommand::Cv(args)) => {
            commands::research_cv(&cli.config_dir, args, &ProcessEnv, &mut out)?
        }
        Command::Retrain(args) => commands::retrain(&cli.config_dir, args, &ProcessEnv, &mut out)?,
        Command::Observe(cmd) => commands::observe(&cli.config_dir, cmd, &ProcessEnv, &mut out, &mut err)?,
        Command::RunDaily(args) => {
            commands::run_daily(&cli.config_dir, args, &ProcessEnv, &mut out, &mut err)?
        }
        Command::Db(DbCommand::Migrate { env }) => {
            commands::db_migrate(&cli.config_dir, env, &ProcessEnv, &mut out)?
        }
        Command::Audit(AuditCommand::Retain { env }) => {
            commands::audit_retain(&cli.config_dir, env, &ProcessEnv, &mut out)?
        }
        Command::Audit(AuditCommand::Verify { env }) => {
            commands::audit_verify(&cli.config_dir, env, &ProcessEnv, &mut out, &mut err)?
        }
    };
    Ok(code)
}
