//! Config change requests: the configuration changes through review, not
//! by editing files on a host.
//!
//! A request is a branch of the config repository ([`store`]) and a row of
//! `core.config_changes`. It moves `draft → pr_created → approved → merged
//! → applied`, or ends `rejected`, `cancelled`, `expired` or `failed` (the
//! daemons refused the applied version, or did not take it in time; the
//! previous version is then deployed again and committed as a revert).
//!
//! - **Submit** validates the merged result for every environment with the
//!   strict loader (the same `CONFIG_*` codes as `config check`) and scores
//!   its risk ([`mlcore_config::change::risk`]): low → one approver, high →
//!   two, and `apply` only inside the change window.
//! - The author never approves; an edit after submission revokes every
//!   approval (they approved another revision).
//! - **Apply** deploys the merged tree ([`deploy`]) and waits for every
//!   running daemon to report the version in its heartbeat.
//! - **Rollback** of an applied request is a request of its own, prefilled
//!   with git's revert of its merge; when that only restores the version
//!   deployed before it (nothing applied since), it takes the fast path:
//!   one approver, any time.
//!
//! Every state change is a row of `audit.config_changes`, an event of the
//! hash-chained audit log and a `config_change` event on the events channel.

pub mod deploy;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mlcore_config::change::{self, Change, Proc, RiskLevel};
use mlcore_config::{ConfigProblem, ConfigTree, MapEnv, Process};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;

pub use self::store::{Store, StoreError};
use crate::audit::NewEvent;
use crate::services::Services;

/// Audit record type.
pub const RECORD: &str = "config_change";

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Being written; only its author sees it move.
    Draft,
    /// Submitted, valid, waiting for approvals.
    PrCreated,
    /// Approved by as many approvers as its risk needs.
    Approved,
    /// Merged into the environment's branch; not deployed yet.
    Merged,
    /// Being deployed; waiting for the daemons.
    Applying,
    /// Deployed, and every running daemon took it.
    Applied,
    /// An approver said no.
    Rejected,
    /// Withdrawn.
    Cancelled,
    /// Not merged within `ttl_h`.
    Expired,
    /// Deployed, refused (or not taken in time), reverted.
    Failed,
}

impl State {
    /// Every state.
    pub const ALL: [Self; 10] = [
        Self::Draft,
        Self::PrCreated,
        Self::Approved,
        Self::Merged,
        Self::Applying,
        Self::Applied,
        Self::Rejected,
        Self::Cancelled,
        Self::Expired,
        Self::Failed,
    ];

    /// The stored form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::PrCreated => "pr_created",
            Self::Approved => "approved",
            Self::Merged => "merged",
            Self::Applying => "applying",
            Self::Applied => "applied",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .unwrap_or(Self::Failed)
    }

    /// Not merged yet: it can be edited, approved, cancelled, or expire.
    pub const fn is_open(self) -> bool {
        matches!(self, Self::Draft | Self::PrCreated | Self::Approved)
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest file text an edit carries, in characters.
pub const CONTENT_MAX: usize = 32_768;

/// One edit: a whole file, one key, or a file removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Edit {
    /// `base/<file>` or `envs/<env>/<file>`, one of the configuration's files.
    #[schema(
        max_length = 64,
        pattern = "^(base|envs/(dev|stg|prod))/(core_policy|universe|cost_table|redis|database|storage|notifications|metrics|sources|daemon|control|trust)\\.yaml$"
    )]
    pub file: String,
    /// The file's new text, whole (newlines and tabs, no other control
    /// characters).
    #[schema(
        max_length = 32768,
        pattern = "^[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]*$"
    )]
    pub content: Option<String>,
    /// A dotted key path to set (`theta.per_strategy.fx_g10.theta1`); the
    /// line changes, comments stay.
    #[schema(max_length = 256, pattern = "^[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*$")]
    pub key: Option<String>,
    /// The key's new value as one line of YAML (`0.6`, `[1, 2]`, `"text"`).
    #[schema(max_length = 4096, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$")]
    pub value: Option<String>,
    /// Remove the file (an environment override).
    #[serde(default)]
    pub delete: bool,
}

/// An approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Approval {
    /// Approver.
    pub by: String,
    /// When, ms since the epoch.
    pub at_ms: u64,
}

/// A change request.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ChangeRequest {
    /// `cr-<n>`.
    pub id: String,
    /// What it does, in a line.
    pub title: String,
    /// `change`, or `rollback` of another request.
    pub kind: String,
    /// The request a rollback reverts.
    pub rollback_of: Option<String>,
    /// Who proposed it.
    pub author: String,
    /// Where it is.
    pub state: State,
    /// Its branch in the config repository.
    pub branch: String,
    /// The environment branch's head it started from.
    pub base_commit: String,
    /// Its branch's head: the revision approvals approve.
    pub head_commit: String,
    /// The merge commit, once merged (the version `apply` deploys).
    pub merged_commit: Option<String>,
    /// The version deployed when it was applied (what a failure restores).
    pub deployed_before: Option<String>,
    /// `low` or `high`, set at submit.
    #[schema(value_type = String, example = "low")]
    pub risk: RiskLevel,
    /// Why high.
    pub risk_reasons: Vec<String>,
    /// Approvals it needs.
    pub required_approvals: u32,
    /// A rollback that only restores the previously deployed version.
    pub fast_path: bool,
    /// Approvals of its current revision.
    pub approvals: Vec<Approval>,
    /// Created, ms since the epoch.
    pub created_at_ms: u64,
    /// Last changed.
    pub updated_at_ms: u64,
    /// When it expires unless merged.
    pub expires_at_ms: u64,
    /// What happened at the end (a failure's reason, a rejection's).
    pub result: Option<String>,
}

/// A request's diff: every changed key per environment, risk, restarts.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Preview {
    /// The request.
    pub id: String,
    /// Against the environment branch's head now (or, once merged, the
    /// merge's first parent).
    pub against: String,
    /// Every changed key, each with its old and new value (secrets
    /// redacted) and who takes it how.
    #[schema(value_type = Vec<Object>)]
    pub changes: Vec<Change>,
    /// The risk of this diff.
    #[schema(value_type = String, example = "high")]
    pub risk: RiskLevel,
    /// Why high.
    pub risk_reasons: Vec<String>,
    /// Processes that must restart to take all of it (`daemon`, `control`).
    pub restart: Vec<String>,
    /// Processes that take it while running.
    pub live: Vec<String>,
}

/// Which daemon runs which version.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Status {
    /// The environment branch's head.
    pub branch_head: Option<String>,
    /// What `deploy_dir` holds (`DEPLOYED.json`), if anything.
    pub deployed: Option<String>,
    /// The request that deployed it.
    pub deployed_by: Option<String>,
    /// Each daemon with a heartbeat.
    pub daemons: Vec<DaemonConfig>,
}

