//! Model loading, off the hot threads: find the artifact each strategy
//! should run, verify it (signature, hashes, feature schema, expiry,
//! rollback against the persisted highest accepted version), build one
//! scorer per worker, warm them up, hand them to the workers, then persist
//! what was accepted. A refused or failing artifact leaves the current model
//! serving and is counted, logged and announced on `ns:events` with its
//! reason.
//!
//! Which artifact: the registry's pointer in Redis (`ns:{S}:model`, set by
//! the control plane on an approved activation or rollback) when one exists —
//! exactly that version and manifest, with the rollback authorisation it
//! carries. Without a pointer (no control plane yet, or a standalone setup)
//! the highest verified `models_root/<strategy>/v<N>/`. Once a strategy has
//! followed a pointer it never falls back to the folder scan, even while
//! Redis is unreachable: an unapproved file must not go live because Redis
//! blinked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use crossbeam_channel::Receiver;
use mlcore_config::{RedisConfig, ScoringConfig};
use mlcore_contract::{model, Keys, ModelPointer, ModelRefusal, RedisConn};
use mlcore_models::artifact::{self, ArtifactFiles, RollbackAuthorization, SharedTrust, VerifyContext};
use mlcore_models::scoring::{HeadBackend, ModelScorer};

use crate::clock::now_ms;
use crate::job::ModelMeta;
use crate::mailbox::Mailbox;
use crate::stats::Counters;
use crate::worker::ModelUpdate;
use mlcore_decision::universe::Universe;

/// Warm-up runs of each head of a new model before workers switch to it.
const WARM_UP_RUNS: usize = 20;
/// Sleep before each slice of loading a model (each head's session build,
/// each head's warm-up).
const LOAD_PAUSE: std::time::Duration = std::time::Duration::from_micros(500);

/// Active model per strategy, for heartbeats and metrics.
pub type ActiveModels = ArcSwap<BTreeMap<String, Arc<ModelMeta>>>;

/// What a strategy has accepted, persisted across restarts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accepted {
    /// Highest version ever accepted: nothing at or below it loads without
    /// a rollback authorisation.
    pub highest: u64,
    /// The version activated last.
    pub last_version: u64,
    /// sha256 of the `manifest.json` activated last: after a restart that
    /// exact artifact may load again, whatever its version (it was verified,
    /// with its authorisation, when it was accepted).
    pub last_manifest_sha256: String,
    /// Ids (`request_id`) of the rollback authorisations this daemon has
    /// used: each goes back once, so a captured pointer written again is
    /// refused. (Absent in files written before this was kept.)
    #[serde(default)]
    pub used_rollbacks: BTreeSet<String>,
}

/// Why the loader could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// The persisted state exists but cannot be read: starting without it
    /// would forget the rollback floor.
    #[error("model state file {path} is unreadable ({reason}); fix or remove it deliberately")]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Where this daemon meets Redis off the hot path: the loader reads the
/// registry's pointers and announces refusals there, the side loop writes
/// heartbeats.
#[derive(Debug, Clone)]
pub struct RegistryLink {
    /// Connection settings.
    pub redis: RedisConfig,
    /// Key layout.
    pub keys: Keys,
    /// This daemon's instance id (in refusal events).
    pub instance: String,
}

/// The loader's state.
#[derive(Debug)]
pub struct Loader {
    models_root: PathBuf,
    state_file: PathBuf,
    universe: Arc<Universe>,
    /// Trusted keys; swapped when `trust.yaml` is reloaded.
    pub trust: Arc<SharedTrust>,
    /// Each worker's mailboxes, by strategy index.
    workers: Vec<Arc<[Mailbox<ModelUpdate>]>>,
    retired: Receiver<Box<ModelUpdate>>,
    counters: Arc<Counters>,
    /// What is serving.
    pub active: Arc<ActiveModels>,
    /// The last refusal per strategy, reported in heartbeats.
    pub refusals: Arc<Refusals>,
    accepted: BTreeMap<String, Accepted>,
    /// Refused `(folder, manifest sha256 the pointer named, rollback
    /// authorisation id)`, not retried: another authorisation for the same
    /// artifact (a fresh one after an expired one) is tried.
    refused: BTreeSet<(PathBuf, String, Option<String>)>,
    link: Option<RegistryLink>,
    conn: Option<RedisConn>,
    /// Strategies that have followed a registry pointer.
    follows_pointer: BTreeSet<String>,
    /// How the heads are scored (`daemon.yaml` `scoring`: the backend and
    /// the native kernels' widest instruction set).
    scoring: ScoringConfig,
}

