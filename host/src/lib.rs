//! `mlcore-host`: what this machine does to latency, apart from the
//! product. The daemon's `check` command prints [`advice`]; the load
//! generator records the machine's noise beside its tail figures; the
//! `mlcore-host` tool prints both on its own.
//!
//! - [`idle`]: whether idle vCPUs halt at once (KVM's haltpoll window).
//! - [`colocation`]: whether a Redis on this host may run on the daemon's
//!   hot cores.
//! - [`stalls`]: how much of each core a spinning thread loses (the
//!   machine's noise).
//! - [`steal`]: what the hypervisor took from each core during a window.
//! - [`bursts`]: whether a run's slow decisions came scattered or in bursts.
//!
//! None of it changes a setting: it reads `/proc` and `/sys` and says what
//! an operator could change (`deployments/host/README.md`).

pub mod bursts;
pub mod colocation;
pub mod idle;
pub mod stalls;
pub mod steal;

use std::path::Path;

/// What to tell the operator about this host before serving: the idle
/// setting, and — when `redis` is given (a connection to the Redis at
/// `redis_url`) — whether that Redis may run on the `hot` cores. One line
/// per piece of advice; empty when there is nothing to say.
pub fn advice(redis: Option<(&mut redis::Connection, &str)>, hot: &[usize]) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(said) = idle::IdleReading::of_this_host().and_then(|r| r.advice()) {
        out.push(said);
    }
    if let Some((conn, url)) = redis {
        if colocation::is_local(url) {
            let said = colocation::redis_cores(conn, Path::new("/proc"))
                .and_then(|(pid, cores)| colocation::advice(pid, &cores, hot));
            out.extend(said);
        }
    }
    out
}
