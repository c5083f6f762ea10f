//! Runs the real `ironclaw` binary against a small axum fake of ironclawd
//! that speaks the wire format of docs/api.md.

// Test-only fake: plain Result<(), Response> keeps the handlers short.
#![allow(clippy::result_large_err, clippy::type_complexity)]
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

const TOKEN: &str = "secret";

#[derive(Default)]
struct Fake {
    files: Mutex<HashMap<String, (Vec<u8>, Option<String>)>>,
}
type St = Arc<Fake>;

fn err(status: StatusCode, code: &str, msg: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": msg}})),
    )
        .into_response()
}

fn authed(h: &HeaderMap) -> Result<(), Response> {
    match h.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(v) if v == format!("Bearer {TOKEN}") => Ok(()),
        _ => Err(err(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid token",
        )),
    }
}

fn sandbox(name: &str, state: &str) -> Value {
    json!({"name":name,"owner":"admin","state":state,"backend":"namespace","image":"base",
        "vcpus":1,"memory_mib":512,"disk_mib":2048,"disk_used_bytes":12345,
        "created_at":"2020-01-01T00:00:00Z","started_at":"2020-01-01T00:00:00Z",
        "state_reason":null,"pid":1234,"mounts":[],"network":"none","address":null,
        "egress":{"allow_all":false,"allow_domains":[],"allow_cidrs":[],"deny_cidrs":[]},
        "exposures":[]})
}

fn known(name: &str) -> Result<(), Response> {
    if name == "dev" || name == "old" {
        Ok(())
    } else {
        Err(err(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("sandbox '{name}' not found"),
        ))
    }
}

async fn list(h: HeaderMap) -> Response {
    if let Err(r) = authed(&h) {
        return r;
    }
    Json(json!({"sandboxes": [sandbox("dev","running"), sandbox("old","stopped")]})).into_response()
}

async fn show(h: HeaderMap, Path(name): Path<String>) -> Response {
    if let Err(r) = authed(&h).and_then(|_| known(&name)) {
        return r;
    }
    Json(sandbox(&name, "running")).into_response()
}

async fn create(h: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Err(r) = authed(&h) {
        return r;
    }
    let mut s = sandbox(body["name"].as_str().unwrap_or("?"), "running");
    s["memory_mib"] = body["memory_mib"].clone();
    s["disk_mib"] = body["disk_mib"].clone();
    (StatusCode::CREATED, Json(s)).into_response()
}

async fn exec_ws(h: HeaderMap, Path(name): Path<String>, ws: WebSocketUpgrade) -> Response {
    if let Err(r) = authed(&h).and_then(|_| known(&name)) {
        return r;
    }
    ws.on_upgrade(exec_session)
}

/// argv[0] picks the behaviour: `echo` (stdout+stderr, exit 3), `cat`
/// (echo stdin), `killed` (signal 9), `slow` (timed out).
async fn exec_session(mut ws: WebSocket) {
    let Some(Ok(Message::Text(first))) = ws.recv().await else {
        return;
    };
    let req: Value = serde_json::from_str(&first).unwrap();
    let argv0 = req["argv"][0].as_str().unwrap_or("").to_string();
    let exit = match argv0.as_str() {
        "echo" => {
            let mut out = vec![1u8];
            out.extend_from_slice(format!("{}\n", req).as_bytes());
            ws.send(Message::Binary(out)).await.unwrap();
            ws.send(Message::Binary(b"\x02oops\n".to_vec()))
                .await
                .unwrap();
            json!({"type":"exit","exit_code":3,"signal":null,"timed_out":false})
        }
        "cat" => {
            while let Some(Ok(m)) = ws.recv().await {
                match m {
                    Message::Binary(b) => {
                        let mut out = vec![1u8];
                        out.extend_from_slice(&b);
                        ws.send(Message::Binary(out)).await.unwrap();
                    }
                    Message::Text(t) if t.contains("eof") => break,
                    _ => {}
                }
            }
            json!({"type":"exit","exit_code":0,"signal":null,"timed_out":false})
        }
        "killed" => json!({"type":"exit","exit_code":null,"signal":9,"timed_out":false}),
        "slow" => json!({"type":"exit","exit_code":null,"signal":9,"timed_out":true}),
        "tty" => {
            let t = &req["tty"];
            let hello = format!("\x01tty rows={} cols={}\r\n", t["rows"], t["cols"]);
            ws.send(Message::Binary(hello.into_bytes())).await.unwrap();
            let mut code = 0;
            while let Some(Ok(m)) = ws.recv().await {
                if let Message::Binary(b) = m {
                    let mut out = vec![1u8];
                    out.extend_from_slice(&b);
                    ws.send(Message::Binary(out)).await.unwrap();
                    if b.contains(&b'q') {
                        code = 5;
                        break;
                    }
                }
            }
            json!({"type":"exit","exit_code":code,"signal":null,"timed_out":false})
        }
        _ => json!({"type":"error","message":format!("{argv0}: not found")}),
    };
    let _ = ws.send(Message::Text(exit.to_string())).await;
    let _ = ws.close().await;
}

