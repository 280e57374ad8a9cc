//! What each step does, what its key hashes, and where its output lives.
//! Every step reads only its upstream steps' folders and the
//! configuration its key includes, so a changed input reruns exactly the
//! steps downstream of it.

use std::cell::OnceCell;
use std::path::{Path, PathBuf};

use mlcore_config::AppConfig;
use mlcore_features::{self as features, Sample, N_FEATURES};
use mlcore_market::Quote;
use mlcore_models::artifact::{
    self, ArtifactFiles, Manifest, SecretKeyFile, ThetaParams, TrustStore, VerifiedArtifact, VerifyContext,
};
use mlcore_research::backtest::{Backtest, Scenario, Summary, Timing};
use mlcore_research::challenge::Verdict;
use mlcore_research::dataset::Dataset;
use mlcore_research::heldout::{self, Tuned};
use mlcore_research::train::samples::{self, Segment, Split};
use mlcore_research::train::{self, Fitted, GbmParams, ModelMeta};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::columns;
use crate::run::RunSpec;
use crate::store::{sha256_file, StepKey};
use crate::{FlowError, Step};

/// What every step may read: the configuration, the run's spec, the
/// strategy's universe, and the quotes (loaded once per process, checked
/// against the dataset index).
#[derive(Debug)]
pub struct Context<'a> {
    /// The environment's configuration.
    pub cfg: &'a AppConfig,
    /// The run.
    pub spec: &'a RunSpec,
    /// The dataset folder.
    pub dataset: PathBuf,
    /// Symbols in universe order.
    pub symbols: Vec<String>,
    /// The benchmark's index.
    pub benchmark: usize,
    /// Each symbol's round trip, bps (spread + commission).
    pub costs_bps: Vec<f64>,
    quotes: OnceCell<Vec<Quote>>,
}

impl<'a> Context<'a> {
    /// The context of `spec` in `cfg`.
    pub fn new(cfg: &'a AppConfig, spec: &'a RunSpec) -> Result<Self, FlowError> {
        let strategy = cfg.strategy(&spec.strategy).ok_or_else(|| {
            FlowError::Input(format!("strategy `{}` is not in universe.yaml", spec.strategy))
        })?;
        let symbols: Vec<String> = strategy.symbols.iter().map(|s| s.symbol.to_string()).collect();
        let benchmark = symbols
            .iter()
            .position(|s| strategy.benchmark == *s)
            .ok_or_else(|| {
                FlowError::Input(format!(
                    "benchmark {} is not a symbol of {}",
                    strategy.benchmark, spec.strategy
                ))
            })?;
        let costs_bps = mlcore_decision::symbol_params(cfg, strategy)
            .iter()
            .map(|p| p.cost_bps)
            .collect();
        Ok(Self {
            cfg,
            spec,
            dataset: cfg.control.retrain.dataset.clone(),
            symbols,
            benchmark,
            costs_bps,
            quotes: OnceCell::new(),
        })
    }

    fn quotes(&self) -> Result<&[Quote], FlowError> {
        if let Some(q) = self.quotes.get() {
            return Ok(q);
        }
        let names: Vec<&str> = self.symbols.iter().map(String::as_str).collect();
        let quotes = Dataset::open(&self.dataset)?.load_quotes(&names)?;
        Ok(self.quotes.get_or_init(|| quotes))
    }

    fn every_ns(&self) -> i64 {
        i64::try_from(self.cfg.control.retrain.decision_every_ms)
            .unwrap_or(i64::MAX / 2_000_000)
            .saturating_mul(1_000_000)
    }

    /// What the backtests read from the configuration: the strategy's
    /// universe, costs and policy.
    fn market_inputs(&self) -> Value {
        // The adoption margin decides the challenge only.
        let mut policy = json!(self.cfg.core_policy);
        if let Some(p) = policy.as_object_mut() {
            p.remove("adoption");
        }
        json!({
            "universe": self.cfg.strategy(&self.spec.strategy),
            "cost_table": self.cfg.cost_table,
            "core_policy": policy,
            "search": self.cfg.control.retrain.search,
        })
    }
}

