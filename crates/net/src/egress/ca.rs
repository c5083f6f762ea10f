//! The daemon's own CA for intercepted HTTPS (only domains with header
//! rules). Sandboxes trust its certificate; it signs a leaf per server name
//! on demand. Its key stays in the daemon's state directory.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("{0}: not a PEM certificate")]
    Pem(PathBuf),
    #[error("TLS: {0}")]
    Tls(#[from] tokio_rustls::rustls::Error),
}

/// The CA certificate's file name in its directory.
pub const CERT_FILE: &str = "egress-ca.pem";
const KEY_FILE: &str = "egress-ca-key.pem";
/// Leaf configs kept; past it the cache starts over.
const MAX_LEAVES: usize = 1024;

pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    /// One key for every leaf: leaves only live in this process.
    leaf_key: KeyPair,
    configs: Mutex<HashMap<String, Arc<ServerConfig>>>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

/// The CA's parameters; also rebuilt on load, since the issuer of a leaf is
/// the CA's name and key, nothing else.
fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(DnType::CommonName, "IronClaw egress CA");
    p.distinguished_name
        .push(DnType::OrganizationName, "IronClaw");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Ca {
    /// The CA in `dir` (egress-ca.pem, egress-ca-key.pem), made on first use.
    pub fn load_or_create(dir: &Path) -> Result<Ca, CaError> {
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        let (cert_pem, key) = if key_path.exists() && cert_path.exists() {
            let key = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
            let cert = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
            (cert, KeyPair::from_pem(&key)?)
        } else {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            let key = KeyPair::generate()?;
            let cert = ca_params().self_signed(&key)?.pem();
            // Key first, private from the start; the cert marks completion.
            write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_new(&cert_path, cert.as_bytes(), 0o644)?;
            (cert, key)
        };
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| CaError::Pem(cert_path.clone()))?;
        Ok(Ca {
            cert_pem,
            cert_der,
            issuer: Issuer::new(ca_params(), key),
            leaf_key: KeyPair::generate()?,
            configs: Mutex::new(HashMap::new()),
        })
    }

    /// The certificate sandboxes must trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A TLS server config presenting a leaf for `name`.
    pub(crate) fn server_config(&self, name: &str) -> Result<Arc<ServerConfig>, CaError> {
        if let Some(c) = self.configs.lock().unwrap().get(name) {
            return Ok(c.clone());
        }
        let mut params = CertificateParams::new(vec![name.to_string()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        let leaf = params.signed_by(&self.leaf_key, &self.issuer)?;
        let key = PrivateKeyDer::Pkcs8(self.leaf_key.serialize_der().into());
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone(), self.cert_der.clone()], key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        let mut cache = self.configs.lock().unwrap();
        if cache.len() >= MAX_LEAVES {
            cache.clear();
        }
        cache.insert(name.to_string(), config.clone());
        Ok(config)
    }
}

/// Write a file through a temporary name, so a crash leaves no half file.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), CaError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_persists_and_signs_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let a = Ca::load_or_create(dir.path()).unwrap();
        let b = Ca::load_or_create(dir.path()).unwrap();
        assert_eq!(a.cert_pem(), b.cert_pem(), "loaded, not made again");
        let meta = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        b.server_config("api.test").unwrap();
        assert!(b.configs.lock().unwrap().contains_key("api.test"));
    }
}
