//! The model registry (`core.model_registry`, `core.model_active`,
//! `core.model_transitions`) and the active pointer it keeps in Redis.
//!
//! Life of a model: `candidate` (registered: the artifact verified with the
//! models crate) → `approved` (a second principal approved its activation)
//! → `active` (the pointer in Redis names it; the daemons load it) →
//! `retired` (another version became active). An approver may `reject` a
//! candidate or approved model. Activating a version not above the highest
//! ever active (a rollback) carries a signed rollback authorisation, which
//! daemons require to go back a version; an ops `rollback` re-activates the
//! previous active version and pins it until an approver releases the pin.
//!
//! The PostgreSQL row of the strategy's pointer is locked while Redis is
//! written, so two activations cannot interleave; when Redis refuses, the
//! transaction rolls back and nothing changed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mlcore_config::KeyPurpose;
use mlcore_contract::{Heartbeat, ModelPointer};
use mlcore_models::artifact::files::FilesError;
use mlcore_models::artifact::rollback::RollbackGrant;
use mlcore_models::artifact::KeyFileError;
use mlcore_models::artifact::{
    self, ArtifactFiles, RollbackAuthorization, SecretKeyFile, TrustStore, VerifyContext,
};
use serde_json::{json, Value};
use sqlx::{Postgres, Row, Transaction};

use crate::services::now_ms;
use crate::services::Services;

/// One registry row, as the API shows it.
#[derive(Debug, Clone)]
pub struct ModelRow {
    /// Registry id (the manifest's `model_id`).
    pub id: String,
    /// Strategy.
    pub strategy: String,
    /// Version.
    pub version: u64,
    /// `candidate | approved | active | retired | rejected`.
    pub status: String,
    /// sha256 of `manifest.json`.
    pub manifest_sha256: String,
}

const COLUMNS: &str = "id, strategy, version, status, artifact_path, manifest_sha256, file_hashes::text AS file_hashes, key_id, metrics::text AS metrics, expires_at_ms, registered_by, registered_at_ms, approved_by, approved_at_ms, activated_by, activated_at_ms, retired_at_ms, rejected_by, rejected_at_ms";

/// `SELECT <every column> FROM core.model_registry <tail>`; `tail` is
/// always a literal in this module (values go through binds).
fn select(tail: &'static str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM core.model_registry {tail}"))
}

/// Why the registry refused (each with a stable code the API maps to a
/// status), or failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The request cannot be done as asked.
    #[error("{message}")]
    Refused {
        /// Which refusal.
        code: RegistryCode,
        /// What was wrong, for the caller.
        message: String,
        /// Structured detail.
        details: Value,
    },
    /// Redis did not take the pointer: nothing was changed.
    #[error("Redis: {0}; nothing was changed")]
    Redis(#[from] mlcore_contract::ContractError),
    /// PostgreSQL failed.
    #[error("registry database while {during}: {source}")]
    Db {
        /// What was being done.
        during: &'static str,
        /// The error.
        #[source]
        source: sqlx::Error,
    },
    /// A blocking task (artifact reading) did not finish.
    #[error("registry task failed while {0}")]
    Task(&'static str),
}

/// The registry's refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryCode {
    /// Not a strategy of the universe.
    StrategyUnknown,
    /// `trust.yaml` cannot be used.
    TrustUnusable,
    /// No artifact at the version's folder (or its manifest is missing).
    ArtifactNotFound,
    /// The artifact folder cannot be read.
    ArtifactUnreadable,
    /// The artifact failed verification.
    VerifyFailed,
    /// The folder holds another strategy's or version's artifact.
    ArtifactMisplaced,
    /// Already registered.
    Exists,
    /// No such model.
    NotFound,
    /// Not in a state that can be activated.
    NotActivatable,
    /// The strategy is pinned by a rollback.
    Pinned,
    /// Not in a state that can be rejected.
    NotRejectable,
    /// The strategy is not pinned.
    NotPinned,
    /// Nothing is active to roll back from.
    RollbackNothingActive,
    /// No earlier version to roll back to.
    RollbackNoPrevious,
    /// The rollback signing key cannot be used.
    RollbackKeyUnusable,
    /// The model lost to the active one (champion/challenger).
    ChallengeLost,
}

