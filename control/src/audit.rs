//! The audit log: append-only, hash-chained events in `audit.events`, each
//! also written once to the WORM archive.
//!
//! Every event's `hash` is sha256 over its `prev_hash` and the canonical JSON
//! of its fields (keys sorted), so changing, deleting, inserting or
//! reordering a row breaks the chain at that row; [`verify`] names the first
//! bad one and also checks that the archive holds exactly the same events.
//! Appends are serialised by a transaction-scoped advisory lock so `seq` is
//! contiguous. The database refuses UPDATE, DELETE and TRUNCATE (trigger),
//! and the application role may only INSERT and SELECT.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mlcore_config::KeyPurpose;
use mlcore_models::artifact::{SecretKeyFile, TrustStore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};

/// Advisory lock key that serialises appends.
const APPEND_LOCK: i64 = 0x6d6c_636f_7265_0001;

/// Why an audit operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Database failure.
    #[error("audit database: {0}")]
    Db(#[from] sqlx::Error),
    /// The checkpoint signing key cannot sign.
    #[error("audit checkpoint key: {0}")]
    Key(String),
    /// Archive failure.
    #[error("WORM archive {path}: {source}")]
    Worm {
        /// File.
        path: PathBuf,
        /// Error.
        #[source]
        source: std::io::Error,
    },
}

/// An event to record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// Kind of record (folder in the archive), e.g. `ops_request`.
    pub record_type: String,
    /// Kept for the critical retention period.
    pub critical: bool,
    /// Principal.
    pub actor: String,
    /// What was attempted.
    pub action: String,
    /// Strategy id or `global`.
    pub scope: String,
    /// State before.
    pub before: serde_json::Value,
    /// State after.
    pub after: serde_json::Value,
    /// `ok`, `refused: ...`, `error: ...`.
    pub result: String,
    /// Request id.
    pub request_id: String,
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the chain (1, 2, ...).
    pub seq: i64,
    /// The fields.
    #[serde(flatten)]
    pub event: NewEvent,
    /// Hash of the previous event.
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
}

/// The hash of an event given its predecessor's.
pub fn chain_hash(seq: i64, prev_hash: &str, e: &NewEvent) -> String {
    let body = serde_json::json!({
        "seq": seq, "at_ms": e.at_ms, "record_type": e.record_type, "critical": e.critical,
        "actor": e.actor, "action": e.action, "scope": e.scope, "before": e.before,
        "after": e.after, "result": e.result, "request_id": e.request_id,
    });
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(body.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// Archive path of an event: `<root>/<record_type>/YYYY/YYYYMM/<seq>-<hash>.json`.
pub fn worm_path(root: &Path, e: &Event) -> PathBuf {
    let (y, m, _) = mlcore_market::civil::from_days((e.event.at_ms / 86_400_000) as i64);
    root.join(&e.event.record_type)
        .join(format!("{y:04}"))
        .join(format!("{y:04}{m:02}"))
        .join(format!("{:012}-{}.json", e.seq, &e.hash[..16]))
}

/// Appends `e`, then archives it (mode 0444, never overwritten).
pub async fn append(pool: &PgPool, worm_root: &Path, e: NewEvent) -> Result<Event, AuditError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(APPEND_LOCK)
        .execute(&mut *tx)
        .await?;
    let last = sqlx::query("SELECT seq, hash FROM audit.events ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *tx)
        .await?;
    let (seq, prev_hash) = match last {
        Some(row) => (
            row.try_get::<i64, _>("seq")? + 1,
            row.try_get::<String, _>("hash")?,
        ),
        None => (1, String::new()),
    };
    let hash = chain_hash(seq, &prev_hash, &e);
    sqlx::query(
        "INSERT INTO audit.events (seq, at_ms, record_type, critical, actor, action, scope, before, after, result, request_id, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(seq)
    .bind(e.at_ms as i64)
    .bind(&e.record_type)
    .bind(e.critical)
    .bind(&e.actor)
    .bind(&e.action)
    .bind(&e.scope)
    .bind(&e.before)
    .bind(&e.after)
    .bind(&e.result)
    .bind(&e.request_id)
    .bind(&prev_hash)
    .bind(&hash)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let event = Event {
        seq,
        event: e,
        prev_hash,
        hash,
    };
    archive(worm_root, &event)?;
    Ok(event)
}

fn archive(root: &Path, e: &Event) -> Result<(), AuditError> {
    let body = serde_json::to_vec(e).map_err(|x| AuditError::Worm {
        path: worm_path(root, e),
        source: std::io::Error::other(x),
    })?;
    write_once(&worm_path(root, e), &body)
}

/// Writes `body` to a new file at `path`, mode 0444; an existing file is
/// never overwritten.
fn write_once(path: &Path, body: &[u8]) -> Result<(), AuditError> {
    let err = |source| AuditError::Worm {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)
        .map_err(err)?;
    f.write_all(body).map_err(err)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o444))
        .map_err(err)
}

/// Folder of the archive that holds head checkpoints.
const CHECKPOINTS: &str = "_checkpoints";

/// How far the log went at some moment: its newest seq and hash, signed
/// by the control plane's audit key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Newest seq.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
    /// When the checkpoint was written, ms since the epoch.
    pub at_ms: u64,
    /// The signing key's id (`trust.yaml`, purpose `audit_checkpoint`);
    /// empty in checkpoints written before they were signed.
    #[serde(default)]
    pub key_id: String,
    /// Ed25519 over [`Checkpoint::signed_bytes`], hex.
    #[serde(default)]
    pub signature: String,
}