/// One daemon's configuration, from its heartbeat.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DaemonConfig {
    /// Instance id.
    pub instance: String,
    /// The version it decides with.
    pub version: String,
    /// Since when.
    pub since_ms: u64,
    /// Keys waiting for its restart.
    pub restart_required: Vec<String>,
    /// The last version it refused, and why.
    pub refused: Option<String>,
    /// Its heartbeat's age in ms.
    pub heartbeat_age_ms: u64,
}

/// Why a request cannot do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ConfigChangeError {
    /// No such request.
    #[error("no config change request `{0}`")]
    NotFound(String),
    /// Not in a state that allows this.
    #[error("{id} is {state}; {action} needs it {needed}")]
    WrongState {
        /// Request.
        id: String,
        /// Its state.
        state: State,
        /// What was asked.
        action: &'static str,
        /// The states that allow it.
        needed: &'static str,
    },
    /// Only the author may do this.
    #[error("only {author}, who proposed {id}, may {action} it")]
    NotAuthor {
        /// Request.
        id: String,
        /// Its author.
        author: String,
        /// What was asked.
        action: &'static str,
    },
    /// The author tried to approve.
    #[error("the author of a change cannot approve it")]
    SelfApproval,
    /// Approved by this approver already.
    #[error("{0} approved this revision already")]
    AlreadyApproved(String),
    /// An edit is malformed.
    #[error("edit of `{file}`: {why}")]
    Edit {
        /// The file.
        file: String,
        /// Why.
        why: String,
    },
    /// The edits change nothing.
    #[error("the request changes nothing")]
    NoChange,
    /// The merged configuration fails the loader's checks.
    #[error("the configuration would be refused ({} problem(s)): {}", .0.len(), .0.first().map(ToString::to_string).unwrap_or_default())]
    Invalid(Vec<ConfigProblem>),
    /// A high-risk change outside the change window.
    #[error("{id} is high risk and the change window ({window}) is closed now")]
    WindowClosed {
        /// Request.
        id: String,
        /// The window, as configured.
        window: String,
    },
    /// Another merged request waits to be applied.
    #[error("{0} is merged and not applied yet: apply it (or let it fail) first")]
    ApplyPending(String),
    /// The request was merged over a moved branch and its risk rose.
    #[error(
        "{id}'s risk is now {now} on the current configuration (it was approved as {was}); submit it again"
    )]
    RiskChanged {
        /// Request.
        id: String,
        /// At submit.
        was: RiskLevel,
        /// Now.
        now: RiskLevel,
    },
    /// A fast-path rollback that no longer only restores the previous version.
    #[error("{0} no longer only restores the version deployed before (something was applied since): cancel it and roll back again")]
    FastPathLost(String),
    /// Someone else changed the request meanwhile.
    #[error("{0} changed meanwhile; read it again")]
    Concurrent(String),
    /// Only applied requests are rolled back.
    #[error("{id} is {state}; only an applied change is rolled back")]
    NotApplied {
        /// Request.
        id: String,
        /// Its state.
        state: State,
    },
    /// The config repository.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the deployed folder.
    #[error("deploying into {dir}: {source}")]
    Deploy {
        /// The folder.
        dir: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// PostgreSQL.
    #[error("config change database while {during}: {source}")]
    Db {
        /// What was being done.
        during: &'static str,
        /// The error.
        #[source]
        source: sqlx::Error,
    },
    /// The audit log.
    #[error("audit log: {0}")]
    Audit(#[from] crate::audit::AuditError),
    /// A blocking task died.
    #[error("a background task failed: {0}")]
    Task(String),
}

impl ConfigChangeError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "CONFIG_CHANGE_NOT_FOUND",
            Self::WrongState { .. } => "CONFIG_CHANGE_STATE",
            Self::NotAuthor { .. } => "CONFIG_CHANGE_NOT_AUTHOR",
            Self::SelfApproval => "CONFIG_CHANGE_SELF_APPROVAL",
            Self::AlreadyApproved(_) => "CONFIG_CHANGE_ALREADY_APPROVED",
            Self::Edit { .. } => "CONFIG_CHANGE_EDIT_INVALID",
            Self::NoChange => "CONFIG_CHANGE_EMPTY",
            Self::Invalid(_) => "CONFIG_CHANGE_INVALID",
            Self::WindowClosed { .. } => "CONFIG_CHANGE_WINDOW_CLOSED",
            Self::ApplyPending(_) => "CONFIG_CHANGE_APPLY_PENDING",
            Self::RiskChanged { .. } => "CONFIG_CHANGE_RISK_CHANGED",
            Self::Concurrent(_) => "CONFIG_CHANGE_CONCURRENT",
            Self::FastPathLost(_) => "CONFIG_CHANGE_FAST_PATH_LOST",
            Self::NotApplied { .. } => "CONFIG_CHANGE_NOT_APPLIED",
            Self::Store(StoreError::Conflict(_)) => "CONFIG_CHANGE_CONFLICT",
            Self::Store(StoreError::Seed { .. }) => "CONFIG_CHANGE_UNINITIALISED",
            Self::Store(_) | Self::Deploy { .. } | Self::Db { .. } | Self::Audit(_) | Self::Task(_) => {
                "CONFIG_CHANGE_INTERNAL"
            }
        }
    }
}

fn db(during: &'static str) -> impl Fn(sqlx::Error) -> ConfigChangeError {
    move |source| ConfigChangeError::Db { during, source }
}

type Result<T, E = ConfigChangeError> = std::result::Result<T, E>;

fn store(svc: &Services) -> Store {
    let c = &svc.config.control.config_changes;
    Store::new(&c.repository, &c.branch)
}

/// Runs git work on a blocking thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ConfigChangeError::Task(e.to_string()))?
}

/// Creates the repository from the deployed folder when it does not exist;
/// the branch's head. Never deploys: only `apply` (and `config init`) write
/// the folder.
pub async fn ensure_repository(svc: &Services) -> Result<String> {
    let c = svc.config.control.config_changes.clone();
    blocking(move || {
        let s = Store::new(&c.repository, &c.branch);
        s.open_or_seed(&c.deploy_dir)?;
        Ok(s.head()?)
    })
    .await
}

/// Serialises every change of requests and of the repository in this
/// process: a check, its git work and the row's update happen as one (two
/// approvals at once, an edit during a merge, two applies). One control
/// plane serves an environment's repository; several would need the lock
/// in PostgreSQL instead.
static OPS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Applies edits to a tree.
pub fn apply_edits(tree: &mut ConfigTree, edits: &[Edit]) -> Result<()> {
    for e in edits {
        let bad = |why: String| ConfigChangeError::Edit {
            file: e.file.clone(),
            why,
        };
        ConfigTree::check_path(&e.file).map_err(|x| bad(x.to_string()))?;
        let name = e.file.rsplit('/').next().unwrap_or_default();
        if !mlcore_config::FILES.contains(&name) {
            return Err(bad(format!(
                "not a configuration file (one of: {})",
                mlcore_config::FILES.join(", ")
            )));
        }
        match (&e.content, &e.key, &e.value, e.delete) {
            (Some(text), None, None, false) => {
                serde_norway::from_str::<serde_norway::Value>(text)
                    .map_err(|x| bad(format!("not YAML: {x}")))?;
                tree.insert(&e.file, text.clone())
                    .map_err(|x| bad(x.to_string()))?;
            }
            (None, Some(key), Some(value), false) => {
                let text = tree.get(&e.file).unwrap_or("");
                let new = mlcore_config::edit::set(text, key, value).map_err(|x| bad(x.to_string()))?;
                tree.insert(&e.file, new).map_err(|x| bad(x.to_string()))?;
            }
            (None, None, None, true) => {
                if e.file.starts_with("base/") {
                    return Err(bad("a base file cannot be removed".into()));
                }
                if tree.remove(&e.file).is_none() {
                    return Err(bad("no such file".into()));
                }
            }
            _ => {
                return Err(bad(
                    "give `content`, or `key` and `value`, or `delete: true`".into()
                ))
            }
        }
    }
    Ok(())
}

