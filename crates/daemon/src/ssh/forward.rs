//! `ssh -L`: direct-tcpip channels to a port inside the sandbox, reached
//! the way the port proxy reaches exposed ports (the sandbox's address on
//! the bridge; sandboxes made with `--network none` have no ports to
//! reach). The destination host must name the sandbox itself
//! (`localhost`, its name or its address): nothing else is reachable.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ironclaw_store::SandboxState;
use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelOpenFailure};

use crate::auth::Target;
use crate::manager::Manager;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a forward to `host:port` goes, or why not.
fn destination(
    manager: &Manager,
    target: &Target,
    host: &str,
    port: u32,
) -> Result<SocketAddr, String> {
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or("bad port")?;
    let r = manager.by_id(&target.id).map_err(|e| e.to_string())?;
    if r.state != SandboxState::Running {
        return Err(format!("sandbox '{}' is {}", r.name, r.state.as_str()));
    }
    let ip = manager
        .sandbox_address(&r)
        .ok_or_else(|| format!("sandbox '{}' has no network (--network none)", r.name))?;
    let own = matches!(host, "localhost" | "127.0.0.1" | "::1" | "ip6-localhost")
        || host == r.name
        || host == ip.to_string();
    if !own {
        return Err(format!(
            "forwarding reaches only the sandbox's own ports; use -L LOCAL:localhost:{port}"
        ));
    }
    Ok(SocketAddr::new(ip.into(), port))
}

/// Open the forward in the background (connecting must not hold up the
/// connection's other channels), then copy both ways until either closes.
pub fn open(
    manager: Arc<Manager>,
    target: Target,
    channel: Channel<Msg>,
    host: String,
    port: u32,
    reply: ChannelOpenHandle,
) {
    tokio::spawn(async move {
        let addr = match destination(&manager, &target, &host, port) {
            Ok(a) => a,
            Err(why) => {
                tracing::debug!(sandbox = %target.name, "ssh forward refused: {why}");
                return reply
                    .reject(ChannelOpenFailure::Other {
                        code: 1,
                        reason: why,
                    })
                    .await;
            }
        };
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return reply
                    .reject(ChannelOpenFailure::Other {
                        code: 2,
                        reason: format!("connecting to port {}: {e}", addr.port()),
                    })
                    .await
            }
            Err(_) => return reply.reject(ChannelOpenFailure::ConnectFailed).await,
        };
        let _ = tcp.set_nodelay(true);
        reply.accept().await;
        let mut chan = channel.into_stream();
        let mut tcp = tcp;
        if let Err(e) = tokio::io::copy_bidirectional(&mut chan, &mut tcp).await {
            tracing::debug!(sandbox = %target.name, "ssh forward ended: {e}");
        }
    });
}
