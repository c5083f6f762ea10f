//! `ironclaw console NAME [--session S]`, `console ls`, `console kill`.

use std::io::Write;

use anyhow::{bail, Result};
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::args::{ConsoleArgs, ConsoleCmd};
use crate::client::{query_string, seg, Client};
use crate::commands::sandbox;
use crate::output::{print_json, render_table};
use crate::term;

/// Ctrl-]
pub const DETACH_BYTE: u8 = 0x1d;

pub async fn run(c: &Client, a: ConsoleArgs) -> Result<i32> {
    match a.command {
        Some(ConsoleCmd::Attach {
            name,
            session,
            user,
        }) => attach(c, &name, &session, user.as_deref()).await,
        Some(ConsoleCmd::Ls { name, json }) => ls(c, &name, json.json).await,
        Some(ConsoleCmd::Kill { name, session }) => {
            c.delete(
                &format!("{}/console/{}", sandbox::path(&name), seg(&session)),
                &format!("console session '{session}' of sandbox '{name}'"),
            )
            .await?;
            println!("killed session '{session}' of {name}");
            Ok(0)
        }
        None => {
            let name = a.attach.name.expect("clap requires NAME");
            attach(c, &name, &a.attach.session, a.attach.user.as_deref()).await
        }
    }
}

async fn ls(c: &Client, name: &str, json: bool) -> Result<i32> {
    let v: ironclaw_api::ConsoleList = c
        .get_as(
            &format!("{}/console", sandbox::path(name)),
            &format!("sandbox '{name}'"),
        )
        .await?;
    if json {
        print_json(&v);
        return Ok(0);
    }
    print!("{}", sessions_table(&v.sessions));
    Ok(0)
}

pub fn sessions_table(sessions: &[ironclaw_api::ConsoleSession]) -> String {
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                v.pid.map_or_else(|| "-".into(), |p| p.to_string()),
                if v.alive { "yes" } else { "no" }.into(),
                v.attached.to_string(),
                format!("{}x{}", v.cols, v.rows),
            ]
        })
        .collect();
    render_table(&["SESSION", "PID", "ALIVE", "ATTACHED", "SIZE"], &rows)
}

/// Split keyboard input at the detach key: (bytes to send, detach?).
pub fn split_detach(buf: &[u8]) -> (&[u8], bool) {
    match buf.iter().position(|&b| b == DETACH_BYTE) {
        Some(i) => (&buf[..i], true),
        None => (buf, false),
    }
}

enum End {
    Detached,
    Exited(Option<i64>),
    Closed,
}