/// Every step's inputs, keys chained through their upstream steps' keys:
/// the whole plan is known before any work (what `--dry-run` prints).
pub fn plan(ctx: &Context<'_>) -> Result<Vec<(Step, StepKey, Value)>, FlowError> {
    let r = &ctx.cfg.control.retrain;
    let dataset = Dataset::open(&ctx.dataset)?;
    let index = sha256_file(&ctx.dataset.join(mlcore_research::dataset::INDEX_FILE))?;
    let quarantined: Vec<Value> = dataset
        .quarantined
        .iter()
        .map(|q| json!([q.entry.symbol, q.entry.date, q.reason]))
        .collect();
    let mut out: Vec<(Step, StepKey, Value)> = Vec::new();
    let key = |out: &Vec<(Step, StepKey, Value)>, s: Step| -> String {
        out.iter()
            .find(|(step, ..)| *step == s)
            .map(|(_, k, _)| k.0.clone())
            .unwrap_or_default()
    };
    let push = |out: &mut Vec<(Step, StepKey, Value)>, step: Step, inputs: Value| {
        out.push((step, StepKey::of(step.name(), &inputs), inputs));
    };
    // The partitions as they are on disk, not as the index says they
    // were: a file changed after indexing changes the key, so the gate
    // runs again and refuses it (a cached gate would wave it through).
    let partitions: Vec<Value> = dataset
        .included
        .iter()
        .filter(|p| ctx.symbols.contains(&p.symbol))
        .map(|p| {
            let actual = sha256_file(&ctx.dataset.join(&p.path)).unwrap_or_else(|_| "unreadable".into());
            json!([p.path, actual])
        })
        .collect();
    push(
        &mut out,
        Step::Dataset,
        json!({"dataset": ctx.dataset, "index_sha256": index, "partitions": partitions,
            "quarantined": quarantined, "symbols": ctx.symbols}),
    );
    let inputs = json!({"dataset": key(&out, Step::Dataset), "decision_every_ms": r.decision_every_ms,
        "benchmark": ctx.benchmark, "feature_schema": features::schema_hash()});
    push(&mut out, Step::Features, inputs);
    let inputs = json!({"features": key(&out, Step::Features), "horizon": r.horizon,
        "barrier_sigmas": samples::BARRIER_SIGMAS, "adverse_sigmas": samples::ADVERSE_SIGMAS,
        "sigma_window": samples::SIGMA_WINDOW, "fractions": train::SPLIT_FRACTIONS});
    push(&mut out, Step::Labels, inputs);
    let inputs = validation_inputs(ctx, &key(&out, Step::Features));
    push(&mut out, Step::Validation, inputs);
    let inputs = json!({"labels": key(&out, Step::Labels), "trees": r.trees, "costs_bps": ctx.costs_bps});
    push(&mut out, Step::Train, inputs);
    // The parity check runs the export through this ONNX Runtime; every
    // later step scores with it.
    let onnxruntime = sha256_file(&ctx.cfg.storage.onnxruntime_library)?;
    let inputs = json!({"train": key(&out, Step::Train), "strategy": ctx.spec.strategy, "onnxruntime": onnxruntime,
        "valid_days": r.valid_days, "theta": [ctx.cfg.core_policy.theta.theta1, ctx.cfg.core_policy.theta.theta2]});
    push(&mut out, Step::Export, inputs);
    let inputs = json!({"export": key(&out, Step::Export), "market": ctx.market_inputs()});
    push(&mut out, Step::Theta, inputs);
    let scenarios: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
    let inputs =
        json!({"theta": key(&out, Step::Theta), "market": ctx.market_inputs(), "scenarios": scenarios});
    push(&mut out, Step::Backtest, inputs);
    let champion = match &ctx.spec.champion {
        Some(dir) => Some(sha256_file(&dir.join(artifact::MANIFEST))?),
        None => None,
    };
    let inputs = json!({"theta": key(&out, Step::Theta), "champion": champion, "market": ctx.market_inputs(),
        "adoption": ctx.cfg.core_policy.adoption, "trust": ctx.cfg.trust});
    push(&mut out, Step::Challenge, inputs);
    let release = SecretKeyFile::read(&r.signing_key_file)?;
    let public = release.public().map_err(FlowError::Sign)?;
    let inputs = json!({"export": key(&out, Step::Export), "theta": key(&out, Step::Theta),
        "validation": key(&out, Step::Validation),
        "backtest": key(&out, Step::Backtest), "challenge": key(&out, Step::Challenge),
        "version": ctx.spec.version, "created_at_ms": ctx.spec.created_at_ms, "valid_days": r.valid_days,
        "key": {"id": public.key_id, "public": public.public_key}, "trust": ctx.cfg.trust});
    push(&mut out, Step::Sign, inputs);
    let inputs =
        json!({"sign": key(&out, Step::Sign), "strategy": ctx.spec.strategy, "version": ctx.spec.version});
    push(&mut out, Step::Register, inputs);
    Ok(out)
}

