//! The audit log against a real PostgreSQL (a fresh database per test):
//! append-only at the database level, hash-chained, archived, and
//! `audit verify` names the first tampered row.

#![allow(clippy::unwrap_used, clippy::expect_used)] // fixture helpers outside #[test] fns: a broken fixture should panic

use mlcore_config::{DatabaseConfig, PoolConfig, RetentionConfig, Secret};
use mlcore_control::{audit, db};
use mlcore_testkit as testutil;
use sqlx::Executor;

/// Deletes row `seq` as a superuser would, around `audit.prune_before`
/// (the trigger's pruning flag set by hand).
async fn delete_as_superuser(pool: &sqlx::PgPool, seq: i64) {
    let mut su = pool.acquire().await.unwrap();
    su.execute("SELECT set_config('mlcore.pruning', 'on', false)")
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit.events WHERE seq = $1")
        .bind(seq)
        .execute(&mut *su)
        .await
        .unwrap();
    su.execute("SELECT set_config('mlcore.pruning', 'off', false)")
        .await
        .unwrap();
}

/// A database of its own, dropped at the end.
struct TestDb {
    name: String,
    admin: String,
    dsn: String,
}

impl TestDb {
    async fn new() -> Self {
        let admin = testutil::pg_dsn();
        let name = testutil::unique_name("mlcore_t");
        let conn = sqlx::PgPool::connect(&admin)
            .await
            .expect("PostgreSQL must answer: run tests through scripts/test.sh");
        let create = format!("CREATE DATABASE \"{name}\"");
        sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(&conn)
            .await
            .unwrap();
        let dsn = match admin.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => unreachable!("a DSN has a database path"),
        };
        Self { name, admin, dsn }
    }

    fn config(&self) -> DatabaseConfig {
        DatabaseConfig {
            dsn: Secret::literal(&self.dsn),
            pool: PoolConfig {
                min: 1,
                max: 4,
                acquire_timeout_ms: 5000,
            },
            statement_timeout_ms: 30_000,
            search_path: vec!["core".into(), "audit".into(), "public".into()],
            retention: RetentionConfig {
                audit_days: 90,
                critical_days: 1825,
            },
        }
    }

    async fn drop_db(self) {
        let conn = sqlx::PgPool::connect(&self.admin).await.unwrap();
        let drop = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop)).execute(&conn).await;
    }
}

fn event(i: u64) -> audit::NewEvent {
    audit::NewEvent {
        at_ms: 1_795_000_000_000 + i,
        record_type: "ops_request".into(),
        critical: i.is_multiple_of(2),
        actor: format!("operator-{i}"),
        action: "halt".into(),
        scope: "fx_g10".into(),
        before: serde_json::json!({"mode": "active"}),
        after: serde_json::json!({"mode": "halted"}),
        result: "ok".into(),
        request_id: format!("req-{i}"),
    }
}

#[tokio::test]
async fn the_chain_verifies_and_tampering_is_named() {
    let t = TestDb::new().await;
    let worm = tempfile::tempdir().unwrap();
    db::migrate(&t.config()).await.unwrap();
    db::migrate(&t.config()).await.unwrap(); // idempotent
    let pool = db::connect(&t.config()).await.unwrap();
    for i in 1..=5 {
        let e = audit::append(&pool, worm.path(), event(i)).await.unwrap();
        assert_eq!(e.seq, i as i64);
    }
    let report = audit::verify(&pool, worm.path()).await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.rows, 5);

    // The database refuses changes, even from the table's owner.
    let err = sqlx::query("UPDATE audit.events SET actor = 'mallory' WHERE seq = 3")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    assert!(sqlx::query("DELETE FROM audit.events")
        .execute(&pool)
        .await
        .is_err());
    assert!(sqlx::query("TRUNCATE audit.events").execute(&pool).await.is_err());

    // The application role may only insert and select.
    let mut conn = pool.acquire().await.unwrap();
    conn.execute("SET ROLE mlcore_app").await.unwrap();
    let denied = conn
        .execute("UPDATE audit.events SET actor = 'x' WHERE seq = 1")
        .await
        .unwrap_err();
    assert!(denied.to_string().contains("permission denied"), "{denied}");
    conn.execute("RESET ROLE").await.unwrap();
    drop(conn);

    // A superuser who bypasses the triggers changes row 3: verify names it.
    let mut su = pool.acquire().await.unwrap();
    su.execute("SET session_replication_role = replica")
        .await
        .unwrap();
    su.execute("UPDATE audit.events SET actor = 'mallory' WHERE seq = 3")
        .await
        .unwrap();
    drop(su);
    let report = audit::verify(&pool, worm.path()).await.unwrap();
    let (seq, why) = report.first_bad.clone().unwrap();
    assert_eq!(seq, 3, "{why}");
    assert!(why.contains("changed"), "{why}");
    assert!(
        report.archive.iter().any(|a| a.contains("row 3")),
        "{:?}",
        report.archive
    );

    pool.close().await;
    t.drop_db().await;
}