impl RegistryCode {
    /// The stable machine code.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::StrategyUnknown => "MODEL_STRATEGY_UNKNOWN",
            Self::TrustUnusable => "MODEL_TRUST_UNUSABLE",
            Self::ArtifactNotFound => "MODEL_ARTIFACT_NOT_FOUND",
            Self::ArtifactUnreadable => "MODEL_ARTIFACT_UNREADABLE",
            Self::VerifyFailed => "MODEL_VERIFY_FAILED",
            Self::ArtifactMisplaced => "MODEL_ARTIFACT_MISPLACED",
            Self::ChallengeLost => "MODEL_CHALLENGE_LOST",
            Self::Exists => "MODEL_EXISTS",
            Self::NotFound => "MODEL_NOT_FOUND",
            Self::NotActivatable => "MODEL_NOT_ACTIVATABLE",
            Self::Pinned => "MODEL_PINNED",
            Self::NotRejectable => "MODEL_NOT_REJECTABLE",
            Self::NotPinned => "MODEL_NOT_PINNED",
            Self::RollbackNothingActive => "OPS_ROLLBACK_NOTHING_ACTIVE",
            Self::RollbackNoPrevious => "OPS_ROLLBACK_NO_PREVIOUS",
            Self::RollbackKeyUnusable => "ROLLBACK_KEY_UNUSABLE",
        }
    }
}

impl RegistryError {
    fn refused(code: RegistryCode, message: impl Into<String>) -> Self {
        Self::Refused {
            code,
            message: message.into(),
            details: Value::Null,
        }
    }
}

/// What registering a model did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Registered {
    /// Registry id (the manifest's `model_id`).
    pub id: String,
    /// Strategy.
    pub strategy: String,
    /// Version.
    pub version: u64,
    /// Always `candidate`.
    pub status: String,
    /// sha256 of `manifest.json`.
    pub manifest_sha256: String,
    /// The key that signed it.
    pub key_id: String,
}

/// The rollback authorisation an activation carried.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AuthorizationSummary {
    /// The key that signed it.
    pub key_id: String,
    /// Not usable after this, ms since the epoch.
    pub expires_at_ms: u64,
}

/// What an activation (or a rollback) did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Activated {
    /// Strategy.
    pub strategy: String,
    /// The model now active.
    pub model_id: String,
    /// Its version.
    pub version: u64,
    /// The model it replaced.
    pub previous: Option<String>,
    /// Whether the strategy is now pinned (a rollback pins).
    pub pinned: bool,
    /// Present when the activation went back a version.
    pub rollback_authorization: Option<AuthorizationSummary>,
}

/// What a rejection did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Rejected {
    /// Model id.
    pub id: String,
    /// Always `rejected`.
    pub status: String,
    /// The status it had.
    pub from: String,
}

/// What releasing a pin did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PinReleased {
    /// Strategy.
    pub strategy: String,
    /// The model that stays active.
    pub model_id: String,
    /// Always `false`.
    pub pinned: bool,
}

/// Who did something to a model, and when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Stamp {
    /// Principal.
    pub by: Option<String>,
    /// ms since the epoch.
    pub at_ms: Option<i64>,
}

/// When a model was retired.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Retired {
    /// ms since the epoch.
    pub at_ms: Option<i64>,
}

/// One registered model, as `GET /v1/models` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ModelRecord {
    /// Registry id.
    pub id: String,
    /// Strategy.
    pub strategy: String,
    /// Version.
    pub version: Option<i64>,
    /// `candidate | approved | active | retired | rejected`.
    pub status: String,
    /// Where the artifact lies on the control plane's host.
    pub artifact_path: Option<String>,
    /// sha256 of `manifest.json`.
    pub manifest_sha256: Option<String>,
    /// sha256 of every other file.
    pub file_hashes: BTreeMap<String, String>,
    /// The key that signed it.
    pub key_id: Option<String>,
    /// Evaluation metrics from the manifest.
    pub metrics: BTreeMap<String, f64>,
    /// When it stops serving, ms since the epoch.
    pub expires_at_ms: Option<i64>,
    /// Registration.
    pub registered: Stamp,
    /// Approval of its activation.
    pub approved: Stamp,
    /// Activation.
    pub activated: Stamp,
    /// Retirement.
    pub retired: Retired,
    /// Rejection.
    pub rejected: Stamp,
    /// Daemons that report it loaded now.
    pub loaded_by: Vec<String>,
    /// Daemons that ever reported it loaded (what a rollback may go back to).
    pub served_by: Vec<String>,
    /// Daemons that refused the artifact, with why: a model can be the
    /// registry's active one while every daemon refused it.
    pub refused_by: Vec<crate::model_loads::Refusal>,
}

/// What one daemon serves for a strategy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DaemonLoad {
    /// Daemon instance.
    pub instance: String,
    /// `model_id@version` it serves.
    pub loaded: Option<String>,
    /// Whether that is the active model.
    pub agrees: bool,
    /// Why this daemon refused the active model, when it did (its status
    /// for that model is then `refused`).
    pub refused: Option<String>,
    /// No heartbeat for longer than `heartbeat_missing_after_ms`.
    pub silent: bool,
}