fn validation_inputs(ctx: &Context<'_>, features: &str) -> Value {
    let r = &ctx.cfg.control.retrain;
    json!({"features": features, "horizon": r.horizon, "barrier_sigmas": samples::BARRIER_SIGMAS,
        "sigma_window": samples::SIGMA_WINDOW, "folds": r.folds, "embargo_decisions": 1, "trees": r.trees,
        "scheme": "purged_kfold"})
}

/// A unit of a step that a scale-out runs as a task of its own: a fold of
/// the validation, a trial of the θ search's grid. Each is
/// content-addressed like a step (`steps/fold/<key>`, `steps/trial/<key>`);
/// the step uses what it finds there and computes the rest itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Fold `i` of the validation.
    Fold(usize),
    /// Point `i` of the θ search's grid.
    Trial(usize),
}

impl Unit {
    /// The store's folder name for the unit's kind.
    pub fn kind(self) -> &'static str {
        match self {
            Unit::Fold(_) => "fold",
            Unit::Trial(_) => "trial",
        }
    }

    /// The step the unit belongs to.
    pub fn step(self) -> Step {
        match self {
            Unit::Fold(_) => Step::Validation,
            Unit::Trial(_) => Step::Theta,
        }
    }

    /// Its key: the step's key and the unit's index.
    pub fn key(self, step_key: &StepKey) -> StepKey {
        let i = match self {
            Unit::Fold(i) | Unit::Trial(i) => i,
        };
        StepKey::of(self.kind(), &json!({"step": step_key, "index": i}))
    }
}

fn labelled(ctx: &Context<'_>, features_dir: &Path) -> Result<mlcore_research::cv::Labelled, FlowError> {
    let samples = read_samples(features_dir)?;
    let barriers = mlcore_research::labels::Barriers {
        profit_take: samples::BARRIER_SIGMAS,
        stop_loss: samples::BARRIER_SIGMAS,
        horizon: ctx.cfg.control.retrain.horizon,
    };
    Ok(mlcore_research::cv::label(
        ctx.quotes()?,
        ctx.symbols.len(),
        &samples,
        &barriers,
        samples::SIGMA_WINDOW,
    ))
}

fn learner(ctx: &Context<'_>) -> mlcore_research::cv::Learner {
    let t = ctx.cfg.control.retrain.trees;
    mlcore_research::cv::Learner::Gbm(GbmParams {
        num_leaves: t.num_leaves,
        learning_rate: t.learning_rate,
        min_data_in_leaf: t.min_data_in_leaf,
        max_trees: t.max_trees,
    })
}

fn fold_plan(
    ctx: &Context<'_>,
    data: &mlcore_research::cv::Labelled,
) -> Vec<mlcore_research::validation::Fold> {
    mlcore_research::validation::folds(
        &data.spans,
        mlcore_research::validation::Scheme::PurgedKFold {
            k: ctx.cfg.control.retrain.folds,
        },
        ctx.every_ns(),
        true,
    )
}

