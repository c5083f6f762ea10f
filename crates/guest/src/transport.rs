//! Where host connections come from. A transport is anything that yields
//! byte-stream connections ([`Conn`]); the protocol layer does not care
//! which: a Unix socket (namespace sandboxes, tests), an AF_VSOCK listener
//! or a virtio-serial port (VMs).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Where the agent listens inside a sandbox; the namespace backend
/// bind-mounts a host directory onto /run/ironclaw to reach it.
pub const AGENT_SOCKET: &str = "/run/ironclaw/agent.sock";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Unix(PathBuf),
    /// AF_VSOCK port, any CID.
    Vsock(u32),
    /// A virtio-serial port device (`/dev/vportNpM`).
    Serial(PathBuf),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ListenAddr::Vsock(port) => write!(f, "vsock:{port}"),
            ListenAddr::Serial(p) => write!(f, "serial:{}", p.display()),
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
    Vsock(AsyncFd<OwnedFd>),
    /// A serial port carries one connection at a time. The permit is held
    /// while the connection's reader runs; `current` fences off the
    /// previous connection's writer, whose late replies must not land in
    /// the next host's stream.
    Serial {
        port: Arc<AsyncFd<OwnedFd>>,
        one: Arc<Semaphore>,
        current: Arc<AtomicU64>,
    },
}

/// Held while a connection is served; `None` for transports that take
/// many connections at once.
pub type ConnSlot = Option<OwnedSemaphorePermit>;

/// Bind a Unix socket at `path`, replacing a stale one, readable and
/// writable by its owner only.
pub fn bind_unix(path: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    // A socket file left by an earlier agent (crash, restart of the
    // sandbox) would make bind fail with EADDRINUSE.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    // The agent may run as root: processes that see the socket must not
    // get a root shell through it.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
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
                let listener = bind_unix(path).map_err(err)?;
                Listener::from_unix(listener, path.clone()).map_err(err)
            }
            ListenAddr::Vsock(port) => vsock_listen(*port).map(Listener::Vsock).map_err(err),
            ListenAddr::Serial(path) => {
                use std::os::unix::fs::OpenOptionsExt;
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
                    .open(path)
                    .map_err(err)?;
                // SAFETY: we own the descriptor and it lives as long as the AsyncFd.
                let port = unsafe { AsyncFd::register(OwnedFd::from(f)) }
                    .map_err(|e| err(e.into_parts().1))?;
                Ok(Listener::Serial {
                    port: Arc::new(port),
                    one: Arc::new(Semaphore::new(1)),
                    current: Arc::new(AtomicU64::new(0)),
                })
            }
        }
    }

    /// Serve on a socket bound earlier (before the agent gave up the
    /// privileges binding it needed). Must run inside the tokio runtime.
    pub fn from_unix(
        listener: std::os::unix::net::UnixListener,
        path: PathBuf,
    ) -> std::io::Result<Listener> {
        listener.set_nonblocking(true)?;
        Ok(Listener::Unix {
            listener: tokio::net::UnixListener::from_std(listener)?,
            path,
        })
    }

    /// The next connection, and the slot to drop once its reader is done.
    pub async fn accept(&self) -> Result<(Conn, ConnSlot), TransportError> {
        match self {
            Listener::Unix { listener, .. } => {
                let (stream, _) = listener.accept().await.map_err(TransportError::Accept)?;
                Ok((Box::new(stream), None))
            }
            Listener::Vsock(fd) => loop {
                let mut guard = fd.readable().await.map_err(TransportError::Accept)?;
                match guard.try_io(|l| {
                    // SAFETY: accept4 on our listening socket; NULL address out-params.
                    let c = unsafe {
                        libc::accept4(
                            l.as_raw_fd(),
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        )
                    };
                    if c < 0 {
                        Err(std::io::Error::last_os_error())
                    } else {
                        // SAFETY: a fresh descriptor we now own.
                        Ok(unsafe { OwnedFd::from_raw_fd(c) })
                    }
                }) {
                    Ok(Ok(c)) => {
                        // SAFETY: we own `c` and it lives as long as the AsyncFd.
                        let fd = unsafe { AsyncFd::register(c) }
                            .map_err(|e| TransportError::Accept(e.into_parts().1))?;
                        let conn = FdStream {
                            fd: Arc::new(fd),
                            serial: None,
                        };
                        return Ok((Box::new(conn), None));
                    }
                    Ok(Err(e)) => return Err(TransportError::Accept(e)),
                    Err(_would_block) => continue,
                }
            },
            Listener::Serial { port, one, current } => {
                let permit = one
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| TransportError::Accept(std::io::Error::other(e)))?;
                // POLLHUP while no host has the port open; there is no
                // event for "a host connected", so poll for it.
                while hung_up(port.as_raw_fd()) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let gen = current.fetch_add(1, Ordering::SeqCst) + 1;
                let conn = FdStream {
                    fd: port.clone(),
                    serial: Some((gen, current.clone())),
                };
                Ok((Box::new(conn), Some(permit)))
            }
        }
    }

    /// Remove what the listener left in the filesystem.
    pub fn cleanup(&self) {
        match self {
            Listener::Unix { path, .. } => remove_quietly(path),
            Listener::Vsock(_) | Listener::Serial { .. } => {}
        }
    }
}