impl Checkpoint {
    /// The signed bytes: the canonical JSON (RFC 8785) of seq, hash, at_ms
    /// and key_id.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, String> {
        let claim = serde_json::json!({
            "seq": self.seq,
            "hash": self.hash,
            "at_ms": self.at_ms,
            "key_id": self.key_id,
        });
        serde_json_canonicalizer::to_vec(&claim).map_err(|e| format!("checkpoint cannot be serialised: {e}"))
    }

    /// Whether a key `trust` holds for `audit_checkpoint` (valid when the
    /// checkpoint was written) signed it.
    pub fn verify(&self, trust: &TrustStore) -> Result<(), String> {
        let key = trust
            .key_for(&self.key_id, KeyPurpose::AuditCheckpoint, self.at_ms)
            .map_err(|e| e.to_string())?;
        let sig: [u8; 64] = hex::decode(&self.signature)
            .map_err(|e| format!("signature is not hex: {e}"))?
            .try_into()
            .map_err(|_| "signature must be 64 bytes".to_owned())?;
        use ed25519_dalek::Verifier as _;
        key.verify(&self.signed_bytes()?, &ed25519_dalek::Signature::from_bytes(&sig))
            .map_err(|_| "signature does not verify".to_owned())
    }
}

/// Writes a signed checkpoint of the log's head to the archive
/// (`_checkpoints/<seq>.json`, mode 0444, once per head): `verify` then
/// notices the newest rows deleted together with their archive files, up
/// to the last checkpoint. `serve` writes one every
/// `audit_checkpoints.interval_s` and copies it to Redis (a second place
/// the archive's owner does not control). Returns it, `None` for an empty
/// log.
pub async fn checkpoint(
    pool: &PgPool,
    worm_root: &Path,
    key: &SecretKeyFile,
    now_ms: u64,
) -> Result<Option<Checkpoint>, AuditError> {
    let head: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit.events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(pool)
            .await?;
    let Some((seq, hash)) = head else { return Ok(None) };
    let mut cp = Checkpoint {
        seq,
        hash,
        at_ms: now_ms,
        key_id: key.key_id.clone(),
        signature: String::new(),
    };
    cp.signature = key
        .sign_hex(&cp.signed_bytes().map_err(AuditError::Key)?)
        .map_err(AuditError::Key)?;
    let path = worm_root.join(CHECKPOINTS).join(format!("{seq:012}.json"));
    if !path.exists() {
        let body = serde_json::to_vec(&cp).map_err(|x| AuditError::Worm {
            path: path.clone(),
            source: std::io::Error::other(x),
        })?;
        write_once(&path, &body)?;
    }
    Ok(Some(cp))
}

/// The archive's checkpoint files, newest first, each read (or why not).
fn archived_checkpoints(worm_root: &Path) -> Vec<(String, Result<Checkpoint, String>)> {
    let Ok(dir) = std::fs::read_dir(worm_root.join(CHECKPOINTS)) else {
        return Vec::new();
    };
    let mut files: Vec<(i64, PathBuf)> = dir
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let seq = name.strip_suffix(".json")?.parse::<i64>().ok()?;
            Some((seq, e.path()))
        })
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    files
        .into_iter()
        .map(|(_, path)| {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let read = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
            (name, read)
        })
        .collect()
}

