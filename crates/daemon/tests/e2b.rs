//! The E2B-compatible API against the official `e2b` Python SDK (installed
//! by scripts/test.sh), unmodified: only E2B_API_URL, E2B_SANDBOX_URL and
//! E2B_API_KEY (an IronClaw user token) point it at a live daemon. The
//! sandboxes are busybox ones (template `base` maps to the default image).

mod common;

use std::time::Duration;

use common::Daemon;
use serde_json::Value;

/// Run a Python script with the SDK aimed at `url` as `key`; its stdout.
async fn sdk(url: &str, key: &str, script: &str) -> String {
    common::e2b_sdk(url, key, script, &[]).await
}

async fn daemon() -> Daemon {
    let d = Daemon::start().await;
    d.build_image("mini", "busybox").await;
    d
}

const LIFECYCLE: &str = r#"
import e2b
from e2b import Sandbox, CommandExitException, NotFoundException
from e2b.sandbox.commands.command_handle import PtySize

sb = Sandbox.create(metadata={"suite": "e2b", "n": "1"}, envs={"FOO": "bar"})

# commands.run: stdout, stderr, the sandbox's env vars, a command's own.
r = sb.commands.run("echo hello; echo oops >&2; echo $FOO $BAZ", envs={"BAZ": "qux"})
assert (r.stdout, r.stderr, r.exit_code) == ("hello\nbar qux\n", "oops\n", 0), r
assert sb.commands.run("pwd", cwd="/tmp").stdout == "/tmp\n"

# A non-zero exit raises, with the code and the output.
try:
    sb.commands.run("echo partial; exit 3")
    raise AssertionError("no CommandExitException")
except CommandExitException as e:
    assert e.exit_code == 3 and e.stdout == "partial\n", e

# Background commands: listed, killed by pid, their end seen.
h = sb.commands.run("sleep 30", background=True)
assert h.pid > 0
assert any(p.pid == h.pid for p in sb.commands.list())
assert h.kill() is True
try:
    h.wait()
    raise AssertionError("a killed command exited 0")
except CommandExitException as e:
    assert e.exit_code == -1, e
assert not any(p.pid == h.pid for p in sb.commands.list())
assert sb.commands.kill(999999) is False

# Output of a running command, reattached by pid.
h = sb.commands.run("sleep 0.5; echo later", background=True)
again = sb.commands.connect(h.pid)
assert again.wait().stdout == "later\n"

# stdin: sent, then closed.
h = sb.commands.run("read line; echo got $line", background=True, stdin=True)
sb.commands.send_stdin(h.pid, "hi\n")
assert h.wait().stdout == "got hi\n"
h = sb.commands.run("cat", background=True, stdin=True)
sb.commands.send_stdin(h.pid, "abc")
sb.commands.close_stdin(h.pid)
assert h.wait().stdout == "abc"

# Client-streamed stdin (StreamInput).
h = sb.commands.run("cat", background=True, stdin=True)
sb.commands.stream_input(h.pid, iter(["one ", b"two ", "three"]))
sb.commands.close_stdin(h.pid)
assert h.wait().stdout == "one two three"

# A PTY: input, resize, output.
out = []
t = sb.pty.create(PtySize(rows=24, cols=80))
sb.pty.resize(t.pid, PtySize(rows=30, cols=100))
sb.pty.send_stdin(t.pid, b"stty size; echo pty-$((6*7))\nexit\n")
t.wait(on_pty=lambda d: out.append(d))
screen = b"".join(out)
assert b"pty-42" in screen and b"30 100" in screen, screen

