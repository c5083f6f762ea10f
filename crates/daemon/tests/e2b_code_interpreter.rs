//! E2B's Code Interpreter SDK (`e2b-code-interpreter`, installed by
//! scripts/test.sh) unmodified against a live daemon, like tests/e2b.rs
//! does with the `e2b` SDK: only E2B_API_URL, E2B_SANDBOX_URL and
//! E2B_API_KEY point it here. Its default template `code-interpreter-v1`
//! maps to an image built from the `code-interpreter` source (Debian, a
//! venv with ipykernel from PyPI, our server on port 49999), whose requests
//! reach the sandbox through the daemon's port proxy. The proxy itself is
//! also tested on its own, with busybox httpd in a busybox sandbox.

mod common;

use std::time::{Duration, Instant};

use common::Daemon;
use serde_json::Value;

async fn sdk(url: &str, key: &str, script: &str) -> String {
    common::e2b_sdk(url, key, script, &[]).await
}

const RUN_CODE: &str = r#"
import time
from e2b_code_interpreter import Sandbox

sb = Sandbox.create()

# The value of the last expression, as text, with the execution count.
ex = sb.run_code("x = 1+1; x")
assert ex.text == "2", ex
assert ex.error is None and ex.results[0].is_main_result, ex
first_count = ex.execution_count
assert isinstance(first_count, int), ex

# print goes to stdout, stderr to stderr; no result.
ex = sb.run_code("import sys; print('hello'); print('oops', file=sys.stderr)")
assert ex.logs.stdout == ["hello\n"] and ex.logs.stderr == ["oops\n"], ex
assert ex.results == [] and ex.text is None, ex
assert ex.execution_count == first_count + 1, (ex.execution_count, first_count)

# An exception: name, value, traceback; the kernel lives on.
ex = sb.run_code("def f():\n    raise ValueError('bad thing')\nf()")
assert ex.error is not None, ex
assert ex.error.name == "ValueError" and ex.error.value == "bad thing", ex.error
assert "f()" in ex.error.traceback and "ValueError" in ex.error.traceback, ex.error.traceback

# State is kept between calls in the default context.
sb.run_code("counter = 41")
assert sb.run_code("counter + 1").text == "42"

# A second context is a kernel of its own.
ctx = sb.create_code_context(cwd="/tmp")
assert ctx.language == "python" and ctx.cwd == "/tmp", ctx
ex = sb.run_code("counter", context=ctx)
assert ex.error is not None and ex.error.name == "NameError", ex
assert sb.run_code("import os; os.getcwd()", context=ctx).text == "'/tmp'"
sb.run_code("counter = 7", context=ctx)
assert sb.run_code("counter", context=ctx).text == "7"
assert sb.run_code("counter").text == "41"
ids = [c.id for c in sb.list_code_contexts()]
assert ctx.id in ids and len(ids) == 2, ids
# Restart forgets, remove ends it.
sb.restart_code_context(ctx)
assert sb.run_code("counter", context=ctx).error.name == "NameError"
sb.remove_code_context(ctx)
assert ctx.id not in [c.id for c in sb.list_code_contexts()]
from e2b import NotFoundException
try:
    sb.run_code("1", context=ctx)
    raise AssertionError("ran in a removed context")
except NotFoundException:
    pass

# Another language is refused plainly.
from e2b import SandboxException
try:
    sb.run_code("1", language="r")
    raise AssertionError("ran R")
except SandboxException as e:
    assert "400" in str(e) and "only python" in str(e), e

# on_stdout is called as the lines come, not at the end.
seen = []
t0 = time.monotonic()
ex = sb.run_code(
    "import time\nprint('one', flush=True)\ntime.sleep(1.5)\nprint('two', flush=True)",
    on_stdout=lambda m: seen.append((m.line, time.monotonic() - t0)),
)
total = time.monotonic() - t0
assert [l for l, _ in seen] == ["one\n", "two\n"], seen
assert seen[0][1] < total - 1.0, (seen, total)

# Rich results: HTML from IPython.display, display_data before the main one.
ex = sb.run_code(
    "from IPython.display import HTML, display\n"
    "display(HTML('<b>shown</b>'))\n"
    "HTML('<i>last</i>')"
)
assert len(ex.results) == 2, ex
assert ex.results[0].html == "<b>shown</b>" and not ex.results[0].is_main_result, ex.results
assert ex.results[1].html == "<i>last</i>" and ex.results[1].is_main_result, ex.results
assert "html" in ex.results[1].formats()