/// A strategy's pointer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct StrategyPointer {
    /// Strategy.
    pub strategy: String,
    /// The active model.
    pub active: String,
    /// Pinned by a rollback.
    pub pinned: bool,
    /// Who pinned it.
    pub pinned_by: Option<String>,
    /// The request that set the pointer.
    pub request_id: String,
    /// When, ms since the epoch.
    pub updated_at_ms: i64,
    /// What each daemon serves.
    pub daemons: Vec<DaemonLoad>,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Listing {
    /// Every registered model.
    pub models: Vec<ModelRecord>,
    /// Every strategy's pointer.
    pub strategies: Vec<StrategyPointer>,
    /// Why the daemons' reports are missing (Redis down), if they are.
    pub daemons_error: Option<String>,
}

pub(crate) fn db_err(during: &'static str) -> impl Fn(sqlx::Error) -> RegistryError {
    move |source| RegistryError::Db { during, source }
}

fn not_found(id: &str) -> RegistryError {
    RegistryError::refused(RegistryCode::NotFound, format!("no model `{id}` in the registry"))
}

fn row_of(r: &sqlx::postgres::PgRow) -> ModelRow {
    ModelRow {
        id: r.try_get("id").unwrap_or_default(),
        strategy: r.try_get("strategy").unwrap_or_default(),
        version: r.try_get::<i64, _>("version").unwrap_or(0) as u64,
        status: r.try_get("status").unwrap_or_default(),
        manifest_sha256: r.try_get("manifest_sha256").unwrap_or_default(),
    }
}

fn record_of(
    r: &sqlx::postgres::PgRow,
    loaded_by: Vec<String>,
    loads: crate::model_loads::Loads,
) -> ModelRecord {
    let s = |c: &str| r.try_get::<Option<String>, _>(c).ok().flatten();
    let n = |c: &str| r.try_get::<Option<i64>, _>(c).ok().flatten();
    let stamp = |by: &str, at: &str| Stamp {
        by: s(by),
        at_ms: n(at),
    };
    ModelRecord {
        id: s("id").unwrap_or_default(),
        strategy: s("strategy").unwrap_or_default(),
        version: n("version"),
        status: s("status").unwrap_or_default(),
        artifact_path: s("artifact_path"),
        manifest_sha256: s("manifest_sha256"),
        file_hashes: s("file_hashes")
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default(),
        key_id: s("key_id"),
        metrics: s("metrics")
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default(),
        expires_at_ms: n("expires_at_ms"),
        registered: stamp("registered_by", "registered_at_ms"),
        approved: stamp("approved_by", "approved_at_ms"),
        activated: stamp("activated_by", "activated_at_ms"),
        retired: Retired {
            at_ms: n("retired_at_ms"),
        },
        rejected: stamp("rejected_by", "rejected_at_ms"),
        loaded_by,
        served_by: loads.served_by,
        refused_by: loads.refused_by,
    }
}

async fn begin(svc: &Services) -> Result<Transaction<'static, Postgres>, RegistryError> {
    svc.pool.begin().await.map_err(db_err("opening a transaction"))
}

