//! One SSH session channel: a shell request opens the sandbox's persistent
//! console (the `main` session `ironclaw console` attaches to), an exec
//! request runs one command, the `sftp` subsystem serves files. Everything
//! goes through the sandbox's agent client, as the HTTP API does.

use std::sync::Arc;

use ironclaw_sandbox::types::{ExecRequest, PtyOpen, TtySize};
use ironclaw_sandbox::{AgentError, Session, SessionEvent};
use russh::server::Msg;
use russh::{Channel, ChannelMsg};

use crate::auth::Target;
use crate::manager::Manager;

/// Environment variables a client may pass (`SendEnv`); the rest are
/// dropped, as OpenSSH's default `AcceptEnv` does. `GIT_PROTOCOL` goes
/// to git over ssh only (git's own advice to sshd operators).
pub(super) fn accepted_env(name: &str) -> bool {
    name == "LANG" || name.starts_with("LC_") || name == "COLORTERM" || name == GIT_PROTOCOL
}

const GIT_PROTOCOL: &str = "GIT_PROTOCOL";

fn size(cols: u32, rows: u32) -> TtySize {
    let clamp = |v: u32, d: u16| {
        if v == 0 {
            d
        } else {
            v.min(u16::MAX as u32) as u16
        }
    };
    TtySize {
        rows: clamp(rows, 24),
        cols: clamp(cols, 80),
    }
}

/// What the client asked for before its shell, exec or subsystem request.
#[derive(Default)]
struct Setup {
    pty: Option<(String, TtySize)>,
    env: Vec<(String, String)>,
}

/// Drive one session channel until it ends.
pub async fn run(mut channel: Channel<Msg>, manager: Arc<Manager>, target: Target) {
    let mut setup = Setup::default();
    loop {
        let Some(msg) = channel.wait().await else {
            return;
        };
        match msg {
            ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                ..
            } => setup.pty = Some((term, size(col_width, row_height))),
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                ..
            } => {
                if let Some((_, s)) = &mut setup.pty {
                    *s = size(col_width, row_height);
                }
            }
            ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            } if accepted_env(&variable_name) => setup.env.push((variable_name, variable_value)),
            ChannelMsg::RequestShell { .. } => {
                return console(channel, &manager, &target, setup).await;
            }
            ChannelMsg::Exec { command, .. } => {
                let command = String::from_utf8_lossy(&command).into_owned();
                return exec(channel, &manager, &target, setup, command).await;
            }
            ChannelMsg::RequestSubsystem { name, .. } => {
                if name == "sftp" {
                    super::sftp::serve(channel, manager, target).await;
                }
                // Other subsystems were refused in the handler.
                return;
            }
            ChannelMsg::Eof | ChannelMsg::Close => return,
            _ => {}
        }
    }
}

/// End the channel with a message on stderr and exit status 1.
pub(super) async fn refuse(channel: &Channel<Msg>, message: &str) {
    let _ = channel
        .extended_data(1, format!("ironclaw: {message}\r\n").as_bytes())
        .await;
    let _ = channel.exit_status(1).await;
    let _ = channel.eof().await;
    let _ = channel.close().await;
}

async fn agent(
    channel: &Channel<Msg>,
    manager: &Manager,
    target: &Target,
) -> Option<ironclaw_sandbox::AgentClient> {
    match manager.agent(&target.id).await {
        Ok(a) => Some(a),
        Err(e) => {
            // The key owns this sandbox: saying it is stopped leaks nothing.
            refuse(channel, &e.to_string()).await;
            None
        }
    }
}

/// Attach to the sandbox's `main` console. Disconnecting detaches: the
/// shell goes on and the next attach (ssh or `ironclaw console`) finds it.
async fn console(channel: Channel<Msg>, manager: &Manager, target: &Target, setup: Setup) {
    let Some(agent) = agent(&channel, manager, target).await else {
        return;
    };
    let (term, tty) = setup
        .pty
        .unwrap_or_else(|| ("dumb".to_string(), TtySize::default()));
    let mut env = setup.env;
    env.push(("TERM".into(), term));
    let open = PtyOpen {
        name: "main".into(),
        size: tty,
        env,
        ..Default::default()
    };
    let session = match agent.pty_open(open).await {
        Ok(s) => s,
        Err(e) => return refuse(&channel, &e.to_string()).await,
    };
    pump(channel, session, false).await;
}