#[tokio::test]
async fn deleted_rows_and_archive_files_are_detected() {
    let t = TestDb::new().await;
    let worm = tempfile::tempdir().unwrap();
    db::migrate(&t.config()).await.unwrap();
    let pool = db::connect(&t.config()).await.unwrap();
    let mut events = Vec::new();
    for i in 1..=4 {
        events.push(audit::append(&pool, worm.path(), event(i)).await.unwrap());
    }
    let mut su = pool.acquire().await.unwrap();
    su.execute("SET session_replication_role = replica")
        .await
        .unwrap();
    su.execute("DELETE FROM audit.events WHERE seq = 2")
        .await
        .unwrap();
    drop(su);
    let report = audit::verify(&pool, worm.path()).await.unwrap();
    assert_eq!(report.first_bad.as_ref().map(|b| b.0), Some(3), "{report:?}");
    assert!(
        report.archive.iter().any(|a| a.contains("no database row")),
        "{:?}",
        report.archive
    );

    // Archive files are read-only and never overwritten.
    let path = audit::worm_path(worm.path(), &events[0]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o444
    );
    pool.close().await;
    t.drop_db().await;
}

#[tokio::test]
async fn retention_removes_only_a_prefix_and_the_chain_still_verifies() {
    let t = TestDb::new().await;
    let worm = tempfile::tempdir().unwrap();
    db::migrate(&t.config()).await.unwrap();
    let pool = db::connect(&t.config()).await.unwrap();
    let day = 86_400_000u64;
    // The database judges retention by its own clock.
    let now = testutil::now_ms();
    // seq 1-2: ordinary, 200 days old; seq 3: critical, 200 days old;
    // seq 4: ordinary, 200 days old; seq 5: ordinary, today.
    for (i, (age_days, critical)) in [(200, false), (200, false), (200, true), (200, false), (0, false)]
        .into_iter()
        .enumerate()
    {
        let mut e = event(i as u64);
        e.at_ms = now - age_days * day;
        e.critical = critical;
        audit::append(&pool, worm.path(), e).await.unwrap();
    }
    // The critical event (5 years) keeps itself and everything after it.
    let removed = audit::retain(&pool, now, 90, 1825).await.unwrap();
    assert_eq!(removed, 2);
    let report = audit::verify(&pool, worm.path()).await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.rows, 3);
    // The pruning left its record: what went, and the hash the anchor
    // chains to.
    let (first, last, n, by): (i64, i64, i64, String) =
        sqlx::query_as("SELECT first_removed, last_removed, removed, requested_by FROM audit.prunings")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((first, last, n), (1, 2, 2));
    assert!(!by.is_empty());

    // Told by the application to delete everything, the database keeps
    // what its own policy keeps: nothing here has expired any further.
    let mut app = pool.acquire().await.unwrap();
    app.execute("SET ROLE mlcore_app").await.unwrap();
    let deleted: i64 = sqlx::query_scalar("SELECT audit.prune_before($1)")
        .bind(i64::MAX)
        .fetch_one(&mut *app)
        .await
        .unwrap();
    assert_eq!(
        deleted, 0,
        "prune_before(max) deleted a critical event inside its retention"
    );
    assert!(
        app.execute("DELETE FROM audit.prunings").await.is_err()
            && app
                .execute("UPDATE audit.retention_policy SET critical_days = 1")
                .await
                .is_err(),
        "the application cannot touch the retention record or policy"
    );
    app.execute("RESET ROLE").await.unwrap();
    drop(app);
    assert_eq!(audit::verify(&pool, worm.path()).await.unwrap().rows, 3);

    // A superuser deleting the oldest rows around the function: verify
    // names the first missing seq, from the pruning record.
    delete_as_superuser(&pool, 3).await;
    let report = audit::verify(&pool, worm.path()).await.unwrap();
    assert_eq!(report.first_bad.as_ref().map(|b| b.0), Some(3), "{report:?}");
    assert!(
        report.first_bad.as_ref().unwrap().1.contains("outside retention"),
        "{report:?}"
    );
    // The application role may prune only through the function.
    let mut conn = pool.acquire().await.unwrap();
    conn.execute("SET ROLE mlcore_app").await.unwrap();
    assert!(conn.execute("DELETE FROM audit.events").await.is_err());
    conn.execute("SET mlcore.pruning = 'on'").await.unwrap();
    assert!(
        conn.execute("DELETE FROM audit.events").await.is_err(),
        "the flag alone grants nothing"
    );
    conn.execute("RESET ROLE").await.unwrap();
    drop(conn);
    pool.close().await;
    t.drop_db().await;
}