/// Locks a model's row for the transaction and reads its status.
async fn lock_status(tx: &mut Transaction<'_, Postgres>, id: &str) -> Result<String, RegistryError> {
    sqlx::query("SELECT status FROM core.model_registry WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_err("reading the model"))?
        .and_then(|r| r.try_get("status").ok())
        .ok_or_else(|| not_found(id))
}

/// Reads one model.
pub async fn get(svc: &Services, id: &str) -> Result<ModelRow, RegistryError> {
    sqlx::query(select("WHERE id = $1"))
        .bind(id)
        .fetch_optional(&svc.pool)
        .await
        .map_err(db_err("reading the registry"))?
        .map(|r| row_of(&r))
        .ok_or_else(|| not_found(id))
}

async fn transition(
    tx: &mut Transaction<'_, Postgres>,
    model: &str,
    from: Option<&str>,
    to: &str,
    actor: &str,
    request_id: &str,
    reason: &str,
) -> Result<(), RegistryError> {
    sqlx::query("INSERT INTO core.model_transitions (model_id, from_status, to_status, actor, at_ms, request_id, reason) VALUES ($1,$2,$3,$4,$5,$6,$7)")
        .bind(model)
        .bind(from)
        .bind(to)
        .bind(actor)
        .bind(now_ms() as i64)
        .bind(request_id)
        .bind(reason)
        .execute(&mut **tx)
        .await
        .map_err(db_err("recording a transition"))?;
    Ok(())
}

/// Registers `models_root/<strategy>/v<version>` as a candidate after the
/// models crate verified it (signature, files, feature schema, expiry).
pub async fn register(
    svc: &Services,
    who: &str,
    strategy: &str,
    version: u64,
    request_id: &str,
) -> Result<Registered, RegistryError> {
    if svc.config.strategy(strategy).is_none() {
        return Err(RegistryError::refused(
            RegistryCode::StrategyUnknown,
            format!("unknown strategy `{strategy}`"),
        ));
    }
    let dir: PathBuf = svc
        .config
        .storage
        .models_root
        .join(strategy)
        .join(format!("v{version}"));
    let trust = TrustStore::from_config(&svc.config.trust)
        .map_err(|e| RegistryError::refused(RegistryCode::TrustUnusable, format!("trust.yaml: {e}")))?;
    let read_dir = dir.clone();
    let files = tokio::task::spawn_blocking(move || ArtifactFiles::read(&read_dir))
        .await
        .map_err(|_| RegistryError::Task("reading the artifact"))?
        .map_err(|e| {
            // The server's paths stay in its log, not in the answer.
            tracing::warn!(path = %dir.display(), error = %e, "artifact unreadable");
            match &e {
                FilesError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                    RegistryError::refused(
                        RegistryCode::ArtifactNotFound,
                        format!("no artifact of {strategy} v{version} under models_root"),
                    )
                }
                FilesError::Io { source, .. } => RegistryError::refused(
                    RegistryCode::ArtifactUnreadable,
                    format!("{strategy} v{version} cannot be read: {}", source.kind()),
                ),
                FilesError::Layout { reason, .. } => RegistryError::refused(
                    RegistryCode::ArtifactUnreadable,
                    format!("{strategy} v{version} cannot be read: {reason}"),
                ),
            }
        })?;
    let manifest_sha = files.manifest_sha256().unwrap_or_default();
    let ctx = VerifyContext::new(&trust, now_ms());
    let verified = artifact::verify(files, &ctx).map_err(|e| RegistryError::Refused {
        code: RegistryCode::VerifyFailed,
        message: format!("{strategy} v{version}: {e}"),
        details: json!({"reason": e.to_string()}),
    })?;
    let m = &verified.manifest;
    if m.strategy != strategy || m.version != version {
        return Err(RegistryError::refused(
            RegistryCode::ArtifactMisplaced,
            format!(
                "the folder of {strategy} v{version} holds {} v{}",
                m.strategy, m.version
            ),
        ));
    }
    // A model trained against the active one and beaten by it is not a
    // candidate: its manifest (signed) says so.
    if m.metrics.get("challenge_won") == Some(&0.0) {
        let figure = |k: &str| m.metrics.get(k).copied().unwrap_or(f64::NAN);
        return Err(RegistryError::Refused {
            code: RegistryCode::ChallengeLost,
            message: format!(
                "{strategy} v{version} lost to v{} on the same out-of-sample window: Sharpe gain {:.2}, 90 % interval from {:.2}, margin {}",
                figure("challenge_champion_version"),
                figure("challenge_sharpe_gain"),
                figure("challenge_sharpe_gain_lo"),
                figure("challenge_margin"),
            ),
            details: json!({
                "champion_version": figure("challenge_champion_version"),
                "sharpe_gain": figure("challenge_sharpe_gain"),
                "sharpe_gain_lo": figure("challenge_sharpe_gain_lo"),
                "margin": figure("challenge_margin"),
            }),
        });
    }
    let mut tx = begin(svc).await?;
    let inserted = sqlx::query("INSERT INTO core.model_registry (id, strategy, version, status, artifact_path, manifest_sha256, file_hashes, key_id, metrics, expires_at_ms, registered_by, registered_at_ms) VALUES ($1,$2,$3,'candidate',$4,$5,$6::jsonb,$7,$8::jsonb,$9,$10,$11) ON CONFLICT DO NOTHING")
        .bind(&m.model_id)
        .bind(strategy)
        .bind(version as i64)
        .bind(dir.display().to_string())
        .bind(&manifest_sha)
        .bind(serde_json::to_string(&m.files).unwrap_or_else(|_| "{}".into()))
        .bind(&verified.key_id)
        .bind(serde_json::to_string(&m.metrics).unwrap_or_else(|_| "{}".into()))
        .bind(m.expires_at_ms as i64)
        .bind(who)
        .bind(now_ms() as i64)
        .execute(&mut *tx)
        .await
        .map_err(db_err("registering"))?
        .rows_affected();
    if inserted == 0 {
        return Err(RegistryError::refused(
            RegistryCode::Exists,
            format!("{} ({strategy} v{version}) is already registered", m.model_id),
        ));
    }
    transition(
        &mut tx,
        &m.model_id,
        None,
        "candidate",
        who,
        request_id,
        "registered",
    )
    .await?;
    tx.commit().await.map_err(db_err("committing"))?;
    Ok(Registered {
        id: m.model_id.clone(),
        strategy: strategy.to_owned(),
        version,
        status: "candidate".into(),
        manifest_sha256: manifest_sha,
        key_id: verified.key_id.clone(),
    })
}

