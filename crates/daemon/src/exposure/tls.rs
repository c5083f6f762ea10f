//! HTTPS for exposed ports: a second listener (`ports_tls_listen`) that
//! terminates TLS and serves the same router, so `https://PORT-NAME.<base>`
//! works. The certificate is the configured one (`ports_tls_cert` and
//! `ports_tls_key`, PEM), else a self-signed one for `*.<base>` kept in the
//! data dir, whose SHA-256 fingerprint the daemon prints at start. With
//! ACME (`ports_acme_directory`) the [`Resolver`] picks each name's ACME
//! certificate by SNI and falls back to the self-signed one while that is
//! pending or failed, so HTTPS always answers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;

use super::acme::Acme;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}: no PEM certificate or key in it")]
    Pem(PathBuf),
    #[error("self-signed certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("TLS: {0}")]
    Tls(#[from] tokio_rustls::rustls::Error),
    #[error("ports_tls_cert and ports_tls_key go together")]
    Half,
}

/// Marks a request that came over the TLS listener (X-Forwarded-Proto,
/// the cookie's `Secure`).
#[derive(Debug, Clone, Copy)]
pub struct ViaTls;

/// The server config and, for a self-signed certificate, its fingerprint.
pub fn server_config(
    data_dir: &Path,
    base: &str,
    cert: Option<&Path>,
    key: Option<&Path>,
    acme: Option<Arc<Acme>>,
) -> Result<(Arc<ServerConfig>, Option<String>), TlsError> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| TlsError::Io(p.to_path_buf(), e));
    let key_path = key;
    let (chain, key, self_signed) = match (cert, key) {
        (Some(c), Some(k)) => (read(c)?, read(k)?, false),
        (None, None) => {
            let (c, k) = self_signed(data_dir, base)?;
            (c, k, true)
        }
        _ => return Err(TlsError::Half),
    };
    let path = |p: Option<&Path>, d: &str| p.map_or_else(|| data_dir.join(d), Path::to_path_buf);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::Pem(path(cert, CERT_FILE)))?;
    let first = certs
        .first()
        .cloned()
        .ok_or_else(|| TlsError::Pem(path(cert, CERT_FILE)))?;
    let key =
        PrivateKeyDer::from_pem_slice(&key).map_err(|_| TlsError::Pem(path(key_path, KEY_FILE)))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let fallback = Arc::new(CertifiedKey::from_der(certs, key, &provider)?);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver { fallback, acme }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let fingerprint = self_signed.then(|| {
        Sha256::digest(first.as_ref())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    });
    Ok((Arc::new(config), fingerprint))
}

/// The ACME certificate for the SNI name when there is one, else the
/// configured or self-signed certificate.
#[derive(Debug)]
pub struct Resolver {
    fallback: Arc<CertifiedKey>,
    acme: Option<Arc<Acme>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let issued = match (&self.acme, hello.server_name()) {
            (Some(acme), Some(name)) => acme.cert(name),
            _ => None,
        };
        Some(issued.unwrap_or_else(|| self.fallback.clone()))
    }
}

const CERT_FILE: &str = "ports-tls.pem";
const KEY_FILE: &str = "ports-tls-key.pem";

/// The self-signed pair in the data dir, made for `*.<base>` on first use
/// (and again when the base domain changed).
fn self_signed(data_dir: &Path, base: &str) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let (cp, kp, np) = (
        data_dir.join(CERT_FILE),
        data_dir.join(KEY_FILE),
        data_dir.join("ports-tls.name"),
    );
    if std::fs::read_to_string(&np).is_ok_and(|n| n == base) {
        if let (Ok(c), Ok(k)) = (std::fs::read(&cp), std::fs::read(&kp)) {
            return Ok((c, k));
        }
    }
    let key = rcgen::KeyPair::generate()?;
    let params = rcgen::CertificateParams::new(vec![format!("*.{base}"), base.to_string()])?;
    let cert = params.self_signed(&key)?;
    let write = |p: &Path, data: &[u8], mode: u32| {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(p)
            .and_then(|mut f| f.write_all(data))
            .map_err(|e| TlsError::Io(p.to_path_buf(), e))
    };
    write(&kp, key.serialize_pem().as_bytes(), 0o600)?;
    write(&cp, cert.pem().as_bytes(), 0o644)?;
    write(&np, base.as_bytes(), 0o644)?;
    Ok((cert.pem().into_bytes(), key.serialize_pem().into_bytes()))
}

/// Accept TLS connections on `listener` and serve `app` on them (HTTP/1.1
/// with upgrades, or HTTP/2 by ALPN).
pub fn spawn(listener: tokio::net::TcpListener, config: Arc<ServerConfig>, app: axum::Router) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("ports TLS accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(Ok(tls)) =
                    tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp))
                        .await
                else {
                    return;
                };
                let svc = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
                    req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                    req.extensions_mut().insert(ViaTls);
                    let app = app.clone();
                    async move {
                        use tower_service::Service;
                        let mut app = app;
                        app.call(req.map(axum::body::Body::new)).await
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
}
