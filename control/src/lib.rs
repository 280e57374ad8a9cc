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