/// Refuses unless `model` may be activated now (for a new request and
/// again when it is approved).
pub async fn check_activatable(svc: &Services, model: &ModelRow) -> Result<(), RegistryError> {
    if !["candidate", "approved", "retired"].contains(&model.status.as_str()) {
        return Err(RegistryError::refused(
            RegistryCode::NotActivatable,
            format!(
                "{} is {}; only candidate, approved or retired models can be activated",
                model.id, model.status
            ),
        ));
    }
    let pin: Option<(bool, Option<String>)> =
        sqlx::query("SELECT pinned, pinned_by FROM core.model_active WHERE strategy = $1")
            .bind(&model.strategy)
            .fetch_optional(&svc.pool)
            .await
            .map_err(db_err("reading the pointer"))?
            .map(|r| {
                (
                    r.try_get("pinned").unwrap_or(false),
                    r.try_get("pinned_by").ok().flatten(),
                )
            });
    if let Some((true, by)) = pin {
        return Err(pinned(&model.strategy, by.as_deref()));
    }
    Ok(())
}

fn pinned(strategy: &str, by: Option<&str>) -> RegistryError {
    RegistryError::refused(
        RegistryCode::Pinned,
        format!(
            "{strategy} is pinned by a rollback ({}); an approver must release the pin first",
            by.unwrap_or("unknown")
        ),
    )
}

/// The model a rollback of `strategy` would re-activate: the most recently
/// retired version below the active one that some daemon actually served
/// (a version every daemon refused, or that never reached one, is no way
/// back).
pub async fn rollback_target(svc: &Services, strategy: &str) -> Result<(ModelRow, ModelRow), RegistryError> {
    let current = sqlx::query(select(
        "WHERE id = (SELECT model_id FROM core.model_active WHERE strategy = $1)",
    ))
    .bind(strategy)
    .fetch_optional(&svc.pool)
    .await
    .map_err(db_err("reading the pointer"))?
    .map(|r| row_of(&r))
    .ok_or_else(|| {
        RegistryError::refused(
            RegistryCode::RollbackNothingActive,
            format!("{strategy} has no active model in the registry"),
        )
    })?;
    // What the daemons report now counts too, not only what the monitor
    // recorded by its last tick.
    crate::model_loads::record_live(svc).await;
    let previous = sqlx::query(select(
        "WHERE strategy = $1 AND status = 'retired' AND version < $2 \
         AND EXISTS (SELECT 1 FROM core.model_loads l WHERE l.model_id = core.model_registry.id AND l.outcome = 'served') \
         ORDER BY retired_at_ms DESC, version DESC LIMIT 1",
    ))
    .bind(strategy)
    .bind(current.version as i64)
    .fetch_optional(&svc.pool)
    .await
    .map_err(db_err("reading the registry"))?
    .map(|r| row_of(&r))
    .ok_or_else(|| {
        RegistryError::refused(
            RegistryCode::RollbackNoPrevious,
            format!(
                "{strategy} has no earlier version that a daemon served to roll back to (active: {})",
                current.id
            ),
        )
    })?;
    Ok((current, previous))
}

/// Marks `model` approved (the second principal agreed).
pub async fn approve(
    svc: &Services,
    model: &ModelRow,
    approver: &str,
    request_id: &str,
) -> Result<(), RegistryError> {
    if model.status != "candidate" {
        return Ok(());
    }
    let mut tx = begin(svc).await?;
    sqlx::query("UPDATE core.model_registry SET status='approved', approved_by=$2, approved_at_ms=$3 WHERE id=$1 AND status='candidate'")
        .bind(&model.id)
        .bind(approver)
        .bind(now_ms() as i64)
        .execute(&mut *tx)
        .await
        .map_err(db_err("approving"))?;
    transition(
        &mut tx,
        &model.id,
        Some("candidate"),
        "approved",
        approver,
        request_id,
        "activation approved",
    )
    .await?;
    tx.commit().await.map_err(db_err("committing"))
}

/// How an activation came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// An approved `activate` request: refused while the strategy is pinned.
    Normal,
    /// An approved ops `rollback`: pins the version.
    Rollback,
}

