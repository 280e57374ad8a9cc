//! `mlcore-control`: the sidecar control plane and the operator CLI.
//!
//! - [`cli`]: the command tree (`config check`, ...), parsed with clap.
//! - [`commands`]: what each command does; `main.rs` only parses and calls.

pub mod alerts;
pub mod api;
pub mod audit;
pub mod cli;
pub mod commands;
pub mod db;
pub mod monitor;
pub mod registry;

/// One structured JSON log line on stderr.
pub fn log_line(level: &str, msg: &str, fields: &[(&str, serde_json::Value)]) {
    use std::io::Write;
    let mut obj = serde_json::Map::new();
    obj.insert("ts_ms".into(), commands::now_ms().into());
    obj.insert("level".into(), level.into());
    obj.insert("msg".into(), msg.into());
    for (k, v) in fields {
        obj.insert((*k).to_owned(), v.clone());
    }
    let _ = writeln!(std::io::stderr().lock(), "{}", serde_json::Value::Object(obj));
}