/// Computes `unit` (a fold's result or a grid trial) into `out/unit.json`.
pub fn unit_output(
    ctx: &Context<'_>,
    unit: Unit,
    dirs: &dyn Fn(Step) -> PathBuf,
    out: &Path,
) -> Result<Option<u64>, FlowError> {
    match unit {
        Unit::Fold(i) => {
            let data = labelled(ctx, &dirs(Step::Features))?;
            let folds = fold_plan(ctx, &data);
            let fold = folds.get(i).ok_or_else(|| {
                FlowError::Input(format!("fold {i}: the validation has {} folds", folds.len()))
            })?;
            let result = mlcore_research::cv::run_fold(&data, fold, learner(ctx))
                .map_err(|e| FlowError::Train(e.into()))?;
            write_json(out, "unit.json", &result)?;
            Ok(Some(result.scores.len() as u64))
        }
        Unit::Trial(i) => {
            let candidate = candidate(&dirs(Step::Export))?;
            let tuning = heldout::tuning(
                ctx.cfg,
                &candidate,
                ctx.quotes()?,
                &ctx.cfg.control.retrain.search,
            )?;
            let points = tuning.grid()?;
            let point = points.get(i).ok_or_else(|| {
                FlowError::Input(format!("trial {i}: the grid has {} points", points.len()))
            })?;
            write_json(out, "unit.json", &tuning.trial(*point))?;
            Ok(Some(1))
        }
    }
}

/// How many units of each kind a step has (folds; grid points).
pub fn unit_count(ctx: &Context<'_>, step: Step) -> usize {
    match step {
        Step::Validation => ctx.cfg.control.retrain.folds,
        Step::Theta => ctx.cfg.control.retrain.search.grid.pow(2),
        _ => 0,
    }
}

/// `dataset.json`: what the data-quality gate saw.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetReport {
    /// The folder.
    pub dataset: PathBuf,
    /// Where the data came from (the index's `source`).
    pub source: String,
    /// Quotes per symbol, universe order.
    pub quotes: Vec<u64>,
    /// First and last day of data (`YYYY-MM-DD`).
    pub first_day: String,
    /// Last day.
    pub last_day: String,
    /// Days with data.
    pub days: usize,
    /// Partitions excluded by quarantine: symbol, date, reason.
    pub quarantined: Vec<(String, String, String)>,
}