/// Signs the authorisation for going back from `from` (what is active) to
/// `model`: that transition and no other, usable once.
fn sign_rollback(
    svc: &Services,
    model: &ModelRow,
    from: &ModelRow,
    request_id: &str,
) -> Result<RollbackAuthorization, RegistryError> {
    let cfg = &svc.config.control.rollback_signing;
    let unusable = |why: String| {
        tracing::error!(key_file = %cfg.key_file.display(), error = %why, "rollback signing key unusable");
        RegistryError::refused(
            RegistryCode::RollbackKeyUnusable,
            format!("the rollback signing key cannot be used: {why}"),
        )
    };
    let key = SecretKeyFile::read(&cfg.key_file).map_err(|e| {
        unusable(match e {
            KeyFileError::Io { source, .. } => source.kind().to_string(),
            KeyFileError::Format { reason, .. } => format!("not a key file: {reason}"),
            KeyFileError::Random(reason) => reason,
        })
    })?;
    let now = now_ms();
    // A key the daemons would refuse makes an authorisation that cannot work.
    TrustStore::from_config(&svc.config.trust)
        .map_err(|e| unusable(e.to_string()))?
        .key_for(&key.key_id, KeyPurpose::Rollback, now)
        .map_err(|e| unusable(format!("not trusted for rollback in trust.yaml: {e}")))?;
    let grant = RollbackGrant {
        strategy: model.strategy.clone(),
        model_id: model.id.clone(),
        version: model.version,
        manifest_sha256: model.manifest_sha256.clone(),
        from_version: from.version,
        from_manifest_sha256: from.manifest_sha256.clone(),
        issued_at_ms: now,
        expires_at_ms: now + cfg.authorization_ttl_s * 1000,
        request_id: request_id.to_owned(),
    };
    artifact::rollback::sign(grant, &key).map_err(unusable)
}

/// Makes `model` the active version of its strategy: the pointer in Redis
/// (with a rollback authorisation when the version is not above the highest
/// ever active), then the registry. Returns what changed.
pub async fn activate(
    svc: &Services,
    model: &ModelRow,
    actor: &str,
    request_id: &str,
    how: Activation,
) -> Result<Activated, RegistryError> {
    // What the daemons run now, recorded before the pointer moves on: a
    // version served for less than a monitor tick still counts as served.
    crate::model_loads::record_live(svc).await;
    let mut tx = begin(svc).await?;
    // Serialise activations per strategy (the row may not exist yet).
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('mlcore.model_active.' || $1))")
        .bind(&model.strategy)
        .execute(&mut *tx)
        .await
        .map_err(db_err("locking the pointer"))?;
    let current =
        sqlx::query("SELECT model_id, pinned, pinned_by FROM core.model_active WHERE strategy = $1")
            .bind(&model.strategy)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err("reading the pointer"))?;
    let current_id: Option<String> = current.as_ref().and_then(|r| r.try_get("model_id").ok());
    if how == Activation::Normal {
        if let Some(r) = &current {
            if r.try_get::<bool, _>("pinned").unwrap_or(false) {
                return Err(pinned(
                    &model.strategy,
                    r.try_get::<Option<String>, _>("pinned_by")
                        .ok()
                        .flatten()
                        .as_deref(),
                ));
            }
        }
    }
    let status = lock_status(&mut tx, &model.id).await?;
    if !["candidate", "approved", "retired"].contains(&status.as_str()) {
        return Err(RegistryError::refused(
            RegistryCode::NotActivatable,
            format!("{} is {status}", model.id),
        ));
    }
    let highest: Option<i64> = sqlx::query(
        "SELECT max(version) AS v FROM core.model_registry WHERE strategy = $1 AND activated_at_ms IS NOT NULL",
    )
    .bind(&model.strategy)
    .fetch_one(&mut *tx)
    .await
    .map_err(db_err("reading the registry"))?
    .try_get("v")
    .ok()
    .flatten();
    let going_back = highest.is_some_and(|h| model.version as i64 <= h);
    let rollback = if going_back {
        // Bound to the transition from what is active now.
        let from = match current_id.as_deref() {
            Some(id) => get(svc, id).await?,
            None => {
                return Err(RegistryError::refused(
                    RegistryCode::RollbackNothingActive,
                    format!("{} has no active model to go back from", model.strategy),
                ))
            }
        };
        Some(sign_rollback(svc, model, &from, request_id)?)
    } else {
        None
    };
    let now = now_ms();
    let pointer = ModelPointer {
        strategy: model.strategy.clone(),
        model_id: model.id.clone(),
        version: model.version,
        manifest_sha256: model.manifest_sha256.clone(),
        rollback,
        pinned: how == Activation::Rollback,
        actor: actor.to_owned(),
        request_id: request_id.to_owned(),
        updated_at_ms: now,
    };
    svc.redis.write_pointer(&pointer).await?;

    if let Some(old) = current_id.as_deref().filter(|old| *old != model.id) {
        sqlx::query("UPDATE core.model_registry SET status='retired', retired_at_ms=$2 WHERE id=$1")
            .bind(old)
            .bind(now as i64)
            .execute(&mut *tx)
            .await
            .map_err(db_err("retiring"))?;
        let why = match how {
            Activation::Normal => format!("replaced by {}", model.id),
            Activation::Rollback => format!("rolled back to {}", model.id),
        };
        transition(&mut tx, old, Some("active"), "retired", actor, request_id, &why).await?;
    }
    sqlx::query("UPDATE core.model_registry SET status='active', activated_by=$2, activated_at_ms=$3, retired_at_ms=NULL WHERE id=$1")
        .bind(&model.id)
        .bind(actor)
        .bind(now as i64)
        .execute(&mut *tx)
        .await
        .map_err(db_err("activating"))?;
    let why = match how {
        Activation::Normal => "activated",
        Activation::Rollback => "re-activated by rollback (pinned)",
    };
    transition(
        &mut tx,
        &model.id,
        Some(&status),
        "active",
        actor,
        request_id,
        why,
    )
    .await?;
    let pin = how == Activation::Rollback;
    sqlx::query("INSERT INTO core.model_active (strategy, model_id, pinned, pinned_by, pinned_at_ms, request_id, updated_at_ms) VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT (strategy) DO UPDATE SET model_id=EXCLUDED.model_id, pinned=EXCLUDED.pinned, pinned_by=EXCLUDED.pinned_by, pinned_at_ms=EXCLUDED.pinned_at_ms, request_id=EXCLUDED.request_id, updated_at_ms=EXCLUDED.updated_at_ms")
        .bind(&model.strategy)
        .bind(&model.id)
        .bind(pin)
        .bind(pin.then_some(actor))
        .bind(pin.then_some(now as i64))
        .bind(request_id)
        .bind(now as i64)
        .execute(&mut *tx)
        .await
        .map_err(db_err("moving the pointer"))?;
    tx.commit().await.map_err(db_err("committing"))?;
    Ok(Activated {
        strategy: model.strategy.clone(),
        model_id: model.id.clone(),
        version: model.version,
        previous: current_id,
        pinned: pin,
        rollback_authorization: pointer.rollback.as_ref().map(|a| AuthorizationSummary {
            key_id: a.key_id.clone(),
            expires_at_ms: a.grant.expires_at_ms,
        }),
    })
}

