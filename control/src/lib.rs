//! `mlcore-control`: the sidecar control plane and the operator CLI.
//!
//! Domain (no HTTP in sight; each takes the [`services::Services`] it needs
//! and returns its own error type):
//! - [`ops`]: typed ops actions and scopes, mode changes through the guard,
//!   each strategy's state beside what its daemons report.
//! - [`approvals`]: requests that wait for a second principal.
//! - [`registry`]: the model registry and the Redis pointer it keeps;
//!   [`model_loads`]: what the daemons served and refused of it.
//! - [`retrain`]: runs of the retraining flow (`mlcore-retrain`) from
//!   the CLI, the API and the schedule, registered and announced.
//! - [`audit`]: the append-only, hash-chained audit log and its archive.
//! - [`alerts`]: Slack, PagerDuty and webhook delivery, raised in the
//!   background; [`monitor`]: the alerts the control plane raises itself.
//! - [`services`]: what the domain needs (configuration, PostgreSQL via
//!   [`db`], Redis via [`redis_link`], alerting, a clock).
//!
//! Transport and edges: [`api`] (axum: requests to calls, domain errors to
//! responses, one list for routes and the OpenAPI document), [`cli`] (the
//! command tree) and [`commands`] (what each command does).

pub mod alerts;
pub mod api;
pub mod approvals;
pub mod audit;
pub mod cli;
pub mod commands;
pub mod config_api;
pub mod config_changes;
pub mod db;
pub mod model_loads;
pub mod monitor;
pub mod observability;
pub mod ops;
pub mod redis_link;
pub mod registry;
pub mod retrain;
pub mod second_factor;
pub mod services;
