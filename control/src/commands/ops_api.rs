//! `ops request | approve | reject | status`: the ops API from the command
//! line. The bearer token comes from `$MLCORE_TOKEN` (never an argument, so it
//! stays out of shell history and process lists).

use std::io::Write;

use anyhow::Context;
use mlcore_config::EnvSource;

/// Exit code when the API refused (4xx/5xx); the body is printed.
pub const EXIT_API_REFUSED: i32 = 7;

pub use crate::cli::ApiCall;

/// Runs `call` with the token from `$MLCORE_TOKEN` and prints the JSON answer.
pub fn ops_api(
    call: ApiCall<'_>,
    vars: &dyn EnvSource,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<i32> {
    let token = vars
        .var("MLCORE_TOKEN")
        .context("set MLCORE_TOKEN to your bearer token")?;
    let url = format!("{}{}", call.url.trim_end_matches('/'), call.path);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, text) = rt.block_on(async {
        let client = reqwest::Client::new();
        let req = match call.method {
            "GET" => client.get(&url),
            _ => client.post(&url),
        };
        let req = req.bearer_auth(token);
        let req = match &call.body {
            Some(b) => req.json(b),
            None => req,
        };
        let resp = req.send().await.with_context(|| format!("calling {url}"))?;
        let status = resp.status();
        Ok::<_, anyhow::Error>((status, resp.text().await?))
    })?;
    let pretty = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(text);
    if status.is_success() {
        writeln!(out, "{pretty}")?;
        Ok(0)
    } else {
        writeln!(err, "HTTP {status}\n{pretty}")?;
        Ok(EXIT_API_REFUSED)
    }
}
