//! TCP forwarding (`HostMsg::TcpConnect`): the host's end of an `ssh -L`
//! reaches a server listening inside the sandbox, even one bound to
//! 127.0.0.1 only, and in sandboxes without any network card.
//!
//! Only loopback, only in the agent's own network namespace: the request
//! carries a port and no address, and the address is fixed here. The
//! agent lives in the sandbox's namespace (PID 1 of the namespace
//! sandbox's own netns, or of the VM), so 127.0.0.1 is the sandbox's own
//! loopback, never the host's. Reaching any other address would make the
//! agent a relay that the host could be talked into using (an ssh user
//! naming a host-only or another sandbox's address, a confused host
//! component), around the sandbox's egress rules, which filter what
//! the sandbox sends out, not what the host asks its agent to dial.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ironclaw_proto::{ErrorKind, GuestMsg, HostMsg, CHUNK};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::connection::{Input, Out};
use crate::errors::kind_of;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The sandbox's own loopback: 127.0.0.1, then ::1 (what `localhost`
/// names) when nothing listens on the IPv4 one.
async fn connect(port: u16) -> std::io::Result<TcpStream> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match TcpStream::connect(v4).await {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
            // A namespace without IPv6 answers EADDRNOTAVAIL: the v4
            // refusal is the answer then.
            TcpStream::connect(v6).await.map_err(|_| e)
        }
        Err(e) => Err(e),
    }
}

pub async fn run(out: Out, port: u16, input: Input) {
    if port == 0 {
        return out.error(ErrorKind::InvalidInput, "port 0").await;
    }
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect(port)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let kind = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => ErrorKind::NotFound,
                _ => kind_of(&e),
            };
            return out
                .error(kind, format!("connecting to localhost:{port}: {e}"))
                .await;
        }
        Err(_) => {
            return out
                .error(
                    ErrorKind::Other,
                    format!("connecting to localhost:{port}: timed out"),
                )
                .await
        }
    };
    let _ = stream.set_nodelay(true);
    if out.send(GuestMsg::TcpConnected).await.is_err() {
        return;
    }
    let (mut rd, mut wr) = stream.into_split();
    let Input { mut data, mut ctrl } = input;
    // Socket to host, until the socket's EOF.
    let up = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) => return out.send(GuestMsg::TcpEof).await.map_err(|_| None),
                Ok(n) => out
                    .send_bytes(GuestMsg::Data(Vec::new()), &buf[..n])
                    .await
                    .map_err(|_| None)?,
                Err(e) => return Err(Some(e)),
            }
        }
    };
    // Host to socket, until the host's Eof.
    let down = async {
        while let Some(m) = data.recv().await {
            match m {
                HostMsg::Data(d) => wr.write_all(&d).await.map_err(Some)?,
                HostMsg::Eof => return wr.shutdown().await.map_err(Some),
                _ => {}
            }
        }
        // The host is gone.
        Err(None)
    };
    // Cancel (or the connection dropping) ends it all; dropping the
    // socket closes it.
    let cancelled = async {
        while let Some(m) = ctrl.recv().await {
            if m == HostMsg::Cancel {
                break;
            }
        }
    };
    let both = async {
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        while !(up_done && down_done) {
            tokio::select! {
                r = &mut up, if !up_done => { r?; up_done = true; }
                r = &mut down, if !down_done => { r?; down_done = true; }
            }
        }
        Ok::<(), Option<std::io::Error>>(())
    };
    tokio::select! {
        r = both => match r {
            Ok(()) => {
                let _ = out.send(GuestMsg::Ok).await;
            }
            Err(Some(e)) => out.error(kind_of(&e), format!("localhost:{port}: {e}")).await,
            // The host stopped reading: nobody to tell.
            Err(None) => {}
        },
        () = cancelled => {}
    }
}
