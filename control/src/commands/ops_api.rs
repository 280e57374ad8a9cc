//! `ops request | approve | reject | status`: the ops API from the command
//! line. The bearer token comes from `$MLCORE_TOKEN` (never an argument, so it
//! stays out of shell history and process lists); `$MLCORE_TOTP_CODE`, when
//! set, is sent as the one-time code decisions need; `$MLCORE_CA_FILE`, when
//! set, is the PEM certificate (or CA) the API's HTTPS certificate must
//! chain to, instead of the public roots.

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
    let (status, text) = request(&call, vars)?;
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

/// Runs `call` with the token from `$MLCORE_TOKEN`: the status and body.
pub fn request(call: &ApiCall<'_>, vars: &dyn EnvSource) -> anyhow::Result<(reqwest::StatusCode, String)> {
    let token = vars
        .var("MLCORE_TOKEN")
        .context("set MLCORE_TOKEN to your bearer token")?;
    let url = format!("{}{}", call.url.trim_end_matches('/'), call.path);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut client = reqwest::Client::builder();
        if let Some(ca) = vars.var("MLCORE_CA_FILE") {
            let pem = std::fs::read(&ca).with_context(|| format!("reading MLCORE_CA_FILE {ca}"))?;
            let cert =
                reqwest::Certificate::from_pem(&pem).with_context(|| format!("MLCORE_CA_FILE {ca}"))?;
            client = client.tls_built_in_root_certs(false).add_root_certificate(cert);
        }
        let client = client.build()?;
        let req = match call.method {
            "GET" => client.get(&url),
            "PATCH" => client.patch(&url),
            _ => client.post(&url),
        };
        let mut req = req.bearer_auth(token);
        if let Some(code) = vars.var("MLCORE_TOTP_CODE") {
            req = req.header(crate::api::TOTP_HEADER, code);
        }
        let req = match &call.body {
            Some(b) => req.json(b),
            None => req,
        };
        let resp = req.send().await.with_context(|| format!("calling {url}"))?;
        let status = resp.status();
        Ok::<_, anyhow::Error>((status, resp.text().await?))
    })
}
