//! `ssh -L`: direct-tcpip channels to a port inside the sandbox. Every
//! channel goes through the guest agent ([`AgentClient::tcp_connect`]),
//! which dials the port on the sandbox's own loopback: servers bound to
//! 127.0.0.1 inside are reached, and so are sandboxes made with
//! `--network none`, and nothing outside the sandbox is (the agent takes
//! a port, never an address). The destination host must name the sandbox
//! itself (`localhost`, its name or its address).
//!
//! [`AgentClient::tcp_connect`]: ironclaw_sandbox::AgentClient::tcp_connect

use std::sync::Arc;
use std::time::Duration;

use ironclaw_sandbox::types::ErrorKind;
use ironclaw_sandbox::AgentError;
use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelOpenFailure};

use crate::auth::Target;
use crate::manager::Manager;

/// A little over the agent's own connect timeout (10 s), so its answer
/// wins; an agent too old to know forwarding is caught by this one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(12);

/// Whether `host` names the sandbox itself.
fn is_own(host: &str, name: &str, address: Option<std::net::Ipv4Addr>) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    matches!(host, "localhost" | "127.0.0.1" | "::1" | "ip6-localhost")
        || host.eq_ignore_ascii_case(name)
        || address.is_some_and(|ip| host == ip.to_string())
}

/// The port a forward to `host:port` goes to, or why not.
fn destination(manager: &Manager, target: &Target, host: &str, port: u32) -> Result<u16, String> {
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or("bad port")?;
    let r = manager.by_id(&target.id).map_err(|e| e.to_string())?;
    if !is_own(host, &r.name, manager.sandbox_address(&r)) {
        return Err(format!(
            "forwarding reaches only the sandbox's own ports; use -L LOCAL:localhost:{port}"
        ));
    }
    Ok(port)
}

/// Open the forward in the background (connecting must not hold up the
/// connection's other channels), then copy both ways until both close.
pub fn open(
    manager: Arc<Manager>,
    target: Target,
    channel: Channel<Msg>,
    host: String,
    port: u32,
    reply: ChannelOpenHandle,
) {
    tokio::spawn(async move {
        let refuse = |code, why: String| ChannelOpenFailure::Other { code, reason: why };
        let port = match destination(&manager, &target, &host, port) {
            Ok(p) => p,
            Err(why) => {
                tracing::debug!(sandbox = %target.name, "ssh forward refused: {why}");
                return reply.reject(refuse(1, why)).await;
            }
        };
        let agent = match manager.agent(&target.id).await {
            Ok(a) => a,
            Err(e) => return reply.reject(refuse(2, e.to_string())).await,
        };
        let mut tunnel = match agent.tcp_connect(port, CONNECT_TIMEOUT).await {
            Ok(t) => t,
            Err(AgentError::Guest {
                kind: ErrorKind::NotFound,
                message,
            }) => {
                tracing::debug!(sandbox = %target.name, "ssh forward: {message}");
                return reply.reject(ChannelOpenFailure::ConnectFailed).await;
            }
            Err(AgentError::Timeout(_)) => {
                return reply
                    .reject(refuse(
                        2,
                        format!("connecting to port {port}: no answer (an old guest agent?)"),
                    ))
                    .await
            }
            Err(e) => return reply.reject(refuse(2, e.to_string())).await,
        };
        reply.accept().await;
        let mut chan = channel.into_stream();
        if let Err(e) = tokio::io::copy_bidirectional(&mut chan, &mut tunnel).await {
            tracing::debug!(sandbox = %target.name, "ssh forward ended: {e}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::is_own;

    #[test]
    fn only_the_sandbox_itself_is_a_destination() {
        let ip = Some("10.77.0.5".parse().unwrap());
        for h in ["localhost", "127.0.0.1", "::1", "[::1]", "web", "10.77.0.5"] {
            assert!(is_own(h, "web", ip), "{h}");
        }
        for h in ["127.0.0.2", "10.77.0.6", "example.com", "0.0.0.0", "webx"] {
            assert!(!is_own(h, "web", ip), "{h}");
        }
        assert!(!is_own("10.77.0.5", "web", None));
    }
}