/// Checks a tree for every environment it defines, as the processes will
/// load it (secrets are the processes' own: their presence is checked by
/// each process when it takes the version, not here).
pub fn validate(tree: &ConfigTree, project_root: &Path) -> Result<()> {
    let mut problems = Vec::new();
    for env in tree.envs() {
        if env.parse::<mlcore_config::Environment>().is_err() {
            problems.push(ConfigProblem {
                code: mlcore_config::ConfigCode::EnvUnknown,
                file: Path::new("configs/envs").join(env),
                key: String::new(),
                message: format!("unknown environment `{env}` (expected dev, stg or prod)"),
            });
        }
    }
    for env in change::environments(tree) {
        if let Err(e) = mlcore_config::load_tree(
            tree,
            Path::new("configs"),
            project_root,
            env,
            &MapEnv::new(),
            Process::Offline,
        ) {
            problems.extend(e.problems);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigChangeError::Invalid(problems))
    }
}

/// Every change between two trees, over every environment of either.
pub fn diff_trees(old: &ConfigTree, new: &ConfigTree) -> Vec<Change> {
    let mut envs = change::environments(old);
    for e in change::environments(new) {
        if !envs.contains(&e) {
            envs.push(e);
        }
    }
    envs.into_iter()
        .flat_map(|env| change::diff(old, new, env))
        .collect()
}

fn preview_of(id: &str, against: String, old: &ConfigTree, new: &ConfigTree) -> Preview {
    let changes = diff_trees(old, new);
    let risk = change::risk(old, &changes);
    let procs = |apply: change::Apply| {
        let mut v: Vec<String> = changes
            .iter()
            .flat_map(|c| c.effects.iter())
            .filter(|e| e.apply == apply)
            .map(|e| match e.process {
                Proc::Daemon => "daemon".to_owned(),
                Proc::Control => "control".to_owned(),
            })
            .collect();
        v.sort();
        v.dedup();
        v
    };
    Preview {
        id: id.to_owned(),
        against,
        restart: procs(change::Apply::Restart),
        live: procs(change::Apply::Live),
        changes,
        risk: risk.level,
        risk_reasons: risk.reasons,
    }
}

fn project_root(svc: &Services) -> PathBuf {
    let d = &svc.config.control.config_changes.deploy_dir;
    d.parent().map_or_else(|| d.clone(), Path::to_path_buf)
}

fn from_row(r: &sqlx::postgres::PgRow, approvals: Vec<Approval>) -> ChangeRequest {
    let risk: String = r.get("risk");
    ChangeRequest {
        id: r.get("id"),
        title: r.get("title"),
        kind: r.get("kind"),
        rollback_of: r.get("rollback_of"),
        author: r.get("author"),
        state: State::parse(r.get::<String, _>("state").as_str()),
        branch: r.get("branch"),
        base_commit: r.get("base_commit"),
        head_commit: r.get("head_commit"),
        merged_commit: r.get("merged_commit"),
        deployed_before: r.get("deployed_before"),
        risk: if risk == "high" {
            RiskLevel::High
        } else {
            RiskLevel::Low
        },
        risk_reasons: serde_json::from_value(r.get("risk_reasons")).unwrap_or_default(),
        required_approvals: r.get::<i32, _>("required_approvals").max(0) as u32,
        fast_path: r.get("fast_path"),
        approvals,
        created_at_ms: r.get::<i64, _>("created_at_ms").max(0) as u64,
        updated_at_ms: r.get::<i64, _>("updated_at_ms").max(0) as u64,
        expires_at_ms: r.get::<i64, _>("expires_at_ms").max(0) as u64,
        result: r.get("result"),
    }
}

/// Moves open requests past their expiry to `expired` (recorded).
pub async fn expire_due(svc: &Services) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "UPDATE core.config_changes SET state = 'expired', updated_at_ms = $1, result = 'not merged before it expired'
         WHERE state IN ('draft', 'pr_created', 'approved') AND expires_at_ms <= $1 RETURNING id, state",
    )
    .bind(svc.now_ms() as i64)
    .fetch_all(&svc.pool)
    .await
    .map_err(db("expiring requests"))?;
    let mut ids = Vec::new();
    for r in rows {
        let id: String = r.get("id");
        history(
            svc,
            &id,
            None,
            State::Expired,
            "system",
            None,
            json!({"reason": "expired"}),
        )
        .await?;
        ids.push(id);
    }
    Ok(ids)
}

/// A request.
pub async fn get(svc: &Services, id: &str) -> Result<ChangeRequest> {
    expire_due(svc).await?;
    load(svc, id).await
}

async fn load(svc: &Services, id: &str) -> Result<ChangeRequest> {
    let row = sqlx::query("SELECT * FROM core.config_changes WHERE id = $1")
        .bind(id)
        .fetch_optional(&svc.pool)
        .await
        .map_err(db("reading a request"))?
        .ok_or_else(|| ConfigChangeError::NotFound(id.to_owned()))?;
    // Approvals of the current revision only.
    let approvals = sqlx::query(
        "SELECT a.approver, a.at_ms FROM core.config_change_approvals a
         JOIN core.config_changes c ON c.id = a.change_id AND c.head_commit = a.head_commit
         WHERE a.change_id = $1 ORDER BY a.at_ms, a.approver",
    )
    .bind(id)
    .fetch_all(&svc.pool)
    .await
    .map_err(db("reading approvals"))?
    .iter()
    .map(|r| Approval {
        by: r.get("approver"),
        at_ms: r.get::<i64, _>("at_ms").max(0) as u64,
    })
    .collect();
    Ok(from_row(&row, approvals))
}

