//! Where host connections come from. A transport is anything that yields
//! byte-stream connections ([`Conn`]); the protocol layer does not care
//! which. Vsock and virtio-serial are added as further [`Listener`]
//! variants without touching the rest of the agent.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncWrite};

/// Where the agent listens inside a sandbox; the namespace backend
/// bind-mounts a host directory onto /run/ironclaw to reach it.
pub const AGENT_SOCKET: &str = "/run/ironclaw/agent.sock";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Unix(PathBuf),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: ListenAddr,
        source: std::io::Error,
    },
    #[error("accepting a connection: {0}")]
    Accept(#[source] std::io::Error),
}

/// One host connection, whatever carries it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
pub type Conn = Box<dyn Stream>;

pub enum Listener {
    Unix {
        listener: tokio::net::UnixListener,
        path: PathBuf,
    },
}

impl Listener {
    /// Must run inside the tokio runtime (the socket registers with it).
    pub fn bind(addr: &ListenAddr) -> Result<Listener, TransportError> {
        let err = |source| TransportError::Bind {
            addr: addr.clone(),
            source,
        };
        match addr {
            ListenAddr::Unix(path) => {
                // A socket file left by an earlier agent (crash, restart of
                // the sandbox) would make bind fail with EADDRINUSE.
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(err(e)),
                }
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(err)?;
                }
                let listener = tokio::net::UnixListener::bind(path).map_err(err)?;
                // The agent runs as root: processes inside the sandbox that
                // see the socket must not get a root shell through it.
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(err)?;
                Ok(Listener::Unix {
                    listener,
                    path: path.clone(),
                })
            }
        }
    }

    pub async fn accept(&self) -> Result<Conn, TransportError> {
        match self {
            Listener::Unix { listener, .. } => {
                let (stream, _) = listener.accept().await.map_err(TransportError::Accept)?;
                Ok(Box::new(stream))
            }
        }
    }

    /// Remove what the listener left in the filesystem.
    pub fn cleanup(&self) {
        match self {
            Listener::Unix { path, .. } => remove_quietly(path),
        }
    }
}

fn remove_quietly(path: &Path) {
    let _ = std::fs::remove_file(path);
}
