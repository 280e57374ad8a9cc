//! Configuration taken while running: θ per strategy, caps, lot sizes, the
//! cost table, the signal TTL and the timer cadence change between two
//! decisions, without a restart.
//!
//! The decision tables (a [`Universe`]) are one immutable snapshot behind an
//! `ArcSwap`. Ingress takes the current snapshot when it prepares a decision
//! and the job carries it to the worker and the publisher, so one decision
//! is made with one configuration from its features to its `valid_until`,
//! never half of each. A new snapshot is built, checked and swapped on the
//! side runtime ([`ConfigWatch`]); the hot threads only clone an `Arc`.
//! Replaced snapshots are kept here until no job holds them, so the last
//! reference is never dropped (freed) on a hot thread.
//!
//! What cannot change live (the symbols themselves, threads, Redis, …) is
//! reported in the heartbeat as waiting for a restart and stays as it was
//! started. A configuration the daemon cannot take (it does not load here,
//! e.g. a `$VAR` unset in this process's environment, or its deployment
//! does not match its record) is refused whole: the old one stays, the
//! heartbeat says why, and the control plane reverts the change.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use mlcore_config::change::{self, Proc};
use mlcore_config::deploy::Record;
use mlcore_config::{AppConfig, ConfigTree, Environment, Process, ProcessEnv};
use mlcore_contract::heartbeat::{ConfigRefusal, ConfigReport};
use mlcore_decision::universe::Universe;

use crate::clock::now_ms;

/// The version a folder without a deployment record runs as.
pub const LOCAL_VERSION: &str = "local";

/// The decision tables in force, swapped whole.
#[derive(Debug)]
pub struct Live {
    current: ArcSwap<Universe>,
    timer_ms: AtomicU64,
    held: Mutex<Vec<Arc<Universe>>>,
}

impl Live {
    /// Starts with the tables built from the configuration the daemon
    /// started with.
    pub fn new(universe: Arc<Universe>, timer_ms: u64) -> Self {
        Self {
            current: ArcSwap::new(universe),
            timer_ms: AtomicU64::new(timer_ms),
            held: Mutex::new(Vec::new()),
        }
    }

    /// The tables to decide with (an `Arc` clone: no allocation, no lock).
    #[inline]
    pub fn snapshot(&self) -> Arc<Universe> {
        self.current.load_full()
    }

    /// The timer mode's period, ms.
    #[inline]
    pub fn timer_ms(&self) -> u64 {
        self.timer_ms.load(Ordering::Relaxed)
    }

    /// Puts new tables in force; the old ones are held until no decision
    /// uses them. Side runtime only.
    pub fn swap(&self, universe: Arc<Universe>, timer_ms: u64) {
        let old = self.current.swap(universe);
        self.timer_ms.store(timer_ms, Ordering::Relaxed);
        if let Ok(mut held) = self.held.lock() {
            held.push(old);
        }
    }

    /// Frees replaced tables no job holds any more. Side runtime only.
    pub fn sweep(&self) {
        if let Ok(mut held) = self.held.lock() {
            held.retain(|u| Arc::strong_count(u) > 1);
        }
    }
}

/// Where the configuration comes from while running.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The `configs/` folder the daemon started from.
    pub config_dir: PathBuf,
    /// What relative paths resolve against.
    pub project_root: PathBuf,
    /// The environment.
    pub env: Environment,
    /// The files the daemon started with (read once, by the preflight).
    pub started: ConfigTree,
}

/// Watches the deployed folder and takes what it can of each new version.
#[derive(Debug)]
pub struct ConfigWatch {
    source: ConfigSource,
    started: AppConfig,
    started_tree: ConfigTree,
    live: Arc<Live>,
    report: Arc<ArcSwap<ConfigReport>>,
    seen: Option<String>,
    taken: Option<AppConfig>,
}

impl ConfigWatch {
    /// A watch over `source`, which `started` was loaded from.
    pub fn new(source: ConfigSource, started: AppConfig, live: Arc<Live>) -> Self {
        let tree = source.started.clone();
        let version = mlcore_config::deploy::read(&source.config_dir)
            .ok()
            .flatten()
            .filter(|d| d.files == tree.hashes())
            .map_or_else(|| LOCAL_VERSION.to_owned(), |d| d.version);
        let report = ConfigReport {
            version: version.clone(),
            since_ms: now_ms(),
            restart_required: Vec::new(),
            refused: None,
        };
        Self {
            source,
            started,
            started_tree: tree,
            live,
            report: Arc::new(ArcSwap::from_pointee(report)),
            seen: Some(version),
            taken: None,
        }
    }

    /// Whether the folder is a deployment (it has a record): then what the
    /// daemon runs changes only through [`ConfigWatch::check`].
    pub fn deployed(&self) -> bool {
        self.report.load().version != LOCAL_VERSION
    }

    /// The whole configuration of the last version taken (its `trust.yaml`
    /// included), if one was taken since start.
    pub fn taken(&self) -> Option<&AppConfig> {
        self.taken.as_ref()
    }

    /// What the heartbeat reports.
    pub fn report(&self) -> Arc<ArcSwap<ConfigReport>> {
        Arc::clone(&self.report)
    }