/// Every request, newest first (the newest 500).
pub async fn list(svc: &Services) -> Result<Vec<ChangeRequest>> {
    expire_due(svc).await?;
    let rows =
        sqlx::query("SELECT id FROM core.config_changes ORDER BY created_at_ms DESC, id DESC LIMIT 500")
            .fetch_all(&svc.pool)
            .await
            .map_err(db("listing requests"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(load(svc, r.get::<String, _>("id").as_str()).await?);
    }
    Ok(out)
}

/// One history row + the hash-chained audit event + the events channel.
#[allow(clippy::too_many_arguments)] // one history row's fields
async fn history(
    svc: &Services,
    id: &str,
    from: Option<State>,
    to: State,
    actor: &str,
    commit: Option<&str>,
    details: serde_json::Value,
) -> Result<()> {
    let now = svc.now_ms();
    sqlx::query(
        "INSERT INTO audit.config_changes (change_id, from_state, to_state, actor, at_ms, commit_id, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(from.map(State::as_str))
    .bind(to.as_str())
    .bind(actor)
    .bind(now as i64)
    .bind(commit)
    .bind(&details)
    .execute(&svc.pool)
    .await
    .map_err(db("recording the history"))?;
    svc.audit(NewEvent {
        at_ms: now,
        record_type: RECORD.into(),
        critical: true,
        actor: actor.into(),
        action: to.as_str().into(),
        scope: "global".into(),
        before: from.map_or(serde_json::Value::Null, |s| json!({"state": s})),
        after: json!({"state": to, "commit": commit, "details": details}),
        result: "ok".into(),
        request_id: id.into(),
    })
    .await?;
    let event = json!({"type": "config_change", "id": id, "state": to, "from": from, "actor": actor, "commit": commit, "at_ms": now});
    if let Err(e) = svc.redis.publish_event(&event).await {
        tracing::warn!(error = %e, id, state = %to, "config change event not published");
    }
    mirror(svc, id).await;
    Ok(())
}

/// Sends the request's new state to the external Config API, in the
/// background (its retries never hold up the workflow); a delivery given
/// up raises a warning alert.
async fn mirror(svc: &Services, id: &str) {
    let Some(api) = svc.config_api.clone() else {
        return;
    };
    let cr = match load(svc, id).await {
        Ok(cr) => cr,
        Err(e) => {
            tracing::warn!(error = %e, id, "config change not mirrored: it cannot be read");
            return;
        }
    };
    let alerts = Arc::clone(&svc.alerts);
    tokio::spawn(async move {
        match api.put_change(&cr.id, &cr).await {
            Ok(d) => tracing::debug!(id = %cr.id, attempts = d.attempts, "config change mirrored"),
            Err(e) => {
                tracing::warn!(id = %cr.id, error = %e, "config change not mirrored");
                alerts
                    .deliver(&crate::alerts::Alert {
                        severity: mlcore_config::Severity::Warning,
                        kind: "config_api_unreachable".into(),
                        scope: cr.id.clone(),
                        summary: format!(
                            "config change {} ({}) not mirrored to the Config API: {e}",
                            cr.id, cr.state
                        ),
                        details: json!({"id": cr.id, "state": cr.state}),
                        resolve: false,
                    })
                    .await;
            }
        }
    });
}

/// Writes the mutable columns of `cr` if nobody changed the row since
/// `seen_updated` (optimistic: two approvers at once, an edit during a
/// merge).
async fn save(svc: &Services, cr: &ChangeRequest, seen_state: State, seen_updated: u64) -> Result<()> {
    let n = sqlx::query(
        "UPDATE core.config_changes SET state = $2, head_commit = $3, merged_commit = $4, deployed_before = $5,
           risk = $6, risk_reasons = $7, required_approvals = $8, fast_path = $9, updated_at_ms = $10, result = $11,
           base_commit = $12
         WHERE id = $1 AND state = $13 AND updated_at_ms = $14",
    )
    .bind(&cr.id)
    .bind(cr.state.as_str())
    .bind(&cr.head_commit)
    .bind(&cr.merged_commit)
    .bind(&cr.deployed_before)
    .bind(cr.risk.to_string())
    .bind(json!(cr.risk_reasons))
    .bind(cr.required_approvals as i32)
    .bind(cr.fast_path)
    .bind(cr.updated_at_ms as i64)
    .bind(&cr.result)
    .bind(&cr.base_commit)
    .bind(seen_state.as_str())
    .bind(seen_updated as i64)
    .execute(&svc.pool)
    .await
    .map_err(db("saving a request"))?
    .rows_affected();
    if n == 1 {
        Ok(())
    } else {
        Err(ConfigChangeError::Concurrent(cr.id.clone()))
    }
}

/// Saves `next` over `cr` (compare-and-set on `cr`'s state and time, a
/// fresh `updated_at_ms`) and records the move in the history.
async fn move_to(
    svc: &Services,
    cr: &ChangeRequest,
    mut next: ChangeRequest,
    actor: &str,
    commit: Option<&str>,
    details: serde_json::Value,
) -> Result<ChangeRequest> {
    next.updated_at_ms = svc.now_ms().max(cr.updated_at_ms + 1);
    save(svc, &next, cr.state, cr.updated_at_ms).await?;
    history(svc, &cr.id, Some(cr.state), next.state, actor, commit, details).await?;
    Ok(next)
}

fn need(cr: &ChangeRequest, ok: &[State], action: &'static str, needed: &'static str) -> Result<()> {
    if ok.contains(&cr.state) {
        Ok(())
    } else {
        Err(ConfigChangeError::WrongState {
            id: cr.id.clone(),
            state: cr.state,
            action,
            needed,
        })
    }
}

/// Proposes a change: a branch from the environment's head with the edits
/// committed, in `draft`.
pub async fn create(svc: &Services, actor: &str, title: &str, edits: Vec<Edit>) -> Result<ChangeRequest> {
    let _op = OPS.lock().await;
    let head = ensure_repository(svc).await?;
    let n: i64 = sqlx::query_scalar("SELECT nextval('core.config_change_ids')")
        .fetch_one(&svc.pool)
        .await
        .map_err(db("numbering a request"))?;
    let id = format!("cr-{n}");
    let branch = format!("cr/{id}");
    let s = store(svc);
    let (b, a, t, h) = (
        branch.clone(),
        actor.to_owned(),
        format!("{id}: {title}"),
        head.clone(),
    );
    let head_commit = blocking(move || {
        let mut tree = s.tree_at(&h)?;
        let before = tree.clone();
        apply_edits(&mut tree, &edits)?;
        if tree == before && !edits.is_empty() {
            return Err(ConfigChangeError::NoChange);
        }
        Ok(s.create_branch(&b, &h, &tree, &a, &t)?)
    })
    .await?;
    let now = svc.now_ms();
    let ttl = svc.config.control.config_changes.ttl_h.saturating_mul(3_600_000);
    sqlx::query(
        "INSERT INTO core.config_changes (id, title, kind, rollback_of, author, state, branch, base_commit, head_commit,
           risk, risk_reasons, required_approvals, fast_path, created_at_ms, updated_at_ms, expires_at_ms)
         VALUES ($1, $2, 'change', NULL, $3, 'draft', $4, $5, $6, 'low', '[]', 1, false, $7, $7, $8)",
    )
    .bind(&id)
    .bind(title)
    .bind(actor)
    .bind(&branch)
    .bind(&head)
    .bind(&head_commit)
    .bind(now as i64)
    .bind(now.saturating_add(ttl) as i64)
    .execute(&svc.pool)
    .await
    .map_err(db("storing a request"))?;
    history(
        svc,
        &id,
        None,
        State::Draft,
        actor,
        Some(&head_commit),
        json!({"title": title}),
    )
    .await?;
    load(svc, &id).await
}

/// Edits an open request (its author only): a new commit on its branch. A
/// submitted request is validated again and loses every approval.
pub async fn edit(svc: &Services, actor: &str, id: &str, edits: Vec<Edit>) -> Result<ChangeRequest> {
    let _op = OPS.lock().await;
    let cr = get(svc, id).await?;
    need(
        &cr,
        &[State::Draft, State::PrCreated, State::Approved],
        "edit",
        "draft, pr_created or approved",
    )?;
    if cr.author != actor {
        return Err(ConfigChangeError::NotAuthor {
            id: id.to_owned(),
            author: cr.author,
            action: "edit",
        });
    }
    let s = store(svc);
    let root = project_root(svc);
    let (branch, head, submitted) = (
        cr.branch.clone(),
        cr.head_commit.clone(),
        cr.state != State::Draft,
    );
    let (a, msg) = (actor.to_owned(), format!("{id}: edit"));
    let (new_head, risk) = blocking(move || {
        let mut tree = s.tree_at(&head)?;
        let before = tree.clone();
        apply_edits(&mut tree, &edits)?;
        if tree == before {
            return Err(ConfigChangeError::NoChange);
        }
        let new_head = s.commit(&branch, &tree, &a, &msg)?;
        let risk = if submitted {
            Some(score(&s, &new_head, &root)?)
        } else {
            None
        };
        Ok((new_head, risk))
    })
    .await?;
    let mut next = ChangeRequest {
        head_commit: new_head.clone(),
        updated_at_ms: svc.now_ms().max(cr.updated_at_ms + 1),
        // An edited rollback is no longer a plain restore.
        fast_path: false,
        ..cr.clone()
    };
    let revoked = cr.approvals.iter().map(|a| a.by.clone()).collect::<Vec<_>>();
    if let Some((risk, reasons, required)) = risk {
        next.state = State::PrCreated;
        next.risk = risk;
        next.risk_reasons = reasons;
        next.required_approvals = required;
    }
    save(svc, &next, cr.state, cr.updated_at_ms).await?;
    sqlx::query("DELETE FROM core.config_change_approvals WHERE change_id = $1")
        .bind(id)
        .execute(&svc.pool)
        .await
        .map_err(db("revoking approvals"))?;
    history(
        svc,
        id,
        Some(cr.state),
        next.state,
        actor,
        Some(&new_head),
        json!({"edit": true, "approvals_revoked": revoked}),
    )
    .await?;
    load(svc, id).await
}

/// Validates the merged result of `head` and scores it: (risk, reasons,
/// approvals needed).
fn score(s: &Store, head: &str, root: &Path) -> Result<(RiskLevel, Vec<String>, u32)> {
    let merged = s.merged_tree(head)?;
    validate(&merged, root)?;
    let current = s.tree_at(&s.head()?)?;
    let changes = diff_trees(&current, &merged);
    if changes.is_empty() {
        return Err(ConfigChangeError::NoChange);
    }
    let risk = change::risk(&current, &changes);
    let required = if risk.level == RiskLevel::High { 2 } else { 1 };
    Ok((risk.level, risk.reasons, required))
}

/// Submits a draft (its author): validated for every environment, scored,
/// `pr_created`.
pub async fn submit(svc: &Services, actor: &str, id: &str) -> Result<ChangeRequest> {
    let _op = OPS.lock().await;
    submit_locked(svc, actor, id).await
}

async fn submit_locked(svc: &Services, actor: &str, id: &str) -> Result<ChangeRequest> {
    let cr = get(svc, id).await?;
    need(&cr, &[State::Draft], "submit", "draft")?;
    if cr.author != actor {
        return Err(ConfigChangeError::NotAuthor {
            id: id.to_owned(),
            author: cr.author,
            action: "submit",
        });
    }
    let (s, root, head) = (store(svc), project_root(svc), cr.head_commit.clone());
    let (risk, reasons, required) = blocking(move || score(&s, &head, &root)).await?;
    let fast = cr.kind == "rollback" && cr.fast_path;
    // The fast path: one approver for a plain restore.
    let required = if fast { 1 } else { required };
    let next = ChangeRequest {
        state: State::PrCreated,
        risk,
        risk_reasons: reasons.clone(),
        required_approvals: required,
        ..cr.clone()
    };
    let details =
        json!({"risk": risk, "reasons": reasons, "required_approvals": required, "fast_path": fast});
    move_to(svc, &cr, next, actor, Some(&cr.head_commit), details).await?;
    load(svc, id).await
}

/// An approver's approval (never the author's). Enough of them make the
/// request `approved`.
pub async fn approve(svc: &Services, actor: &str, id: &str) -> Result<ChangeRequest> {
    let _op = OPS.lock().await;
    let cr = get(svc, id).await?;
    need(&cr, &[State::PrCreated, State::Approved], "approve", "pr_created")?;
    if cr.author == actor {
        return Err(ConfigChangeError::SelfApproval);
    }
    if cr.approvals.iter().any(|a| a.by == actor) {
        return Err(ConfigChangeError::AlreadyApproved(actor.to_owned()));
    }
    let inserted = sqlx::query(
        "INSERT INTO core.config_change_approvals (change_id, approver, head_commit, at_ms)
         SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM core.config_changes WHERE id = $1 AND head_commit = $3
           AND state IN ('pr_created', 'approved'))
         ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(actor)
    .bind(&cr.head_commit)
    .bind(svc.now_ms() as i64)
    .execute(&svc.pool)
    .await
    .map_err(db("recording an approval"))?
    .rows_affected();
    if inserted == 0 {
        return Err(ConfigChangeError::Concurrent(id.to_owned()));
    }
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM core.config_change_approvals WHERE change_id = $1 AND head_commit = $2",
    )
    .bind(id)
    .bind(&cr.head_commit)
    .fetch_one(&svc.pool)
    .await
    .map_err(db("counting approvals"))?;
    let count = count.max(0) as u32;
    let to = if count >= cr.required_approvals {
        State::Approved
    } else {
        State::PrCreated
    };
    if to != cr.state {
        let next = ChangeRequest {
            state: to,
            updated_at_ms: svc.now_ms().max(cr.updated_at_ms + 1),
            ..cr.clone()
        };
        save(svc, &next, cr.state, cr.updated_at_ms).await?;
    }
    history(
        svc,
        id,
        Some(cr.state),
        to,
        actor,
        Some(&cr.head_commit),
        json!({"approval": count, "of": cr.required_approvals}),
    )
    .await?;
    load(svc, id).await
}

