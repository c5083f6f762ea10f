//! envd's `process.Process` service: processes that outlive the request
//! that started them, found again by pid or tag (Connect, List, input,
//! signals, terminal size). The daemon holds each one's guest stream and
//! fans its output out to every connected client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::Response;
use futures::StreamExt;
use ironclaw_sandbox::guest_process::{ProcessEvent, ProcessEvents};
use ironclaw_sandbox::types::{ExecRequest, ExitStatus, TtySize};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::connect::{self, b64, unb64, Code, ConnectError};
pub use super::registry::Registry;
use super::registry::{Ev, Proc};
use crate::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct Selector {
    pub pid: Option<u32>,
    pub tag: Option<String>,
}

impl Selector {
    pub fn describe(&self) -> String {
        match (&self.pid, &self.tag) {
            (Some(p), _) => format!("pid {p}"),
            (_, Some(t)) => format!("tag {t}"),
            _ => "no selector".into(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct ProcessConfig {
    #[serde(default)]
    cmd: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    envs: HashMap<String, String>,
    cwd: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct PtySize {
    #[serde(default)]
    cols: u16,
    #[serde(default)]
    rows: u16,
}

#[derive(Debug, Default, Deserialize)]
struct Pty {
    size: Option<PtySize>,
}

impl Pty {
    fn size(&self) -> TtySize {
        match &self.size {
            Some(s) if s.cols > 0 && s.rows > 0 => TtySize {
                rows: s.rows,
                cols: s.cols,
            },
            _ => TtySize::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct StartRequest {
    process: Option<ProcessConfig>,
    pty: Option<Pty>,
    tag: Option<String>,
    stdin: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct ProcessOnly {
    #[serde(default)]
    process: Selector,
}

#[derive(Debug, Deserialize)]
struct SignalRequest {
    #[serde(default)]
    process: Selector,
    signal: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct Input {
    stdin: Option<String>,
    pty: Option<String>,
}

impl Input {
    fn bytes(&self) -> Result<Vec<u8>, ConnectError> {
        match (&self.stdin, &self.pty) {
            (Some(s), _) | (None, Some(s)) => unb64(s),
            (None, None) => Ok(Vec::new()),
        }
    }
}

#[derive(Debug, Deserialize)]
struct SendInputRequest {
    #[serde(default)]
    process: Selector,
    #[serde(default)]
    input: Input,
}

#[derive(Debug, Deserialize)]
struct UpdateRequest {
    #[serde(default)]
    process: Selector,
    pty: Option<Pty>,
}

/// One message of StreamInput.
#[derive(Debug, Deserialize)]
struct StreamInputRequest {
    start: Option<ProcessOnly>,
    data: Option<StreamData>,
}

#[derive(Debug, Deserialize)]
struct StreamData {
    #[serde(default)]
    input: Input,
}

/// `process.Process/METHOD`.
pub async fn dispatch(st: AppState, method: &str, req: Request) -> Response {
    let streaming = connect::is_streaming(req.headers());
    match run(st, method, req).await {
        Ok(r) => r,
        Err(e) => connect::error(streaming, e),
    }
}

async fn run(st: AppState, method: &str, req: Request) -> Result<Response, ConnectError> {
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let rec = super::envd_target(&st, &headers).map_err(|r| r.connect_error())?;
    let sandbox = rec.sandbox_id.clone();
    match method {
        "Start" => {
            let r: StartRequest = connect::read_request(&headers, body).await?;
            start(&st, &rec, &headers, r).await
        }
        "Connect" => {
            let r: ProcessOnly = connect::read_request(&headers, body).await?;
            let p = st.e2b.procs.find(&sandbox, &r.process)?;
            let rx = p.subscribe();
            Ok(event_stream(p.pid, rx, keepalive(&headers)))
        }
        "List" => {
            let processes: Vec<Value> = st
                .e2b
                .procs
                .list(&sandbox)
                .iter()
                .map(|p| {
                    let mut v = json!({"config": p.config, "pid": p.pid});
                    if let Some(t) = &p.tag {
                        v["tag"] = json!(t);
                    }
                    v
                })
                .collect();
            Ok(connect::unary(json!({ "processes": processes })))
        }
        "SendSignal" => {
            let r: SignalRequest = connect::read_request(&headers, body).await?;
            let signal = match &r.signal {
                Some(Value::String(s)) if s == "SIGNAL_SIGKILL" => 9,
                Some(Value::String(s)) if s == "SIGNAL_SIGTERM" => 15,
                Some(Value::Number(n)) if n.as_i64() == Some(9) || n.as_i64() == Some(15) => {
                    n.as_i64().unwrap_or(9) as i32
                }
                other => {
                    return Err(ConnectError::invalid(format!(
                        "unsupported signal {other:?}"
                    )))
                }
            };
            let p = st.e2b.procs.find(&sandbox, &r.process)?;
            p.control.signal(signal).await.map_err(gone)?;
            Ok(connect::unary(json!({})))
        }
        "SendInput" => {
            let r: SendInputRequest = connect::read_request(&headers, body).await?;
            let p = st.e2b.procs.find(&sandbox, &r.process)?;
            let data = r.input.bytes()?;
            if !data.is_empty() {
                p.control.write_stdin(data).await.map_err(gone)?;
            }
            Ok(connect::unary(json!({})))
        }
        "CloseStdin" => {
            let r: ProcessOnly = connect::read_request(&headers, body).await?;
            let p = st.e2b.procs.find(&sandbox, &r.process)?;
            if p.pty {
                return Err(ConnectError::invalid("a PTY process has no stdin to close"));
            }
            p.control.close_stdin().await.map_err(gone)?;
            Ok(connect::unary(json!({})))
        }
        "Update" => {
            let r: UpdateRequest = connect::read_request(&headers, body).await?;
            let p = st.e2b.procs.find(&sandbox, &r.process)?;
            if let Some(pty) = r.pty {
                if !p.pty {
                    return Err(ConnectError::invalid("the process has no PTY"));
                }
                p.control.resize(pty.size()).await.map_err(gone)?;
            }
            Ok(connect::unary(json!({})))
        }
        "StreamInput" => {
            connect::check_codec(&headers)?;
            let mut msgs = Box::pin(connect::request_stream::<StreamInputRequest>(body));
            let mut target: Option<Arc<Proc>> = None;
            while let Some(m) = msgs.next().await {
                let m = m?;
                if let Some(s) = m.start {
                    target = Some(st.e2b.procs.find(&sandbox, &s.process)?);
                }
                if let Some(d) = m.data {
                    let p = target
                        .as_ref()
                        .ok_or_else(|| ConnectError::invalid("input before the start message"))?;
                    let data = d.input.bytes()?;
                    if !data.is_empty() {
                        p.control.write_stdin(data).await.map_err(gone)?;
                    }
                }
            }
            Ok(connect::streaming(futures::stream::once(async {
                Ok(json!({}))
            })))
        }
        other => Err(ConnectError::new(
            Code::Unimplemented,
            format!("process.Process/{other} is not implemented"),
        )),
    }
}

fn gone(e: ironclaw_sandbox::AgentError) -> ConnectError {
    ConnectError::new(Code::NotFound, format!("the process has ended: {e}"))
}

/// The keepalive interval a client asks for (`Keepalive-Ping-Interval`, s).
fn keepalive(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

async fn start(
    st: &AppState,
    rec: &ironclaw_store::E2bRecord,
    headers: &HeaderMap,
    r: StartRequest,
) -> Result<Response, ConnectError> {
    let cfg = r
        .process
        .ok_or_else(|| ConnectError::invalid("process is required"))?;
    if cfg.cmd.is_empty() {
        return Err(ConnectError::invalid("process.cmd is required"));
    }
    let agent = super::envd_agent(st, rec).await?;
    let user = super::users::resolve(&agent, super::users::from_basic_auth(headers)?).await?;
    let sandbox = rec.sandbox_id.clone();
    // The SDK runs commands with /bin/bash; an image without bash (the
    // busybox one) runs them with /bin/sh.
    let mut cmd = cfg.cmd.clone();
    if cmd == "/bin/bash" {
        let has = match st.e2b.procs.has_bash(&sandbox) {
            Some(h) => h,
            None => {
                let h = agent.stat("/bin/bash").await.is_ok();
                st.e2b.procs.set_has_bash(&sandbox, h);
                h
            }
        };
        if !has {
            cmd = "/bin/sh".into();
        }
    }
    let mut argv = vec![cmd];
    argv.extend(cfg.args.iter().cloned());
    let mut env: Vec<(String, String)> = rec.env_vars.clone().into_iter().collect();
    let mut req_envs: Vec<_> = cfg.envs.clone().into_iter().collect();
    req_envs.sort();
    env.extend(req_envs);
    let cwd = match &cfg.cwd {
        Some(c) if !c.is_empty() => Some(user.path(c)?),
        _ => None,
    };
    let pty = r.pty.as_ref().map(Pty::size);
    let exec = ExecRequest {
        argv,
        env,
        cwd: cwd.clone(),
        stdin: r.stdin.unwrap_or(false) || pty.is_some(),
        timeout_ms: None,
        tty: pty,
        // With no cwd the guest starts it in the user's home.
        user: user.for_guest().map(Into::into),
    };
    let spawned = agent.spawn(exec).await?;
    let mut config = json!({"cmd": cfg.cmd, "args": cfg.args, "envs": cfg.envs});
    if let Some(c) = &cfg.cwd {
        config["cwd"] = json!(c);
    }
    let out_name = if pty.is_some() { "pty" } else { "stdout" };
    let Some(pid) = spawned.pid else {
        // It could not start (e.g. 127, no such command): its output and
        // exit are all there is.
        let (tx, rx) = mpsc::unbounded_channel();
        for ev in spawned.early {
            let _ = tx.send(match ev {
                ProcessEvent::Stdout(d) => Ev::Data(out_name, d),
                ProcessEvent::Stderr(d) => Ev::Data("stderr", d),
                ProcessEvent::Exited(s) => Ev::End(end_json(&s, None)),
            });
        }
        return Ok(event_stream(0, rx, None));
    };
    let pid = pid as u32;
    let proc = Arc::new(Proc {
        pid,
        tag: r.tag,
        config,
        control: spawned.control,
        pty: pty.is_some(),
        subscribers: Mutex::new(Vec::new()),
    });
    let rx = proc.subscribe();
    st.e2b.procs.insert(&sandbox, proc.clone());
    tokio::spawn(pump(
        st.e2b.clone(),
        sandbox,
        proc,
        spawned.events,
        out_name,
    ));
    Ok(event_stream(pid, rx, keepalive(headers)))
}

/// Carry a process's events to its subscribers until it ends.
async fn pump(
    e2b: Arc<super::E2b>,
    sandbox: String,
    proc: Arc<Proc>,
    mut events: ProcessEvents,
    out_name: &'static str,
) {
    let end = loop {
        match events.next().await {
            Some(Ok(ProcessEvent::Stdout(d))) => proc.publish(Ev::Data(out_name, d)),
            Some(Ok(ProcessEvent::Stderr(d))) => proc.publish(Ev::Data("stderr", d)),
            Some(Ok(ProcessEvent::Exited(s))) => break end_json(&s, None),
            Some(Err(e)) => {
                let s = ExitStatus {
                    code: -1,
                    signal: None,
                    timed_out: false,
                };
                break end_json(&s, Some(&e.to_string()));
            }
            None => {
                let s = ExitStatus {
                    code: -1,
                    signal: None,
                    timed_out: false,
                };
                break end_json(&s, Some("the process stream ended"));
            }
        }
    };
    e2b.procs.remove(&sandbox, proc.pid);
    proc.publish(Ev::End(end));
}

/// envd's end event: a signal death is exit code -1, `exited` false and a
/// status like Go's `signal: killed`.
fn end_json(s: &ExitStatus, error: Option<&str>) -> Value {
    let mut end = match s.signal {
        Some(sig) => json!({
            "exitCode": -1,
            "exited": false,
            "status": format!("signal: {}", signal_name(sig)),
        }),
        None => json!({
            "exitCode": s.code,
            "exited": true,
            "status": format!("exit status {}", s.code),
        }),
    };
    if let Some(e) = error {
        end["error"] = json!(e);
        end["exited"] = json!(false);
    }
    json!({"event": {"end": end}})
}

fn signal_name(sig: i32) -> String {
    match sig {
        9 => "killed".into(),
        15 => "terminated".into(),
        2 => "interrupt".into(),
        1 => "hangup".into(),
        n => n.to_string(),
    }
}

/// The stream a Start or Connect answers: the start event, then output
/// until the end event, with keepalives while quiet.
fn event_stream(
    pid: u32,
    rx: mpsc::UnboundedReceiver<Ev>,
    keepalive: Option<Duration>,
) -> Response {
    let first = json!({"event": {"start": {"pid": pid}}});
    let tick = keepalive.map(|d| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let rest = futures::stream::unfold((rx, tick, false), |(mut rx, mut tick, done)| async move {
        if done {
            return None;
        }
        let ev = match &mut tick {
            Some(t) => tokio::select! {
                ev = rx.recv() => ev,
                _ = t.tick() => {
                    let k = json!({"event": {"keepalive": {}}});
                    return Some((Ok(k), (rx, tick, false)));
                }
            },
            None => rx.recv().await,
        };
        match ev {
            Some(Ev::Data(which, d)) => {
                let mut data = serde_json::Map::new();
                data.insert(which.to_string(), json!(b64(&d)));
                let m = json!({"event": {"data": data}});
                Some((Ok(m), (rx, tick, false)))
            }
            Some(Ev::End(e)) => Some((Ok(e), (rx, tick, true))),
            None => Some((
                Err(ConnectError::new(
                    Code::Unavailable,
                    "the sandbox stopped before the process ended",
                )),
                (rx, tick, true),
            )),
        }
    });
    connect::streaming(futures::stream::once(async move { Ok(first) }).chain(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_events_look_like_envd_ones() {
        let e = end_json(
            &ExitStatus {
                code: 3,
                signal: None,
                timed_out: false,
            },
            None,
        );
        assert_eq!(
            e,
            json!({"event":{"end":{"exitCode":3,"exited":true,"status":"exit status 3"}}})
        );
        let e = end_json(
            &ExitStatus {
                code: 137,
                signal: Some(9),
                timed_out: false,
            },
            None,
        );
        assert_eq!(e["event"]["end"]["exitCode"], -1);
        assert_eq!(e["event"]["end"]["status"], "signal: killed");
    }

    #[test]
    fn selectors_and_inputs_parse_envd_json() {
        let r: SendInputRequest =
            serde_json::from_str(r#"{"process":{"pid":12},"input":{"stdin":"aGk="}}"#).unwrap();
        assert_eq!(r.process.pid, Some(12));
        assert_eq!(r.input.bytes().unwrap(), b"hi");
        let r: StartRequest = serde_json::from_str(
            r#"{"process":{"cmd":"/bin/bash","args":["-l","-c","echo"],"envs":{"A":"1"}},"pty":{"size":{"cols":80,"rows":24}},"stdin":false}"#,
        )
        .unwrap();
        assert_eq!(r.pty.unwrap().size(), TtySize { rows: 24, cols: 80 });
    }
}
