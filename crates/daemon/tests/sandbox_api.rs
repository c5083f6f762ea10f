//! The sandbox runtime end to end: a real daemon, real namespace sandboxes,
//! driven over HTTP and WebSocket.

mod common;

use common::Daemon;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_exec_and_persistence_across_stop_start() {
    let d = Daemon::start().await;
    let s = d.sandbox("life", json!({})).await;
    assert_eq!(s["state"], "running");
    assert_eq!(s["backend"], "namespace");

    let out = d
        .exec("life", &["sh", "-c", "echo out; echo err >&2; exit 7"])
        .await;
    assert_eq!(out["exit_code"], 7);
    assert_eq!(out["stdout"], "out\n");
    assert_eq!(out["stderr"], "err\n");
    assert_eq!(d.exec("life", &["hostname"]).await["stdout"], "life\n");
    // PID 1 inside is the guest agent: a pid namespace of its own.
    let ps = d.exec("life", &["cat", "/proc/1/cmdline"]).await;
    assert!(
        ps["stdout"].as_str().unwrap().contains("ironclaw-guest"),
        "{ps}"
    );

    // stdin
    let (st, v) = d
        .post(
            "/v1/sandboxes/life/exec",
            json!({"argv": ["cat"], "stdin": "piped text"}),
        )
        .await;
    assert_eq!((st, v["stdout"].as_str()), (200, Some("piped text")));

    d.exec("life", &["sh", "-c", "echo kept > /root/note"])
        .await;
    let (st, v) = d.post("/v1/sandboxes/life/stop", json!({})).await;
    assert_eq!((st, v["state"].as_str()), (200, Some("stopped")));
    let (st, v) = d
        .post("/v1/sandboxes/life/exec", json!({"argv": ["true"]}))
        .await;
    assert_eq!(st, 409);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is stopped"),
        "{v}"
    );
    let (st, _) = d.post("/v1/sandboxes/life/start", json!({})).await;
    assert_eq!(st, 200);
    assert_eq!(
        d.exec("life", &["cat", "/root/note"]).await["stdout"],
        "kept\n"
    );

    let (st, _) = d
        .req(reqwest::Method::DELETE, "/v1/sandboxes/life", None)
        .await;
    assert_eq!(st, 204);
    let (st, _) = d.get("/v1/sandboxes/life").await;
    assert_eq!(st, 404);
    let left: Vec<_> = common::processes_matching(&d.data_dir().display().to_string())
        .into_iter()
        .filter(|p| p.contains("ironclaw-guest"))
        .collect();
    assert!(left.is_empty(), "orphans: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_changes_nothing() {
    let d = Daemon::start_with("max_sandboxes = 1\nmax_upload_bytes = 1000\n").await;
    d.sandbox("only", json!({})).await;

    let (st, v) = d.get("/v1/sandboxes/nope").await;
    assert_eq!(st, 404);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("'nope'"),
        "{v}"
    );

    let (st, v) = d.post("/v1/sandboxes", json!({"name": "Not_Valid"})).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("invalid_name"))
    );

    let (st, v) = d.post("/v1/sandboxes", json!({"name": "only"})).await;
    assert_eq!(st, 409, "{v}");

    let (st, v) = d.post("/v1/sandboxes", json!({"name": "second"})).await;
    assert_eq!(st, 503, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("limit"),
        "{v}"
    );

    let (st, v) = d
        .post("/v1/sandboxes", json!({"name": "x", "image": "missing"}))
        .await;
    assert_eq!(st, 404, "{v}");

    let resp = d
        .http
        .post(d.u("/v1/sandboxes"))
        .bearer_auth(&d.token)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("EOF"),
        "{v}"
    );

    for token in ["", "wrong"] {
        let resp = d
            .http
            .get(d.u("/v1/sandboxes"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["message"], "missing or invalid token");
    }
    let resp = d.http.get(d.u("/v1/sandboxes")).send().await.unwrap();
    assert_eq!(resp.status(), 401);

    let resp = d
        .http
        .put(d.u("/v1/sandboxes/only/files?path=/root/big"))
        .bearer_auth(&d.token)
        .body(vec![0u8; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let v = d.exec("only", &["ls", "-a", "/root"]).await;
    assert!(
        !v["stdout"].as_str().unwrap().contains("big"),
        "a rejected upload left something: {v}"
    );

    let v = d.exec("only", &["no-such-command"]).await;
    assert_eq!(v["exit_code"], 127);
    assert!(
        v["stderr"].as_str().unwrap().contains("command not found"),
        "{v}"
    );

    let (st, _) = d.get("/v1/sandboxes/only/files?path=/root/absent").await;
    assert_eq!(st, 404);

    // Nothing changed: still exactly one sandbox, running.
    let (_, v) = d.get("/v1/sandboxes").await;
    let list = v["sandboxes"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["state"], "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mib_file_round_trip_is_identical() {
    let d = Daemon::start().await;
    d.sandbox("files", json!({})).await;
    let mut data = vec![0u8; 50 * 1024 * 1024];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    // An upload the guest refuses at once answers with the guest's reason,
    // whether the body fits its window or not (found by the fuzzer: the
    // ended stream used to surface as a 503 "connection closed").
    for (path, size, want) in [
        ("/", 10, 400),
        ("/", 3 << 20, 400),
        ("/root/no/such/dir/f", 3 << 20, 404),
    ] {
        let resp = d
            .http
            .put(d.u(&format!("/v1/sandboxes/files/files?path={path}")))
            .bearer_auth(&d.token)
            .body(data[..size].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            want,
            "{path}: {}",
            resp.text().await.unwrap()
        );
    }
    let want = Sha256::digest(&data);
    let resp = d
        .http
        .put(d.u("/v1/sandboxes/files/files?path=/root/blob.bin&mode=600"))
        .bearer_auth(&d.token)
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let st: Value = resp.json().await.unwrap();
    assert_eq!(st["size"], 50 * 1024 * 1024);
    assert_eq!(st["mode"].as_u64().unwrap() & 0o777, 0o600);
    let inside = d.exec("files", &["sha256sum", "/root/blob.bin"]).await;
    assert!(
        inside["stdout"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{want:x}")),
        "{inside}"
    );
    let resp = d
        .http
        .get(d.u("/v1/sandboxes/files/files?path=/root/blob.bin"))
        .bearer_auth(&d.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.bytes().await.unwrap();
    assert_eq!(Sha256::digest(&got), want);

    // Small file operations.
    let (st, _) = d
        .post(
            "/v1/sandboxes/files/fs/mkdir",
            json!({"path": "/root/d/e", "parents": true}),
        )
        .await;
    assert_eq!(st, 204);
    let (st, _) = d
        .post(
            "/v1/sandboxes/files/fs/rename",
            json!({"from": "/root/blob.bin", "to": "/root/d/blob"}),
        )
        .await;
    assert_eq!(st, 204);
    let (_, v) = d.get("/v1/sandboxes/files/fs/list?path=/root/d").await;
    let names: Vec<_> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["blob", "e"]);
    let (st, _) = d
        .post(
            "/v1/sandboxes/files/fs/remove",
            json!({"path": "/root/d", "recursive": false}),
        )
        .await;
    assert_eq!(st, 400);
    let (st, _) = d
        .post(
            "/v1/sandboxes/files/fs/remove",
            json!({"path": "/root/d", "recursive": true}),
        )
        .await;
    assert_eq!(st, 204);
    let (st, _) = d.get("/v1/sandboxes/files/fs/stat?path=/root/d").await;
    assert_eq!(st, 404);
}

async fn ws_connect(
    d: &Daemon,
    path: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    tokio_tungstenite::connect_async(d.ws_url(path))
        .await
        .unwrap()
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_streams_output_before_exit_and_takes_stdin() {
    let d = Daemon::start().await;
    d.sandbox("stream", json!({})).await;
    let mut ws = ws_connect(&d, "/v1/sandboxes/stream/exec/ws").await;
    ws.send(Message::Text(json!({"argv": ["sh", "-c", "echo first; read x; echo got:$x >&2; sleep 0.2; exit 5"], "stdin": true}).to_string()))
        .await
        .unwrap();
    // The first line arrives while the command still waits for input.
    let m = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m.into_data(), b"\x01first\n");
    ws.send(Message::Binary(b"hello\n".to_vec())).await.unwrap();
    ws.send(Message::Text(json!({"type": "eof"}).to_string()))
        .await
        .unwrap();
    let mut stderr = Vec::new();
    let exit = loop {
        match ws.next().await.unwrap().unwrap() {
            Message::Binary(b) if b[0] == 2 => stderr.extend_from_slice(&b[1..]),
            Message::Text(t) => break serde_json::from_str::<Value>(&t).unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(stderr, b"got:hello\n");
    assert_eq!(exit["type"], "exit");
    assert_eq!(exit["exit_code"], 5);
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Collect binary messages into `buf` until it contains `marker`.
async fn read_until(ws: &mut Ws, buf: &mut Vec<u8>, marker: &str) {
    while !String::from_utf8_lossy(buf).contains(marker) {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next()).await;
        if let Message::Binary(b) = msg.expect("timed out").unwrap().unwrap() {
            buf.extend_from_slice(&b);
        }
    }
}

/// `user` on the JSON exec, the exec WebSocket and a new console: the
/// image's `user` account (or a uid), its home and environment; an
/// unknown user is a 400 that runs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_as_a_user_of_the_sandbox() {
    let d = Daemon::start().await;
    d.sandbox("users", json!({})).await;
    let script = "id -un; id -u; echo $HOME $USER $LOGNAME; pwd";
    let (st, v) = d
        .post(
            "/v1/sandboxes/users/exec",
            json!({"argv": ["sh", "-c", script], "user": "user"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["stdout"],
        "user\n1000\n/home/user user user\n/home/user\n"
    );
    let (_, v) = d
        .post(
            "/v1/sandboxes/users/exec",
            json!({"argv": ["id", "-un"], "user": "1000"}),
        )
        .await;
    assert_eq!(v["stdout"], "user\n");
    assert_eq!(d.exec("users", &["id", "-un"]).await["stdout"], "root\n");
    let (st, v) = d
        .post(
            "/v1/sandboxes/users/exec",
            json!({"argv": ["touch", "/tmp/ran"], "user": "ghost"}),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(
        v["error"]["message"],
        "no user ghost in the sandbox's /etc/passwd"
    );
    assert_eq!(d.exec("users", &["ls", "/tmp/ran"]).await["exit_code"], 1);

    let mut ws = ws_connect(&d, "/v1/sandboxes/users/exec/ws").await;
    ws.send(Message::Text(
        json!({"argv": ["id", "-un"], "user": "user"}).to_string(),
    ))
    .await
    .unwrap();
    let mut out = Vec::new();
    read_until(&mut ws, &mut out, "user\n").await;
    assert_eq!(out, b"\x01user\n");

    let mut ws = ws_connect(&d, "/v1/sandboxes/users/console/ws?session=mine&user=user").await;
    ws.send(Message::Binary(b"echo who-$(id -un)\n".to_vec()))
        .await
        .unwrap();
    let mut seen = Vec::new();
    read_until(&mut ws, &mut seen, "who-user").await;

    // The API documents the field.
    let (_, v) = d.get("/v1/openapi.json").await;
    for schema in ["Exec", "ExecStart"] {
        assert_eq!(
            v["components"]["schemas"][schema]["properties"]["user"]["type"],
            json!(["string", "null"]),
            "{schema}: {}",
            v["components"]["schemas"][schema]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_session_survives_disconnect_and_replays() {
    let d = Daemon::start().await;
    d.sandbox("tty", json!({})).await;
    let path = "/v1/sandboxes/tty/console/ws?session=work&rows=30&cols=100";
    let mut ws = ws_connect(&d, path).await;
    ws.send(Message::Binary(
        b"export MARK=left-here; echo ma''rker-$MARK\n".to_vec(),
    ))
    .await
    .unwrap();
    let mut seen = Vec::new();
    read_until(&mut ws, &mut seen, "marker-left-here").await;
    drop(ws); // detach

    let (_, v) = d.get("/v1/sandboxes/tty/console").await;
    let s = &v["sessions"][0];
    assert_eq!(
        (s["name"].as_str(), s["alive"].as_bool()),
        (Some("work"), Some(true)),
        "{v}"
    );

    let mut ws = ws_connect(&d, path).await;
    let mut replay = Vec::new();
    // The replay holds the earlier output; the shell kept its variable.
    ws.send(Message::Binary(b"echo again-$MARK\n".to_vec()))
        .await
        .unwrap();
    read_until(&mut ws, &mut replay, "again-left-here").await;
    assert!(
        String::from_utf8_lossy(&replay).contains("marker-left-here"),
        "no replay of earlier output"
    );
    let (st, _) = d
        .req(
            reqwest::Method::DELETE,
            "/v1/sandboxes/tty/console/work",
            None,
        )
        .await;
    assert_eq!(st, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_survive_daemon_restart_and_crash() {
    let mut d = Daemon::start().await;
    d.sandbox("keep", json!({})).await;
    d.exec("keep", &["sh", "-c", "echo 1 > /root/state"]).await;
    let pid_before = d.get("/v1/sandboxes/keep").await.1["pid"].clone();

    // Graceful restart: the sandbox process is re-adopted, not restarted.
    d.stop_daemon();
    d.spawn();
    let (_, v) = d.get("/v1/sandboxes/keep").await;
    assert_eq!(v["state"], "running");
    assert_eq!(
        v["pid"], pid_before,
        "sandbox should be re-adopted, not restarted"
    );
    assert_eq!(
        d.exec("keep", &["cat", "/root/state"]).await["stdout"],
        "1\n"
    );

    // A stopped sandbox stays stopped across a daemon crash.
    d.sandbox("idle", json!({})).await;
    d.post("/v1/sandboxes/idle/stop", json!({})).await;
    d.kill_daemon();
    d.spawn();
    assert_eq!(d.get("/v1/sandboxes/idle").await.1["state"], "stopped");
    assert_eq!(d.get("/v1/sandboxes/keep").await.1["state"], "running");

    // The sandbox's init dies while the daemon is down: it is started again.
    d.stop_daemon();
    unsafe { libc::kill(pid_before.as_i64().unwrap() as i32, libc::SIGKILL) };
    std::thread::sleep(std::time::Duration::from_millis(200));
    d.spawn();
    let (_, v) = d.get("/v1/sandboxes/keep").await;
    assert_eq!(v["state"], "running", "{v}");
    assert_ne!(v["pid"], pid_before);
    assert_eq!(
        d.exec("keep", &["cat", "/root/state"]).await["stdout"],
        "1\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_sandbox_is_marked_with_the_reason() {
    let d = Daemon::start().await;
    let v = d.sandbox("boom", json!({})).await;
    unsafe { libc::kill(v["pid"].as_i64().unwrap() as i32, libc::SIGKILL) };
    let mut state = Value::Null;
    for _ in 0..100 {
        state = d.get("/v1/sandboxes/boom").await.1;
        if state["state"] == "crashed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(state["state"], "crashed", "{state}");
    assert!(
        state["state_reason"]
            .as_str()
            .unwrap()
            .contains("exited unexpectedly"),
        "{state}"
    );
    let (st, logs) = d.get("/v1/sandboxes/boom/logs").await;
    assert_eq!(st, 200);
    assert!(
        logs.as_str()
            .unwrap_or_default()
            .contains("ironclaw-guest: ready"),
        "{logs}"
    );
    let out = d.cli(&["sandbox", "logs", "boom"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ready"));
    let out = d.cli(&["sandbox", "show", "boom"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("exited unexpectedly"),
        "{out:?}"
    );
    let (st, _) = d.post("/v1/sandboxes/boom/start", json!({})).await;
    assert_eq!(st, 200);
    assert_eq!(d.exec("boom", &["echo", "back"]).await["stdout"], "back\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_contain_memory_hogs_and_fork_bombs() {
    let d = Daemon::start_with("pids_limit = 64\n").await;
    d.sandbox("hog", json!({"memory_mib": 64})).await;
    // dd allocates its whole block size up front: 256 MiB cannot fit in 64.
    let v = d
        .exec(
            "hog",
            &["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"],
        )
        .await;
    assert_eq!(v["exit_code"], 137, "memory hog should be OOM-killed: {v}");
    assert_eq!(d.exec("hog", &["echo", "alive"]).await["stdout"], "alive\n");

    let (st, v) = d
        .post(
            "/v1/sandboxes/hog/exec",
            json!({"argv": ["sh", "-c", "b() { b | b & }; b; sleep 5"], "timeout_ms": 3000}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    // The host kept answering and the sandbox holds no more than its limit.
    let (st, _) = d.get("/v1/health").await;
    assert_eq!(st, 200);
    let id_dir = std::fs::read_dir(d.data_dir().join("sandboxes"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let id = id_dir.file_name().to_string_lossy().to_string();
    for base in ["/sys/fs/cgroup/pids/ironclaw", "/sys/fs/cgroup/ironclaw"] {
        let f = format!("{base}/{id}/pids.max");
        if let Ok(max) = std::fs::read_to_string(&f) {
            assert_eq!(max.trim(), "64");
        }
    }
    let (st, _) = d
        .req(reqwest::Method::DELETE, "/v1/sandboxes/hog", None)
        .await;
    assert_eq!(st, 204);
    for base in [
        "/sys/fs/cgroup/pids/ironclaw",
        "/sys/fs/cgroup/memory/ironclaw",
        "/sys/fs/cgroup/ironclaw",
    ] {
        assert!(
            !std::path::Path::new(&format!("{base}/{id}")).exists(),
            "cgroup {base}/{id} left behind"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_every_route_and_doctor_reports() {
    let d = Daemon::start().await;
    let v: Value = d
        .http
        .get(d.u("/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["openapi"], "3.1.0");
    let src = include_str!("../src/lib.rs");
    for line in src
        .lines()
        .filter(|l| l.trim_start().starts_with(".route(\""))
    {
        let route = line.split('"').nth(1).unwrap();
        let openapi_path = route
            .split('/')
            .map(|s| {
                if let Some(p) = s.strip_prefix(':') {
                    format!("{{{p}}}")
                } else {
                    s.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        assert!(
            v["paths"].get(&openapi_path).is_some(),
            "{openapi_path} missing from openapi.json"
        );
    }
    let (st, host) = d.get("/v1/host").await;
    assert_eq!(st, 200);
    assert_eq!(host["default_backend"], "namespace");
    assert!(
        host["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "cgroup" && c["ok"] == true),
        "{host}"
    );
}