/// An approver's rejection: the request ends `rejected`.
pub async fn reject(svc: &Services, actor: &str, id: &str, reason: &str) -> Result<ChangeRequest> {
    finish_open(svc, actor, id, State::Rejected, reason, "reject", false).await
}

/// The author (or an admin, `any_actor`) withdraws the request.
pub async fn cancel(
    svc: &Services,
    actor: &str,
    id: &str,
    reason: &str,
    any_actor: bool,
) -> Result<ChangeRequest> {
    finish_open(svc, actor, id, State::Cancelled, reason, "cancel", !any_actor).await
}

async fn finish_open(
    svc: &Services,
    actor: &str,
    id: &str,
    to: State,
    reason: &str,
    action: &'static str,
    author_only: bool,
) -> Result<ChangeRequest> {
    let _op = OPS.lock().await;
    let cr = get(svc, id).await?;
    let allowed: &[State] = if to == State::Rejected {
        &[State::PrCreated, State::Approved]
    } else {
        &[State::Draft, State::PrCreated, State::Approved, State::Merged]
    };
    need(
        &cr,
        allowed,
        action,
        if to == State::Rejected {
            "pr_created or approved"
        } else {
            "not applied nor closed"
        },
    )?;
    if to == State::Rejected && cr.author == actor {
        return Err(ConfigChangeError::SelfApproval);
    }
    if author_only && cr.author != actor {
        return Err(ConfigChangeError::NotAuthor {
            id: id.to_owned(),
            author: cr.author,
            action,
        });
    }
    // A merged request never deployed (its window stayed closed): the
    // branch gets its revert, so it says again what is deployed.
    let mut revert = None;
    if let (State::Merged, Some(m)) = (cr.state, cr.merged_commit.clone()) {
        let (s, a, msg) = (
            store(svc),
            actor.to_owned(),
            format!("Revert {id}: cancelled before it was applied"),
        );
        revert = Some(
            blocking(move || {
                let tree = s.reverted_tree(&m)?;
                Ok(s.commit_on_branch(&tree, &a, &msg)?)
            })
            .await?,
        );
    }
    let next = ChangeRequest {
        state: to,
        result: Some(format!("{action}ed by {actor}: {reason}")),
        ..cr.clone()
    };
    let details = json!({"reason": reason, "branch_reverted": revert});
    move_to(svc, &cr, next, actor, revert.as_deref(), details).await?;
    load(svc, id).await
}

