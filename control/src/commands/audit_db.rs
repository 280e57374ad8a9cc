//! `db migrate` and `audit verify`.

use std::io::Write;
use std::path::Path;

use mlcore_config::EnvSource;

use super::load_config;
use crate::{audit, db};

/// Exit code when the audit chain or archive is broken.
pub const EXIT_TAMPERED: i32 = 6;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Applies pending migrations to `database.yaml`'s database.
pub fn db_migrate(
    config_dir: &Path,
    env: &str,
    vars: &dyn EnvSource,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let cfg = load_config(config_dir, env, vars, mlcore_config::Process::Database)?;
    let n = runtime()?.block_on(db::migrate(&cfg.database))?;
    writeln!(out, "database migrated ({n} migrations known)")?;
    Ok(0)
}

/// Verifies the audit chain and the WORM archive.
pub fn audit_verify(
    config_dir: &Path,
    env: &str,
    vars: &dyn EnvSource,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<i32> {
    let cfg = load_config(config_dir, env, vars, mlcore_config::Process::Database)?;
    let trust = mlcore_models::artifact::TrustStore::from_config(&cfg.trust)
        .map_err(|e| anyhow::anyhow!("trust.yaml: {e}"))?;
    // Redis' copy of the latest checkpoint, when this shell can reach it.
    let (copies, redis_said) = redis_checkpoint(&cfg.redis);
    let anchors = audit::Anchors {
        trust: Some(trust),
        copies,
    };
    let report = runtime()?.block_on(async {
        let pool = db::connect(&cfg.database).await?;
        Ok::<_, anyhow::Error>(audit::verify_anchored(&pool, &cfg.storage.worm_root, &anchors).await?)
    })?;
    if report.ok() {
        writeln!(
            out,
            "audit chain intact: {} events, archive agrees; {redis_said}",
            report.rows
        )?;
        return Ok(0);
    }
    if let Some((seq, why)) = &report.first_bad {
        writeln!(err, "audit chain broken at seq {seq}: {why}")?;
    }
    for p in &report.archive {
        writeln!(err, "archive: {p}")?;
    }
    Ok(EXIT_TAMPERED)
}

/// Applies audit retention.
pub fn audit_retain(
    config_dir: &Path,
    env: &str,
    vars: &dyn EnvSource,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let cfg = load_config(config_dir, env, vars, mlcore_config::Process::Database)?;
    let r = &cfg.database.retention;
    let removed = runtime()?.block_on(async {
        let pool = db::connect(&cfg.database).await?;
        Ok::<_, anyhow::Error>(audit::retain(&pool, super::now_ms(), r.audit_days, r.critical_days).await?)
    })?;
    writeln!(
        out,
        "retention: {removed} events removed from the database (the archive keeps them)"
    )?;
    Ok(0)
}

/// Serves the API until SIGTERM or SIGINT, then stops cleanly: no new
/// connections, requests in progress finish (their audit rows written),
/// the monitor stops, the database pool closes; exit 0.
pub fn serve(config_dir: &Path, env: &str, vars: &dyn EnvSource, out: &mut dyn Write) -> anyhow::Result<i32> {
    let cfg = load_config(config_dir, env, vars, mlcore_config::Process::Control)?;
    let listen = cfg.control.listen.clone();
    let _logging = mlcore_telemetry::logging::init(cfg.metrics.log_level.as_str())?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let stop = stop_signal()?;
        let state = crate::api::state(cfg).await?;
        // Mode changes and one-time codes go through the guard: say now,
        // not at the first approval, when it is missing or older.
        if let Err(e) = state.services.redis.ensure_guard().await {
            tracing::error!(error = %e, "the Redis guard is not usable: mode changes and approvals will fail until it is");
        }
        // Config change applies a stopped control plane left half done.
        match crate::config_changes::recover_interrupted(&state.services).await {
            Ok(ids) if !ids.is_empty() => {
                tracing::error!(requests = ?ids, "config change applies were interrupted: marked failed, alerted");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "could not look for interrupted config change applies"),
        }
        // Retraining on its schedule (control.yaml retrain.schedule; off
        // when null).
        let _schedule = crate::retrain::spawn_schedule(std::sync::Arc::clone(&state.services));
        // Observability automation on its schedule (control.yaml
        // observability.schedule; off when null).
        let _observability = crate::observability::spawn_schedule(std::sync::Arc::clone(&state.services.config));
        let watched = std::sync::Arc::clone(&state.services);
        let every = watched.config.control.audit_checkpoints.interval_s.max(1);
        let monitor = tokio::spawn(async move {
            let mut watch = crate::monitor::Watch::default();
            let mut ticks = 0u64;
            loop {
                crate::monitor::tick(&watched, &mut watch).await;
                // A signed checkpoint of the audit log's head.
                if ticks.is_multiple_of(every) {
                    checkpoint_now(&watched).await;
                }
                ticks += 1;
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        let tls = match &state.services.config.control.tls {
            Some(tls) => Some(crate::api::tls::serve_config(tls)?),
            None => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        writeln!(out, "listening {scheme}={}", listener.local_addr()?)?;
        out.flush()?;
        let edge_state = std::sync::Arc::clone(&state);
        let window =
            std::time::Duration::from_secs(edge_state.services.config.control.refused_audit_window_s);
        let refusals = tokio::spawn(async move {
            loop {
                tokio::time::sleep(window).await;
                crate::api::edge::flush(&edge_state).await;
            }
        });
        let service = crate::api::make_service(std::sync::Arc::clone(&state));
        match tls {
            None => {
                axum::serve(listener, service)
                    .with_graceful_shutdown(stop)
                    .await?
            }
            Some(tls) => {
                // The same graceful stop over TLS: no new connections,
                // requests in progress finish.
                let handle = axum_server::Handle::new();
                let stopping = handle.clone();
                tokio::spawn(async move {
                    stop.await;
                    stopping.graceful_shutdown(None);
                });
                axum_server::from_tcp_rustls(listener.into_std()?, tls)?
                    .handle(handle)
                    .serve(service)
                    .await?;
            }
        }
        monitor.abort();
        refusals.abort();
        // What was counted since the last window is audited before leaving.
        crate::api::edge::flush(&state).await;
        checkpoint_now(&state.services).await;
        state.services.pool.close().await;
        tracing::info!("control plane stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(0)
}

/// Resolves on the first SIGTERM or SIGINT. The handlers are installed
/// before the server starts, so a signal that arrives during start-up is
/// not lost.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stopping on a signal: finishing requests in progress");
    })
}

/// Signs a checkpoint of the audit log's head and writes it to the WORM
/// archive and Redis. A failure is logged; the next tick tries again.
async fn checkpoint_now(svc: &crate::services::Services) {
    let key_file = &svc.config.control.audit_checkpoints.key_file;
    let key = match mlcore_models::artifact::SecretKeyFile::read(key_file) {
        Ok(key) => key,
        Err(e) => {
            tracing::error!(key_file = %key_file.display(), error = %e, "audit checkpoint key unusable: no checkpoint written");
            return;
        }
    };
    match audit::checkpoint(&svc.pool, svc.worm_root(), &key, svc.now_ms()).await {
        Ok(Some(cp)) => {
            let copied = match serde_json::to_string(&cp) {
                Ok(json) => svc
                    .redis
                    .write_audit_checkpoint(&json)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = copied {
                tracing::warn!(error = %e, seq = cp.seq, "audit checkpoint not copied to Redis");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "audit checkpoint not written"),
    }
}

/// The checkpoint Redis holds, and what to say about it.
fn redis_checkpoint(cfg: &mlcore_config::RedisConfig) -> (Vec<audit::Checkpoint>, String) {
    if !cfg.url.is_resolved() {
        return (
            Vec::new(),
            "Redis' checkpoint not checked (its url is not set)".to_owned(),
        );
    }
    let key = mlcore_contract::Keys::new(&cfg.namespace).audit_checkpoint();
    let read = mlcore_contract::RedisConn::connect(&cfg.into()).and_then(|mut conn| {
        redis::cmd("HGET")
            .arg(&key)
            .arg("checkpoint")
            .query::<Option<String>>(&mut conn)
    });
    match read {
        Ok(Some(json)) => match serde_json::from_str::<audit::Checkpoint>(&json) {
            Ok(cp) => {
                let said = format!("Redis' checkpoint (seq {}) checked", cp.seq);
                (vec![cp], said)
            }
            Err(e) => (Vec::new(), format!("Redis' checkpoint is not one ({e})")),
        },
        Ok(None) => (Vec::new(), "Redis holds no checkpoint".to_owned()),
        Err(e) => (Vec::new(), format!("Redis' checkpoint not checked ({e})")),
    }
}