fn vsock_listen(port: u32) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: plain socket syscalls on a descriptor we own; the address is
    // a zeroed sockaddr_vm with family, port and CID set.
    unsafe {
        let s = libc::socket(
            libc::AF_VSOCK,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if s < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(s);
        let mut addr: libc::sockaddr_vm = std::mem::zeroed();
        addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        addr.svm_port = port;
        addr.svm_cid = libc::VMADDR_CID_ANY;
        if libc::bind(
            s,
            (&addr as *const libc::sockaddr_vm).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        ) < 0
            || libc::listen(s, 16) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
        AsyncFd::register(fd).map_err(|e| e.into_parts().1)
    }
}

/// True while no host has the virtio-serial port open.
fn hung_up(fd: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN | libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & libc::POLLHUP != 0
}

/// A connection over a raw descriptor (vsock socket or serial port).
struct FdStream {
    fd: Arc<AsyncFd<OwnedFd>>,
    /// Serial ports: this connection's generation and the current one.
    serial: Option<(u64, Arc<AtomicU64>)>,
}

impl FdStream {
    /// A serial connection that a newer one has replaced.
    fn stale(&self) -> bool {
        self.serial
            .as_ref()
            .is_some_and(|(gen, cur)| cur.load(Ordering::SeqCst) != *gen)
    }
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if self.stale() {
                return Poll::Ready(Ok(()));
            }
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let res = guard.try_io(|fd| {
                // SAFETY: reading into a buffer we own, of its length.
                let n = unsafe {
                    libc::read(fd.as_raw_fd(), unfilled.as_mut_ptr().cast(), unfilled.len())
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        loop {
            if self.stale() {
                return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
            }
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            let res = guard.try_io(|fd| {
                // SAFETY: writing from a buffer we borrow, of its length.
                let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => {
                    // A serial port blocks writes while no host is there
                    // (POLLHUP) instead of failing them: end the connection.
                    if self.serial.is_some() && hung_up(self.fd.as_raw_fd()) {
                        return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
                    }
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// `/dev/vportNpM` of the virtio-serial port named `name`, found through
/// sysfs (there is no udev to make /dev/virtio-ports/ links).
pub fn find_serial_port(name: &str) -> Option<PathBuf> {
    let dir = std::fs::read_dir("/sys/class/virtio-ports").ok()?;
    for e in dir.flatten() {
        let port_name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if port_name.trim() == name {
            let dev = Path::new("/dev").join(e.file_name());
            if dev.exists() {
                return Some(dev);
            }
        }
    }
    None
}

fn remove_quietly(path: &Path) {
    let _ = std::fs::remove_file(path);
}