/// Merges an approved request into the environment's branch. Refused while
/// another merged request waits to be applied, on a conflict, or when the
/// branch moved and the request's risk rose.
pub async fn merge(svc: &Services, actor: &str, id: &str) -> Result<ChangeRequest> {
    let _op = OPS.lock().await;
    let cr = get(svc, id).await?;
    need(&cr, &[State::Approved], "merge", "approved")?;
    let approvals = cr.approvals.len() as u32;
    if approvals < cr.required_approvals {
        return Err(ConfigChangeError::WrongState {
            id: id.to_owned(),
            state: State::PrCreated,
            action: "merge",
            needed: "approved by as many approvers as its risk needs",
        });
    }
    if cr.fast_path {
        if let Some(target) = &cr.rollback_of {
            let target = load(svc, target).await?;
            if !fast_path_holds(svc, &target, &cr.head_commit).await? {
                return Err(ConfigChangeError::FastPathLost(id.to_owned()));
            }
        }
    }
    let pending: Option<String> = sqlx::query_scalar(
        "SELECT id FROM core.config_changes WHERE state IN ('merged', 'applying') AND id <> $1 LIMIT 1",
    )
    .bind(id)
    .fetch_optional(&svc.pool)
    .await
    .map_err(db("looking for a pending apply"))?;
    if let Some(other) = pending {
        return Err(ConfigChangeError::ApplyPending(other));
    }
    let (s, root, head) = (store(svc), project_root(svc), cr.head_commit.clone());
    let (a, msg, was) = (
        actor.to_owned(),
        format!("Merge {}: {}", cr.id, cr.title),
        cr.risk,
    );
    let id2 = id.to_owned();
    let merged = blocking(move || {
        let (risk, _, _) = score(&s, &head, &root)?;
        if risk > was {
            return Err(ConfigChangeError::RiskChanged {
                id: id2,
                was,
                now: risk,
            });
        }
        Ok(s.merge(&head, &a, &msg)?)
    })
    .await?;
    let next = ChangeRequest {
        state: State::Merged,
        merged_commit: Some(merged.clone()),
        ..cr.clone()
    };
    move_to(svc, &cr, next, actor, Some(&merged), json!({})).await?;
    load(svc, id).await
}

/// What an apply did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Applied {
    /// The request after it.
    pub request: ChangeRequest,
    /// What the daemons did with the version.
    pub daemons: deploy::Taken,
    /// What the daemons did with the version restored after a failure.
    pub revert: Option<deploy::Taken>,
    /// From the start of the deployment to the last daemon taking it, ms.
    pub apply_ms: u64,
}

/// Deploys a merged request and waits for the daemons: `applied` when every
/// running daemon takes it; otherwise the previous version is deployed
/// again (and committed as a revert) and the request is `failed`.
///
/// The request is claimed first (`merged → applying`, so a second apply or
/// a cancel is refused meanwhile), then the work runs on a task of its own:
/// a caller that goes away (a client disconnecting) does not stop it
/// between the deployment and its outcome.
pub async fn apply(svc: &Arc<Services>, actor: &str, id: &str) -> Result<Applied> {
    let cr = {
        let _op = OPS.lock().await;
        let cr = get(svc, id).await?;
        need(&cr, &[State::Merged], "apply", "merged")?;
        let cfg = &svc.config.control.config_changes;
        if cr.risk == RiskLevel::High && !cr.fast_path && !cfg.change_window.is_open(svc.now_ms()) {
            let w = &cfg.change_window;
            return Err(ConfigChangeError::WindowClosed {
                id: id.to_owned(),
                window: format!(
                    "{} {}–{} UTC",
                    w.days
                        .iter()
                        .map(|d| format!("{d:?}").to_lowercase())
                        .collect::<Vec<_>>()
                        .join(","),
                    w.start,
                    w.end
                ),
            });
        }
        let claimed = ChangeRequest {
            state: State::Applying,
            updated_at_ms: svc.now_ms().max(cr.updated_at_ms + 1),
            ..cr.clone()
        };
        save(svc, &claimed, cr.state, cr.updated_at_ms).await?;
        history(
            svc,
            id,
            Some(cr.state),
            State::Applying,
            actor,
            cr.merged_commit.as_deref(),
            json!({}),
        )
        .await?;
        claimed
    };
    let (svc, actor) = (Arc::clone(svc), actor.to_owned());
    tokio::spawn(async move { apply_claimed(&svc, &actor, cr).await })
        .await
        .map_err(|e| ConfigChangeError::Task(e.to_string()))?
}

