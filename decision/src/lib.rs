//! `mlcore-decision`: from model outputs to target positions.
//!
//! The daemon decides with this crate and the backtester replays with it,
//! so a backtest and live trading run the same code.
//!
//! - [`portfolio`]: θ gate → volatility-target sizing → cost check →
//!   β-neutral portfolio → gross cap → lot rounding, allocation-free over
//!   reusable buffers ([`Scratch`]).
//! - [`params`]: the policy and per-symbol parameters resolved from the
//!   configuration (`core_policy.yaml`, `universe.yaml`, `cost_table.yaml`).
//! - [`universe`]: the configuration resolved once into indexed tables
//!   (strategies, symbols, rolling-β windows, wire-id routes).
//! - [`prepare`]: a trigger's inputs from the feature engine, and a
//!   model's scores into them — the one place both the daemon and the
//!   backtester get them from.

pub mod params;
pub mod portfolio;
pub mod prepare;
pub mod universe;

pub use params::{policy, symbol_params};
pub use portfolio::{decide, FlatReason, Policy, Scratch, Summary, SymbolInput, SymbolParams, Target};
pub use prepare::{apply_scores, prepare};
