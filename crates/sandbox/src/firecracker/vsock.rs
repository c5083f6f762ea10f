//! Host side of Firecracker's virtio-vsock: the VM's vsock device is a Unix
//! socket on the host; a connection asks for a guest port with
//! `CONNECT <port>\n` and gets `OK <host port>\n` back.

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Connect to `port` in the guest behind the vsock Unix socket `uds`.
pub async fn connect(uds: &Path, port: u32) -> std::io::Result<UnixStream> {
    let mut s = UnixStream::connect(uds).await?;
    s.write_all(format!("CONNECT {port}\n").as_bytes()).await?;
    // Read the reply byte by byte: what follows belongs to the guest.
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        if s.read(&mut b).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "vsock: closed before OK (nothing listening on the guest port yet)",
            ));
        }
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
        if line.len() > 64 {
            return Err(std::io::Error::other("vsock: overlong CONNECT reply"));
        }
    }
    if line.starts_with(b"OK ") {
        Ok(s)
    } else {
        Err(std::io::Error::other(format!(
            "vsock: unexpected reply {:?}",
            String::from_utf8_lossy(&line)
        )))
    }
}
