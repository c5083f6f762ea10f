//! `ironclaw exec NAME [-i] [-t] -- CMD...` over `/v1/sandboxes/{name}/exec/ws`.

use std::collections::BTreeMap;
use std::io::Write;
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use futures::{SinkExt, StreamExt};
use ironclaw_api as api;
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::args::ExecArgs;
use crate::client::Client;
use crate::commands::sandbox;
use crate::term;

/// Exit status for a finished command: 124 if it timed out, 128+N if killed
/// by signal N, else its exit code (truncated to 0..=255 like a shell would).
pub fn exit_status(exit_code: Option<i64>, signal: Option<i64>, timed_out: bool) -> i32 {
    if timed_out {
        return 124;
    }
    if let Some(s) = signal.filter(|s| *s > 0) {
        return 128 + (s as i32 & 0x7f);
    }
    match exit_code {
        Some(c) => (c & 0xff) as i32,
        None => 1,
    }
}

/// A signal from the exit message: a number, or a name like "SIGKILL"/"KILL".
pub fn signal_number(v: Option<&api::SignalId>) -> Option<i64> {
    match v? {
        api::SignalId::Number(n) => Some(*n),
        api::SignalId::Name(s) => {
            let name = if s.starts_with("SIG") {
                s.clone()
            } else {
                format!("SIG{s}")
            };
            nix::sys::signal::Signal::from_str(&name)
                .ok()
                .map(|s| s as i64)
        }
    }
}

/// The first (setup) message of the exec WebSocket.
pub fn start_message(a: &ExecArgs, tty: Option<(u16, u16)>) -> api::ExecStart {
    api::ExecStart {
        argv: a.argv.clone(),
        env: a.env.iter().cloned().collect::<BTreeMap<_, _>>(),
        cwd: a.workdir.clone(),
        stdin: a.interactive,
        timeout_ms: a.timeout.map(|t| t.as_millis() as u64),
        tty: tty.map(|(rows, cols)| api::TtySize { rows, cols }),
        user: a.user.clone(),
    }
}

/// A control frame.
pub fn control(c: api::Control) -> Message {
    Message::Text(serde_json::to_string(&c).unwrap_or_default())
}

pub async fn run(c: &Client, a: ExecArgs) -> Result<i32> {
    if a.tty && !term::stdin_is_tty() {
        bail!("-t needs a terminal on stdin, but stdin is not a terminal; drop -t (use -i to pipe input)");
    }
    let ctx = format!("sandbox '{}'", a.name);
    let ws = c
        .ws(&format!("{}/exec/ws", sandbox::path(&a.name)), &ctx)
        .await?;
    let (mut sink, mut stream) = ws.split();
    let tty = a.tty.then(term::size_or_default);
    sink.send(Message::Text(serde_json::to_string(&start_message(
        &a, tty,
    ))?))
    .await
    .context("sending the command")?;

    // Raw mode only when keystrokes are forwarded; with -t alone the local
    // terminal keeps Ctrl-C (which we forward as a signal).
    let raw = if a.tty && a.interactive {
        Some(term::RawGuard::enter()?)
    } else {
        None
    };

    let (tx, mut rx) = mpsc::channel::<Message>(16);
    if a.interactive {
        tokio::spawn(pump_stdin(tx.clone()));
    }
    let mut winch = signal(SignalKind::window_change())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut interrupts = 0;

    // (exit_code, signal, timed_out) from the final exit message.
    type Exit = (Option<i64>, Option<i64>, bool);
    let mut outcome: Option<Result<Exit>> = None;
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if b.is_empty() { continue; }
                    match b[0] {
                        1 => { let mut o = std::io::stdout().lock(); let _ = o.write_all(&b[1..]); let _ = o.flush(); }
                        2 => { let mut o = std::io::stderr().lock(); let _ = o.write_all(&b[1..]); let _ = o.flush(); }
                        _ => {}
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    // A frame of a newer daemon's that this client does not know: skipped.
                    let Ok(ev) = serde_json::from_str::<api::SessionEvent>(&t) else { continue };
                    match ev {
                        api::SessionEvent::Exit { exit_code, signal, timed_out } => {
                            outcome = Some(Ok((exit_code, signal_number(signal.as_ref()), timed_out)));
                            break;
                        }
                        api::SessionEvent::Error { message } => {
                            outcome = Some(Err(anyhow!("{message}")));
                            break;
                        }
                        api::SessionEvent::Attached { .. } => {}
                    }
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => { outcome = Some(Err(anyhow!("connection to ironclawd lost: {e}"))); break; }
            },
            Some(out) = rx.recv() => {
                if sink.send(out).await.is_err() {
                    // The read side will report what happened.
                }
            }
            _ = winch.recv(), if tty.is_some() => {
                if let Some((rows, cols)) = term::size() {
                    let _ = sink.send(control(api::Control::Resize { rows, cols })).await;
                }
            }
            _ = sigint.recv() => {
                interrupts += 1;
                if interrupts > 1 {
                    drop(raw);
                    eprintln!("ironclaw: interrupted; closing the connection (the command is killed)");
                    let _ = sink.send(Message::Close(None)).await;
                    return Ok(130);
                }
                let _ = sink.send(control(api::Control::Signal { signal: 2 })).await;
            }
            _ = sigterm.recv() => {
                let _ = sink.send(control(api::Control::Signal { signal: 15 })).await;
            }
            _ = sighup.recv() => {
                let _ = sink.send(control(api::Control::Signal { signal: 1 })).await;
            }
        }
    }
    let _ = sink.send(Message::Close(None)).await;
    drop(raw);
    match outcome {
        Some(Ok((code, sig, timed_out))) => {
            if timed_out {
                match a.timeout {
                    Some(t) => eprintln!(
                        "ironclaw: command timed out after {}",
                        humantime::format_duration(t)
                    ),
                    None => eprintln!("ironclaw: command timed out"),
                }
            }
            Ok(exit_status(code, sig, timed_out))
        }
        Some(Err(e)) => Err(e),
        None => bail!("ironclawd closed the connection before the command finished"),
    }
}

