//! Ops modes as the daemon applies them: a table of atomics written by the
//! ops watcher (pub/sub events within milliseconds, plus a full
//! reconciliation every `reconcile_interval_ms`) and read lock-free by the
//! publisher. Until the first read succeeds every strategy is `halted`.
//! The same subscription wakes the model loader on `model_activated`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlcore_config::RedisConfig;
use mlcore_contract::{Guard, OpsMode, RedisConn};

/// Mode and version per strategy.
#[derive(Debug)]
pub struct OpsTable {
    modes: Vec<AtomicU8>,
    versions: Vec<AtomicU64>,
}

fn to_u8(m: OpsMode) -> u8 {
    match m {
        OpsMode::Active => 0,
        OpsMode::ReduceOnly => 1,
        OpsMode::Halted => 2,
        OpsMode::Flatten => 3,
    }
}

fn from_u8(v: u8) -> OpsMode {
    match v {
        0 => OpsMode::Active,
        1 => OpsMode::ReduceOnly,
        3 => OpsMode::Flatten,
        _ => OpsMode::Halted,
    }
}

impl OpsTable {
    /// All `halted` (fail closed).
    pub fn new(strategies: usize) -> Self {
        Self {
            modes: (0..strategies)
                .map(|_| AtomicU8::new(to_u8(OpsMode::Halted)))
                .collect(),
            versions: (0..strategies).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The mode of strategy `s`.
    #[inline]
    pub fn mode(&self, s: usize) -> OpsMode {
        self.modes
            .get(s)
            .map_or(OpsMode::Halted, |m| from_u8(m.load(Ordering::Acquire)))
    }

    /// The version of strategy `s`'s mode.
    #[inline]
    pub fn version(&self, s: usize) -> u64 {
        self.versions.get(s).map_or(0, |v| v.load(Ordering::Acquire))
    }

    /// Forces `halted`: the ops state is absent (e.g. Redis restarted empty),
    /// whatever version was seen before.
    pub(crate) fn force_halted(&self, s: usize) {
        if let (Some(m), Some(v)) = (self.modes.get(s), self.versions.get(s)) {
            m.store(to_u8(OpsMode::Halted), Ordering::Release);
            v.store(0, Ordering::Release);
        }
    }

    /// Sets strategy `s`'s mode at `version` (never back to an older one).
    /// The watcher's; tests set modes directly.
    pub fn set(&self, s: usize, mode: OpsMode, version: u64) {
        // Never go back to an older version (a late reconciliation read).
        if let (Some(m), Some(v)) = (self.modes.get(s), self.versions.get(s)) {
            if version >= v.load(Ordering::Acquire) {
                v.store(version, Ordering::Release);
                m.store(to_u8(mode), Ordering::Release);
            }
        }
    }
}

/// Whom the watcher wakes on which event.
#[derive(Debug)]
pub struct Wakes {
    /// The model loader, on `model_activated`.
    pub models: crossbeam_channel::Sender<()>,
    /// The configuration watch, on `config_applied`.
    pub config: crossbeam_channel::Sender<()>,
}

/// Runs the watcher until `shutdown`.
pub fn watch(
    cfg: RedisConfig,
    guard: Guard,
    strategies: Vec<String>,
    table: Arc<OpsTable>,
    wakes: Wakes,
    shutdown: Arc<AtomicBool>,
) {
    let reconcile = Duration::from_millis(cfg.reconcile_interval_ms.max(10));
    let channel = guard.keys().events();
    let mut backoff = Duration::from_millis(cfg.reconnect.initial_ms.max(1));
    while !shutdown.load(Ordering::Relaxed) {
        let session = (|| -> redis::RedisResult<()> {
            let mut reader = RedisConn::connect(&(&cfg).into())?;
            let client = redis::Client::open(cfg.url.expose())?;
            let mut sub_conn = client.get_connection()?;
            let mut pubsub = sub_conn.as_pubsub();
            pubsub.subscribe(&channel)?;
            pubsub.set_read_timeout(Some(Duration::from_millis(50)))?;
            let mut next_reconcile = Instant::now();
            backoff = Duration::from_millis(cfg.reconnect.initial_ms.max(1));
            while !shutdown.load(Ordering::Relaxed) {
                if Instant::now() >= next_reconcile {
                    for (s, id) in strategies.iter().enumerate() {
                        match guard.read_mode(&mut reader, id) {
                            Ok(state) if state.fail_closed => table.force_halted(s),
                            Ok(state) => table.set(s, state.mode, state.version),
                            Err(e) => {
                                return Err(redis::RedisError::from((
                                    redis::ErrorKind::Io,
                                    "reconcile",
                                    e.to_string(),
                                )))
                            }
                        }
                    }
                    next_reconcile = Instant::now() + reconcile;
                }
                match pubsub.get_message() {
                    Ok(msg) => {
                        let payload: String = msg.get_payload().unwrap_or_default();
                        let Ok(ev) = serde_json::from_str::<serde_json::Value>(&payload) else {
                            continue;
                        };
                        if ev["type"] == "model_activated" {
                            // The loader re-reads the pointers; one pending wake is enough.
                            let _ = wakes.models.try_send(());
                            continue;
                        }
                        if ev["type"] == "config_applied" {
                            // Only "look": the folder and its record are the truth.
                            let _ = wakes.config.try_send(());
                            continue;
                        }
                        if ev["type"] != "ops_mode" {
                            continue;
                        }
                        // The event only says "look": the mode is read from
                        // the ops hash the guard wrote, so a forged event
                        // (anyone who may publish on the channel) changes
                        // nothing.
                        let Some((s, id)) = ev["strategy"]
                            .as_str()
                            .and_then(|id| strategies.iter().position(|x| x == id).map(|s| (s, id)))
                        else {
                            continue;
                        };
                        match guard.read_mode(&mut reader, id) {
                            Ok(state) if state.fail_closed => table.force_halted(s),
                            Ok(state) => {
                                table.set(s, state.mode, state.version);
                                tracing::info!(strategy = id, mode = %state.mode, version = state.version, "ops mode changed");
                            }
                            Err(e) => {
                                return Err(redis::RedisError::from((
                                    redis::ErrorKind::Io,
                                    "reading the ops state",
                                    e.to_string(),
                                )))
                            }
                        }
                    }
                    Err(e) if e.is_timeout() => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })();
        if let Err(e) = session {
            tracing::warn!(error = %e, backoff_ms = (backoff.as_millis() as u64), "ops watcher lost Redis; retrying");
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(cfg.reconnect.max_ms.max(1)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_never_go_back_a_version_but_absent_state_halts() {
        let t = OpsTable::new(1);
        assert_eq!(t.mode(0), OpsMode::Halted, "fail closed before the first read");
        t.set(0, OpsMode::Active, 3);
        t.set(0, OpsMode::Flatten, 2); // a late, older read
        assert_eq!((t.mode(0), t.version(0)), (OpsMode::Active, 3));
        t.force_halted(0); // Redis came back empty
        assert_eq!(t.mode(0), OpsMode::Halted);
        t.set(0, OpsMode::Active, 1);
        assert_eq!(t.mode(0), OpsMode::Active);
    }
}