#[derive(serde::Deserialize)]
struct ConsoleQ {
    session: String,
    rows: u16,
    cols: u16,
    user: Option<String>,
}

async fn console_ws(
    h: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<ConsoleQ>,
    ws: WebSocketUpgrade,
) -> Response {
    if let Err(r) = authed(&h).and_then(|_| known(&name)) {
        return r;
    }
    ws.on_upgrade(move |mut ws| async move {
        let user = q.user.as_deref().unwrap_or("-");
        let hello = format!(
            "welcome {} rows={} cols={} user={user}\r\n",
            q.session, q.rows, q.cols
        );
        let _ = ws.send(Message::Binary(hello.into_bytes())).await;
        while let Some(Ok(m)) = ws.recv().await {
            if let Message::Binary(b) = m {
                if b == b"exit\r" {
                    let _ = ws
                        .send(Message::Text(
                            json!({"type":"exit","exit_code":7}).to_string(),
                        ))
                        .await;
                    break;
                }
                let _ = ws.send(Message::Binary(b)).await;
            }
        }
    })
}

#[derive(serde::Deserialize)]
struct PathQ {
    path: String,
    mode: Option<String>,
}

/// `?mode=` (octal text) as the API's mode (a number; 0644 without one).
fn octal(m: &Option<String>) -> u32 {
    m.as_deref()
        .and_then(|m| u32::from_str_radix(m, 8).ok())
        .unwrap_or(0o644)
}

async fn put_file(
    State(st): State<St>,
    h: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<PathQ>,
    body: Bytes,
) -> Response {
    if let Err(r) = authed(&h).and_then(|_| known(&name)) {
        return r;
    }
    let size = body.len();
    st.files
        .lock()
        .unwrap()
        .insert(q.path.clone(), (body.to_vec(), q.mode.clone()));
    Json(json!({"path":q.path,"kind":"file","size":size,"mode":octal(&q.mode),"mtime":1577836800}))
        .into_response()
}

async fn get_file(
    State(st): State<St>,
    h: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<PathQ>,
) -> Response {
    if let Err(r) = authed(&h).and_then(|_| known(&name)) {
        return r;
    }
    match st.files.lock().unwrap().get(&q.path) {
        Some((b, _)) => b.clone().into_response(),
        None => err(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("{} not found in sandbox '{name}'", q.path),
        ),
    }
}

async fn stat(
    State(st): State<St>,
    h: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<PathQ>,
) -> Response {
    if let Err(r) = authed(&h).and_then(|_| known(&name)) {
        return r;
    }
    if q.path == "/root" || q.path == "/root/" {
        return Json(json!({"path":"/root","kind":"dir","size":4096,"mode":493,"mtime":0}))
            .into_response();
    }
    match st.files.lock().unwrap().get(&q.path) {
        Some((b, m)) => {
            Json(json!({"path":q.path,"kind":"file","size":b.len(),"mode":octal(m),"mtime":0}))
                .into_response()
        }
        None => err(StatusCode::NOT_FOUND, "not_found", "no such path"),
    }
}

