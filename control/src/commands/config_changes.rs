//! `config init | propose | diff | submit | approve | reject | cancel |
//! apply | rollback | list | show | status`: config change requests from
//! the command line. Everything but `init` goes through the API (as
//! `$MLCORE_TOKEN`, like `ops request`); `init` prepares the repository and
//! the deployed folder on this machine.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use mlcore_config::{ConfigTree, EnvSource, Process};
use serde_json::{json, Value};

use super::ops_api::{request, ApiCall, EXIT_API_REFUSED};
use super::{load_config, now_ms, EXIT_INVALID_CONFIG};
use crate::cli::ConfigCommand;
use crate::config_changes::{deploy, Store};

/// Exit code when an apply failed (refused or not taken; reverted).
pub const EXIT_APPLY_FAILED: i32 = 11;

/// `config init`: the repository from `config_dir`, and the deployed folder
/// when it is empty.
pub fn config_init(
    config_dir: &Path,
    env: &str,
    vars: &dyn EnvSource,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<i32> {
    let cfg = match load_config(config_dir, env, vars, Process::Offline) {
        Ok(c) => c,
        Err(e) => {
            writeln!(err, "{e}")?;
            return Ok(EXIT_INVALID_CONFIG);
        }
    };
    let cc = &cfg.control.config_changes;
    let deployed = ConfigTree::read(&cc.deploy_dir).unwrap_or_default();
    if deployed.files().next().is_none() {
        let tree = ConfigTree::read(config_dir)?;
        tree.write(&cc.deploy_dir)
            .with_context(|| format!("writing {}", cc.deploy_dir.display()))?;
        writeln!(
            out,
            "deployed {} into {}",
            config_dir.display(),
            cc.deploy_dir.display()
        )?;
    }
    let store = Store::new(&cc.repository, &cc.branch);
    let created = store.open_or_seed(&cc.deploy_dir)?;
    let head = store.head()?;
    if deploy::read(&cc.deploy_dir).is_none() {
        let tree = store.tree_at(&head)?;
        deploy::write(&cc.deploy_dir, &tree, &head, "init", now_ms())
            .with_context(|| format!("writing {}", cc.deploy_dir.display()))?;
    }
    writeln!(
        out,
        "{} {} (branch {} at {head}); processes read {}",
        if created { "created" } else { "found" },
        cc.repository.display(),
        cc.branch,
        cc.deploy_dir.display()
    )?;
    Ok(0)
}

/// Parses `FILE:KEY=VALUE`.
fn parse_set(s: &str) -> anyhow::Result<Value> {
    let (file, rest) = s
        .split_once(':')
        .with_context(|| format!("`{s}`: expected FILE:KEY=VALUE"))?;
    let (key, value) = rest
        .split_once('=')
        .with_context(|| format!("`{s}`: expected FILE:KEY=VALUE"))?;
    Ok(json!({"file": file, "key": key, "value": value}))
}

/// Parses `FILE=LOCAL_PATH` and reads the local file.
fn parse_file(s: &str) -> anyhow::Result<Value> {
    let (file, local) = s
        .split_once('=')
        .with_context(|| format!("`{s}`: expected FILE=LOCAL_PATH"))?;
    let content = std::fs::read_to_string(local).with_context(|| format!("reading {local}"))?;
    Ok(json!({"file": file, "content": content}))
}

/// One API call; the parsed answer, or the refusal printed and its code.
fn call(
    url: &str,
    method: &str,
    path: String,
    body: Option<Value>,
    vars: &dyn EnvSource,
    err: &mut dyn Write,
) -> anyhow::Result<Result<Value, i32>> {
    let (status, text) = request(
        &ApiCall {
            url,
            method,
            path,
            body,
        },
        vars,
    )?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status.is_success() {
        Ok(Ok(value))
    } else {
        writeln!(err, "HTTP {status}\n{}", serde_json::to_string_pretty(&value)?)?;
        Ok(Err(EXIT_API_REFUSED))
    }
}

fn print(out: &mut dyn Write, v: &Value) -> anyhow::Result<()> {
    writeln!(out, "{}", serde_json::to_string_pretty(v)?)?;
    Ok(())
}

/// The diff as lines a person reads.
fn render_diff(v: &Value, out: &mut dyn Write) -> anyhow::Result<()> {
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    writeln!(
        out,
        "{} against {}: risk {}",
        s("id"),
        s("against").get(..12).unwrap_or_default(),
        s("risk")
    )?;
    for r in v["risk_reasons"].as_array().into_iter().flatten() {
        writeln!(out, "  ! {}", r.as_str().unwrap_or_default())?;
    }
    for c in v["changes"].as_array().into_iter().flatten() {
        let show = |k: &str| c[k].as_str().map_or_else(|| "(absent)".to_owned(), str::to_owned);
        let effects: Vec<String> = c["effects"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                format!(
                    "{} {}",
                    e["process"].as_str().unwrap_or_default(),
                    e["apply"].as_str().unwrap_or_default()
                )
            })
            .collect();
        writeln!(
            out,
            "  [{}] {}: {}: {} -> {}   ({})",
            c["env"].as_str().unwrap_or_default(),
            c["file"].as_str().unwrap_or_default(),
            c["key"].as_str().unwrap_or_default(),
            show("old"),
            show("new"),
            effects.join(", ")
        )?;
    }
    let list = |k: &str| {
        v[k].as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(
        out,
        "live: {}; restart: {}",
        or_none(&list("live")),
        or_none(&list("restart"))
    )?;
    Ok(())
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "none"
    } else {
        s
    }
}