/// What `verify` checks the log's tail against beyond the archive's own
/// checkpoints.
#[derive(Debug, Clone, Default)]
pub struct Anchors {
    /// Checkpoints must be signed by a key this trusts (purpose
    /// `audit_checkpoint`); `None` believes them unsigned (tests of the
    /// chain alone).
    pub trust: Option<TrustStore>,
    /// Checkpoints kept elsewhere (Redis' copy).
    pub copies: Vec<Checkpoint>,
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Rows read.
    pub rows: usize,
    /// The first row whose chain is broken, and why.
    pub first_bad: Option<(i64, String)>,
    /// Disagreements between the database and the archive.
    pub archive: Vec<String>,
}

impl VerifyReport {
    /// Whether everything checked out.
    pub fn ok(&self) -> bool {
        self.first_bad.is_none() && self.archive.is_empty()
    }
}

/// Recomputes the chain and compares it with the archive, believing the
/// archive's checkpoints unsigned ([`verify_anchored`] checks signatures
/// and other copies).
pub async fn verify(pool: &PgPool, worm_root: &Path) -> Result<VerifyReport, AuditError> {
    verify_anchored(pool, worm_root, &Anchors::default()).await
}

/// Recomputes the chain and compares it with the archive; the newest
/// checkpoint that verifies (archive or `anchors.copies`) says how far the
/// log went. A checkpoint that does not verify is reported and ignored.
pub async fn verify_anchored(
    pool: &PgPool,
    worm_root: &Path,
    anchors: &Anchors,
) -> Result<VerifyReport, AuditError> {
    let rows = sqlx::query(
        "SELECT seq, at_ms, record_type, critical, actor, action, scope, before, after, result, request_id, prev_hash, hash
         FROM audit.events ORDER BY seq",
    )
    .fetch_all(pool)
    .await?;
    let mut report = VerifyReport {
        rows: rows.len(),
        first_bad: None,
        archive: Vec::new(),
    };
    // Where the log legitimately starts: after the last pruning the
    // database recorded (its function is the only way rows go), with the
    // first row's prev_hash chaining to the last removed event. A head
    // missing beyond that was deleted outside retention.
    let pruned: Option<(i64, String)> = sqlx::query_as(
        "SELECT last_removed, last_removed_hash FROM audit.prunings ORDER BY last_removed DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    let (mut expected_seq, mut expected_prev) = match pruned {
        Some((last, hash)) => (last + 1, hash),
        None => (1, String::new()),
    };
    let mut events = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let e = Event {
            seq: row.try_get("seq")?,
            event: NewEvent {
                at_ms: row.try_get::<i64, _>("at_ms")?.max(0) as u64,
                record_type: row.try_get("record_type")?,
                critical: row.try_get("critical")?,
                actor: row.try_get("actor")?,
                action: row.try_get("action")?,
                scope: row.try_get("scope")?,
                before: row.try_get("before")?,
                after: row.try_get("after")?,
                result: row.try_get("result")?,
                request_id: row.try_get("request_id")?,
            },
            prev_hash: row.try_get("prev_hash")?,
            hash: row.try_get("hash")?,
        };
        if report.first_bad.is_none() {
            // A missing head is named by its first missing seq.
            let head_missing = i == 0 && e.seq > expected_seq;
            let why = if head_missing {
                Some(format!(
                    "the log starts at seq {} but retention removed rows only up to {}: rows {expected_seq}..{} were deleted outside retention",
                    e.seq,
                    expected_seq - 1,
                    e.seq - 1
                ))
            } else if e.seq != expected_seq {
                Some(format!(
                    "expected seq {expected_seq}: a row was deleted or inserted"
                ))
            } else if e.prev_hash != expected_prev {
                Some(
                    "prev_hash does not match the previous row: rows were reordered, deleted or inserted"
                        .to_owned(),
                )
            } else if chain_hash(e.seq, &e.prev_hash, &e.event) != e.hash {
                Some("content does not match its hash: the row was changed".to_owned())
            } else {
                None
            };
            if let Some(why) = why {
                report.first_bad = Some((if head_missing { expected_seq } else { e.seq }, why));
            }
        }
        expected_prev = e.hash.clone();
        expected_seq = e.seq + 1;
        events.push(e);
    }
    // The tail: the newest believable checkpoint says how far the log
    // went. Archived ones newest first: each one newer than the first
    // believable one that cannot be read or believed is reported (older
    // ones, e.g. signed by a key since rotated out, no longer matter).
    let believable = |cp: &Checkpoint| anchors.trust.as_ref().map_or(Ok(()), |t| cp.verify(t));
    let mut believed: Option<Checkpoint> = None;
    for (name, read) in archived_checkpoints(worm_root) {
        match read.and_then(|cp| believable(&cp).map(|()| cp)) {
            Ok(cp) => {
                believed = Some(cp);
                break;
            }
            Err(why) => report
                .archive
                .push(format!("checkpoint {name} (archive) not believed: {why}")),
        }
    }
    for cp in &anchors.copies {
        match believable(cp) {
            Ok(()) if believed.as_ref().is_none_or(|b| cp.seq > b.seq) => believed = Some(cp.clone()),
            Ok(()) => {}
            Err(why) => report
                .archive
                .push(format!("checkpoint of seq {} (copy) not believed: {why}", cp.seq)),
        }
    }
    if report.first_bad.is_none() {
        if let Some(cp) = believed {
            let last = events.last().map_or(0, |e| e.seq);
            if cp.seq > last {
                report.first_bad = Some((
                    last + 1,
                    format!(
                        "a checkpoint says the log reached seq {} but it ends at {last}: rows {}..{} were deleted",
                        cp.seq,
                        last + 1,
                        cp.seq
                    ),
                ));
            } else if let Some(e) = events.iter().find(|e| e.seq == cp.seq) {
                if e.hash != cp.hash {
                    report.first_bad = Some((
                        cp.seq,
                        format!("row {} does not have the hash its checkpoint recorded", cp.seq),
                    ));
                }
            }
        }
    }
    // The archive must hold the same events, byte for byte.
    let mut archived = 0usize;
    for e in &events {
        let path = worm_path(worm_root, e);
        match std::fs::read(&path) {
            Ok(bytes) => {
                archived += 1;
                if serde_json::from_slice::<Event>(&bytes).ok().as_ref() != Some(e) {
                    report
                        .archive
                        .push(format!("{} differs from database row {}", path.display(), e.seq));
                }
            }
            Err(_) => report.archive.push(format!(
                "database row {} has no archive file {}",
                e.seq,
                path.display()
            )),
        }
    }
    let first_kept = events.first().map_or(i64::MAX, |e| e.seq);
    let on_disk = count_files_from(worm_root, first_kept);
    if on_disk > archived {
        report.archive.push(format!(
            "the archive holds {} file(s) with no database row",
            on_disk - archived
        ));
    }
    Ok(report)
}

