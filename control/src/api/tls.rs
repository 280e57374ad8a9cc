//! HTTPS for the API: rustls with the ring provider (as the alert client),
//! the certificate and key read from PEM files and read again when either
//! changes, so a renewed certificate is served without a restart. A reload
//! that fails keeps the certificate being served and says why.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum_server::tls_rustls::RustlsConfig;
use mlcore_config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the certificate cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read or holds no PEM object of the kind needed.
    #[error("{what} {path}: {reason}")]
    File {
        /// "certificate" or "private key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the pair (a key that does not match, say).
    #[error("certificate {cert} with key {key}: {reason}")]
    Refused {
        /// Certificate file.
        cert: PathBuf,
        /// Key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

/// The server configuration of `tls`' files.
pub fn server_config(tls: &TlsConfig) -> Result<rustls::ServerConfig, TlsError> {
    let file_err = |what, path: &Path, reason: String| TlsError::File {
        what,
        path: path.to_owned(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_file)
        .map_err(|e| file_err("certificate", &tls.cert_file, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err("certificate", &tls.cert_file, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err(
            "certificate",
            &tls.cert_file,
            "no CERTIFICATE in it".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .map_err(|e| file_err("private key", &tls.key_file, e.to_string()))?;
    let refused = |e: rustls::Error| TlsError::Refused {
        cert: tls.cert_file.clone(),
        key: tls.key_file.clone(),
        reason: e.to_string(),
    };
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(refused)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(refused)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The files' modification times (`None` for one that cannot be read).
fn stamps(tls: &TlsConfig) -> [Option<SystemTime>; 2] {
    [&tls.cert_file, &tls.key_file].map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
}

/// Loads the files for serving and starts a task that reloads them into
/// the returned configuration whenever either changes (checked every
/// `reload_check_s`).
pub fn serve_config(tls: &TlsConfig) -> Result<RustlsConfig, TlsError> {
    let rustls = RustlsConfig::from_config(Arc::new(server_config(tls)?));
    let (watched, tls) = (rustls.clone(), tls.clone());
    tokio::spawn(async move {
        let mut seen = stamps(&tls);
        let mut tick = tokio::time::interval(Duration::from_secs(tls.reload_check_s.max(1)));
        loop {
            tick.tick().await;
            let now = stamps(&tls);
            if now == seen {
                continue;
            }
            seen = now;
            match server_config(&tls) {
                Ok(config) => {
                    watched.reload_from_config(Arc::new(config));
                    tracing::info!(cert_file = %tls.cert_file.display(), "TLS certificate reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificate not reloaded: still serving the previous one")
                }
            }
        }
    });
    Ok(rustls)
}