async fn apply_claimed(svc: &Services, actor: &str, cr: ChangeRequest) -> Result<Applied> {
    let id = cr.id.clone();
    let cfg = svc.config.control.config_changes.clone();
    let version = cr.merged_commit.clone().unwrap_or_default();
    let record = deploy::read(&cfg.deploy_dir);
    let before = record.as_ref().map(|r| r.version.clone());
    let started = svc.now_ms();
    let (s, dir, v, cid, rec) = (
        store(svc),
        cfg.deploy_dir.clone(),
        version.clone(),
        id.clone(),
        record.clone(),
    );
    let deployed = blocking(move || {
        // What to put back on failure: the deployed version from git, the
        // folder as it is when it has no record (never an empty tree).
        let previous = match rec.as_ref().and_then(|r| s.tree_at(&r.version).ok()) {
            Some(t) => t,
            None => ConfigTree::read(&dir).map_err(|e| ConfigChangeError::Deploy {
                dir: dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })?,
        };
        let tree = s.tree_at(&v)?;
        if let Err(source) = deploy::write(&dir, &tree, &v, &cid, started) {
            // Half written: the previous files and record back, so a process
            // that starts now finds a whole deployment.
            if let Some(r) = rec {
                if let Err(e) = deploy::write(&dir, &previous, &r.version, &r.change_id, r.applied_at_ms) {
                    tracing::error!(dir = %dir.display(), error = %e, "the deployed folder could not be restored");
                }
            }
            return Err(ConfigChangeError::Deploy {
                dir: dir.clone(),
                source,
            });
        }
        Ok(previous)
    })
    .await;
    let previous_tree = match deployed {
        Ok(t) => t,
        Err(e) => {
            // Nothing (or the previous version again) is deployed: it stays
            // merged, to be applied again.
            let back = ChangeRequest {
                state: State::Merged,
                updated_at_ms: svc.now_ms().max(cr.updated_at_ms + 1),
                ..cr.clone()
            };
            save(svc, &back, State::Applying, cr.updated_at_ms).await?;
            history(
                svc,
                &id,
                Some(State::Applying),
                State::Merged,
                actor,
                Some(&version),
                json!({"deploy_failed": e.to_string()}),
            )
            .await?;
            return Err(e);
        }
    };
    announce(svc, &version, &id).await;
    let taken = deploy::wait_for_daemons(svc, &version, started, cfg.apply_timeout_ms).await;
    let apply_ms = svc.now_ms().saturating_sub(started);
    let mut next = ChangeRequest {
        deployed_before: before.clone(),
        updated_at_ms: svc.now_ms().max(cr.updated_at_ms + 1),
        ..cr.clone()
    };
    let mut revert = None;
    let mut severity = mlcore_config::Severity::Warning;
    if taken.ok() {
        next.state = State::Applied;
        let control = take_own_part(svc).await;
        next.result = Some(
            if taken.took.is_empty() {
                "no daemon running: nothing to confirm".to_owned()
            } else {
                format!(
                    "taken by {} daemon(s){}",
                    taken.took.len(),
                    if taken.restart_required.is_empty() {
                        String::new()
                    } else {
                        format!("; waiting for a restart: {}", taken.restart_required.join(", "))
                    }
                )
            } + &control,
        );
    } else {
        let why = taken.failure(cfg.apply_timeout_ms);
        // Put back what was deployed, and make the branch say so.
        let (s, dir, a) = (store(svc), cfg.deploy_dir.clone(), actor.to_owned());
        let msg = format!("Revert {id}: {why}");
        let now2 = svc.now_ms();
        let (prev, cid) = (previous_tree, id.clone());
        let restored = {
            let _op = OPS.lock().await;
            blocking(move || {
                let commit = s.commit_on_branch(&prev, &a, &msg)?;
                deploy::write(&dir, &prev, &commit, &format!("revert-{cid}"), now2).map_err(|source| {
                    ConfigChangeError::Deploy {
                        dir: dir.clone(),
                        source,
                    }
                })?;
                Ok(commit)
            })
            .await
        };
        match restored {
            Ok(restored) => {
                announce(svc, &restored, &id).await;
                let back = deploy::wait_for_daemons(svc, &restored, now2, cfg.apply_timeout_ms).await;
                next.result = Some(if back.ok() {
                    format!("{why}; reverted to {restored}")
                } else {
                    severity = mlcore_config::Severity::Critical;
                    format!(
                        "{why}; reverted to {restored}, which the daemons did not all take: {}",
                        back.failure(cfg.apply_timeout_ms)
                    )
                });
                revert = Some(back);
            }
            Err(e) => {
                severity = mlcore_config::Severity::Critical;
                next.result = Some(format!(
                    "{why}; THE REVERT FAILED: {e} — {version} may still be deployed"
                ));
            }
        }
        next.state = State::Failed;
    }
    save(svc, &next, State::Applying, cr.updated_at_ms).await?;
    history(
        svc,
        &id,
        Some(State::Applying),
        next.state,
        actor,
        Some(&version),
        json!({"daemons": taken, "revert": revert, "deployed_before": before, "apply_ms": apply_ms}),
    )
    .await?;
    if next.state == State::Failed {
        svc.alerts.raise(crate::alerts::Alert {
            severity,
            kind: "config_apply_failed".into(),
            scope: id.clone(),
            summary: format!(
                "config change {id} failed: {}",
                next.result.clone().unwrap_or_default()
            ),
            details: json!({"id": id, "version": version}),
            resolve: false,
        });
    }
    Ok(Applied {
        request: load(svc, &id).await?,
        daemons: taken,
        revert,
        apply_ms,
    })
}

/// Requests a stopped control plane left `applying`: `failed`, saying what
/// is deployed, and alerted (whether the daemons took it is unknown). Run
/// by `serve` at start.
pub async fn recover_interrupted(svc: &Services) -> Result<Vec<String>> {
    let _op = OPS.lock().await;
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM core.config_changes WHERE state = 'applying'")
        .fetch_all(&svc.pool)
        .await
        .map_err(db("looking for interrupted applies"))?;
    let deployed = deploy::read(&svc.config.control.config_changes.deploy_dir).map(|r| r.version);
    for id in &ids {
        let cr = load(svc, id).await?;
        let why = format!(
            "the control plane stopped during the apply; deployed now: {}",
            deployed.as_deref().unwrap_or("nothing recorded")
        );
        let next = ChangeRequest {
            state: State::Failed,
            result: Some(why.clone()),
            updated_at_ms: svc.now_ms().max(cr.updated_at_ms + 1),
            ..cr.clone()
        };
        save(svc, &next, State::Applying, cr.updated_at_ms).await?;
        history(
            svc,
            id,
            Some(State::Applying),
            State::Failed,
            "system",
            None,
            json!({"reason": why}),
        )
        .await?;
        svc.alerts.raise(crate::alerts::Alert {
            severity: mlcore_config::Severity::Critical,
            kind: "config_apply_interrupted".into(),
            scope: id.clone(),
            summary: format!("config change {id}: {why}; check GET /v1/configs/status"),
            details: json!({"id": id}),
            resolve: false,
        });
    }
    Ok(ids)
}

