//! Contract v3's publish call as a Redis module (`libmlcore_guard_module.so`).
//!
//! `guard_v3.lua` keeps every guarantee of the contract inside Redis, but a
//! 32-signal decision costs Redis about 5× a plain `HSET` of the same bytes
//! (`docs/performance.md`, "Guard v3"): the function call itself, decoding
//! 128 numbers in Lua and every `redis.call` from Lua. This module does the
//! same checks in native code and the same reads and writes through
//! `RedisModule_Call`: the same keys, the same replies, the same refusals
//! (a differential test sends both the same calls and compares replies and
//! every key written), so consumers, the Lua library's other functions
//! (`mlcore_read_v3`, `mlcore_set_mode_v3`, …) and the migration are
//! unchanged. The daemon uses it when `redis.yaml` says
//! `guard_engine: module`; the Lua function stays the default, because a
//! managed Redis cannot load modules (`docs/redis-contract.md`, "The guard
//! as a module").
//!
//! - [`publish`]: the call's checks and verdicts, pure Rust.
//! - [`lua`]: numbers printed as Lua prints them, for identical refusals.
//! - `module`: the C ABI: entry point, commands, reads and writes.

pub mod lua;
mod module;
pub mod publish;

pub use module::{CONTRACT, INFO, PUBLISH, REVISION};