async fn build_image(h: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Err(r) = authed(&h) {
        return r;
    }
    let name = body["name"].as_str().unwrap_or("?");
    let mut s = String::new();
    for i in 1..=3 {
        s.push_str(
            &json!({"type":"progress","step":"download","message":"fetching","done":i,"total":3})
                .to_string(),
        );
        s.push('\n');
    }
    s.push_str(&json!({"type":"done","image":{"name":name,"source":body["from"],"size_bytes":3145728,"created_at":"2020-01-01T00:00:00Z","in_use":0,"guest_version":"0.1.0","build_seconds":0.5}}).to_string());
    s.push('\n');
    ([("content-type", "application/x-ndjson")], s).into_response()
}

async fn host(h: HeaderMap) -> Response {
    if let Err(r) = authed(&h) {
        return r;
    }
    Json(json!({"version":"0.1.0",
        "backends":[{"name":"namespace","available":true,"reason":"user namespaces work"},
                    {"name":"qemu","available":false,"reason":"/dev/kvm is missing"}],
        "checks":[{"name":"cgroup","ok":true,"detail":"cgroup v1 (memory, cpu, pids)"}],
        "warnings":["qemu would run as root: qemu_uid is 0"],
        "default_backend":"namespace"}))
    .into_response()
}

fn start_fake() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = Router::new()
                .route(
                    "/v1/health",
                    get(|| async { Json(json!({"status":"ok","version":"0.1.0"})) }),
                )
                .route("/v1/host", get(host))
                .route("/v1/sandboxes", get(list).post(create))
                .route("/v1/sandboxes/:name", get(show))
                .route("/v1/sandboxes/:name/exec/ws", get(exec_ws))
                .route("/v1/sandboxes/:name/console/ws", get(console_ws))
                .route("/v1/sandboxes/:name/files", get(get_file).put(put_file))
                .route("/v1/sandboxes/:name/fs/stat", get(stat))
                .route("/v1/images", post(build_image))
                .with_state(Arc::new(Fake::default()));
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

/// The `ironclaw` binary with a hermetic environment: every place the CLI
/// looks for a token (`IRONCLAW_TOKEN`, `IRONCLAW_TOKEN_FILE`,
/// `$XDG_CONFIG_HOME`, `$HOME/.config`, the daemon's
/// `$IRONCLAW_DATA_DIR/admin.token`) is unset or points into `dir`, which is
/// empty, so no test ever reads the host's real `/var/lib/ironclaw/admin.token`.
fn hermetic_cli(host: &str, dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ironclaw"));
    cmd.env("IRONCLAW_HOST", host)
        .env_remove("IRONCLAW_TOKEN")
        .env_remove("IRONCLAW_TOKEN_FILE")
        .env("XDG_CONFIG_HOME", dir.join("xdg"))
        .env("HOME", dir.join("home"))
        .env("IRONCLAW_DATA_DIR", dir.join("data"));
    cmd
}