# Files.
sb.files.write("/tmp/a.txt", "hello file")
assert sb.files.read("/tmp/a.txt") == "hello file"
sb.files.write("/tmp/d/b.bin", b"\x00\x01\x02")
assert bytes(sb.files.read("/tmp/d/b.bin", format="bytes")) == b"\x00\x01\x02"
sb.files.write_files([{"path": "/tmp/m1", "data": "one"}, {"path": "/tmp/m2", "data": "two"}])
assert sb.files.read("/tmp/m2") == "two"
names = sorted(e.name for e in sb.files.list("/tmp"))
assert names == ["a.txt", "d", "m1", "m2"], names
deep = sorted(e.path for e in sb.files.list("/tmp", depth=2))
assert "/tmp/d/b.bin" in deep, deep
# A file object goes as application/octet-stream, streamed.
import io, hashlib
blob = bytes(range(256)) * 12000
sb.files.write("/tmp/big.bin", io.BytesIO(blob))
back = bytes(sb.files.read("/tmp/big.bin", format="bytes"))
assert hashlib.sha256(back).digest() == hashlib.sha256(blob).digest(), len(back)
sb.files.remove("/tmp/big.bin")
assert sb.files.exists("/tmp/a.txt") and not sb.files.exists("/tmp/nope")
info = sb.files.get_info("/tmp/a.txt")
assert info.size == 10 and info.type.value == "file", info
e = sb.files.rename("/tmp/a.txt", "/tmp/c.txt")
assert e.path == "/tmp/c.txt" and not sb.files.exists("/tmp/a.txt")
assert sb.files.make_dir("/tmp/x/y") is True
assert sb.files.make_dir("/tmp/x/y") is False
sb.files.remove("/tmp/c.txt")
assert not sb.files.exists("/tmp/c.txt")
try:
    sb.files.read("/tmp/nope")
    raise AssertionError("read a missing file")
except NotFoundException:
    pass

# Watching a directory (recursively): new files, new subdirectories'
# files, removals. Polled (the sync SDK's watch_dir).
import time
sb.files.make_dir("/tmp/w")
w = sb.files.watch_dir("/tmp/w", recursive=True)
sb.files.write("/tmp/w/new.txt", "x")
sb.commands.run("mkdir /tmp/w/sub && sleep 0.3 && echo y > /tmp/w/sub/deep && rm /tmp/w/new.txt")
evs = []
for _ in range(50):
    evs += [(e.name, e.type.value) for e in w.get_new_events()]
    if ("new.txt", "remove") in evs and ("sub/deep", "create") in evs:
        break
    time.sleep(0.1)
assert ("new.txt", "create") in evs and ("sub", "create") in evs, evs
assert ("sub/deep", "create") in evs and ("new.txt", "remove") in evs, evs
w.stop()
try:
    sb.files.watch_dir("/tmp/nope")
    raise AssertionError("watched a missing directory")
except NotFoundException:
    pass

# Metadata and list filters.
info = sb.get_info()
assert info.metadata == {"suite": "e2b", "n": "1"} and info.state.value == "running", info
ids = lambda q: [s.sandbox_id for s in Sandbox.list(query=q).next_items()]
assert sb.sandbox_id in ids(e2b.SandboxQuery(metadata={"suite": "e2b"}))
assert sb.sandbox_id not in ids(e2b.SandboxQuery(metadata={"suite": "other"}))
assert sb.sandbox_id not in ids(e2b.SandboxQuery(state=[e2b.SandboxState.PAUSED]))

# Pagination: three sandboxes, two per page.
more = [Sandbox.create(metadata={"page": "yes"}) for _ in range(2)]
p = Sandbox.list(query=e2b.SandboxQuery(metadata={"page": "yes"}), limit=1)
seen = p.next_items()
assert p.has_next
seen += p.next_items()
assert not p.has_next or p.next_items() == []
assert sorted(s.sandbox_id for s in seen) == sorted(s.sandbox_id for s in more)
for m in more:
    m.kill()

