//! Ops modes as the control plane changes them: typed actions and scopes,
//! compare-and-set through the guard, and each strategy's state beside
//! what its daemons report.

use mlcore_contract::{ContractError, ModeChange, OpsMode, SetModeOutcome};
use mlcore_market::StrategyId;
use serde::Serialize;

use crate::services::Services;

/// What an operator may ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OpsAction {
    /// Publish nothing (applied at once).
    Halt,
    /// Only shrink positions (applied at once).
    ReduceOnly,
    /// Publish flat signals (needs an approver).
    Flatten,
    /// Back to normal publishing (needs an approver).
    Resume,
    /// Re-activate the previous model version, pinned (needs an approver).
    Rollback,
}

impl OpsAction {
    /// Every action.
    pub const ALL: [Self; 5] = [
        Self::Halt,
        Self::ReduceOnly,
        Self::Flatten,
        Self::Resume,
        Self::Rollback,
    ];

    /// The wire form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Halt => "halt",
            Self::ReduceOnly => "reduce_only",
            Self::Flatten => "flatten",
            Self::Resume => "resume",
            Self::Rollback => "rollback",
        }
    }

    /// The mode the action sets; `None` for a rollback (a model change).
    pub const fn target_mode(self) -> Option<OpsMode> {
        match self {
            Self::Halt => Some(OpsMode::Halted),
            Self::ReduceOnly => Some(OpsMode::ReduceOnly),
            Self::Flatten => Some(OpsMode::Flatten),
            Self::Resume => Some(OpsMode::Active),
            Self::Rollback => None,
        }
    }

    /// Safety actions an operator applies alone; the others wait for an
    /// approver.
    pub const fn applies_at_once(self) -> bool {
        matches!(self, Self::Halt | Self::ReduceOnly)
    }
}

impl std::str::FromStr for OpsAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown action `{s}` (halt, reduce_only, flatten, resume, rollback)"))
    }
}

/// What an action applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every strategy of the universe.
    Global,
    /// One strategy of the universe.
    Strategy(StrategyId),
}

impl Scope {
    /// `global` or a strategy id of `svc`'s universe.
    pub fn parse(svc: &Services, s: &str) -> Result<Self, OpsError> {
        if s == "global" {
            return Ok(Self::Global);
        }
        match svc.config.strategy(s) {
            Some(strategy) => Ok(Self::Strategy(strategy.id.clone())),
            None => Err(OpsError::UnknownScope(s.to_owned())),
        }
    }

    /// The strategies it covers, in universe order.
    pub fn strategies(&self, svc: &Services) -> Vec<StrategyId> {
        match self {
            Self::Global => svc
                .config
                .universe
                .strategies
                .iter()
                .map(|s| s.id.clone())
                .collect(),
            Self::Strategy(id) => vec![id.clone()],
        }
    }

    /// `global` or the strategy id.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Global => "global",
            Self::Strategy(id) => id,
        }
    }
}

/// One strategy's mode change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ModeChanged {
    /// The mode before.
    #[schema(value_type = String)]
    pub from: OpsMode,
    /// The mode now.
    #[schema(value_type = String)]
    pub to: OpsMode,
    /// The ops hash's version after the change.
    pub version: u64,
}

/// Why a mode change did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// Not `global` nor a strategy of the universe.
    #[error("unknown scope `{0}` (a strategy id or global)")]
    UnknownScope(String),
    /// Redis did not answer or refused.
    #[error("Redis: {0}")]
    Redis(#[from] ContractError),
    /// Someone else changed a strategy's mode first (compare-and-set):
    /// what did change, and the strategies that conflicted with the version
    /// now stored.
    #[error("another change to the mode won the compare-and-set")]
    Conflict {
        /// Strategies changed before the conflict.
        applied: std::collections::BTreeMap<String, ModeChanged>,
        /// Strategy → the version now stored.
        conflicts: std::collections::BTreeMap<String, u64>,
    },
}

/// Sets `mode` on every strategy of `scope` through the guard's
/// compare-and-set (each against the version it read).
pub async fn apply(
    svc: &Services,
    scope: &Scope,
    mode: OpsMode,
    reason: &str,
    actor: &str,
    request_id: &str,
) -> Result<std::collections::BTreeMap<String, ModeChanged>, OpsError> {
    let mut applied = std::collections::BTreeMap::new();
    let mut conflicts = std::collections::BTreeMap::new();
    for strategy in scope.strategies(svc) {
        let current = svc.redis.read_mode(&strategy).await?;
        let change = ModeChange {
            strategy: &strategy,
            expected_version: current.version,
            mode,
            reason,
            actor,
            request_id,
        };
        match svc.redis.set_mode(&change).await? {
            SetModeOutcome::Applied { version } => {
                applied.insert(
                    strategy.to_string(),
                    ModeChanged {
                        from: current.mode,
                        to: mode,
                        version,
                    },
                );
            }
            SetModeOutcome::Conflict { current_version } => {
                conflicts.insert(strategy.to_string(), current_version);
            }
        }
    }
    if conflicts.is_empty() {
        Ok(applied)
    } else {
        Err(OpsError::Conflict { applied, conflicts })
    }
}

/// One daemon's report on a strategy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DaemonReport {
    /// Daemon instance.
    pub instance: String,
    /// The mode it applies (`None`: its heartbeat expired).
    pub mode: Option<String>,
    /// The model it serves, `model_id@version`.
    pub model: Option<String>,
    /// Whether its mode differs from the one in Redis.
    pub disagrees: bool,
    /// No heartbeat for longer than `heartbeat_missing_after_ms`.
    pub silent: bool,
}

/// One strategy's ops state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StrategyStatus {
    /// Strategy id.
    pub strategy: String,
    /// Mode in force (absent or unreadable state: halted).
    pub mode: String,
    /// Compare-and-set version.
    pub version: u64,
    /// Who set it.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// The request that set it.
    pub request_id: String,
    /// When, ms since the epoch.
    pub updated_at_ms: u64,
    /// The stored state was absent or unreadable, so halted.
    pub fail_closed: bool,
    /// What each daemon reports.
    pub daemons: Vec<DaemonReport>,
}

/// Every strategy's mode beside what the daemons report.
pub async fn status(svc: &Services) -> Result<Vec<StrategyStatus>, OpsError> {
    let heartbeats = svc.redis.heartbeats().await?;
    let now = svc.now_ms();
    let missing_after = svc.config.control.heartbeat_missing_after_ms;
    let mut out = Vec::new();
    for s in &svc.config.universe.strategies {
        let st = svc.redis.read_mode(&s.id).await?;
        let daemons = heartbeats
            .iter()
            .map(|(instance, _, hb)| match hb {
                Some(hb) => {
                    let seen = hb.modes.get(s.id.as_str()).cloned().unwrap_or_default();
                    DaemonReport {
                        instance: instance.clone(),
                        disagrees: seen != st.mode.as_str(),
                        mode: Some(seen),
                        model: hb.models.get(s.id.as_str()).cloned(),
                        silent: now.saturating_sub(hb.at_ms) > missing_after,
                    }
                }
                None => DaemonReport {
                    instance: instance.clone(),
                    mode: None,
                    model: None,
                    disagrees: false,
                    silent: true,
                },
            })
            .collect();
        out.push(StrategyStatus {
            strategy: s.id.to_string(),
            mode: st.mode.as_str().to_owned(),
            version: st.version,
            actor: st.actor,
            reason: st.reason,
            request_id: st.request_id,
            updated_at_ms: st.updated_at_ms,
            fail_closed: st.fail_closed,
            daemons,
        });
    }
    Ok(out)
}