/// Runs `step` into `out`; `dirs` holds the finished upstream steps' folders.
pub fn execute(
    ctx: &Context<'_>,
    step: Step,
    dirs: &dyn Fn(Step) -> PathBuf,
    units: &(dyn Fn(Unit) -> Option<PathBuf> + Sync),
    out: &Path,
) -> Result<Option<u64>, FlowError> {
    match step {
        Step::Dataset => dataset(ctx, out),
        Step::Features => {
            let samples = features::batch(ctx.quotes()?, ctx.symbols.len(), ctx.benchmark, ctx.every_ns());
            write_samples(out, &samples)?;
            Ok(Some(samples.len() as u64))
        }
        Step::Labels => {
            let samples = read_samples(&dirs(Step::Features))?;
            let split = samples::label(
                ctx.quotes()?,
                ctx.symbols.len(),
                &samples,
                ctx.cfg.control.retrain.horizon,
                train::SPLIT_FRACTIONS,
            );
            write_split(out, &split)?;
            Ok(Some(
                (split.train.rows() + split.calibration.rows() + split.test.rows()) as u64,
            ))
        }
        Step::Validation => {
            use rayon::prelude::*;
            let data = labelled(ctx, &dirs(Step::Features))?;
            let folds = fold_plan(ctx, &data);
            let learner = learner(ctx);
            // Folds a scale-out already ran are read; the rest run here,
            // in parallel.
            let results = folds
                .par_iter()
                .enumerate()
                .map(|(i, fold)| match units(Unit::Fold(i)) {
                    Some(dir) => read_json(&dir, "unit.json"),
                    None => mlcore_research::cv::run_fold(&data, fold, learner)
                        .map_err(|e| FlowError::Train(e.into())),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let report = mlcore_research::cv::report(&data, &folds, &results);
            write_json(out, "cv.json", &report)?;
            Ok(Some(report.oos_rows as u64))
        }
        Step::Train => {
            let split = read_split(&dirs(Step::Labels))?;
            let t = ctx.cfg.control.retrain.trees;
            let gbm = GbmParams {
                num_leaves: t.num_leaves,
                learning_rate: t.learning_rate,
                min_data_in_leaf: t.min_data_in_leaf,
                max_trees: t.max_trees,
            };
            let fitted = train::fit(&split, gbm, &ctx.costs_bps)?;
            write_json(out, "fitted.json", &fitted)?;
            Ok(Some(split.train.rows() as u64))
        }
        Step::Export => export(ctx, dirs, out),
        Step::Theta => {
            use rayon::prelude::*;
            let candidate = candidate(&dirs(Step::Export))?;
            let s = &ctx.cfg.control.retrain.search;
            let tuning = heldout::tuning(ctx.cfg, &candidate, ctx.quotes()?, s)?;
            // Grid trials a scale-out already ran are read; the rest run
            // here, in parallel.
            let grid = tuning
                .grid()?
                .par_iter()
                .enumerate()
                .map(|(i, p)| match units(Unit::Trial(i)) {
                    Some(dir) => read_json(&dir, "unit.json"),
                    None => Ok(tuning.trial(*p)),
                })
                .collect::<Result<Vec<_>, FlowError>>()?;
            let tuned = tuning.finish(ctx.cfg, &candidate, ctx.quotes()?, s, grid)?;
            let trials = tuned.search.trials.len() as u64;
            write_json(out, "theta.json", &tuned)?;
            Ok(Some(trials))
        }
        Step::Backtest => {
            let candidate = candidate(&dirs(Step::Export))?;
            let tuned: Tuned = read_json(&dirs(Step::Theta), "theta.json")?;
            let s = &ctx.cfg.control.retrain.search;
            let bt = Backtest::from_config(
                ctx.cfg,
                &ctx.spec.strategy,
                Timing {
                    every_ms: s.every_ms,
                    latency_ms: s.latency_ms,
                    window: heldout::unseen_half(&candidate, s.every_ms),
                },
            )?;
            let run = bt.run(ctx.quotes()?, &candidate, tuned.search.chosen, &Scenario::ALL)?;
            run.write(out, &bt.strategy)?;
            Ok(Some(run.summary.base.decisions as u64))
        }
        Step::Challenge => {
            let verdict = match &ctx.spec.champion {
                Some(dir) => {
                    let trust = TrustStore::from_config(&ctx.cfg.trust)
                        .map_err(|e| FlowError::Input(e.to_string()))?;
                    let files = ArtifactFiles::read(dir)?;
                    // The champion is judged as it was signed, expired or not.
                    let created = created_at(&files);
                    let champion =
                        artifact::verify(files, &VerifyContext::new(&trust, created)).map_err(|e| {
                            FlowError::Input(format!("the champion {} does not verify: {e}", dir.display()))
                        })?;
                    let candidate = candidate(&dirs(Step::Export))?;
                    let tuned: Tuned = read_json(&dirs(Step::Theta), "theta.json")?;
                    Some(heldout::challenge(
                        ctx.cfg,
                        &champion,
                        &candidate,
                        tuned.search.chosen,
                        ctx.quotes()?,
                        &ctx.cfg.control.retrain.search,
                    )?)
                }
                None => None,
            };
            write_json(out, "challenge.json", &Challenge { verdict })?;
            Ok(None)
        }
        Step::Sign => sign(ctx, dirs, out),
        // Registration is the control plane's (crate::Registrar).
        Step::Register => Ok(None),
    }
}

/// `challenge.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Challenge {
    /// The verdict; `None` when there was no active model to beat.
    pub verdict: Option<Verdict>,
}

fn dataset(ctx: &Context<'_>, out: &Path) -> Result<Option<u64>, FlowError> {
    let ds = Dataset::open(&ctx.dataset)?;
    let quotes = ctx.quotes()?;
    let mut per_symbol = vec![0u64; ctx.symbols.len()];
    for q in quotes {
        if let Some(n) = per_symbol.get_mut(usize::from(q.symbol)) {
            *n += 1;
        }
    }
    let missing: Vec<&str> = ctx
        .symbols
        .iter()
        .zip(&per_symbol)
        .filter(|(_, n)| **n == 0)
        .map(|(s, _)| s.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(FlowError::Gate(format!(
            "{}: no usable quotes of {} (quarantined partitions: {})",
            ctx.dataset.display(),
            missing.join(", "),
            ds.quarantined.len()
        )));
    }
    let mut days: Vec<&str> = ds.included.iter().map(|p| p.date.as_str()).collect();
    days.sort_unstable();
    days.dedup();
    let report = DatasetReport {
        dataset: ctx.dataset.clone(),
        source: ds.index.source.clone(),
        quotes: per_symbol,
        first_day: days.first().map(|d| (*d).to_owned()).unwrap_or_default(),
        last_day: days.last().map(|d| (*d).to_owned()).unwrap_or_default(),
        days: days.len(),
        quarantined: ds
            .quarantined
            .iter()
            .map(|q| (q.entry.symbol.clone(), q.entry.date.clone(), q.reason.clone()))
            .collect(),
    };
    write_json(out, "dataset.json", &report)?;
    Ok(Some(quotes.len() as u64))
}

/// The candidate is sealed with a key derived from its own step key: every
/// research step verifies the exact bytes it scores (hashes, schema,
/// signature) without the release key, which signs only a candidate that
/// won (the sign step).
fn candidate_key(train_key: &str) -> SecretKeyFile {
    use sha2::{Digest, Sha256};
    let seed = Sha256::digest(format!("mlcore-retrain candidate {train_key}").as_bytes());
    SecretKeyFile {
        key_id: "retrain-candidate".into(),
        algorithm: "ed25519".into(),
        secret_key: hex::encode(seed),
    }
}

/// A trust store holding only the candidate's key.
fn candidate_trust(public: mlcore_models::artifact::PublicKeyFile) -> Result<TrustStore, FlowError> {
    TrustStore::from_config(&mlcore_config::TrustConfig {
        keys: vec![mlcore_config::TrustedKeyConfig {
            id: public.key_id,
            public_key: public.public_key,
            purposes: vec![mlcore_config::KeyPurpose::ModelSigning],
            valid_from: "1970-01-01".into(),
            valid_until: "9999-12-31".into(),
        }],
        revoked: Vec::new(),
    })
    .map_err(|e| FlowError::Sign(e.to_string()))
}

/// The creation time a manifest claims (0 when unreadable: verification
/// then fails on its own terms).
fn created_at(files: &ArtifactFiles) -> u64 {
    serde_json::from_slice::<Manifest>(files.get(artifact::MANIFEST).unwrap_or_default())
        .map(|m| m.created_at_ms)
        .unwrap_or(0)
}

fn export(ctx: &Context<'_>, dirs: &dyn Fn(Step) -> PathBuf, out: &Path) -> Result<Option<u64>, FlowError> {
    let fitted: Fitted = read_json(&dirs(Step::Train), "fitted.json")?;
    let split = read_split(&dirs(Step::Labels))?;
    let train_dir = dirs(Step::Train);
    let key = candidate_key(&train_dir.file_name().unwrap_or_default().to_string_lossy());
    let public = key.public().map_err(FlowError::Sign)?;
    let trust = candidate_trust(public.clone())?;
    // The candidate's manifest depends on its inputs only (its time is
    // the data's last decision), so the same inputs seal the same bytes
    // wherever the step runs; the sign step stamps the real time.
    let now = split.end_ms;
    let meta = ModelMeta {
        strategy: ctx.spec.strategy.clone(),
        // The candidate has no version yet: the sign step gives it one.
        version: 0,
        created_at_ms: now,
        valid_days: ctx.cfg.control.retrain.valid_days,
        theta: ThetaParams {
            theta1: ctx.cfg.core_policy.theta.theta1,
            theta2: ctx.cfg.core_policy.theta.theta2,
        },
    };
    let (_, files) = train::export(&fitted, &split, &meta, &key, &trust, now)?;
    files.write(&out.join("artifact"))?;
    write_json(out, "candidate.json", &json!({"key": public}))?;
    Ok(Some(split.test.rows().min(10_000) as u64))
}

/// The candidate of an export step's folder, verified against the key
/// that sealed it.
pub fn candidate(export_dir: &Path) -> Result<VerifiedArtifact, FlowError> {
    let files = ArtifactFiles::read(&export_dir.join("artifact"))?;
    let public: Value = read_json(export_dir, "candidate.json")?;
    let key: mlcore_models::artifact::PublicKeyFile = serde_json::from_value(public["key"].clone())
        .map_err(|e| FlowError::Input(format!("{}: candidate.json: {e}", export_dir.display())))?;
    let trust = candidate_trust(key)?;
    let created = created_at(&files);
    Ok(artifact::verify(files, &VerifyContext::new(&trust, created))?)
}

fn sign(ctx: &Context<'_>, dirs: &dyn Fn(Step) -> PathBuf, out: &Path) -> Result<Option<u64>, FlowError> {
    let candidate = candidate(&dirs(Step::Export))?;
    let tuned: Tuned = read_json(&dirs(Step::Theta), "theta.json")?;
    let challenge: Challenge = read_json(&dirs(Step::Challenge), "challenge.json")?;
    let summary: Summary = read_json(&dirs(Step::Backtest), "portfolio_summary.json")?;
    let r = &ctx.cfg.control.retrain;
    let mut m = candidate.manifest.clone();
    m.version = ctx.spec.version;
    m.model_id = format!("{}-v{}", ctx.spec.strategy, ctx.spec.version);
    m.created_at_ms = ctx.spec.created_at_ms;
    m.expires_at_ms = ctx.spec.created_at_ms + u64::from(r.valid_days) * 86_400_000;
    m.theta = ThetaParams {
        theta1: tuned.search.chosen.0,
        theta2: tuned.search.chosen.1,
    };
    for (k, v) in heldout::manifest_figures(Some(&tuned), challenge.verdict.as_ref()) {
        m.metrics.insert(k.to_owned(), v);
    }
    let cv: mlcore_research::cv::CvReport = read_json(&dirs(Step::Validation), "cv.json")?;
    for (k, v) in [
        ("cv_auc", cv.auc.unwrap_or(0.5)),
        ("cv_log_loss", cv.log_loss),
        ("cv_folds", cv.folds.len() as f64),
        ("backtest_sharpe", summary.base.sharpe),
        ("backtest_sharpe_lo", summary.base.sharpe_ci90[0]),
        ("backtest_return", summary.base.total_return),
        ("backtest_max_drawdown", summary.base.max_drawdown),
        ("backtest_fills", summary.base.fills as f64),
    ] {
        m.metrics.insert(k.to_owned(), v);
    }
    m.files.clear();
    let key = SecretKeyFile::read(&r.signing_key_file)?;
    let trust = TrustStore::from_config(&ctx.cfg.trust).map_err(|e| FlowError::Sign(e.to_string()))?;
    let (manifest, files) = artifact::seal(m, candidate.files, &key).map_err(FlowError::Sign)?;
    artifact::verify(files.clone(), &VerifyContext::new(&trust, ctx.spec.created_at_ms))?;
    files.write(&out.join("artifact"))?;
    Ok(Some(manifest.version))
}

fn write_json<T: Serialize>(dir: &Path, name: &str, v: &T) -> Result<(), FlowError> {
    let text = serde_json::to_string_pretty(v).map_err(|e| FlowError::Input(e.to_string()))? + "\n";
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|source| FlowError::Io { path, source })
}