fn ironclaw(host: &str, token: Option<&str>, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let cfg = tempfile::tempdir().unwrap();
    let mut cmd = hermetic_cli(host, cfg.path());
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(t) = token {
        cmd.env("IRONCLAW_TOKEN", t);
    }
    let mut child = cmd.spawn().unwrap();
    {
        let mut si = child.stdin.take().unwrap();
        if let Some(data) = stdin {
            si.write_all(data).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn sandbox_ls_table_and_json() {
    let addr = start_fake();
    let host = format!("http://{addr}");
    let out = ironclaw(&host, Some(TOKEN), &["sandbox", "ls"], None);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let s = text(&out.stdout);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 3, "{s}");
    assert!(lines[0].starts_with("NAME"), "{s}");
    for h in ["STATE", "BACKEND", "IMAGE", "VCPU", "MEMORY", "DISK", "AGE"] {
        assert!(lines[0].contains(h), "{s}");
    }
    assert!(lines[1].starts_with("dev "), "{s}");
    assert!(
        lines[1].contains("running") && lines[1].contains("12K/2G") && lines[1].contains("512M"),
        "{s}"
    );
    assert!(
        lines[2].starts_with("old ") && lines[2].contains("stopped"),
        "{s}"
    );

    let out = ironclaw(&host, Some(TOKEN), &["sandbox", "ls", "--json"], None);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sandboxes"][1]["name"], "old");
}

#[test]
fn not_found_unauthorized_and_unreachable() {
    let addr = start_fake();
    let host = format!("http://{addr}");
    let out = ironclaw(&host, Some(TOKEN), &["sandbox", "show", "nope"], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "error: sandbox 'nope' not found\n");
    assert!(out.stdout.is_empty());

    let out = ironclaw(&host, Some("wrong"), &["sandbox", "ls"], None);
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out.stderr);
    assert!(e.starts_with("error: missing or invalid token\n"), "{e}");
    assert!(e.contains("hint:"), "{e}");

    // No token anywhere: still 401, with a hint on where tokens come from
    // (not "the token read from /var/lib/ironclaw/admin.token was rejected",
    // whatever the host has installed).
    let out = ironclaw(&host, None, &["sandbox", "ls"], None);
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out.stderr);
    assert!(
        e.contains("hint: no token found") && e.contains("IRONCLAW_TOKEN"),
        "{e}"
    );
    assert!(!e.contains("/var/lib/ironclaw/admin.token"), "{e}");

    // Nothing listens on this port.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let out = ironclaw(
        &format!("http://{dead_addr}"),
        Some(TOKEN),
        &["sandbox", "ls"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out.stderr);
    assert!(
        e.contains(&format!("http://{dead_addr}")) && e.contains("is ironclawd running?"),
        "{e}"
    );

    // Usage errors exit 2.
    let out = ironclaw(
        &host,
        Some(TOKEN),
        &["sandbox", "create", "--name", "x", "--memory", "12X"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let out = ironclaw(&host, Some(TOKEN), &["cp", "a", "b"], None);
    assert_eq!(out.status.code(), Some(2));
}

/// The token-file fallbacks, each pointed into a temp dir: the daemon's
/// `$IRONCLAW_DATA_DIR/admin.token` and `$XDG_CONFIG_HOME/ironclaw/token`.
#[test]
fn token_files_from_data_dir_and_xdg() {
    let addr = start_fake();
    let host = format!("http://{addr}");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let ls = |dir: &std::path::Path| {
        hermetic_cli(&host, dir)
            .args(["sandbox", "ls", "--json"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };

    std::fs::write(data.join("admin.token"), format!("{TOKEN}\n")).unwrap();
    let out = ls(dir.path());
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));

    std::fs::write(data.join("admin.token"), "stale\n").unwrap();
    let out = ls(dir.path());
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out.stderr);
    let want = format!(
        "the token read from {} was rejected",
        data.join("admin.token").display()
    );
    assert!(e.contains(&want), "{e}");

    // The user's own token file comes before the daemon's.
    let xdg = dir.path().join("xdg/ironclaw");
    std::fs::create_dir_all(&xdg).unwrap();
    std::fs::write(xdg.join("token"), TOKEN).unwrap();
    let out = ls(dir.path());
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
}

#[test]
fn create_sends_sizes_in_mib() {
    let addr = start_fake();
    let out = ironclaw(
        &format!("http://{addr}"),
        Some(TOKEN),
        &[
            "sandbox", "new", "--name", "dev", "--memory", "1.5G", "--disk", "4G", "--json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["memory_mib"], 1536);
    assert_eq!(v["disk_mib"], 4096);
}

#[test]
fn exec_streams_and_exit_codes() {
    let addr = start_fake();
    let host = format!("http://{addr}");
    let out = ironclaw(
        &host,
        Some(TOKEN),
        &[
            "exec",
            "-e",
            "A=1",
            "-w",
            "/srv",
            "--timeout",
            "5s",
            "dev",
            "--",
            "echo",
            "-n",
            "hi",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let first: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(
        first,
        json!({"argv":["echo","-n","hi"],"stdin":false,"env":{"A":"1"},"cwd":"/srv","timeout_ms":5000})
    );
    assert_eq!(text(&out.stderr), "oops\n");

    let out = ironclaw(
        &host,
        Some(TOKEN),
        &["exec", "-i", "dev", "--", "cat"],
        Some(b"line1\nline2\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "line1\nline2\n");

    let out = ironclaw(&host, Some(TOKEN), &["exec", "dev", "--", "killed"], None);
    assert_eq!(out.status.code(), Some(137));

    let out = ironclaw(
        &host,
        Some(TOKEN),
        &["exec", "--timeout", "2s", "dev", "--", "slow"],
        None,
    );
    assert_eq!(out.status.code(), Some(124));
    assert!(text(&out.stderr).contains("timed out after 2s"));

    let out = ironclaw(&host, Some(TOKEN), &["exec", "dev", "--", "nosuch"], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "error: nosuch: not found\n");

    let out = ironclaw(&host, Some(TOKEN), &["exec", "ghost", "--", "echo"], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "error: sandbox 'ghost' not found\n");

    // -t with stdin from a pipe is refused.
    let out = ironclaw(
        &host,
        Some(TOKEN),
        &["exec", "-it", "dev", "--", "sh"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not a terminal"));
}

#[test]
fn cp_round_trip() {
    let addr = start_fake();
    let host = format!("http://{addr}");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("app.py");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    std::fs::set_permissions(&src, std::os::unix::fs::PermissionsExt::from_mode(0o750)).unwrap();

    // Upload into a directory: the local file name is kept.
    let out = ironclaw(
        &host,
        Some(TOKEN),
        &["cp", src.to_str().unwrap(), "dev:/root"],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // Local mode travels with the upload.
    let out = ironclaw(
        &host,
        Some(TOKEN),
        &["fs", "stat", "dev:/root/app.py", "--json"],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mode"], 0o750);
    assert_eq!(v["size"], 300_000);

    let back = dir.path().join("back.py");
    let out = ironclaw(
        &host,
        Some(TOKEN),
        &["cp", "dev:/root/app.py", back.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&back).unwrap(), data);

    // stdin -> remote, remote -> stdout.
    let out = ironclaw(
        &host,
        Some(TOKEN),
        &["cp", "-", "dev:/tmp/x.txt"],
        Some(b"from stdin"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = ironclaw(&host, Some(TOKEN), &["cp", "dev:/tmp/x.txt", "-"], None);
    assert_eq!(text(&out.stdout), "from stdin");

    // Download into a directory keeps the remote name.
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let out = ironclaw(
        &host,
        Some(TOKEN),
        &["cp", "dev:/tmp/x.txt", sub.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(sub.join("x.txt")).unwrap(), b"from stdin");

    // Missing remote file: error, and no partial local file left behind.
    let miss = dir.path().join("missing");
    let out = ironclaw(
        &host,
        Some(TOKEN),
        &["cp", "dev:/nope", miss.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: /nope not found in sandbox 'dev'\n"
    );
    assert!(!miss.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
}

#[test]
fn image_build_and_doctor() {
    let addr = start_fake();
    let host = format!("http://{addr}");
    let out = ironclaw(
        &host,
        Some(TOKEN),
        &["image", "build", "mini", "--from", "busybox"],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "built image 'mini' from busybox, 3M\n");

    let out = ironclaw(&host, Some(TOKEN), &["doctor"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.contains("ok       namespace") && s.contains("missing  qemu"),
        "{s}"
    );
    assert!(s.contains("/dev/kvm is missing"), "{s}");
    assert!(
        s.contains("\nWARNING: qemu would run as root: qemu_uid is 0\n"),
        "{s}"
    );
    let out = ironclaw(&host, Some(TOKEN), &["doctor", "--json"], None);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["warnings"][0], "qemu would run as root: qemu_uid is 0");

    let out = ironclaw(&host, None, &["version"], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("ironclawd 0.1.0"));
}

// ------------------------------------------------------------ pty tests

mod pty {
    use super::*;
    use nix::pty::{openpty, Winsize};
    use nix::sys::termios::{tcgetattr, LocalFlags};
    use std::io::Read;
    use std::os::fd::OwnedFd;
    use std::time::{Duration, Instant};

    pub struct Term {
        pub master: std::fs::File,
        pub slave: OwnedFd,
        seen: Arc<Mutex<Vec<u8>>>,
        dir: tempfile::TempDir,
    }

    impl Term {
        pub fn new() -> Term {
            let ws = Winsize {
                ws_row: 30,
                ws_col: 100,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            let p = openpty(Some(&ws), None).unwrap();
            let master = std::fs::File::from(p.master);
            let mut reader = master.try_clone().unwrap();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let s2 = seen.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = reader.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    s2.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
            Term {
                master,
                slave: p.slave,
                seen,
                dir: tempfile::tempdir().unwrap(),
            }
        }

        pub fn wait_for(&self, needle: &str) {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let s = text(&self.seen.lock().unwrap());
                if s.contains(needle) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for {needle:?}; saw {s:?}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        pub fn canonical(&self) -> bool {
            let t = tcgetattr(&self.slave).unwrap();
            t.local_flags
                .contains(LocalFlags::ICANON | LocalFlags::ECHO)
        }

        pub fn command(&self, host: &str, args: &[&str]) -> Command {
            let mut cmd = super::hermetic_cli(host, self.dir.path());
            cmd.args(args)
                .env("IRONCLAW_TOKEN", TOKEN)
                .stdin(Stdio::from(self.slave.try_clone().unwrap()))
                .stdout(Stdio::from(self.slave.try_clone().unwrap()))
                .stderr(Stdio::piped());
            cmd
        }
    }
}

fn wait_exit(child: std::process::Child) -> Output {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output().unwrap()));
    rx.recv_timeout(std::time::Duration::from_secs(20))
        .expect("ironclaw did not exit")
}

#[test]
fn console_raw_mode_and_detach() {
    let addr = start_fake();
    let host = format!("http://{addr}");
    let mut t = pty::Term::new();
    assert!(t.canonical());
    let child = t.command(&host, &["console", "dev"]).spawn().unwrap();
    t.wait_for("welcome main rows=30 cols=100 user=-");
    // Without raw mode these bytes would sit in the line buffer (no newline).
    t.master.write_all(b"abc").unwrap();
    t.wait_for("abc");
    assert!(!t.canonical(), "terminal should be raw while attached");
    t.master.write_all(b"\x1d").unwrap();
    let out = wait_exit(child);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr)
            .contains("detached from session 'main' of dev; reattach with: ironclaw console dev"),
        "{}",
        text(&out.stderr)
    );
    assert!(t.canonical(), "terminal mode restored after detach");

    // Shell exit ends the console with its exit code.
    let child = t
        .command(
            &host,
            &["console", "dev", "--session", "b", "--user", "user"],
        )
        .spawn()
        .unwrap();
    t.wait_for("welcome b rows=30 cols=100 user=user");
    t.master.write_all(b"exit\r").unwrap();
    let out = wait_exit(child);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("session 'b' of dev ended (exit code 7)"));
    assert!(t.canonical());
}

#[test]
fn exec_tty_interactive() {
    let addr = start_fake();
    let host = format!("http://{addr}");
    let mut t = pty::Term::new();
    let child = t
        .command(&host, &["exec", "-it", "dev", "--", "tty"])
        .spawn()
        .unwrap();
    t.wait_for("tty rows=30 cols=100");
    t.master.write_all(b"xyq").unwrap();
    let out = wait_exit(child);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    t.wait_for("xyq");
    assert!(t.canonical(), "terminal mode restored after exec -it");
}
