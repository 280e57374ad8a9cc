//! Model loading, off the hot threads: scan `models_root/<strategy>/v<N>/`,
//! verify (signature, hashes, feature schema, expiry, rollback against the
//! persisted highest accepted version), build one scorer per worker, warm
//! them up, hand them to the workers, then persist the new highest version.
//! A refused or failing artifact leaves the current model serving and is
//! counted and logged with its reason.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender};
use mlcore_models::artifact::{self, ArtifactFiles, SharedTrust, VerifyContext};
use mlcore_models::features;
use mlcore_models::scoring::ModelScorer;
use sha2::Digest;

use crate::job::ModelMeta;
use crate::log::{log, now_ms};
use crate::stats::Counters;
use crate::universe::Universe;
use crate::worker::ModelUpdate;

/// Active model per strategy, for heartbeats and metrics.
pub type ActiveModels = ArcSwap<BTreeMap<String, Arc<ModelMeta>>>;

/// The highest version accepted for a strategy, and the sha256 of its
/// manifest: after a restart that exact artifact may load again, nothing at
/// or below its version otherwise.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Accepted {
    /// Version.
    pub version: u64,
    /// sha256 of its `manifest.json`.
    pub manifest_sha256: String,
}

/// The loader's state.
#[derive(Debug)]
pub struct Loader {
    models_root: PathBuf,
    state_file: PathBuf,
    universe: Arc<Universe>,
    /// Trusted keys; swapped when `trust.yaml` is reloaded.
    pub trust: Arc<SharedTrust>,
    workers: Vec<Sender<ModelUpdate>>,
    retired: Receiver<Box<ModelScorer>>,
    counters: Arc<Counters>,
    /// What is serving.
    pub active: Arc<ActiveModels>,
    highest: BTreeMap<String, Accepted>,
    refused: BTreeSet<PathBuf>,
}

impl Loader {
    /// A loader for `models_root`; the highest accepted versions persist in
    /// `models_root/.state/<instance>.json`.
    pub fn new(
        models_root: &Path,
        instance: &str,
        universe: Arc<Universe>,
        trust: Arc<SharedTrust>,
        workers: Vec<Sender<ModelUpdate>>,
        retired: Receiver<Box<ModelScorer>>,
        counters: Arc<Counters>,
    ) -> Self {
        let state_file = models_root.join(".state").join(format!("{instance}.json"));
        let highest = std::fs::read(&state_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<BTreeMap<String, Accepted>>(&b).ok())
            .unwrap_or_default();
        Self {
            models_root: models_root.to_owned(),
            state_file,
            universe,
            trust,
            workers,
            retired,
            counters,
            active: Arc::new(ArcSwap::from_pointee(BTreeMap::new())),
            highest,
            refused: BTreeSet::new(),
        }
    }

    /// Drops sessions the workers retired (here, not on a hot thread).
    pub fn drop_retired(&self) {
        while let Ok(old) = self.retired.try_recv() {
            drop(old);
        }
    }

    /// Activates any newer verified model per strategy. Returns swaps made.
    pub fn scan(&mut self) -> usize {
        let mut swaps = 0;
        let strategies: Vec<(usize, String, usize)> = self
            .universe
            .strategies
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.id.clone(), s.symbols.len()))
            .collect();
        for (idx, id, n_symbols) in strategies {
            let active_version = self.active.load().get(&id).map(|m| m.version);
            let mut candidates = versions(&self.models_root.join(&id));
            candidates.retain(|(v, _)| active_version.is_none_or(|a| *v > a));
            // Highest first; fall back to lower ones only at start.
            candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
            for (version, dir) in candidates {
                if self.refused.contains(&dir) {
                    continue;
                }
                match self.activate(idx, &id, n_symbols, &dir) {
                    Ok(meta) => {
                        log(
                            "info",
                            "model activated",
                            &[
                                ("strategy", id.clone().into()),
                                ("model_id", meta.model_id.clone().into()),
                                ("version", version.into()),
                            ],
                        );
                        swaps += 1;
                        break;
                    }
                    Err(reason) => {
                        Counters::inc(&self.counters.refused_artifacts);
                        log(
                            "warn",
                            "model refused",
                            &[
                                ("strategy", id.clone().into()),
                                ("path", dir.display().to_string().into()),
                                ("reason", reason.into()),
                            ],
                        );
                        self.refused.insert(dir);
                    }
                }
            }
        }
        swaps
    }

    fn activate(
        &mut self,
        idx: usize,
        id: &str,
        n_symbols: usize,
        dir: &Path,
    ) -> Result<Arc<ModelMeta>, String> {
        let files = ArtifactFiles::read(dir).map_err(|e| e.to_string())?;
        let manifest_sha = files
            .get(artifact::MANIFEST)
            .map(|m| hex::encode(sha2::Sha256::digest(m)))
            .unwrap_or_default();
        let trust = self.trust.snapshot();
        let hash = features::schema().hash();
        let highest = self.highest.get(id).map(|a| {
            // The very artifact accepted last may load again after a restart.
            if a.manifest_sha256 == manifest_sha {
                a.version.saturating_sub(1)
            } else {
                a.version
            }
        });
        let ctx = VerifyContext {
            trust: &trust,
            feature_schema_hash: &hash,
            now_ms: now_ms(),
            highest_accepted: highest,
            rollback: None,
        };
        let verified = artifact::verify(files, &ctx).map_err(|e| e.to_string())?;
        let m = &verified.manifest;
        if m.strategy != id {
            return Err(format!("artifact is for strategy `{}`", m.strategy));
        }
        let meta = Arc::new(ModelMeta {
            model_id: m.model_id.clone(),
            version: m.version,
            theta1: m.theta.theta1,
            theta2: m.theta.theta2,
        });
        // Build and warm every worker's sessions before any worker switches.
        let mut scorers = Vec::with_capacity(self.workers.len());
        for _ in &self.workers {
            let mut s = ModelScorer::new(&verified, n_symbols).map_err(|e| e.to_string())?;
            s.warm_up(n_symbols, 20).map_err(|e| e.to_string())?;
            scorers.push(Box::new(s));
        }
        for (tx, scorer) in self.workers.iter().zip(scorers) {
            tx.send(ModelUpdate {
                strategy: idx as u16,
                scorer,
                meta: Arc::clone(&meta),
            })
            .map_err(|e| e.to_string())?;
        }
        let mut active = (**self.active.load()).clone();
        active.insert(id.to_owned(), Arc::clone(&meta));
        self.active.store(Arc::new(active));
        if self.highest.get(id).is_none_or(|a| m.version >= a.version) {
            self.highest.insert(
                id.to_owned(),
                Accepted {
                    version: m.version,
                    manifest_sha256: manifest_sha,
                },
            );
        }
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
            std::fs::write(&tmp, serde_json::to_vec(&self.highest).unwrap_or_default())?;
            std::fs::rename(&tmp, &self.state_file)
        })();
        if let Err(e) = result {
            log(
                "error",
                "cannot persist the highest accepted model versions",
                &[("error", e.to_string().into())],
            );
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