    /// Looks at the folder; takes (or refuses) a new deployment when there
    /// is one. Whether there was one: the heartbeat then goes out at once.
    pub fn check(&mut self) -> bool {
        self.live.sweep();
        let deployed = match mlcore_config::deploy::read(&self.source.config_dir) {
            Ok(Some(d)) => d,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "config deployment unreadable; keeping the current configuration");
                return false;
            }
        };
        if self.seen.as_deref() == Some(deployed.version.as_str()) {
            return false;
        }
        self.seen = Some(deployed.version.clone());
        let started = std::time::Instant::now();
        // A reload is background work: whatever shares the side core
        // (Redis, on a small host) runs first.
        let _idle = Background::enter();
        let outcome = self.take(&deployed);
        drop(_idle);
        let took_us = started.elapsed().as_micros() as u64;
        match outcome {
            Ok((version, restart, cfg)) => {
                self.taken = Some(cfg);
                self.seen = Some(version.clone());
                let deployed = Record { version, ..deployed };
                tracing::info!(
                    version = %deployed.version,
                    restart_required = restart.len(),
                    took_us,
                    "configuration taken"
                );
                for key in &restart {
                    tracing::warn!(version = %deployed.version, key = %key, "configuration key needs a restart; running with the old value");
                }
                self.report.store(Arc::new(ConfigReport {
                    version: deployed.version,
                    since_ms: now_ms(),
                    restart_required: restart,
                    refused: None,
                }));
            }
            Err(reason) => {
                tracing::error!(version = %deployed.version, reason = %reason, "configuration refused; keeping the current one");
                let current = self.report.load();
                self.report.store(Arc::new(ConfigReport {
                    refused: Some(ConfigRefusal {
                        version: deployed.version,
                        reason,
                        at_ms: now_ms(),
                    }),
                    ..ConfigReport::clone(&current)
                }));
            }
        }
        true
    }

    /// Reads a consistent snapshot of the deployment, loads it as this
    /// daemon would at start, and swaps in what may change live. Returns
    /// the keys that wait for a restart.
    fn take(&self, deployed: &Record) -> Result<(String, Vec<String>, AppConfig), String> {
        let dir = &self.source.config_dir;
        // The deployer writes the files, then the record: files that do not
        // match the record yet are a deployment in progress.
        // A newer deployment that landed meanwhile is the one taken.
        let (tree, record) = mlcore_config::deploy::snapshot(dir, Duration::from_millis(500))?;
        let version = record.map_or_else(|| deployed.version.clone(), |r| r.version);
        let cfg = mlcore_config::load_tree(
            &tree,
            dir,
            &self.source.project_root,
            self.source.env,
            &ProcessEnv,
            Process::Daemon,
        )
        .map_err(|e| e.to_string())?;
        let restart: Vec<String> = change::diff(&self.started_tree, &tree, self.source.env)
            .into_iter()
            .filter(|c| c.needs_restart(Proc::Daemon))
            .map(|c| c.key_in_file())
            .collect();
        let taken = with_live_keys(&self.started, &cfg);
        let universe = Universe::from_config(&taken);
        let old = self.live.snapshot();
        if universe.strategies.len() != old.strategies.len()
            || universe
                .strategies
                .iter()
                .zip(&old.strategies)
                .any(|(a, b)| a.symbols != b.symbols)
        {
            // `with_live_keys` keeps the started universe's shape; this
            // would be a bug, refused rather than run.
            return Err("the live tables changed shape".into());
        }
        self.live
            .swap(Arc::new(universe), taken.daemon.decision.timer_interval_ms.max(1));
        Ok((version, restart, cfg))
    }
}

/// The calling thread under `SCHED_IDLE` until dropped, then back to the
/// normal policy.
struct Background;

impl Background {
    fn enter() -> Option<Self> {
        use thread_priority::{
            set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy, ThreadPriority,
            ThreadSchedulePolicy,
        };
        set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        )
        .ok()
        .map(|()| Self)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        use thread_priority::{
            set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy, ThreadPriority,
            ThreadSchedulePolicy,
        };
        let _ = set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
        );
    }
}

/// The configuration the daemon started with, with every key that can
/// change live taken from `new`.
pub fn with_live_keys(started: &AppConfig, new: &AppConfig) -> AppConfig {
    let mut out = started.clone();
    let (p, np) = (&mut out.core_policy, &new.core_policy);
    p.theta.theta1 = np.theta.theta1;
    p.theta.theta2 = np.theta.theta2;
    p.theta.per_strategy.clone_from(&np.theta.per_strategy);
    p.risk = np.risk.clone();
    p.signal = np.signal.clone();
    p.sizing.target_annual_vol = np.sizing.target_annual_vol;
    p.sizing.periods_per_year = np.sizing.periods_per_year;
    p.sizing.use_ai3 = np.sizing.use_ai3;
    out.cost_table.symbols.clone_from(&new.cost_table.symbols);
    out.daemon.decision.timer_interval_ms = new.daemon.decision.timer_interval_ms;
    for s in &mut out.universe.strategies {
        let Some(ns) = new.universe.strategies.iter().find(|x| x.id == s.id) else {
            continue;
        };
        for sym in &mut s.symbols {
            let Some(n) = ns.symbols.iter().find(|x| x.symbol == sym.symbol) else {
                continue;
            };
            sym.lot_size = n.lot_size;
            sym.min_qty = n.min_qty;
            sym.max_weight = n.max_weight;
            sym.notional_per_unit_weight = n.notional_per_unit_weight;
            if let (
                mlcore_config::BetaSource::Static { value },
                mlcore_config::BetaSource::Static { value: new_value },
            ) = (&mut sym.beta, &n.beta)
            {
                *value = *new_value;
            }
        }
    }
    out
}