/// Forward stdin as binary messages; `{"type":"eof"}` at end of input.
async fn pump_stdin(tx: mpsc::Sender<Message>) {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = tx.send(control(api::Control::Eof)).await;
                return;
            }
            Ok(n) => {
                if tx.send(Message::Binary(buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Cli;
    use clap::Parser;
    use serde_json::json;

    #[test]
    fn exit_codes() {
        assert_eq!(exit_status(Some(0), None, false), 0);
        assert_eq!(exit_status(Some(3), None, false), 3);
        assert_eq!(exit_status(Some(127), None, false), 127);
        assert_eq!(exit_status(Some(256 + 7), None, false), 7);
        assert_eq!(exit_status(None, Some(9), false), 137);
        assert_eq!(exit_status(Some(-1), Some(15), false), 143);
        assert_eq!(exit_status(Some(0), None, true), 124);
        assert_eq!(exit_status(None, Some(9), true), 124);
        assert_eq!(exit_status(None, None, false), 1);
        let sig = |v| serde_json::from_value::<api::SignalId>(v).ok();
        assert_eq!(signal_number(sig(json!(9)).as_ref()), Some(9));
        assert_eq!(signal_number(sig(json!("SIGKILL")).as_ref()), Some(9));
        assert_eq!(signal_number(sig(json!("TERM")).as_ref()), Some(15));
        assert_eq!(signal_number(sig(json!("NOPE")).as_ref()), None);
        assert_eq!(signal_number(None), None);
    }

    fn exec_args(argv: &[&str]) -> ExecArgs {
        let mut full = vec!["ironclaw", "exec"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            crate::args::Command::Exec(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn parse_and_start_message() {
        let a = exec_args(&[
            "-it",
            "-e",
            "A=1",
            "-e",
            "B=x=y",
            "-w",
            "/srv",
            "--timeout",
            "30s",
            "dev",
            "--",
            "ls",
            "-l",
        ]);
        assert!(a.interactive && a.tty);
        assert_eq!(a.name, "dev");
        let m = serde_json::to_value(start_message(&a, Some((40, 120)))).unwrap();
        assert_eq!(
            m,
            json!({"argv":["ls","-l"],"stdin":true,"env":{"A":"1","B":"x=y"},"cwd":"/srv",
                   "timeout_ms":30000,"tty":{"rows":40,"cols":120}})
        );
        let a = exec_args(&["dev", "--", "sh", "-c", "echo hi"]);
        assert_eq!(
            serde_json::to_value(start_message(&a, None)).unwrap(),
            json!({"argv":["sh","-c","echo hi"],"stdin":false})
        );
        // Without `--` the command still parses; options after NAME are ours.
        let a = exec_args(&["dev", "uname", "-a"]);
        assert_eq!(a.argv, vec!["uname", "-a"]);
        let a = exec_args(&["dev", "-i", "--", "cat", "-n"]);
        assert!(a.interactive);
        assert_eq!(a.argv, vec!["cat", "-n"]);
        let a = exec_args(&["dev", "--", "-weird", "--", "x"]);
        assert_eq!(a.argv, vec!["-weird", "--", "x"]);
        assert!(Cli::try_parse_from(["ironclaw", "exec", "dev"]).is_err());
        assert!(
            Cli::try_parse_from(["ironclaw", "exec", "-e", "novalue", "dev", "--", "x"]).is_err()
        );
    }
}
