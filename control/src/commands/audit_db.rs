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
    let report = runtime()?.block_on(async {
        let pool = db::connect(&cfg.database).await?;
        Ok::<_, anyhow::Error>(audit::verify(&pool, &cfg.storage.worm_root).await?)
    })?;
    if report.ok() {
        writeln!(out, "audit chain intact: {} events, archive agrees", report.rows)?;
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
        let watched = std::sync::Arc::clone(&state.services);
        let monitor = tokio::spawn(async move {
            let mut watch = crate::monitor::Watch::default();
            let mut ticks = 0u64;
            loop {
                crate::monitor::tick(&watched, &mut watch).await;
                // A checkpoint of the audit log's head every minute.
                if ticks.is_multiple_of(60) {
                    let done =
                        crate::audit::checkpoint(&watched.pool, watched.worm_root(), watched.now_ms()).await;
                    if let Err(e) = done {
                        tracing::error!(error = %e, "audit checkpoint not written");
                    }
                }
                ticks += 1;
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        writeln!(out, "listening http={}", listener.local_addr()?)?;
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
        axum::serve(listener, crate::api::make_service(std::sync::Arc::clone(&state)))
            .with_graceful_shutdown(stop)
            .await?;
        monitor.abort();
        refusals.abort();
        // What was counted since the last window is audited before leaving.
        crate::api::edge::flush(&state).await;
        let svc = &state.services;
        if let Err(e) = crate::audit::checkpoint(&svc.pool, svc.worm_root(), svc.now_ms()).await {
            tracing::error!(error = %e, "audit checkpoint not written at shutdown");
        }
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