# Timeout, pause, connect (resumes it, files kept), kill.
sb.set_timeout(120)
sb.pause()
assert Sandbox.get_info(sb.sandbox_id).state.value == "paused"
assert sb.sandbox_id in ids(e2b.SandboxQuery(state=[e2b.SandboxState.PAUSED]))
sb2 = Sandbox.connect(sb.sandbox_id)
assert sb2.get_info().state.value == "running"
assert sb2.commands.run("wc -c < /tmp/d/b.bin").stdout.strip() == "3"
assert sb2.is_running()
sb2.kill()
try:
    Sandbox.get_info(sb.sandbox_id)
    raise AssertionError("a killed sandbox is still there")
except NotFoundException:
    pass
print("ALL OK")
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_sdk_runs_commands_files_and_the_lifecycle() {
    let d = daemon().await;
    let alice = d.add_user("alice").await;
    let out = sdk(&d.url, &alice, LIFECYCLE).await;
    assert!(out.contains("ALL OK"), "{out}");
    // What it made was alice's, and is gone.
    let (_, v) = d.get("/v1/sandboxes").await;
    assert_eq!(v["sandboxes"], Value::Array(vec![]), "{v}");
}

const USERS: &str = r#"
from e2b import Sandbox

sb = Sandbox.create()
run = lambda cmd, **kw: sb.commands.run(cmd, **kw).stdout

# envd's default user is `user`, in its home, with no capabilities;
# user="root" is root.
assert run("id -un; echo $HOME $USER; pwd") == "user\n/home/user user\n/home/user\n"
assert run("grep CapEff /proc/self/status") == "CapEff:\t0000000000000000\n"
assert run("id -un; pwd", user="root") == "root\n/root\n"
assert run("id -un", user="user") == "user\n"

# Files: owned by the user they are written as; relative paths are under
# that user's home.
sb.files.write("mine.txt", "x")
assert run("stat -c %U:%G /home/user/mine.txt") == "user:user\n"
assert sb.files.read("mine.txt") == "x"
sb.files.write("/tmp/r.txt", "x", user="root")
sb.files.write("/tmp/u/deep.txt", "x")
assert run("stat -c %U /tmp/r.txt /tmp/u /tmp/u/deep.txt") == "root\nuser\nuser\n"
assert sb.files.make_dir("made") is True
sb.files.make_dir("/tmp/rootdir", user="root")
assert run("stat -c %U /home/user/made /tmp/rootdir") == "user\nroot\n"
assert [e.path for e in sb.files.list("made")] == []
import time
w = sb.files.watch_dir("made")
run("touch /home/user/made/seen")
evs = []
for _ in range(50):
    evs += [(e.name, e.type.value) for e in w.get_new_events()]
    if ("seen", "create") in evs:
        break
    time.sleep(0.1)
assert ("seen", "create") in evs, evs
w.stop()
assert sb.files.get_info("mine.txt").path == "/home/user/mine.txt"

# An unknown user is a clear error, and nothing runs or is written.
for attempt in (
    lambda: sb.commands.run("touch /tmp/ran", user="ghost"),
    lambda: sb.files.write("/tmp/ghost.txt", "x", user="ghost"),
    lambda: sb.files.make_dir("/tmp/ghostdir", user="ghost"),
):
    try:
        attempt()
        raise AssertionError("an unknown user was accepted")
    except Exception as e:
        assert "no user ghost in the sandbox's /etc/passwd" in str(e), repr(e)
assert run("ls /tmp/ran /tmp/ghost.txt /tmp/ghostdir 2>&1 || true", user="root").count("No such") == 3

# An image without a `user` account: everything defaults to root.
run("sed -i '/^user:/d' /etc/passwd", user="root")
assert run("id -un; pwd") == "root\n/root\n"
sb.files.write("fallback.txt", "x")
assert run("stat -c %U /root/fallback.txt") == "root\n"
sb.kill()
print("USERS OK")
"#;

