//! `redis install-guard` and `redis acl`: the deployment steps that put the
//! guard library into Redis and give each process a least-privilege user
//! (`mlcore_contract::acl`), so neither the daemon nor the control plane
//! needs a Redis user that may load functions.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use mlcore_config::{EnvSource, Process, Secret};
use mlcore_contract::guard::{LIBRARY, REVISION, VERSION};
use mlcore_contract::{acl, Guard, RedisConn};

use super::load_config;

/// Loads (or upgrades) the guard library, then checks it answers with this
/// build's version. Connects as `url_env`'s URL when that variable is set
/// (a user that may `FUNCTION LOAD`, e.g. `mlcore-guard-installer`), else
/// as `redis.yaml`'s.
pub fn redis_install_guard(
    config_dir: &Path,
    env: &str,
    url_env: &str,
    vars: &dyn EnvSource,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let mut cfg = load_config(config_dir, env, vars, Process::BreakGlass)?.redis;
    let who = match vars.var(url_env) {
        Some(url) => {
            cfg.url = Secret::literal(&url);
            format!("${url_env}")
        }
        None => "redis.yaml's url".to_owned(),
    };
    let mut conn =
        RedisConn::connect(&(&cfg).into()).with_context(|| format!("connecting to Redis as {who}"))?;
    Guard::load(&mut conn).with_context(|| format!("installing {LIBRARY} as {who}"))?;
    writeln!(
        out,
        "{LIBRARY} version {VERSION} revision {REVISION} installed and answering (as {who})"
    )?;
    Ok(0)
}

/// Prints the ACL file of the environment's namespace.
pub fn redis_acl(
    config_dir: &Path,
    env: &str,
    vars: &dyn EnvSource,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let cfg = load_config(config_dir, env, vars, Process::Offline)?;
    write!(
        out,
        "{}",
        acl::acl_file_for(&cfg.redis.namespace, cfg.redis.guard_engine.into())
    )?;
    Ok(0)
}