/// Most refused (folder, manifest, authorisation) keys remembered.
const MAX_REMEMBERED_REFUSALS: usize = 1024;

/// The last artifact refused per strategy (side threads only).
pub type Refusals = ArcSwap<BTreeMap<String, ModelRefusal>>;

/// The artifact a strategy should run.
struct Wanted {
    dir: PathBuf,
    version: u64,
    /// From the pointer: the manifest must hash to this.
    manifest_sha256: Option<String>,
    rollback: Option<RollbackAuthorization>,
}

impl Loader {
    /// A loader for `models_root`; what was accepted persists in
    /// `models_root/.state/<instance>.json`. With `link`, the registry's
    /// pointers in Redis decide what runs.
    #[allow(clippy::too_many_arguments)] // wiring, called once
    pub fn new(
        models_root: &Path,
        instance: &str,
        universe: Arc<Universe>,
        trust: Arc<SharedTrust>,
        workers: Vec<Arc<[Mailbox<ModelUpdate>]>>,
        retired: Receiver<Box<ModelUpdate>>,
        counters: Arc<Counters>,
        link: Option<RegistryLink>,
        scoring: ScoringConfig,
    ) -> Result<Self, LoaderError> {
        let state_file = models_root.join(".state").join(format!("{instance}.json"));
        let accepted = match std::fs::read(&state_file) {
            Ok(bytes) => serde_json::from_slice::<BTreeMap<String, Accepted>>(&bytes).map_err(|e| {
                LoaderError::State {
                    path: state_file.clone(),
                    reason: e.to_string(),
                }
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(LoaderError::State {
                    path: state_file.clone(),
                    reason: e.to_string(),
                })
            }
        };
        Ok(Self {
            models_root: models_root.to_owned(),
            state_file,
            universe,
            trust,
            workers,
            retired,
            counters,
            active: Arc::new(ArcSwap::from_pointee(BTreeMap::new())),
            refusals: Arc::new(ArcSwap::from_pointee(BTreeMap::new())),
            scoring,
            accepted,
            refused: BTreeSet::new(),
            link,
            conn: None,
            follows_pointer: BTreeSet::new(),
        })
    }

    /// Drops sessions the workers retired (here, not on a hot thread).
    pub fn drop_retired(&self) {
        while let Ok(old) = self.retired.try_recv() {
            drop(old);
        }
    }

    /// The registry's pointer for `strategy`: `Ok(None)` when there is none,
    /// `Err` when Redis cannot say.
    fn pointer(&mut self, strategy: &str) -> Result<Option<ModelPointer>, String> {
        let Some(link) = &self.link else {
            return Ok(None);
        };
        if self.conn.is_none() {
            self.conn = Some(RedisConn::connect(&(&link.redis).into()).map_err(|e| e.to_string())?);
        }
        let conn = self.conn.as_mut().ok_or("no connection")?;
        let read = ModelPointer::read(conn, &link.keys, strategy).map_err(|e| e.to_string());
        if read.is_err() {
            self.conn = None;
        }
        read
    }

    /// What `strategy` should run, if it is not what runs now.
    fn wanted(&mut self, id: &str) -> Vec<Wanted> {
        let active = self.active.load().get(id).cloned();
        match self.pointer(id) {
            Ok(Some(p)) => {
                self.follows_pointer.insert(id.to_owned());
                let same = active
                    .as_ref()
                    .is_some_and(|a| a.version == p.version && a.manifest_sha256 == p.manifest_sha256);
                if same {
                    return Vec::new();
                }
                vec![Wanted {
                    dir: self.models_root.join(id).join(format!("v{}", p.version)),
                    version: p.version,
                    manifest_sha256: Some(p.manifest_sha256),
                    rollback: p.rollback,
                }]
            }
            Err(_) if self.follows_pointer.contains(id) => Vec::new(),
            Err(_) if active.is_none() => {
                // Redis unreachable at start: the artifact accepted last, if
                // it is still there; otherwise the folder scan below.
                if let Some(a) = self.accepted.get(id) {
                    let dir = self.models_root.join(id).join(format!("v{}", a.last_version));
                    if dir.is_dir() {
                        return vec![Wanted {
                            dir,
                            version: a.last_version,
                            manifest_sha256: Some(a.last_manifest_sha256.clone()),
                            rollback: None,
                        }];
                    }
                }
                self.scan_folder(id, None)
            }
            Ok(None) if !self.follows_pointer.contains(id) => self.scan_folder(id, active.map(|a| a.version)),
            // The pointer vanished (Redis restarted empty) or Redis is down:
            // keep serving what runs.
            _ => Vec::new(),
        }
    }

    /// Every `v<N>` above `above`, highest first.
    fn scan_folder(&self, id: &str, above: Option<u64>) -> Vec<Wanted> {
        let mut found = versions(&self.models_root.join(id));
        found.retain(|(v, _)| above.is_none_or(|a| *v > a));
        found.sort_by_key(|c| std::cmp::Reverse(c.0));
        found
            .into_iter()
            .map(|(version, dir)| Wanted {
                dir,
                version,
                manifest_sha256: None,
                rollback: None,
            })
            .collect()
    }

    /// Activates what each strategy should run, when it changed. Returns
    /// swaps made.
    pub fn scan(&mut self) -> usize {
        let mut swaps = 0;
        let strategies: Vec<(usize, String, usize)> = self
            .universe
            .strategies
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.id.to_string(), s.symbols.len()))
            .collect();
        for (idx, id, n_symbols) in strategies {
            // Highest first; lower ones are tried only when a higher one is refused.
            for w in self.wanted(&id) {
                let key = (
                    w.dir.clone(),
                    w.manifest_sha256.clone().unwrap_or_default(),
                    w.rollback.as_ref().map(|a| a.grant.request_id.clone()),
                );
                if self.refused.contains(&key) {
                    continue;
                }
                match self.activate(idx, &id, n_symbols, &w) {
                    Ok(meta) => {
                        tracing::info!(strategy = %id, model_id = %meta.model_id, version = w.version, rollback = %w.rollback.is_some(), "model activated");
                        swaps += 1;
                        break;
                    }
                    Err(reason) => {
                        self.report_refusal(&id, &w, &reason);
                        // Bounded: a Redis writer cycling made-up
                        // authorisation ids cannot grow it; forgetting
                        // only means an artifact is verified (and refused)
                        // again.
                        if self.refused.len() >= MAX_REMEMBERED_REFUSALS {
                            self.refused.clear();
                        }
                        self.refused.insert(key);
                    }
                }
            }
        }
        swaps
    }

    fn report_refusal(&mut self, id: &str, w: &Wanted, reason: &str) {
        Counters::inc(&self.counters.refused_artifacts);
        tracing::warn!(strategy = id, path = %w.dir.display(), reason = reason, "model refused");
        let refusal = ModelRefusal {
            version: w.version,
            manifest_sha256: w.manifest_sha256.clone(),
            reason: reason.to_owned(),
            at_ms: now_ms(),
        };
        self.refusals.rcu(|all| {
            let mut all = BTreeMap::clone(all);
            all.insert(id.to_owned(), refusal.clone());
            all
        });
        if let (Some(link), Some(conn)) = (&self.link, self.conn.as_mut()) {
            let sent = model::publish_refusal(conn, &link.keys, &link.instance, id, w.version, reason);
            if sent.is_err() {
                self.conn = None;
            }
        }
    }

    fn activate(
        &mut self,
        idx: usize,
        id: &str,
        n_symbols: usize,
        w: &Wanted,
    ) -> Result<Arc<ModelMeta>, String> {
        let files = ArtifactFiles::read(&w.dir).map_err(|e| e.to_string())?;
        let manifest_sha = files.manifest_sha256().unwrap_or_default();
        if let Some(expected) = &w.manifest_sha256 {
            if *expected != manifest_sha {
                return Err(format!(
                    "manifest.json has sha256 {manifest_sha}, the registry activated {expected}"
                ));
            }
        }
        let trust = self.trust.snapshot();
        let accepted = self.accepted.get(id);
        // The very artifact accepted last may load again after a restart.
        let highest = accepted
            .filter(|a| a.last_manifest_sha256 != manifest_sha)
            .map(|a| a.highest);
        let ctx = VerifyContext {
            highest_accepted: highest,
            rollback: w.rollback.as_ref(),
            ..VerifyContext::new(&trust, now_ms())
        };
        let verified = artifact::verify(files, &ctx).map_err(|e| e.to_string())?;
        let m = &verified.manifest;
        // Going back (at or below the floor): the authorisation verified
        // above must be for going back from what this daemon runs, and
        // unused. A later activation, or a replay of a captured pointer,
        // finds either another `from` or a used id.
        let rollback_used = match (highest, w.rollback.as_ref()) {
            (Some(floor), Some(auth)) if m.version <= floor => {
                let g = &auth.grant;
                let (runs, runs_sha) =
                    accepted.map_or((0, ""), |a| (a.last_version, a.last_manifest_sha256.as_str()));
                if g.from_version != runs || g.from_manifest_sha256 != runs_sha {
                    return Err(format!(
                        "rollback authorisation {} is for going back from v{}, and this daemon runs v{runs}: a later activation replaced it",
                        g.request_id, g.from_version
                    ));
                }
                if accepted.is_some_and(|a| a.used_rollbacks.contains(&g.request_id)) {
                    return Err(format!(
                        "rollback authorisation {} was already used: each goes back once",
                        g.request_id
                    ));
                }
                Some(g.request_id.clone())
            }
            _ => None,
        };
        if m.strategy != id || m.version != w.version {
            return Err(format!(
                "artifact is {} v{}, expected {id} v{}",
                m.strategy, m.version, w.version
            ));
        }
        let meta = Arc::new(ModelMeta {
            model_id: m.model_id.clone(),
            version: m.version,
            manifest_sha256: manifest_sha.clone(),
            theta1: m.theta.theta1,
            theta2: m.theta.theta2,
        });
        // Build and warm every worker's sessions before any worker switches.
        let mut scorers = Vec::with_capacity(self.workers.len());
        // In slices with pauses: on a machine whose cores the hot threads
        // share, one long burst of CPU delays whatever decision is waiting
        // behind it (measured: a swap delayed about one decision by ~2 ms).
        let pause = || std::thread::sleep(LOAD_PAUSE);
        for worker in 0..self.workers.len() {
            let mut s = ModelScorer::new_paced(&verified, n_symbols, self.scoring.backend, pause)
                .map_err(|e| e.to_string())?;
            s.cap_kernels(self.scoring.max_instruction_set.into());
            s.warm_up_paced(n_symbols, WARM_UP_RUNS, pause)
                .map_err(|e| e.to_string())?;
            for (head, backend) in s.backends() {
                match backend {
                    HeadBackend::Fallback { reason } => {
                        Counters::inc(&self.counters.native_fallbacks);
                        tracing::warn!(strategy = id, version = m.version, head, worker, %reason,
                            "native head refused: this head runs on ONNX Runtime");
                    }
                    HeadBackend::Native {
                        rows,
                        max_abs_diff,
                        kernel,
                    } if worker == 0 => {
                        tracing::info!(strategy = id, version = m.version, head, rows, max_abs_diff,
                            instruction_set = kernel.map_or("none (logistic)", |k| k.name()),
                            "head runs natively: it agrees with ONNX Runtime on the artifact's validation rows");
                    }
                    HeadBackend::Onnx if worker == 0 => {
                        tracing::info!(
                            strategy = id,
                            version = m.version,
                            head,
                            "head runs on ONNX Runtime"
                        );
                    }
                    _ => {}
                }
            }
            scorers.push(Box::new(s));
        }
        for (mailboxes, scorer) in self.workers.iter().zip(scorers) {
            let update = Box::new(ModelUpdate {
                scorer,
                meta: Arc::clone(&meta),
            });
            let mailbox = mailboxes
                .get(idx)
                .ok_or_else(|| format!("no mailbox for strategy {id} (index {idx})"))?;
            // One the worker has not taken yet is superseded: dropped here.
            drop(mailbox.put(update));
        }
        let mut active = (**self.active.load()).clone();
        active.insert(id.to_owned(), Arc::clone(&meta));
        self.active.store(Arc::new(active));
        let previous = self.accepted.get(id);
        let highest = previous.map_or(m.version, |a| a.highest.max(m.version));
        let mut used_rollbacks = previous.map(|a| a.used_rollbacks.clone()).unwrap_or_default();
        used_rollbacks.extend(rollback_used);
        self.accepted.insert(
            id.to_owned(),
            Accepted {
                highest,
                last_version: m.version,
                last_manifest_sha256: manifest_sha,
                used_rollbacks,
            },
        );
        self.persist();
        Counters::inc(&self.counters.model_swaps);
        self.counters.model_ready.store(true, Ordering::Relaxed);
        Ok(meta)
    }

    fn persist(&self) {
        let result = (|| -> std::io::Result<()> {
            if let Some(dir) = self.state_file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = self.state_file.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec(&self.accepted).unwrap_or_default())?;
            std::fs::rename(&tmp, &self.state_file)
        })();
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot persist the accepted model versions");
        }
    }
}

/// `(version, dir)` of every `v<N>` folder under `dir`.
fn versions(dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let v = name.strip_prefix('v')?.parse().ok()?;
            e.file_type().ok()?.is_dir().then(|| (v, e.path()))
        })
        .collect()
}