/// Run `command` with `/bin/sh -c`, stdin/stdout/stderr streamed, and end
/// with its exit status. git's commands go to the git seam.
async fn exec(
    channel: Channel<Msg>,
    manager: &Arc<Manager>,
    target: &Target,
    setup: Setup,
    command: String,
) {
    if super::git::is_git_command(&command) {
        return super::git::serve(channel, manager, target, &command, &setup.env).await;
    }
    let Some(agent) = agent(&channel, manager, target).await else {
        return;
    };
    let mut env: Vec<_> = setup
        .env
        .into_iter()
        .filter(|(k, _)| k != GIT_PROTOCOL)
        .collect();
    let tty = setup.pty.map(|(term, size)| {
        env.push(("TERM".into(), term));
        size
    });
    let req = ExecRequest {
        argv: vec!["/bin/sh".into(), "-c".into(), command],
        env,
        cwd: None,
        stdin: true,
        // Like the streamed exec API: no default timeout.
        timeout_ms: None,
        tty,
        user: None,
    };
    let session = match agent.exec(req).await {
        Ok(s) => s,
        Err(e) => return refuse(&channel, &e.to_string()).await,
    };
    pump(channel, session, true).await;
}

/// Shuttle between the channel and the guest session until either ends.
/// Dropping the session cancels an exec, or detaches a console.
async fn pump(channel: Channel<Msg>, mut session: Session, exec: bool) {
    let control = session.control();
    let (mut rx, tx) = channel.split();
    let input = async move {
        while let Some(msg) = rx.wait().await {
            let sent = match msg {
                ChannelMsg::Data { data } => control.write_stdin(&data[..]).await,
                ChannelMsg::Eof if exec => control.close_stdin().await,
                ChannelMsg::WindowChange {
                    col_width,
                    row_height,
                    ..
                } => control.resize(size(col_width, row_height)).await,
                ChannelMsg::Signal { signal } => match signal_number(&signal) {
                    Some(n) => control.signal(n).await,
                    None => continue,
                },
                ChannelMsg::Close => return,
                _ => continue,
            };
            if sent.is_err() {
                return;
            }
        }
    };
    let output = async {
        let code = loop {
            match session.next().await {
                // Owned bytes go as they are, split only at the packet
                // size (`data(&[u8])` copies through an 8 KiB buffer:
                // measured, a quarter of the throughput).
                Some(Ok(SessionEvent::Stdout(d))) => {
                    if tx.data_bytes(d).await.is_err() {
                        return;
                    }
                }
                Some(Ok(SessionEvent::Stderr(d))) => {
                    if tx.extended_data_bytes(1, d).await.is_err() {
                        return;
                    }
                }
                Some(Ok(SessionEvent::Exited(s))) => break s.code,
                Some(Ok(_)) => {}
                Some(Err(AgentError::Guest { message, .. })) => {
                    let _ = tx
                        .extended_data(1, format!("ironclaw: {message}\r\n").as_bytes())
                        .await;
                    break 1;
                }
                Some(Err(e)) => {
                    let _ = tx
                        .extended_data(1, format!("ironclaw: {e}\r\n").as_bytes())
                        .await;
                    break 255;
                }
                None => {
                    let _ = tx
                        .extended_data(
                            1,
                            format!("ironclaw: {}\r\n", AgentError::Closed).as_bytes(),
                        )
                        .await;
                    break 255;
                }
            }
        };
        let _ = tx.exit_status(code.clamp(0, 255) as u32).await;
        let _ = tx.eof().await;
        let _ = tx.close().await;
    };
    tokio::select! {
        _ = input => {}
        _ = output => {}
    }
    drop(session);
}

fn signal_number(sig: &russh::Sig) -> Option<i32> {
    use russh::Sig;
    Some(match sig {
        Sig::HUP => libc::SIGHUP,
        Sig::INT => libc::SIGINT,
        Sig::KILL => libc::SIGKILL,
        Sig::QUIT => libc::SIGQUIT,
        Sig::TERM => libc::SIGTERM,
        Sig::USR1 => libc::SIGUSR1,
        Sig::ALRM => libc::SIGALRM,
        _ => return None,
    })
}