/// The SDK's `user=`: envd's default user, root on request, owners of
/// written files, unknown users refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_sdk_runs_and_writes_as_its_user() {
    let d = daemon().await;
    let alice = d.add_user("alice").await;
    let out = sdk(&d.url, &alice, USERS).await;
    assert!(out.contains("USERS OK"), "{out}");
}

/// The SDK speaks HTTP/2 (cleartext, prior knowledge) by default; with
/// `E2B_HTTP_VERSION=1.1` every call, client-streamed stdin included, is
/// HTTP/1.1.
#[tokio::test(flavor = "multi_thread")]
async fn the_sdk_works_over_http1_too() {
    let d = daemon().await;
    let alice = d.add_user("alice").await;
    let out = common::e2b_sdk(&d.url, &alice, LIFECYCLE, &[("E2B_HTTP_VERSION", "1.1")]).await;
    assert!(out.contains("ALL OK"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn other_users_sandboxes_are_unknown_and_bad_keys_are_refused() {
    let d = daemon().await;
    let alice = d.add_user("alice").await;
    let bob = d.add_user("bob").await;
    let out = sdk(
        &d.url,
        &alice,
        "from e2b import Sandbox\nsb = Sandbox.create()\nprint(sb.sandbox_id, sb._envd_access_token)",
    )
    .await;
    let mut it = out.split_whitespace();
    let (id, envd_token) = (it.next().unwrap(), it.next().unwrap());
    let script = format!(
        r#"
from e2b import Sandbox, NotFoundException, AuthenticationException
try:
    Sandbox.get_info("{id}")
    raise AssertionError("bob sees alice's sandbox")
except NotFoundException:
    pass
try:
    Sandbox.connect("{id}")
    raise AssertionError("bob connects to alice's sandbox")
except NotFoundException:
    pass
assert Sandbox.kill("{id}") is False
assert "{id}" not in [s.sandbox_id for s in Sandbox.list().next_items()]
try:
    Sandbox.create(api_key="icl_not_a_token")
    raise AssertionError("a bad key was accepted")
except AuthenticationException:
    pass
print("ALL OK")
"#
    );
    assert!(sdk(&d.url, &bob, &script).await.contains("ALL OK"));

    // envd: the sandbox's access token, or an API key of its owner.
    let http = reqwest::Client::new();
    let envd = |creds: &[(&str, &str)]| {
        let mut r = http
            .post(d.u("/filesystem.Filesystem/Stat"))
            .header("E2b-Sandbox-Id", id)
            .header("content-type", "application/json")
            .body(r#"{"path":"/"}"#);
        for (k, v) in creds {
            r = r.header(*k, *v);
        }
        r.send()
    };
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(envd(&[("X-Access-Token", envd_token)]).await.unwrap()),
        200
    );
    assert_eq!(status(envd(&[("X-API-KEY", &alice)]).await.unwrap()), 200);
    assert_eq!(status(envd(&[]).await.unwrap()), 401);
    assert_eq!(
        status(envd(&[("X-Access-Token", "wrong")]).await.unwrap()),
        401
    );
    let r = envd(&[("X-API-KEY", &bob)]).await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "not_found", "{v}");
    // Connect on the wire: a unary error is a status and a JSON code; a
    // server stream is enveloped (5-byte prefix), WatchDir's first message
    // the start event, then the changes.
    let r = http
        .post(d.u("/process.Process/SendSignal"))
        .header("E2b-Sandbox-Id", id)
        .header("X-Access-Token", envd_token)
        .header("content-type", "application/json")
        .body(r#"{"process":{"pid":999999},"signal":"SIGNAL_SIGKILL"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "not_found");
    let req = br#"{"path":"/tmp"}"#;
    let mut body = vec![0u8];
    body.extend_from_slice(&(req.len() as u32).to_be_bytes());
    body.extend_from_slice(req);
    let mut resp = http
        .post(d.u("/filesystem.Filesystem/WatchDir"))
        .header("E2b-Sandbox-Id", id)
        .header("X-Access-Token", envd_token)
        .header("content-type", "application/connect+json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut buf = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    let mut touched = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !messages.iter().any(|m| m["filesystem"]["name"] == "wired") {
        assert!(std::time::Instant::now() < deadline, "{messages:?}");
        if messages.first().is_some_and(|m| m.get("start").is_some()) && !touched {
            let (st, v) = d
                .call_as(
                    &alice,
                    reqwest::Method::POST,
                    &format!("/v1/sandboxes/{id}/exec"),
                    Some(serde_json::json!({"argv": ["touch", "/tmp/wired"]})),
                )
                .await;
            assert_eq!(st, 200, "{v}");
            touched = true;
        }
        let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(5), resp.chunk())
            .await
            .unwrap()
        else {
            panic!("the stream ended: {messages:?}");
        };
        buf.extend_from_slice(&chunk);
        while buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() < 5 + len {
                break;
            }
            assert_eq!(buf[0], 0, "no end of stream yet");
            messages.push(serde_json::from_slice(&buf[5..5 + len]).unwrap());
            buf.drain(..5 + len);
        }
    }
    assert_eq!(messages[0], serde_json::json!({"start": {}}));
    drop(resp);
    // The control plane without a key, or with a bad one.
    let r = http.get(d.u("/v2/sandboxes")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = http
        .get(d.u(&format!("/sandboxes/{id}")))
        .header("X-API-KEY", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Malformed create bodies change nothing.
    let r = http
        .post(d.u("/v2/sandboxes"))
        .header("X-API-KEY", &alice)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = http
        .post(d.u("/v2/sandboxes"))
        .header("X-API-KEY", &alice)
        .body(r#"{"templateID":"base","timeout":999999999}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let (_, v) = d.get("/v1/sandboxes").await;
    assert_eq!(v["sandboxes"].as_array().unwrap().len(), 1, "{v}");
}

/// Names of the sandboxes the daemon has, with their states.
async fn sandboxes(d: &Daemon) -> Vec<(String, String)> {
    let (_, v) = d.get("/v1/sandboxes").await;
    v["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn timeouts_remove_or_pause_sandboxes_across_a_restart() {
    let mut d = daemon().await;
    let alice = d.add_user("alice").await;
    let out = sdk(
        &d.url,
        &alice,
        r#"
from e2b import Sandbox
k = Sandbox.create(timeout=4)
p = Sandbox.create(timeout=4, lifecycle={"on_timeout": "pause"})
keep = Sandbox.create(timeout=4)
keep.set_timeout(300)
print(k.sandbox_id, p.sandbox_id, keep.sandbox_id)
"#,
    )
    .await;
    let ids: Vec<&str> = out.split_whitespace().collect();
    let (killed, paused, kept) = (ids[0], ids[1], ids[2]);
    // The end times are in the store: a crash does not forget them.
    d.kill_daemon();
    d.spawn();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = sandboxes(&d).await;
        let state = |n: &str| now.iter().find(|(s, _)| s == n).map(|(_, st)| st.clone());
        if state(killed).is_none() && state(paused).as_deref() == Some("stopped") {
            assert_eq!(state(kept).as_deref(), Some("running"), "{now:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timeouts not enforced: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The paused one resumes with connect, its timeout running again.
    let script = format!(
        "from e2b import Sandbox\nsb = Sandbox.connect(\"{paused}\", timeout=60)\nprint(sb.commands.run(\"echo back\").stdout.strip(), sb.get_info().state.value)"
    );
    assert_eq!(sdk(&d.url, &alice, &script).await.trim(), "back running");
}

#[tokio::test(flavor = "multi_thread")]
async fn e2b_listen_serves_the_api_on_its_own_port() {
    // A free port, taken by the daemon right after.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start_env("", &[("IRONCLAW_E2B_LISTEN", &addr)]).await;
    d.build_image("mini", "busybox").await;
    let alice = d.add_user("alice").await;
    let url = format!("http://{addr}");
    let out = sdk(
        &url,
        &alice,
        "from e2b import Sandbox\nsb = Sandbox.create()\nprint(sb.commands.run('echo own-port').stdout.strip())\nsb.kill()",
    )
    .await;
    assert_eq!(out.trim(), "own-port");
    // IronClaw's own API stays on the main listener.
    let r = reqwest::Client::new()
        .get(format!("{url}/v1/sandboxes"))
        .bearer_auth(&d.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

/// IronClaw's own watch: Server-Sent Events from `/v1/.../watch`, and
/// `ironclaw watch` printing them.
#[tokio::test(flavor = "multi_thread")]
async fn ironclaw_watch_streams_changes_over_sse_and_the_cli() {
    use std::io::BufRead;
    let d = Daemon::start().await;
    d.sandbox("w", serde_json::json!({})).await;
    d.exec("w", &["mkdir", "-p", "/tmp/w"]).await;
    // A missing directory is an error status, not a stream.
    let (st, v) = d.get("/v1/sandboxes/w/watch?path=/nope").await;
    assert_eq!(st, 404, "{v}");
    let (st, _) = d.get("/v1/sandboxes/w/watch").await;
    assert_eq!(st, 400);

    let mut cli = d
        .cli_command(&["watch", "w", "/tmp/w", "--recursive", "--json"])
        .env("IRONCLAW_TOKEN", &d.token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = cli.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Until the CLI has its watch set, write again and again.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen: Vec<Value> = Vec::new();
    let want = |seen: &[Value]| {
        seen.iter()
            .any(|v| v["type"] == "create" && v["path"] == "/tmp/w/sub/f")
    };
    let mut round = 0;
    while !want(&seen) {
        assert!(std::time::Instant::now() < deadline, "no events: {seen:?}");
        round += 1;
        let script = format!(
            "mkdir -p /tmp/w/sub && rm -f /tmp/w/sub/f && sleep 0.2 && echo {round} > /tmp/w/sub/f"
        );
        d.exec("w", &["sh", "-c", &script]).await;
        while let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) {
            seen.push(serde_json::from_str(&l).unwrap());
        }
    }
    assert!(seen.iter().any(|v| v["type"] == "ready"), "{seen:?}");
    cli.kill().unwrap();
    cli.wait().unwrap();

    // The SSE stream itself, ended by timeout_secs.
    let resp = reqwest::Client::new()
        .get(d.u("/v1/sandboxes/w/watch?path=/tmp/w&timeout_secs=2"))
        .bearer_auth(&d.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let body = tokio::time::timeout(Duration::from_secs(20), resp.text())
        .await
        .expect("timeout_secs ends the stream")
        .unwrap();
    assert!(body.contains("event: ready"), "{body}");
}

/// The token's user's quotas hold through the E2B API: its sandbox limit
/// and its request rate.
#[tokio::test(flavor = "multi_thread")]
async fn the_users_quotas_apply() {
    let d = Daemon::start_with("[quotas]\nmax_sandboxes = 1\nrequests_per_minute = 8\n").await;
    d.build_image("mini", "busybox").await;
    let alice = d.add_user("alice").await;
    let out = sdk(
        &d.url,
        &alice,
        r#"
from e2b import Sandbox, SandboxException
sb = Sandbox.create()
try:
    Sandbox.create()
    raise AssertionError("a second sandbox past max_sandboxes")
except SandboxException as e:
    assert "quota exceeded: sandboxes 1 of 1" in str(e), e
print("ALL OK")
"#,
    )
    .await;
    assert!(out.contains("ALL OK"), "{out}");
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let r = http
            .get(d.u("/v2/sandboxes"))
            .header("X-API-KEY", &alice)
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status().as_u16() == 429 {
            assert!(r.headers().contains_key("retry-after"));
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
}