/// What this control plane takes live of a deployed version: its alert
/// channels and routing. Said in the request's result (`; control: ...`),
/// empty when they did not change.
async fn take_own_part(svc: &Services) -> String {
    let cfg = &svc.config.control.config_changes;
    let root = std::env::var_os("MLCORE_PROJECT_ROOT").map_or_else(|| project_root(svc), PathBuf::from);
    let (dir, env) = (cfg.deploy_dir.clone(), svc.config.environment);
    let loaded = blocking(move || {
        let tree = ConfigTree::read(&dir).map_err(|e| ConfigChangeError::Invalid(e.problems))?;
        mlcore_config::load_tree(
            &tree,
            &dir,
            &root,
            env,
            &mlcore_config::ProcessEnv,
            Process::Control,
        )
        .map_err(|e| ConfigChangeError::Invalid(e.problems))
    })
    .await;
    match loaded {
        Ok(new) if new.notifications == svc.alerts.settings() => String::new(),
        Ok(new) => match svc.alerts.reroute(new.notifications) {
            Ok(()) => "; control: alert channels and routing taken".into(),
            Err(e) => format!("; control kept its alert routing: {e}"),
        },
        Err(e) => format!("; control kept its alert routing (the version does not load here: {e})"),
    }
}

async fn announce(svc: &Services, version: &str, id: &str) {
    let event = json!({"type": "config_applied", "version": version, "id": id, "at_ms": svc.now_ms()});
    if let Err(e) = svc.redis.publish_event(&event).await {
        // Daemons also look at the folder every second.
        tracing::warn!(error = %e, id, "config_applied event not published");
    }
}

/// Proposes the rollback of an applied request: git's revert of its merge
/// on the current branch, submitted. When that only restores the version
/// deployed before it, the fast path applies (one approver, any time).
pub async fn rollback(svc: &Services, actor: &str, id: &str) -> Result<ChangeRequest> {
    let _op = OPS.lock().await;
    let target = get(svc, id).await?;
    if target.state != State::Applied {
        return Err(ConfigChangeError::NotApplied {
            id: id.to_owned(),
            state: target.state,
        });
    }
    let head = ensure_repository(svc).await?;
    let merged = target.merged_commit.clone().unwrap_or_default();
    let s = store(svc);
    let tree = blocking(move || Ok(s.reverted_tree(&merged)?)).await?;
    let n: i64 = sqlx::query_scalar("SELECT nextval('core.config_change_ids')")
        .fetch_one(&svc.pool)
        .await
        .map_err(db("numbering a request"))?;
    let rid = format!("cr-{n}");
    let branch = format!("cr/{rid}");
    let title = format!("Roll back {id}: {}", target.title);
    let (s, b, a, h, msg) = (
        store(svc),
        branch.clone(),
        actor.to_owned(),
        head.clone(),
        format!("{rid}: {title}"),
    );
    let head_commit = blocking(move || Ok(s.create_branch(&b, &h, &tree, &a, &msg)?)).await?;
    // Fast only when what is deployed is still what the request deployed
    // (nothing applied since, a failed apply's revert aside) and the revert
    // gives back exactly what was deployed before it; checked again at
    // merge, and lost by any edit.
    let fast = fast_path_holds(svc, &target, &head_commit).await?;
    let now = svc.now_ms();
    let ttl = svc.config.control.config_changes.ttl_h.saturating_mul(3_600_000);
    sqlx::query(
        "INSERT INTO core.config_changes (id, title, kind, rollback_of, author, state, branch, base_commit, head_commit,
           risk, risk_reasons, required_approvals, fast_path, created_at_ms, updated_at_ms, expires_at_ms)
         VALUES ($1, $2, 'rollback', $3, $4, 'draft', $5, $6, $7, 'low', '[]', 1, $8, $9, $9, $10)",
    )
    .bind(&rid)
    .bind(&title)
    .bind(id)
    .bind(actor)
    .bind(&branch)
    .bind(&head)
    .bind(&head_commit)
    .bind(fast)
    .bind(now as i64)
    .bind(now.saturating_add(ttl) as i64)
    .execute(&svc.pool)
    .await
    .map_err(db("storing a rollback"))?;
    history(
        svc,
        &rid,
        None,
        State::Draft,
        actor,
        Some(&head_commit),
        json!({"rollback_of": id, "fast_path": fast}),
    )
    .await?;
    submit_locked(svc, actor, &rid).await
}

/// Whether rolling `target` back with `head` (a rollback's revision) only
/// restores the version deployed before it: what is deployed is still
/// `target`'s, and `head` merged gives back exactly `deployed_before`.
async fn fast_path_holds(svc: &Services, target: &ChangeRequest, head: &str) -> Result<bool> {
    let (Some(merged), Some(before)) = (target.merged_commit.clone(), target.deployed_before.clone()) else {
        return Ok(false);
    };
    let s = store(svc);
    let dir = svc.config.control.config_changes.deploy_dir.clone();
    let head = head.to_owned();
    blocking(move || {
        let deployed = ConfigTree::read(&dir).map_err(|e| ConfigChangeError::Deploy {
            dir: dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(s.tree_at(&merged)? == deployed && s.tree_at(&before).ok() == s.merged_tree(&head).ok())
    })
    .await
}

/// A request's diff against the branch it merges into.
pub async fn preview(svc: &Services, id: &str) -> Result<Preview> {
    let cr = get(svc, id).await?;
    let s = store(svc);
    blocking(move || {
        let (against, old, new) = match &cr.merged_commit {
            Some(m) => {
                let repo_parent = s.first_parent(m)?;
                (repo_parent.clone(), s.tree_at(&repo_parent)?, s.tree_at(m)?)
            }
            None => {
                let head = s.head()?;
                // A conflict is the answer (409), not a diff against
                // something else.
                let new = s.merged_tree(&cr.head_commit)?;
                (head.clone(), s.tree_at(&head)?, new)
            }
        };
        Ok(preview_of(&cr.id, against, &old, &new))
    })
    .await
}

/// Which version is deployed and which daemon runs which.
pub async fn status(svc: &Services) -> Result<Status> {
    let cfg = &svc.config.control.config_changes;
    let record = deploy::read(&cfg.deploy_dir);
    let s = store(svc);
    let branch_head = blocking(move || Ok(s.head().ok())).await?;
    let now = svc.now_ms();
    let daemons = svc
        .redis
        .heartbeats()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(instance, _, hb)| {
            let hb = hb?;
            Some(DaemonConfig {
                instance,
                version: hb.config.version.clone(),
                since_ms: hb.config.since_ms,
                restart_required: hb.config.restart_required.clone(),
                refused: hb
                    .config
                    .refused
                    .as_ref()
                    .map(|r| format!("{}: {}", r.version, r.reason)),
                heartbeat_age_ms: now.saturating_sub(hb.at_ms),
            })
        })
        .collect();
    Ok(Status {
        branch_head,
        deployed: record.as_ref().map(|r| r.version.clone()),
        deployed_by: record.map(|r| r.change_id),
        daemons,
    })
}
