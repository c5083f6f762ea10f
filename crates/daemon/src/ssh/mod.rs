//! The SSH endpoint (`--ssh-listen`, default port 2222): `ssh NAME@HOST`
//! opens sandbox NAME's persistent console, `ssh NAME@HOST CMD` runs a
//! command, scp/sftp move files, `-L` forwards to the sandbox's ports. No
//! sshd runs in the sandbox: the daemon speaks SSH (russh) and reaches the
//! sandbox through its agent client, like the HTTP API.
//!
//! Logins are by public key only (`ironclaw key add`); see [`auth`].

pub mod auth;
pub mod forward;
pub mod git;
pub mod hostkey;
pub mod pubkey;
pub mod session;
pub mod sftp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::server::{Auth, ChannelOpenHandle, Msg, Server as _, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};

use crate::manager::Manager;

/// What `/v1/host` and `doctor` show.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Info {
    pub listen: SocketAddr,
    /// `SHA256:...` of the host key.
    pub fingerprint: String,
    /// The host key as a known_hosts key (`ssh-ed25519 AAAA...`).
    pub host_key: String,
}

fn publickey_only() -> MethodSet {
    MethodSet::from(&[MethodKind::PublicKey][..])
}

/// Serve SSH on `listener` until the daemon stops.
pub fn spawn(
    listener: tokio::net::TcpListener,
    key: russh::keys::PrivateKey,
    manager: Arc<Manager>,
) {
    let config = russh::server::Config {
        server_id: russh::SshId::Standard(
            format!("SSH-2.0-ironclawd_{}", env!("CARGO_PKG_VERSION")).into(),
        ),
        methods: publickey_only(),
        // One constant delay for every refusal, so none is told apart.
        auth_rejection_time: Duration::from_millis(300),
        // OpenSSH first probes with "none": nothing to hide there.
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![key],
        // A console may sit idle for hours; keepalives find dead peers.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 4,
        nodelay: true,
        ..Default::default()
    };
    let mut server = Server { manager };
    tokio::spawn(async move {
        if let Err(e) = server.run_on_socket(Arc::new(config), &listener).await {
            tracing::error!("ssh endpoint stopped: {e}");
        }
    });
}

struct Server {
    manager: Arc<Manager>,
}

impl russh::server::Server for Server {
    type Handler = Connection;

    fn new_client(&mut self, peer: Option<SocketAddr>) -> Connection {
        Connection {
            manager: self.manager.clone(),
            peer,
            target: None,
            sftp: Default::default(),
        }
    }

    fn handle_session_error(&mut self, error: russh::Error) {
        tracing::debug!("ssh connection ended: {error}");
    }
}

/// One client connection; `target` is set once a key logged in.
pub struct Connection {
    manager: Arc<Manager>,
    peer: Option<SocketAddr>,
    target: Option<crate::auth::Target>,
    /// Channels running the sftp subsystem.
    sftp: std::collections::HashSet<ChannelId>,
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let fp = pubkey::fingerprint(key.public_key);
        match auth::authorize(&self.manager, user, &fp) {
            Some(t) => {
                tracing::info!(sandbox = %t.name, owner = %t.owner, key = %fp, peer = ?self.peer, "ssh login");
                self.target = Some(t);
                Ok(Auth::Accept)
            }
            None => {
                tracing::info!(user, key = %fp, peer = ?self.peer, "ssh login refused");
                Ok(Auth::Reject {
                    proceed_with_methods: Some(publickey_only()),
                    partial_success: false,
                })
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(target) = self.target.clone() else {
            return Ok(()); // dropping `reply` refuses
        };
        reply.accept().await;
        tokio::spawn(session::run(channel, self.manager.clone(), target));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(target) = self.target.clone() {
            forward::open(
                self.manager.clone(),
                target,
                channel,
                host_to_connect.to_string(),
                port_to_connect,
                reply,
            );
        }
        Ok(())
    }

    /// The client is done with its sftp session: end it with status 0, as
    /// sshd does when sftp-server exits (scp fails without one).
    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.sftp.remove(&channel) {
            session.exit_status_request(channel, 0)?;
            session.eof(channel)?;
            session.close(channel)?;
        }
        Ok(())
    }

    // The session task reads these requests from its channel; the handler
    // only answers them.
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if session::accepted_env(name) {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    /// No X11 into sandboxes: say so rather than leave the client waiting.
    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == "sftp" {
            self.sftp.insert(channel);
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }
}