/// An approver rejects a candidate or approved model.
pub async fn reject(
    svc: &Services,
    id: &str,
    who: &str,
    reason: &str,
    request_id: &str,
) -> Result<Rejected, RegistryError> {
    let mut tx = begin(svc).await?;
    let status = lock_status(&mut tx, id).await?;
    if status != "candidate" && status != "approved" {
        return Err(RegistryError::refused(
            RegistryCode::NotRejectable,
            format!("{id} is {status}; only candidate or approved models can be rejected"),
        ));
    }
    sqlx::query(
        "UPDATE core.model_registry SET status='rejected', rejected_by=$2, rejected_at_ms=$3 WHERE id=$1",
    )
    .bind(id)
    .bind(who)
    .bind(now_ms() as i64)
    .execute(&mut *tx)
    .await
    .map_err(db_err("rejecting"))?;
    transition(&mut tx, id, Some(&status), "rejected", who, request_id, reason).await?;
    tx.commit().await.map_err(db_err("committing"))?;
    Ok(Rejected {
        id: id.to_owned(),
        status: "rejected".into(),
        from: status,
    })
}

/// An approver releases a rollback pin.
pub async fn release_pin(
    svc: &Services,
    strategy: &str,
    request_id: &str,
) -> Result<PinReleased, RegistryError> {
    let mut tx = begin(svc).await?;
    let row = sqlx::query("SELECT model_id, pinned FROM core.model_active WHERE strategy = $1 FOR UPDATE")
        .bind(strategy)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err("reading the pointer"))?;
    let Some((model_id, true)) = row.map(|r| {
        (
            r.try_get::<String, _>("model_id").unwrap_or_default(),
            r.try_get::<bool, _>("pinned").unwrap_or(false),
        )
    }) else {
        return Err(RegistryError::refused(
            RegistryCode::NotPinned,
            format!("{strategy} is not pinned"),
        ));
    };
    sqlx::query("UPDATE core.model_active SET pinned=false, pinned_by=NULL, pinned_at_ms=NULL, request_id=$2, updated_at_ms=$3 WHERE strategy=$1")
        .bind(strategy)
        .bind(request_id)
        .bind(now_ms() as i64)
        .execute(&mut *tx)
        .await
        .map_err(db_err("releasing the pin"))?;
    svc.redis.set_pinned(strategy, false).await?;
    tx.commit().await.map_err(db_err("committing"))?;
    Ok(PinReleased {
        strategy: strategy.to_owned(),
        model_id,
        pinned: false,
    })
}