async fn attach(c: &Client, name: &str, session: &str, user: Option<&str>) -> Result<i32> {
    if !term::stdin_is_tty() {
        bail!("console needs a terminal on stdin; for scripts use `ironclaw exec {name} -- CMD`");
    }
    let (rows, cols) = term::size_or_default();
    let mut params = vec![
        ("session", session.to_string()),
        ("rows", rows.to_string()),
        ("cols", cols.to_string()),
    ];
    if let Some(u) = user {
        params.push(("user", u.to_string()));
    }
    let q = query_string(&params);
    let ws = c
        .ws(
            &format!("{}/console/ws?{q}", sandbox::path(name)),
            &format!("sandbox '{name}'"),
        )
        .await?;
    let (mut sink, mut stream) = ws.split();
    eprintln!("attached to session '{session}' of {name}; detach with Ctrl-]");
    let raw = term::RawGuard::enter()?;

    let (tx, mut rx) = mpsc::channel::<Option<Vec<u8>>>(16);
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 8192];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = tx.send(None).await;
                    return;
                }
                Ok(n) => {
                    let (data, detach) = split_detach(&buf[..n]);
                    if !data.is_empty() && tx.send(Some(data.to_vec())).await.is_err() {
                        return;
                    }
                    if detach {
                        let _ = tx.send(None).await;
                        return;
                    }
                }
            }
        }
    });
    let mut winch = signal(SignalKind::window_change())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;

    let mut error = None;
    let end = loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    let mut o = std::io::stdout().lock();
                    let _ = o.write_all(&b);
                    let _ = o.flush();
                }
                Some(Ok(Message::Text(t))) => {
                    if let Ok(v) = serde_json::from_str::<ironclaw_api::SessionEvent>(&t) {
                        match v {
                            ironclaw_api::SessionEvent::Exit { exit_code, .. } => break End::Exited(exit_code),
                            ironclaw_api::SessionEvent::Error { message } => {
                                error = Some(message);
                                break End::Closed;
                            }
                            ironclaw_api::SessionEvent::Attached { .. } => {}
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None => break End::Closed,
                Some(Ok(_)) => {}
                Some(Err(e)) => { error = Some(format!("connection to ironclawd lost: {e}")); break End::Closed; }
            },
            input = rx.recv() => match input {
                Some(Some(data)) => { let _ = sink.send(Message::Binary(data)).await; }
                // Ctrl-] or end of input: detach.
                Some(None) | None => break End::Detached,
            },
            _ = winch.recv() => {
                if let Some((rows, cols)) = term::size() {
                    let _ = sink.send(super::exec::control(ironclaw_api::Control::Resize { rows, cols })).await;
                }
            }
            _ = sigterm.recv() => break End::Detached,
            _ = sighup.recv() => break End::Detached,
        }
    };
    let _ = sink.send(Message::Close(None)).await;
    drop(raw);
    match end {
        End::Detached => {
            eprintln!(
                "\r\ndetached from session '{session}' of {name}; reattach with: {}",
                reattach_cmd(name, session)
            );
            Ok(0)
        }
        End::Exited(code) => {
            eprintln!(
                "\r\nsession '{session}' of {name} ended (exit code {})",
                code.map_or_else(|| "unknown".into(), |c| c.to_string())
            );
            Ok(code.map_or(0, |c| (c & 0xff) as i32))
        }
        End::Closed => match error {
            Some(e) => bail!("{e}"),
            None => bail!("ironclawd closed the console connection"),
        },
    }
}

pub fn reattach_cmd(name: &str, session: &str) -> String {
    if session == "main" {
        format!("ironclaw console {name}")
    } else {
        format!("ironclaw console {name} --session {session}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser;
    use serde_json::json;

    fn console(args: &[&str]) -> ConsoleArgs {
        let mut v = vec!["ironclaw", "console"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v).unwrap().command {
            Command::Console(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn clap_layout() {
        let a = console(&["dev"]);
        assert!(a.command.is_none());
        assert_eq!(a.attach.name.as_deref(), Some("dev"));
        assert_eq!(a.attach.session, "main");
        let a = console(&["dev", "--session", "build"]);
        assert_eq!(a.attach.session, "build");
        assert!(matches!(
            console(&["ls", "dev"]).command,
            Some(ConsoleCmd::Ls { .. })
        ));
        assert!(matches!(
            console(&["kill", "dev", "build"]).command,
            Some(ConsoleCmd::Kill { .. })
        ));
        assert!(matches!(
            console(&["attach", "ls"]).command,
            Some(ConsoleCmd::Attach { .. })
        ));
        assert!(Cli::try_parse_from(["ironclaw", "console"]).is_err());
    }

    #[test]
    fn detach_key() {
        assert_eq!(split_detach(b"ls\r"), (&b"ls\r"[..], false));
        assert_eq!(split_detach(b"ab\x1dcd"), (&b"ab"[..], true));
        assert_eq!(split_detach(b"\x1d"), (&b""[..], true));
        assert_eq!(reattach_cmd("dev", "main"), "ironclaw console dev");
        assert_eq!(reattach_cmd("dev", "b"), "ironclaw console dev --session b");
    }

    #[test]
    fn sessions() {
        let t = sessions_table(&[serde_json::from_value(
            json!({"name":"main","pid":42,"alive":true,"attached":0,"rows":24,"cols":80}),
        )
        .unwrap()]);
        assert_eq!(
            t,
            "SESSION   PID   ALIVE   ATTACHED   SIZE\nmain      42    yes     0          80x24\n"
        );
    }
}