/// Reads `dir/name` as JSON.
pub fn read_json<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> Result<T, FlowError> {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).map_err(|source| FlowError::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| FlowError::Input(format!("{}: {e}", path.display())))
}

fn write_samples(dir: &Path, samples: &[Sample]) -> Result<(), FlowError> {
    let ts: Vec<i64> = samples.iter().map(|s| s.ts_ns).collect();
    let sym: Vec<u16> = samples.iter().map(|s| s.symbol).collect();
    let qi: Vec<u64> = samples.iter().map(|s| s.quote_index as u64).collect();
    let x: Vec<f32> = samples.iter().flat_map(|s| s.features).collect();
    columns::write(dir, "ts.i64", &ts)?;
    columns::write(dir, "symbol.u16", &sym)?;
    columns::write(dir, "quote_index.u64", &qi)?;
    columns::write(dir, "x.f32", &x)?;
    write_json(
        dir,
        "features.json",
        &json!({"rows": samples.len(), "n_features": N_FEATURES,
        "feature_schema_hash": features::schema_hash()}),
    )
}

fn read_samples(dir: &Path) -> Result<Vec<Sample>, FlowError> {
    let meta: Value = read_json(dir, "features.json")?;
    let rows = meta["rows"].as_u64().unwrap_or(0) as usize;
    let ts = columns::read::<i64>(dir, "ts.i64", Some(rows))?;
    let sym = columns::read::<u16>(dir, "symbol.u16", Some(rows))?;
    let qi = columns::read::<u64>(dir, "quote_index.u64", Some(rows))?;
    let x = columns::read::<f32>(dir, "x.f32", Some(rows * N_FEATURES))?;
    Ok((0..rows)
        .map(|i| {
            let mut features = [0f32; N_FEATURES];
            features.copy_from_slice(&x[i * N_FEATURES..(i + 1) * N_FEATURES]);
            Sample {
                ts_ns: ts[i],
                symbol: sym[i],
                quote_index: qi[i] as usize,
                features,
            }
        })
        .collect())
}