# Environment variables for one execution only.
assert sb.run_code("import os; os.environ.get('ICL_X')", envs={"ICL_X": "yes"}).text == "'yes'"
assert sb.run_code("import os; os.environ.get('ICL_X')").text is None

# Past its timeout the SDK gives up and hangs up; the server sees that,
# interrupts the kernel, and the context is free again at once.
from e2b import TimeoutException
t = time.monotonic()
try:
    sb.run_code("import time; time.sleep(120)", timeout=2)
    raise AssertionError("no timeout")
except TimeoutException:
    pass
assert sb.run_code("counter").text == "41"
assert time.monotonic() - t < 30, time.monotonic() - t

# A protocol switch through the port proxy: a server started from the
# kernel answers 101 and then echoes upper-cased; the bytes flow both ways.
sb.run_code(r"""
import socket, threading
def _serve(s):
    while True:
        c, _ = s.accept()
        def talk(c):
            head = b""
            while b"\r\n\r\n" not in head:
                head += c.recv(1024)
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
            while (d := c.recv(1024)):
                c.sendall(d.upper())
            c.close()
        threading.Thread(target=talk, args=(c,), daemon=True).start()
_s = socket.socket()
_s.bind(("127.0.0.1", 8765))
_s.listen()
threading.Thread(target=_serve, args=(_s,), daemon=True).start()
""")
import os, socket
from urllib.parse import urlparse
u = urlparse(os.environ["E2B_SANDBOX_URL"])
c = socket.create_connection((u.hostname, u.port), timeout=10)
c.sendall((
    "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n"
    f"E2b-Sandbox-Id: {sb.sandbox_id}\r\nE2b-Sandbox-Port: 8765\r\n"
    f"X-Access-Token: {sb._envd_access_token}\r\n\r\n"
).encode())
head = b""
while b"\r\n\r\n" not in head:
    head += c.recv(1024)
assert head.startswith(b"HTTP/1.1 101"), head
assert b"upgrade: echo" in head.lower(), head
for word in [b"ping", b"pong"]:
    c.sendall(word)
    got = b""
    while len(got) < 4:
        got += c.recv(16)
    assert got == word.upper(), got
c.close()