/// Runs one API subcommand of `config`.
pub fn config_change(
    cmd: &ConfigCommand,
    vars: &dyn EnvSource,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<i32> {
    let base = "/v1/configs/changes";
    let result = match cmd {
        ConfigCommand::Check { .. } | ConfigCommand::Init { .. } => anyhow::bail!("not an API command"),
        ConfigCommand::Propose {
            url,
            title,
            sets,
            files,
            deletes,
            submit,
        } => {
            let mut edits = Vec::new();
            for s in sets {
                edits.push(parse_set(s)?);
            }
            for f in files {
                edits.push(parse_file(f)?);
            }
            for d in deletes {
                edits.push(json!({"file": d, "delete": true}));
            }
            let created = match call(
                url,
                "POST",
                base.into(),
                Some(json!({"title": title, "edits": edits})),
                vars,
                err,
            )? {
                Ok(v) => v,
                Err(code) => return Ok(code),
            };
            if *submit {
                let id = created["id"].as_str().unwrap_or_default().to_owned();
                call(url, "POST", format!("{base}/{id}/submit"), None, vars, err)?
            } else {
                Ok(created)
            }
        }
        ConfigCommand::Diff { url, id, json } => {
            let v = match call(url, "GET", format!("{base}/{id}/diff"), None, vars, err)? {
                Ok(v) => v,
                Err(code) => return Ok(code),
            };
            if *json {
                print(out, &v)?;
            } else {
                render_diff(&v, out)?;
            }
            return Ok(0);
        }
        ConfigCommand::Submit { url, id } => {
            call(url, "POST", format!("{base}/{id}/submit"), None, vars, err)?
        }
        ConfigCommand::Approve { url, id } => {
            call(url, "POST", format!("{base}/{id}/approve"), None, vars, err)?
        }
        ConfigCommand::Reject { url, id, reason } => call(
            url,
            "POST",
            format!("{base}/{id}/reject"),
            Some(json!({"reason": reason})),
            vars,
            err,
        )?,
        ConfigCommand::Cancel { url, id, reason } => call(
            url,
            "POST",
            format!("{base}/{id}/cancel"),
            Some(json!({"reason": reason})),
            vars,
            err,
        )?,
        ConfigCommand::Apply { url, id } => {
            let cr = match call(url, "GET", format!("{base}/{id}"), None, vars, err)? {
                Ok(v) => v,
                Err(code) => return Ok(code),
            };
            if cr["state"] == "approved" {
                if let Err(code) = call(url, "POST", format!("{base}/{id}/merge"), None, vars, err)? {
                    return Ok(code);
                }
            }
            let applied = match call(url, "POST", format!("{base}/{id}/apply"), None, vars, err)? {
                Ok(v) => v,
                Err(code) => return Ok(code),
            };
            print(out, &applied)?;
            let state = applied["request"]["state"].as_str().unwrap_or_default();
            return Ok(if state == "applied" { 0 } else { EXIT_APPLY_FAILED });
        }
        ConfigCommand::Rollback { url, id } => {
            call(url, "POST", format!("{base}/{id}/rollback"), None, vars, err)?
        }
        ConfigCommand::List { url, state } => match call(url, "GET", base.into(), None, vars, err)? {
            Ok(mut v) => {
                if let (Some(s), Some(list)) = (state, v["changes"].as_array_mut()) {
                    list.retain(|c| c["state"] == s.as_str());
                }
                Ok(v)
            }
            Err(code) => Err(code),
        },
        ConfigCommand::Show { url, id } => call(url, "GET", format!("{base}/{id}"), None, vars, err)?,
        ConfigCommand::Status { url } => call(url, "GET", "/v1/configs/status".into(), None, vars, err)?,
    };
    match result {
        Ok(v) => {
            print(out, &v)?;
            Ok(0)
        }
        Err(code) => Ok(code),
    }
}
