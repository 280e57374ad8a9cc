//! Two-person approvals: requests that wait for a second principal
//! (`core.ops_requests`). A request is stored `pending` with an expiry;
//! an approver other than the requester claims it atomically (a replayed
//! or concurrent decision finds it decided), then it ends `applied`,
//! `failed` or `rejected`; an expired one ends `expired`.

use serde::Serialize;
use sqlx::Row;

use crate::services::Services;

/// What an approver says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Apply the request.
    Approve,
    /// Drop it.
    Reject,
}

impl Verdict {
    /// The wire form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Reject => "reject",
        }
    }
}

impl std::str::FromStr for Verdict {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "approve" => Ok(Self::Approve),
            "reject" => Ok(Self::Reject),
            other => Err(format!("unknown verdict `{other}` (approve or reject)")),
        }
    }
}

/// A stored request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Request id.
    pub id: String,
    /// What it asks (`flatten`, `resume`, `rollback`, `activate`).
    pub action: String,
    /// A strategy id or `global`.
    pub scope: String,
    /// Why.
    pub reason: String,
    /// Who asked.
    pub requested_by: String,
    /// When it stops being approvable, ms since the epoch.
    pub expires_at_ms: u64,
    /// `pending`, `applying`, `applied`, `failed`, `rejected`, `expired`.
    pub status: String,
    /// The model an `activate` names.
    pub target: Option<String>,
}

/// Why a request cannot be decided.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// No such request.
    #[error("no request {0}")]
    NotFound(String),
    /// Already decided (or being applied).
    #[error("request {id} is {status}")]
    Decided {
        /// Request id.
        id: String,
        /// Its status.
        status: String,
    },
    /// Past its expiry: now `expired`.
    #[error("request {0} expired")]
    Expired(String),
    /// The requester tried to decide their own request.
    #[error("the requester cannot approve or reject their own request")]
    SelfApproval,
    /// PostgreSQL failed.
    #[error("approvals database while {during}: {source}")]
    Db {
        /// What was being done.
        during: &'static str,
        /// The error.
        #[source]
        source: sqlx::Error,
    },
}

fn db(during: &'static str) -> impl Fn(sqlx::Error) -> ApprovalError {
    move |source| ApprovalError::Db { during, source }
}

/// A new request id: time, process and a counter (unique per process run).
pub fn new_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "ops-{:x}-{:x}-{}",
        crate::services::now_ms(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Stores a request that waits for a second principal (`target`: the model
/// an `activate` names); returns when it expires.
pub async fn store(
    svc: &Services,
    id: &str,
    action: &str,
    scope: &str,
    reason: &str,
    who: &str,
    target: Option<&str>,
) -> Result<u64, ApprovalError> {
    let now = svc.now_ms();
    let expires = now + svc.config.control.approvals.ttl_s * 1000;
    sqlx::query("INSERT INTO core.ops_requests (id, action, scope, reason, requested_by, requested_at_ms, expires_at_ms, status, target) VALUES ($1,$2,$3,$4,$5,$6,$7,'pending',$8)")
        .bind(id)
        .bind(action)
        .bind(scope)
        .bind(reason)
        .bind(who)
        .bind(now as i64)
        .bind(expires as i64)
        .bind(target)
        .execute(&svc.pool)
        .await
        .map_err(db("storing the request"))?;
    Ok(expires)
}

/// Reads request `id`.
pub async fn get(svc: &Services, id: &str) -> Result<Pending, ApprovalError> {
    let row = sqlx::query("SELECT action, scope, reason, requested_by, expires_at_ms, status, target FROM core.ops_requests WHERE id = $1")
        .bind(id)
        .fetch_optional(&svc.pool)
        .await
        .map_err(db("reading the request"))?
        .ok_or_else(|| ApprovalError::NotFound(id.to_owned()))?;
    let text = |c: &str| row.try_get::<String, _>(c).map_err(db("reading the request"));
    Ok(Pending {
        id: id.to_owned(),
        action: text("action")?,
        scope: text("scope")?,
        reason: text("reason")?,
        requested_by: text("requested_by")?,
        expires_at_ms: row
            .try_get::<i64, _>("expires_at_ms")
            .map_err(db("reading the request"))?
            .max(0) as u64,
        status: text("status")?,
        target: row
            .try_get::<Option<String>, _>("target")
            .map_err(db("reading the request"))?,
    })
}

/// Claims `p` for `who`'s verdict: refused when it is decided, expired
/// (it is then marked so) or `who`'s own; atomic, so a replayed or
/// concurrent decision finds it decided. An approved request is
/// `applying` until [`finish`].
pub async fn claim(svc: &Services, p: &Pending, verdict: Verdict, who: &str) -> Result<(), ApprovalError> {
    if p.status != "pending" {
        return Err(ApprovalError::Decided {
            id: p.id.clone(),
            status: format!("already {}", p.status),
        });
    }
    let now = svc.now_ms();
    if now >= p.expires_at_ms {
        sqlx::query("UPDATE core.ops_requests SET status='expired' WHERE id=$1 AND status='pending'")
            .bind(&p.id)
            .execute(&svc.pool)
            .await
            .map_err(db("expiring the request"))?;
        return Err(ApprovalError::Expired(p.id.clone()));
    }
    if p.requested_by == who {
        return Err(ApprovalError::SelfApproval);
    }
    let status = match verdict {
        Verdict::Approve => "applying",
        Verdict::Reject => "rejected",
    };
    let claimed = sqlx::query(
        "UPDATE core.ops_requests SET status=$2, decided_by=$3, decided_at_ms=$4 WHERE id=$1 AND status='pending'",
    )
    .bind(&p.id)
    .bind(status)
    .bind(who)
    .bind(now as i64)
    .execute(&svc.pool)
    .await
    .map_err(db("claiming the request"))?
    .rows_affected();
    if claimed == 0 {
        return Err(ApprovalError::Decided {
            id: p.id.clone(),
            status: "was decided concurrently".into(),
        });
    }
    Ok(())
}

/// Records how an approved request ended (`applied` or `failed`) and what
/// it did.
pub async fn finish(
    svc: &Services,
    id: &str,
    applied: bool,
    result: &serde_json::Value,
) -> Result<(), ApprovalError> {
    sqlx::query("UPDATE core.ops_requests SET status=$2, result=$3 WHERE id=$1")
        .bind(id)
        .bind(if applied { "applied" } else { "failed" })
        .bind(result.to_string())
        .execute(&svc.pool)
        .await
        .map_err(db("recording the result"))?;
    Ok(())
}