# The figure: run_code("1") against commands.run("true"), p50 of 20 each.
def p50(f):
    ts = []
    for _ in range(20):
        t = time.monotonic()
        f()
        ts.append(time.monotonic() - t)
    return sorted(ts)[len(ts) // 2] * 1000
rc = p50(lambda: sb.run_code("1"))
cr = p50(lambda: sb.commands.run("true"))
print(f"FIGURE run_code('1') p50 {rc:.1f} ms, commands.run('true') p50 {cr:.1f} ms")

# Paused (stopped) and connected again: the server starts with the
# sandbox again (the kernel's memory is not kept, files are).
sb.pause()
sb = Sandbox.connect(sb.sandbox_id)
assert sb.run_code("2 + 3").text == "5"
print(sb.sandbox_id, sb._envd_access_token)
print("ALL OK")
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_code_interpreter_sdk_runs_code_in_contexts() {
    let d = Daemon::start().await;
    d.build_image("mini", "busybox").await;
    let t = Instant::now();
    d.build_image("code-interpreter", "code-interpreter").await;
    println!(
        "code-interpreter image built in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let alice = d.add_user("alice").await;
    let bob = d.add_user("bob").await;
    let out = sdk(&d.url, &alice, RUN_CODE).await;
    assert!(out.contains("ALL OK"), "{out}");
    for l in out.lines().filter(|l| l.starts_with("FIGURE")) {
        println!("{l}");
    }
    let ids = out
        .lines()
        .find(|l| l.starts_with('i') && l.split_whitespace().count() == 2)
        .unwrap();
    let mut it = ids.split_whitespace();
    let (id, token) = (it.next().unwrap(), it.next().unwrap());

    // The sandbox's port 49999 is alice's only: bob's key, a wrong token
    // or none get the envd answers (404, 401), never the server.
    let http = reqwest::Client::new();
    let health = |creds: &[(&str, &str)], port: &str| {
        let mut r = http
            .get(d.u("/health"))
            .header("E2b-Sandbox-Id", id)
            .header("E2b-Sandbox-Port", port);
        for (k, v) in creds {
            r = r.header(*k, *v);
        }
        r.timeout(Duration::from_secs(20)).send()
    };
    let r = health(&[("X-API-KEY", &bob)], "49999").await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(!r.text().await.unwrap().contains("ok"));
    let r = health(&[("E2B-Traffic-Access-Token", "wrong")], "49999")
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(health(&[], "49999").await.unwrap().status().as_u16(), 401);
    for creds in [
        ("X-API-KEY", alice.as_str()),
        ("E2B-Traffic-Access-Token", token),
        ("X-Access-Token", token),
    ] {
        let r = health(&[creds], "49999").await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{creds:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], "ok");
    }
    // A port nothing listens on: a 502 in E2B's error shape, at once.
    let t = Instant::now();
    let r = health(&[("X-Access-Token", token)], "49998").await.unwrap();
    assert_eq!(r.status().as_u16(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], 502, "{v}");
    assert_eq!(v["port"], 49998, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("nothing listens"),
        "{v}"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // And the SDK says so too, for a sandbox with no code interpreter.
    let script = r#"
from e2b_code_interpreter import Sandbox
from e2b import TimeoutException
sb = Sandbox.create(template="base")
try:
    sb.run_code("1", request_timeout=10)
    raise AssertionError("ran code without a code interpreter")
except TimeoutException as e:
    assert "nothing listens on port 49999" in str(e), e
sb.kill()
print("DOWN OK")
"#;
    let out = sdk(&d.url, &alice, script).await;
    assert!(out.contains("DOWN OK"), "{out}");
}

/// A sandbox port as `get_host(port)` traffic reaches it: busybox httpd in
/// a busybox sandbox, a static file, a CGI script fed the request body and
/// answering in two parts a second apart (streamed, not buffered).
#[tokio::test(flavor = "multi_thread")]
async fn other_ports_are_proxied_into_the_sandbox() {
    let d = Daemon::start().await;
    d.build_image("mini", "busybox").await;
    let alice = d.add_user("alice").await;
    let out = sdk(
        &d.url,
        &alice,
        r##"
from e2b import Sandbox
sb = Sandbox.create()
sb.files.write("/www/index.html", "hello from 8000\n" * 50000)
sb.files.write("/www/cgi-bin/echo", "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho first\nsleep 1.5\nhead -c $CONTENT_LENGTH | tr a-z A-Z\n")
sb.commands.run("chmod 755 /www/cgi-bin/echo && httpd -p 127.0.0.1:8000 -h /www")
print(sb.sandbox_id, sb._envd_access_token)
"##,
    )
    .await;
    let mut it = out.split_whitespace();
    let (id, token) = (it.next().unwrap(), it.next().unwrap());
    let http = reqwest::Client::new();
    let req = |method: reqwest::Method, path: &str| {
        http.request(method, d.u(path))
            .header("E2b-Sandbox-Id", id)
            .header("E2b-Sandbox-Port", "8000")
            .header("X-Access-Token", token)
            .timeout(Duration::from_secs(30))
    };
    let r = req(reqwest::Method::GET, "/index.html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body = r.text().await.unwrap();
    assert_eq!(body.len(), 16 * 50000);
    assert!(body.starts_with("hello from 8000\n"));
    let r = req(reqwest::Method::GET, "/missing").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404, "the app's own status");

    let t = Instant::now();
    let mut r = req(reqwest::Method::POST, "/cgi-bin/echo")
        .body("shout this")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut got = String::new();
    let mut first_at = None;
    while let Some(chunk) = r.chunk().await.unwrap() {
        got.push_str(std::str::from_utf8(&chunk).unwrap());
        if first_at.is_none() && got.contains("first") {
            first_at = Some(t.elapsed());
        }
    }
    assert_eq!(got, "first\nSHOUT THIS");
    let first_at = first_at.unwrap();
    assert!(
        first_at + Duration::from_millis(1000) < t.elapsed(),
        "the first part came with the rest: {first_at:?} of {:?}",
        t.elapsed()
    );
    // Envd stays envd: its port (or none) is not proxied.
    let r = http
        .get(d.u("/health"))
        .header("E2b-Sandbox-Id", id)
        .header("E2b-Sandbox-Port", "49983")
        .header("X-Access-Token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let r = http
        .get(d.u("/"))
        .header("E2b-Sandbox-Id", id)
        .header("E2b-Sandbox-Port", "not-a-port")
        .header("X-Access-Token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}