/// Retention: removes the oldest events whose retention has passed
/// (`audit_days` for ordinary events, `critical_days` for critical ones),
/// but only a prefix of the chain — an old event that must stay keeps every
/// later one — so the chain stays verifiable from its first row (the anchor).
/// The WORM archive keeps everything. Returns the number of rows removed.
pub async fn retain(
    pool: &PgPool,
    now_ms: u64,
    audit_days: u32,
    critical_days: u32,
) -> Result<u64, AuditError> {
    let day = 86_400_000i64;
    let ordinary_cutoff = now_ms as i64 - i64::from(audit_days) * day;
    let critical_cutoff = now_ms as i64 - i64::from(critical_days) * day;
    // The first event that must be kept bounds the prefix.
    let keep: Option<i64> = sqlx::query_scalar(
        "SELECT min(seq) FROM audit.events WHERE (critical AND at_ms >= $2) OR (NOT critical AND at_ms >= $1)",
    )
    .bind(ordinary_cutoff)
    .bind(critical_cutoff)
    .fetch_one(pool)
    .await?;
    // Everything expired: prune_before still keeps the newest row as anchor.
    let bound = keep.unwrap_or(i64::MAX);
    let deleted: i64 = sqlx::query_scalar("SELECT audit.prune_before($1)")
        .bind(bound)
        .fetch_one(pool)
        .await?;
    Ok(deleted.max(0) as u64)
}

/// Archive files whose seq (the file name's prefix) is at least `from`:
/// older ones belong to events retention removed from the database.
fn count_files_from(dir: &Path, from: i64) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name() != CHECKPOINTS)
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() {
                        return count_files_from(&path, from);
                    }
                    let name = e.file_name().to_string_lossy().into_owned();
                    let seq = name.split('-').next().and_then(|s| s.parse::<i64>().ok());
                    usize::from(seq.is_none_or(|s| s >= from))
                })
                .sum()
        })
        .unwrap_or(0)
}