/// Every registered model with what each daemon reports as loaded, and each
/// strategy's pointer.
pub async fn list(svc: &Services) -> Result<Listing, RegistryError> {
    let rows = sqlx::query(select("ORDER BY strategy, version"))
        .fetch_all(&svc.pool)
        .await
        .map_err(db_err("listing the registry"))?;
    let pointers = sqlx::query("SELECT strategy, model_id, pinned, pinned_by, pinned_at_ms, request_id, updated_at_ms FROM core.model_active ORDER BY strategy")
        .fetch_all(&svc.pool)
        .await
        .map_err(db_err("reading the pointers"))?;
    let missing_after = svc.config.control.heartbeat_missing_after_ms;
    // What the daemons say; the registry answers even when Redis is down.
    let daemons: Result<Vec<Heartbeat>, String> = svc
        .redis
        .heartbeats()
        .await
        .map(|all| all.into_iter().filter_map(|(_, _, hb)| hb).collect())
        .map_err(|e| e.to_string());
    let now = now_ms();
    let (daemons, daemons_error) = match daemons {
        Ok(d) => (d, None),
        Err(e) => (Vec::new(), Some(format!("Redis: {e}"))),
    };
    // Up to the moment: what the heartbeats just read say is recorded first.
    crate::model_loads::record(svc, &daemons).await;
    let mut loads = crate::model_loads::all(svc).await?;
    let models: Vec<ModelRecord> = rows
        .iter()
        .map(|r| {
            let m = row_of(r);
            let tag = format!("{}@{}", m.id, m.version);
            let loaded_by = daemons
                .iter()
                .filter(|hb| hb.models.get(&m.strategy) == Some(&tag))
                .map(|hb| hb.instance.clone())
                .collect();
            let recorded = loads.remove(&m.id).unwrap_or_default();
            record_of(r, loaded_by, recorded)
        })
        .collect();
    let strategies: Vec<StrategyPointer> = pointers
        .iter()
        .map(|p| {
            let strategy: String = p.try_get("strategy").unwrap_or_default();
            let active: String = p.try_get("model_id").unwrap_or_default();
            let active_version = rows
                .iter()
                .map(row_of)
                .find(|m| m.id == active)
                .map(|m| m.version);
            let reports = daemons
                .iter()
                .map(|hb| {
                    let loaded = hb.models.get(&strategy).cloned();
                    let agrees = loaded
                        .as_deref()
                        .and_then(|l| l.rsplit_once('@'))
                        .is_some_and(|(id, _)| id == active);
                    let refused = hb
                        .refusals
                        .get(&strategy)
                        .filter(|r| !agrees && Some(r.version) == active_version)
                        .map(|r| r.reason.clone());
                    DaemonLoad {
                        instance: hb.instance.clone(),
                        loaded,
                        agrees,
                        refused,
                        silent: now.saturating_sub(hb.at_ms) > missing_after,
                    }
                })
                .collect();
            StrategyPointer {
                pinned: p.try_get::<bool, _>("pinned").unwrap_or(false),
                pinned_by: p.try_get::<Option<String>, _>("pinned_by").ok().flatten(),
                request_id: p.try_get::<String, _>("request_id").unwrap_or_default(),
                updated_at_ms: p.try_get::<i64, _>("updated_at_ms").unwrap_or(0),
                daemons: reports,
                strategy,
                active,
            }
        })
        .collect();
    Ok(Listing {
        models,
        strategies,
        daemons_error,
    })
}

/// The highest version of `strategy` in the registry (0 when none).
pub async fn highest_version(svc: &Services, strategy: &str) -> Result<u64, RegistryError> {
    let v: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM core.model_registry WHERE strategy = $1")
            .bind(strategy)
            .fetch_one(&svc.pool)
            .await
            .map_err(db_err("reading the highest version"))?;
    Ok(v.unwrap_or(0).max(0) as u64)
}

/// The active model of `strategy`: its id and artifact folder.
pub async fn active_artifact(
    svc: &Services,
    strategy: &str,
) -> Result<Option<(String, PathBuf)>, RegistryError> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT id, artifact_path FROM core.model_registry WHERE strategy = $1 AND status = 'active'",
    )
    .bind(strategy)
    .fetch_optional(&svc.pool)
    .await
    .map_err(db_err("reading the active model"))?;
    Ok(row.map(|(id, path)| (id, PathBuf::from(path))))
}