#[tokio::test]
async fn a_deleted_tail_is_named_from_the_last_checkpoint() {
    let t = TestDb::new().await;
    let worm = tempfile::tempdir().unwrap();
    db::migrate(&t.config()).await.unwrap();
    let pool = db::connect(&t.config()).await.unwrap();
    let mut last = None;
    for i in 0..4 {
        last = Some(audit::append(&pool, worm.path(), event(i)).await.unwrap());
    }
    let cp = audit::checkpoint(&pool, worm.path(), &dev_key(), testutil::now_ms())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cp.seq, 4);
    let report = audit::verify_anchored(&pool, worm.path(), &anchors(vec![]))
        .await
        .unwrap();
    assert!(report.ok(), "checkpoints are not archive events: {report:?}");

    // The newest row and its archive file go, as its owner could do.
    let newest = last.unwrap();
    delete_as_superuser(&pool, 4).await;
    let file = audit::worm_path(worm.path(), &newest);
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::remove_file(&file).unwrap();
    let report = audit::verify(&pool, worm.path()).await.unwrap();
    assert_eq!(report.first_bad.as_ref().map(|b| b.0), Some(4), "{report:?}");
    assert!(report.first_bad.unwrap().1.contains("checkpoint"));
    pool.close().await;
    t.drop_db().await;
}

/// The dev key (trusted for `audit_checkpoint` in dev's trust.yaml).
fn dev_key() -> mlcore_models::artifact::SecretKeyFile {
    mlcore_models::artifact::SecretKeyFile::read(
        &testutil::workspace_root().join("deployments/dev-keys/dev-2026.key"),
    )
    .unwrap()
}

/// dev's trust.yaml, and `copies` as checkpoints kept outside the archive.
fn anchors(copies: Vec<audit::Checkpoint>) -> audit::Anchors {
    let cfg = mlcore_config::load_for(
        &testutil::workspace_root().join("configs"),
        mlcore_config::Environment::Dev,
        &mlcore_config::MapEnv::new(),
        mlcore_config::Process::Offline,
    )
    .unwrap();
    audit::Anchors {
        trust: Some(mlcore_models::artifact::TrustStore::from_config(&cfg.trust).unwrap()),
        copies,
    }
}

/// #22 §2: checkpoints are signed; a forged or altered one is not believed
/// (and said), and Redis' copy still names the deleted tail when the
/// archive's checkpoints went with the rows.
#[tokio::test]
async fn checkpoints_are_signed_and_a_copy_outlives_the_archives() {
    let t = TestDb::new().await;
    let worm = tempfile::tempdir().unwrap();
    db::migrate(&t.config()).await.unwrap();
    let pool = db::connect(&t.config()).await.unwrap();
    let mut events = Vec::new();
    for i in 0..5 {
        events.push(audit::append(&pool, worm.path(), event(i)).await.unwrap());
    }
    let cp = audit::checkpoint(&pool, worm.path(), &dev_key(), testutil::now_ms())
        .await
        .unwrap()
        .unwrap();
    let trust = anchors(vec![]).trust.unwrap();
    cp.verify(&trust).unwrap();
    let mut altered = cp.clone();
    altered.seq = 9;
    assert_eq!(altered.verify(&trust).unwrap_err(), "signature does not verify");

    // A checkpoint signed by a key trust.yaml does not hold for it.
    let stranger = mlcore_models::artifact::SecretKeyFile::generate("stranger").unwrap();
    let forged = audit::checkpoint(&pool, worm.path(), &stranger, testutil::now_ms())
        .await
        .unwrap()
        .unwrap();
    let report = audit::verify_anchored(&pool, worm.path(), &anchors(vec![forged, altered]))
        .await
        .unwrap();
    assert_eq!(report.first_bad, None, "{report:?}");
    assert_eq!(report.archive.len(), 2, "{report:?}");
    assert!(
        report.archive.iter().all(|p| p.contains("not believed")),
        "{report:?}"
    );
    // A junk file planted as the newest archived checkpoint is reported,
    // and does not switch the archive's anchor off.
    let junk = worm.path().join("_checkpoints/999999999999.json");
    std::fs::write(&junk, "{not a checkpoint").unwrap();
    let report = audit::verify_anchored(&pool, worm.path(), &anchors(vec![]))
        .await
        .unwrap();
    assert!(
        report
            .archive
            .iter()
            .any(|p| p.contains("999999999999.json") && p.contains("not believed")),
        "{report:?}"
    );
    std::fs::remove_file(&junk).unwrap();

    // Rows 4 and 5, their archive files and every archived checkpoint go;
    // Redis' copy (here handed over as `copies`) still says seq 5.
    for e in events.iter().rev().take(2) {
        delete_as_superuser(&pool, e.seq).await;
        let file = audit::worm_path(worm.path(), e);
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        std::fs::remove_file(&file).unwrap();
    }
    let checkpoints = worm.path().join("_checkpoints");
    std::fs::set_permissions(&checkpoints, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::remove_dir_all(&checkpoints).unwrap();
    let alone = audit::verify_anchored(&pool, worm.path(), &anchors(vec![]))
        .await
        .unwrap();
    assert!(alone.ok(), "without a copy the deletion is invisible: {alone:?}");
    let report = audit::verify_anchored(&pool, worm.path(), &anchors(vec![cp]))
        .await
        .unwrap();
    let (seq, why) = report.first_bad.clone().unwrap();
    assert_eq!(seq, 4, "{report:?}");
    assert!(why.contains("rows 4..5 were deleted"), "{why}");
    pool.close().await;
    t.drop_db().await;
}
