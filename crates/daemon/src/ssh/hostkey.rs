//! The endpoint's ed25519 host key: made on first start, kept in the data
//! dir (0600) so clients' known_hosts entries stay valid across restarts.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use russh::keys::{HashAlg, PrivateKey};

#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not an OpenSSH private key: {source}")]
    Parse {
        path: String,
        source: russh::keys::ssh_key::Error,
    },
    #[error("encoding the host key: {0}")]
    Encode(russh::keys::ssh_key::Error),
}

pub const FILE: &str = "ssh_host_ed25519_key";

/// Read DATA_DIR/ssh_host_ed25519_key, creating it on first start.
pub fn load_or_create(data_dir: &Path) -> Result<PrivateKey, HostKeyError> {
    let path = data_dir.join(FILE);
    let shown = path.display().to_string();
    let io = |source| HostKeyError::Io {
        path: shown.clone(),
        source,
    };
    match std::fs::read(&path) {
        Ok(pem) => {
            return PrivateKey::from_openssh(&pem).map_err(|source| HostKeyError::Parse {
                path: shown.clone(),
                source,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let seed: [u8; 32] = rand::random();
    let pair = russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&seed);
    let key = PrivateKey::from(pair);
    let pem = key
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .map_err(HostKeyError::Encode)?;
    // create_new: two daemons starting at once on one data dir must not
    // each write a different key.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    f.write_all(pem.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(key)
}

/// `SHA256:...`, as `ssh-keygen -l` and the ssh client print it.
pub fn fingerprint(key: &PrivateKey) -> String {
    key.public_key().fingerprint(HashAlg::Sha256).to_string()
}

/// The public half as a known_hosts key (`ssh-ed25519 AAAA...`).
pub fn public_line(key: &PrivateKey) -> String {
    key.public_key().to_openssh().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert!(fingerprint(&a).starts_with("SHA256:"));
        std::fs::write(dir.path().join(FILE), "garbage").unwrap();
        assert!(load_or_create(dir.path()).is_err());
    }
}