const SEGMENTS: [&str; 3] = ["train", "calibration", "test"];

fn write_split(dir: &Path, split: &Split) -> Result<(), FlowError> {
    for (name, seg) in SEGMENTS
        .iter()
        .zip([&split.train, &split.calibration, &split.test])
    {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).map_err(|source| FlowError::Io {
            path: d.clone(),
            source,
        })?;
        columns::write(&d, "x.f32", &seg.x)?;
        columns::write(&d, "up.u8", &seg.up)?;
        columns::write(&d, "adverse.u8", &seg.adverse)?;
        columns::write(&d, "weight.f64", &seg.weight)?;
        columns::write(&d, "ts.i64", &seg.ts_ns)?;
        columns::write(&d, "symbol.u16", &seg.symbol)?;
        columns::write(&d, "ret.f64", &seg.ret)?;
    }
    write_json(
        dir,
        "split.json",
        &json!({
        "rows": [split.train.rows(), split.calibration.rows(), split.test.rows()],
        "start_ms": split.start_ms, "test_start_ms": split.test_start_ms, "end_ms": split.end_ms,
        "gap_ns": split.gap_ns}),
    )
}

fn read_split(dir: &Path) -> Result<Split, FlowError> {
    let meta: Value = read_json(dir, "split.json")?;
    let rows = |i: usize| meta["rows"][i].as_u64().unwrap_or(0) as usize;
    let seg = |i: usize| -> Result<Segment, FlowError> {
        let d = dir.join(SEGMENTS[i]);
        let n = rows(i);
        Ok(Segment {
            x: columns::read(&d, "x.f32", Some(n * N_FEATURES))?,
            up: columns::read(&d, "up.u8", Some(n))?,
            adverse: columns::read(&d, "adverse.u8", Some(n))?,
            weight: columns::read(&d, "weight.f64", Some(n))?,
            ts_ns: columns::read(&d, "ts.i64", Some(n))?,
            symbol: columns::read(&d, "symbol.u16", Some(n))?,
            ret: columns::read(&d, "ret.f64", Some(n))?,
        })
    };
    let num = |k: &str| meta[k].as_i64().unwrap_or(0);
    Ok(Split {
        train: seg(0)?,
        calibration: seg(1)?,
        test: seg(2)?,
        start_ms: num("start_ms").max(0) as u64,
        test_start_ms: num("test_start_ms").max(0) as u64,
        end_ms: num("end_ms").max(0) as u64,
        gap_ns: num("gap_ns"),
    })
}
