//! Reaching a VM: the guest agent over the virtio-serial socket or
//! vhost-vsock, re-connection after a daemon restart, and QMP's quit.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::{HANDSHAKE_TIMEOUT, RECONNECT_TIMEOUT, VSOCK_PORT};
use crate::agent::{AgentClient, AgentError};
use crate::backend::Running;
use crate::process;

/// Connect to the agent through the serial chardev socket until the
/// handshake succeeds, QEMU exits, or `deadline` passes. The error's bool
/// says whether a fresh boot may help (a hang, not a crash).
pub(super) async fn wait_serial(
    running: &Running,
    deadline: Instant,
) -> Result<AgentClient, (bool, String)> {
    loop {
        if !process::is_same_process(running.pid, running.pid_start) {
            return Err((false, "QEMU exited before the guest agent answered".into()));
        }
        if Instant::now() > deadline {
            return Err((true, "the guest agent did not answer in time".into()));
        }
        let Ok(stream) = tokio::net::UnixStream::connect(&running.agent_socket).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        // QEMU holds the sync line until the guest opens its port, so one
        // connection waits out the whole boot; keep an eye on QEMU meanwhile.
        let handshake = AgentClient::over(stream);
        tokio::pin!(handshake);
        loop {
            tokio::select! {
                r = &mut handshake => match r {
                    Ok(agent) => return Ok(agent),
                    Err(_) => break,
                },
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if !process::is_same_process(running.pid, running.pid_start) {
                        return Err((false, "QEMU exited before the guest agent answered".into()));
                    }
                    if Instant::now() > deadline {
                        return Err((true, "the guest agent did not answer in time".into()));
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// vhost-vsock: the host connects to (cid, port) directly.
pub(super) async fn wait_vsock(
    running: &Running,
    cid: u32,
    deadline: Instant,
) -> Result<AgentClient, (bool, String)> {
    loop {
        if !process::is_same_process(running.pid, running.pid_start) {
            return Err((false, "QEMU exited before the guest agent answered".into()));
        }
        if Instant::now() > deadline {
            return Err((true, "the guest agent did not answer in time".into()));
        }
        if let Ok(Ok(agent)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, connect_vsock(cid)).await {
            return Ok(agent);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(super) async fn connect_vsock(cid: u32) -> Result<AgentClient, AgentError> {
    let fd = tokio::task::spawn_blocking(move || -> std::io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::FromRawFd;
        // SAFETY: socket/connect on a descriptor we own with a zeroed,
        // filled-in sockaddr_vm.
        unsafe {
            let s = libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if s < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = std::os::fd::OwnedFd::from_raw_fd(s);
            let mut addr: libc::sockaddr_vm = std::mem::zeroed();
            addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
            addr.svm_port = VSOCK_PORT;
            addr.svm_cid = cid;
            if libc::connect(
                s,
                (&addr as *const libc::sockaddr_vm).cast(),
                std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
            ) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(fd)
        }
    })
    .await
    .map_err(|e| AgentError::Connect(std::io::Error::other(e)))?
    .map_err(AgentError::Connect)?;
    // A connected stream socket works as a UnixStream for plain reads and
    // writes, which is all the agent client does.
    let std_stream = std::os::unix::net::UnixStream::from(fd);
    std_stream
        .set_nonblocking(true)
        .map_err(AgentError::Connect)?;
    let stream = tokio::net::UnixStream::from_std(std_stream).map_err(AgentError::Connect)?;
    AgentClient::over(stream).await
}

/// A new connection to a running VM's agent (re-adoption after a daemon
/// restart, or after the previous connection dropped).
pub async fn reconnect_serial(socket: &Path) -> Result<AgentClient, AgentError> {
    let deadline = Instant::now() + RECONNECT_TIMEOUT;
    let mut handshakes = 0;
    loop {
        let err = match tokio::net::UnixStream::connect(socket).await {
            // QEMU serves one client at a time and leaves its backlog full
            // until the previous client is gone (EAGAIN meanwhile).
            Err(e) => AgentError::Connect(e),
            Ok(mut stream) => {
                handshakes += 1;
                // If the guest has not noticed the previous client leave
                // (QEMU reports close and reopen back to back), its old
                // connection would take our sync line for a frame header.
                // Feed it an impossible frame length first: it drops that
                // connection, and a fresh one skips these bytes as noise.
                let _ = stream.write_all(b"\xff\xff\xff\xff\n").await;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, AgentClient::over(stream)).await {
                    Ok(Ok(agent)) => return Ok(agent),
                    Ok(Err(e)) => e,
                    Err(_) => AgentError::Timeout(HANDSHAKE_TIMEOUT),
                }
            }
        };
        if Instant::now() > deadline || handshakes >= 3 {
            return Err(err);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ask QEMU to quit through QMP (the guest gets no say).
pub(super) async fn qmp_quit(sock: &Path) -> std::io::Result<()> {
    let s = tokio::net::UnixStream::connect(sock).await?;
    let (r, mut w) = s.into_split();
    let mut lines = BufReader::new(r).lines();
    lines.next_line().await?; // greeting
    w.write_all(b"{\"execute\":\"qmp_capabilities\"}\n").await?;
    lines.next_line().await?;
    w.write_all(b"{\"execute\":\"quit\"}\n").await?;
    let _ = lines.next_line().await;
    Ok(())
}
