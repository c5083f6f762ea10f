//! The SSH endpoint end to end with the real OpenSSH client (Debian's
//! openssh-client): key registration, logins and refusals, the persistent
//! console across two ssh sessions, exec exit codes and stdin, scp (SFTP)
//! of 20 MiB both ways, and `-L` forwarding to a server in the sandbox.
//! Only loopback and the test daemon's own bridge carry traffic; every
//! ssh process started is killed and reaped.

mod common;
#[path = "common/ssh_client.rs"]
mod ssh_client;

use std::io::{Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Daemon;
use serde_json::json;
use sha2::{Digest, Sha256};
use ssh_client::{add_key, text, wait_output, Client, Interactive};

/// `ssh` on a real pseudo-terminal (its controlling terminal), so it
/// sends the terminal's size and window changes as a user's would.
struct OnTerminal {
    child: Child,
    master: std::fs::File,
    out: Arc<Mutex<Vec<u8>>>,
}

impl OnTerminal {
    fn start(mut c: Command, rows: u16, cols: u16) -> OnTerminal {
        use std::os::unix::process::CommandExt;
        let ws = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&ws), None).unwrap();
        let slave = std::fs::File::from(pty.slave);
        c.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            c.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn().unwrap();
        drop(c); // the parent's copies of the slave
        let master = std::fs::File::from(pty.master);
        let mut reader = master.try_clone().unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        OnTerminal { child, master, out }
    }

    fn send(&mut self, s: &str) {
        self.master.write_all(s.as_bytes()).unwrap();
    }

    fn resize(&self, rows: u16, cols: u16) {
        use std::os::fd::AsRawFd;
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize.
        let r = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(r, 0);
    }

    fn wait_for(&self, needle: &str, within: Duration) {
        let t0 = Instant::now();
        loop {
            let seen = text(&self.out.lock().unwrap());
            if seen.contains(needle) {
                return;
            }
            assert!(
                t0.elapsed() < within,
                "{needle:?} not seen within {within:?}; output so far: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OnTerminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keys: API and CLI, validation, duplicates, ownership; logins and the
/// one refusal; exit codes, stdin, stderr; the console across sessions.
#[tokio::test(flavor = "multi_thread")]
async fn keys_logins_refusals_exec_and_console() {
    let d = Daemon::start().await;
    let c = Client::new(&d).await;
    let admin_pub = c.keygen("admin_key");
    let bob_pub = c.keygen("bob_key");
    c.keygen("stranger_key");
    let bob = d.add_user("bob").await;
    d.sandbox("dev", json!({})).await;
    let (st, v) = d
        .call_as(
            &bob,
            reqwest::Method::POST,
            "/v1/sandboxes",
            Some(json!({"name": "bobs", "image": "mini"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");

    // Registration: the CLI for the admin, the API for bob.
    let out = d.cli(&[
        "key",
        "add",
        admin_pub.to_str().unwrap(),
        "--label",
        "laptop",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains("SHA256:"), "{out:?}");
    let out = d.cli(&["key", "ls"]);
    assert!(text(&out.stdout).contains("laptop"), "{out:?}");
    let bob_key = add_key(&d, &bob, &bob_pub).await;
    // Garbage, a private key and a duplicate are refused and change nothing.
    for bad in [
        json!({"key": "not a key"}),
        json!({"key": std::fs::read_to_string(c.dir.path().join("bob_key")).unwrap()}),
        json!({"key": ""}),
    ] {
        let (st, v) = d.req(reqwest::Method::POST, "/v1/keys", Some(bad)).await;
        assert_eq!(st, 400, "{v}");
    }
    let (st, v) = d
        .req(
            reqwest::Method::POST,
            "/v1/keys",
            Some(json!({"key": std::fs::read_to_string(&bob_pub).unwrap()})),
        )
        .await;
    assert_eq!(st, 409, "{v}");
    assert!(
        !v.to_string().contains("bob\""),
        "a duplicate names no owner: {v}"
    );
    let (_, v) = d.get("/v1/keys").await;
    assert_eq!(v["keys"].as_array().unwrap().len(), 1, "{v}");
    // bob sees only his own and cannot remove the admin's; the admin can
    // list bob's with ?owner=.
    let (_, mine) = d
        .call_as(&bob, reqwest::Method::GET, "/v1/keys", None)
        .await;
    assert_eq!(mine["keys"].as_array().unwrap().len(), 1);
    let (st, _) = d
        .call_as(&bob, reqwest::Method::GET, "/v1/keys?owner=admin", None)
        .await;
    assert_eq!(st, 404);
    let admin_key_id = v["keys"][0]["id"].as_str().unwrap().to_string();
    let (st, _) = d
        .call_as(
            &bob,
            reqwest::Method::DELETE,
            &format!("/v1/keys/{admin_key_id}"),
            None,
        )
        .await;
    assert_eq!(st, 404);
    let (_, v) = d.get("/v1/keys?owner=bob").await;
    assert_eq!(v["keys"][0]["id"], bob_key["id"]);

    // Logins: each key reaches its owner's sandbox.
    let out = c.run("admin_key", "dev", &["echo", "hello-$((6*7))"], b"");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), "hello-42\n");
    let out = c.run("bob_key", "bobs", &["hostname"], b"");
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // Refusals: an unknown key, another user's sandbox (both ways), a
    // missing sandbox: one answer.
    let refusals = [
        ("stranger_key", "dev"),
        ("bob_key", "dev"),
        ("admin_key", "bobs"),
        ("admin_key", "nosuch"),
        ("bob_key", "../dev"),
    ];
    let mut messages = Vec::new();
    for (key, user) in refusals {
        let out = c.run(key, user, &["true"], b"");
        assert_eq!(out.status.code(), Some(255), "{key}@{user}: {out:?}");
        assert!(out.stdout.is_empty());
        messages.push(text(&out.stderr).replace(user, "NAME"));
    }
    assert!(
        messages[0].contains("Permission denied (publickey)"),
        "{messages:?}"
    );
    // No key at all: the same words (only "none" was tried).
    let child = c
        .ssh(
            "admin_key",
            "dev",
            &["-o", "PubkeyAuthentication=no"],
            &["true"],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    messages.push(text(&out.stderr).replace("dev", "NAME"));
    assert!(
        messages.iter().all(|m| m == &messages[0]),
        "refusals differ: {messages:?}"
    );

    // Exit codes, stdin, stderr.
    let out = c.run("admin_key", "dev", &["exit 7"], b"");
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let out = c.run("admin_key", "dev", &["cat"], b"hi\n");
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "hi\n".into())
    );
    let out = c.run("admin_key", "dev", &["echo oops >&2; exit 3"], b"");
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out.stderr), "oops\n");
    assert!(out.stdout.is_empty());
    // Big stdin through and back (flow control both ways).
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let out = c.run("admin_key", "dev", &["sha256sum"], &big);
    let want = format!("{:x}", Sha256::digest(&big));
    assert!(text(&out.stdout).starts_with(&want), "{out:?}");
    // Only locale variables pass (OpenSSH's default AcceptEnv).
    let out = c.run_with(
        "admin_key",
        "dev",
        &["-o", "SetEnv=LANG=C.UTF-8 IC_SECRET=leak"],
        &["echo \"$LANG/$IC_SECRET\""],
        b"",
    );
    assert_eq!(text(&out.stdout), "C.UTF-8/\n", "{out:?}");
    // Remote forwarding is refused.
    let out = c.run_with(
        "admin_key",
        "dev",
        &[
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            "127.0.0.1:0:127.0.0.1:9",
        ],
        &["true"],
        b"",
    );
    assert_eq!(out.status.code(), Some(255), "-R: {out:?}");
    // git over ssh: another repository than the sandbox's, and a sandbox
    // that is no deploy target, are clear errors.
    let out = c.run("admin_key", "dev", &["git-upload-pack", "'app.git'"], b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("no such repository here"),
        "{out:?}"
    );
    let out = c.run("admin_key", "dev", &["git-upload-pack", "'/dev.git'"], b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("run `ironclaw deploy init dev`"),
        "{out:?}"
    );

    // The console: a shell variable set in one ssh session is there in the
    // next, and in `ironclaw console`'s session list as `main`.
    let mut s1 = Interactive::start(c.ssh("admin_key", "dev", &["-tt"], &[]));
    s1.send("export ICVAR=kept$((40+2)); echo set-$((1+1))\n");
    s1.wait_for("set-2", Duration::from_secs(30));
    s1.disconnect();
    let (_, v) = d.get("/v1/sandboxes/dev/console").await;
    let main = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "main")
        .unwrap_or_else(|| panic!("no main console: {v}"))
        .clone();
    assert_eq!(main["alive"], true, "{v}");
    // The second session on a real terminal: its size arrives with the
    // pty request, and a resize as a window-change.
    let mut s2 = OnTerminal::start(c.ssh("admin_key", "dev", &["-t"], &[]), 30, 100);
    s2.send("echo got-$ICVAR; stty size; echo ready$((0))\n");
    s2.wait_for("ready0", Duration::from_secs(30));
    s2.wait_for("got-kept42", Duration::from_secs(1));
    s2.wait_for("30 100", Duration::from_secs(1));
    s2.resize(40, 120);
    std::thread::sleep(Duration::from_millis(300));
    s2.send("stty size; echo resized$((0))\n");
    s2.wait_for("resized0", Duration::from_secs(30));
    s2.wait_for("40 120", Duration::from_secs(1));
    drop(s2);
    // ... and `ironclaw console`'s session is that same shell.
    let mut ws = tokio_tungstenite::connect_async(d.ws_url("/v1/sandboxes/dev/console/ws"))
        .await
        .unwrap()
        .0;
    use futures::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::Binary(
        b"echo via-ws-$ICVAR\n".to_vec(),
    ))
    .await
    .unwrap();
    let mut seen = Vec::new();
    while !text(&seen).contains("via-ws-kept42") {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("console output")
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Binary(b) = m {
            seen.extend_from_slice(&b);
        }
    }
    drop(ws);

    // `ironclaw ssh` runs the system ssh with the port and the host key
    // from /v1/host (pinned: StrictHostKeyChecking stays on).
    let out = d.cli(&[
        "ssh",
        "-i",
        c.dir.path().join("admin_key").to_str().unwrap(),
        "dev",
        "--",
        "echo via-cli; exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert_eq!(text(&out.stdout), "via-cli\n");
    // doctor shows the endpoint and its host key's fingerprint.
    let (_, host) = d.get("/v1/host").await;
    let out = d.cli(&["doctor"]);
    let fp = host["ssh"]["fingerprint"].as_str().unwrap();
    assert!(text(&out.stdout).contains(fp), "{out:?}");

    // A stopped sandbox: the key still owns it, so the answer says why.
    let (st, _) = d.post("/v1/sandboxes/dev/stop", json!({})).await;
    assert_eq!(st, 200);
    let out = c.run("admin_key", "dev", &["true"], b"");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("is stopped"), "{out:?}");

    // A removed key logs in no more.
    let out = d.cli(&["key", "rm", &admin_key_id]);
    assert!(out.status.success(), "{out:?}");
    let (st, _) = d.post("/v1/sandboxes/dev/start", json!({})).await;
    assert_eq!(st, 200);
    let out = c.run("admin_key", "dev", &["true"], b"");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    // `ironclaw key add -` reads the key from stdin; it logs in at once.
    let mut add = d
        .cli_command(&["key", "add", "-"])
        .env("IRONCLAW_TOKEN", &d.token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(c.dir.path().join("stranger_key.pub")).unwrap())
        .unwrap();
    let out = wait_output(add, Duration::from_secs(30));
    assert!(out.status.success(), "{out:?}");
    let out = c.run("stranger_key", "dev", &["echo", "in"], b"");
    assert_eq!(text(&out.stdout), "in\n", "{out:?}");
}

/// scp (SFTP underneath) of 20 MiB of random bytes up and back down,
/// checked by sha256 on both sides; sftp's listing sees the file.
#[tokio::test(flavor = "multi_thread")]
async fn scp_round_trip_20_mib() {
    let d = Daemon::start().await;
    let c = Client::new(&d).await;
    let key = c.keygen("k");
    add_key(&d, &d.token, &key).await;
    d.sandbox("files", json!({"disk_mib": 512})).await;

    let mut data = vec![0u8; 20 << 20];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut data)
        .unwrap();
    let want = format!("{:x}", Sha256::digest(&data));
    let up = c.dir.path().join("up.bin");
    std::fs::write(&up, &data).unwrap();

    let t0 = Instant::now();
    let out = c.scp("k", up.to_str().unwrap(), "files@127.0.0.1:/root/big.bin");
    assert!(out.status.success(), "scp up: {out:?}");
    let up_secs = t0.elapsed().as_secs_f64();
    let v = d.exec("files", &["sha256sum", "/root/big.bin"]).await;
    assert!(
        v["stdout"].as_str().unwrap().starts_with(&want),
        "in the sandbox: {v}"
    );

    let down = c.dir.path().join("down.bin");
    let t0 = Instant::now();
    let out = c.scp("k", "files@127.0.0.1:big.bin", down.to_str().unwrap());
    assert!(out.status.success(), "scp down: {out:?}");
    let down_secs = t0.elapsed().as_secs_f64();
    let got = std::fs::read(&down).unwrap();
    assert_eq!(got.len(), data.len());
    assert_eq!(format!("{:x}", Sha256::digest(&got)), want);
    eprintln!("scp 20 MiB: up {up_secs:.2} s, down {down_secs:.2} s");

    // A missing file is a clear error, not an empty file.
    let missing = c.dir.path().join("missing.bin");
    let out = c.scp("k", "files@127.0.0.1:/root/nope", missing.to_str().unwrap());
    assert!(!out.status.success(), "{out:?}");
    assert!(!missing.exists());

    // scp -p: the mode arrives (times are not kept, and not refused).
    let small = c.dir.path().join("small.sh");
    std::fs::write(&small, "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(&small, std::os::unix::fs::PermissionsExt::from_mode(0o750)).unwrap();
    let out = c.scp_with(
        "k",
        &["-p"],
        small.to_str().unwrap(),
        "files@127.0.0.1:/root/small.sh",
    );
    assert!(out.status.success(), "scp -p: {out:?}");
    let v = d
        .exec(
            "files",
            &["sh", "-c", "stat -c %a /root/small.sh && /root/small.sh"],
        )
        .await;
    assert_eq!(v["stdout"], "750\nran\n", "{v}");
    // What the file API cannot do is refused, not pretended.
    let out = sftp(&c, "chmod 600 /root/small.sh\n");
    assert!(!out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains("unsupported"), "{out:?}");
    let v = d
        .exec("files", &["stat", "-c", "%a", "/root/small.sh"])
        .await;
    assert_eq!(v["stdout"], "750\n", "{v}");

    // sftp in batch mode: ls, mkdir, rename, rm.
    let out = sftp(
        &c,
        "ls -l /root\nmkdir /root/d\nrename /root/big.bin /root/d/moved.bin\nls /root/d\nrm /root/d/moved.bin\nrmdir /root/d\n",
    );
    assert!(out.status.success(), "sftp: {out:?}");
    let listing = text(&out.stdout);
    assert!(
        listing.contains("big.bin") && listing.contains("moved.bin"),
        "{listing}"
    );
    assert!(listing.contains("20971520"), "{listing}");
    let v = d.exec("files", &["ls", "/root"]).await;
    assert!(!v["stdout"].as_str().unwrap().contains("big.bin"), "{v}");

    // The host key survives a daemon restart (known_hosts stays valid).
    let (_, before) = d.get("/v1/host").await;
    let mut d = d;
    d.stop_daemon();
    d.spawn();
    let (_, after) = d.get("/v1/host").await;
    assert_eq!(before["ssh"]["host_key"], after["ssh"]["host_key"]);
    let c2 = Client::new(&d).await;
    std::fs::copy(c.dir.path().join("k"), c2.dir.path().join("k")).unwrap();
    let out = c2.run("k", "files", &["true"], b"");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

/// `sftp -b` with these commands.
fn sftp(c: &Client, batch: &str) -> Output {
    let file = c.dir.path().join("batch");
    std::fs::write(&file, batch).unwrap();
    let child = Command::new("sftp")
        .arg("-P")
        .arg(c.port.to_string())
        .args(c.common_opts("k"))
        .arg("-b")
        .arg(&file)
        .arg("files@127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(60))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `ssh -N -L 127.0.0.1:LOCAL:DEST` into `user`, once it listens.
fn tunnel(c: &Client, user: &str, dest: &str) -> (Interactive, u16) {
    let local = free_port();
    let fwd = format!("127.0.0.1:{local}:{dest}");
    let t = Interactive::start(c.ssh(
        "k",
        user,
        &["-N", "-o", "ExitOnForwardFailure=yes", "-L", &fwd],
        &[],
    ));
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", local)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "ssh -L never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (t, local)
}

/// Send `data` through a connection to 127.0.0.1:`port`, half-close, and
/// return all that comes back.
fn echo(port: u16, data: &[u8]) -> Vec<u8> {
    echo_on(
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap(),
        data,
    )
}

fn echo_on(mut s: std::net::TcpStream, data: &[u8]) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut w = s.try_clone().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || {
        w.write_all(&data).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    back
}

/// A connection through the tunnel that the echo server has answered
/// (one byte there and back). busybox nc listens with a backlog of 1: a
/// burst of connects overflows it, the kernel answers with SYN cookies and
/// resets the connections whose cookie then fails (measured: the sandbox's
/// /proc/net/netstat counts SyncookiesFailed, one per lost connection).
/// So the connections are opened one by one; the traffic then runs on all
/// of them at once.
fn answered(port: u16) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"!").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"!");
    s
}

/// `ssh -W HOST:PORT` (a direct-tcpip channel on stdin/stdout).
/// Logged at INFO, where ssh says why a channel did not open.
fn stdio_forward(c: &Client, user: &str, dest: &str) -> Output {
    let opts: Vec<String> = c
        .common_opts("k")
        .into_iter()
        .map(|o| {
            if o == "LogLevel=ERROR" {
                "LogLevel=INFO".into()
            } else {
                o
            }
        })
        .collect();
    let child = Command::new("ssh")
        .arg("-p")
        .arg(c.port.to_string())
        .args(opts)
        .args(["-W", dest])
        .arg(format!("{user}@127.0.0.1"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(60))
}

/// `ssh -L` goes through the guest agent to the sandbox's own loopback:
/// a server bound to 127.0.0.1 inside a sandbox without any network is
/// reached; bytes round trip both ways (half-close included), many
/// connections run at once, a refused port is a clean channel-open
/// failure, and a forward to any other host is refused.
#[tokio::test(flavor = "multi_thread")]
async fn local_forwarding_reaches_loopback_inside_the_sandbox() {
    let d = Daemon::start_with("[network]\n").await;
    let c = Client::new(&d).await;
    let key = c.keygen("k");
    add_key(&d, &d.token, &key).await;
    d.sandbox("web", json!({"network": "internet"})).await;
    d.sandbox("quiet", json!({"network": "none"})).await;
    for name in ["web", "quiet"] {
        let v = d
            .exec(
                name,
                &[
                    "sh",
                    "-c",
                    "mkdir -p /tmp/www && echo served-by-$(hostname) > /tmp/www/index.html \
                     && head -c 8388608 /dev/urandom > /tmp/www/big.bin \
                     && httpd -p 127.0.0.1:8080 -h /tmp/www \
                     && (nc -ll -p 9000 -e cat </dev/null >/dev/null 2>&1 &)",
                ],
            )
            .await;
        assert_eq!(v["exit_code"], 0, "{v}");
    }

    // HTTP through the tunnel, to a server listening on 127.0.0.1 only,
    // in both sandboxes (one has no network card at all).
    for (name, dest) in [
        ("web", "localhost:8080"),
        ("quiet", "localhost:8080"),
        ("web", "web:8080"),
    ] {
        let (t, local) = tunnel(&c, name, dest);
        let body = d
            .http
            .get(format!("http://127.0.0.1:{local}/index.html"))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, format!("served-by-{name}\n"), "{name} {dest}");
        drop(t);
    }

    // Bytes both ways through an echo server, with half-close; then many
    // connections at once.
    let (t, local) = tunnel(&c, "quiet", "localhost:9000");
    let mut data = vec![0u8; 4 << 20];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut data)
        .unwrap();
    let back = tokio::task::spawn_blocking({
        let data = data.clone();
        move || echo(local, &data)
    })
    .await
    .unwrap();
    assert_eq!(back.len(), data.len());
    assert_eq!(Sha256::digest(&back), Sha256::digest(&data));
    let conns: Vec<_> = (0..24).map(|_| answered(local)).collect();
    let parallel: Vec<_> = conns
        .into_iter()
        .zip(0u8..)
        .map(|(conn, i)| {
            std::thread::spawn(move || {
                let mine: Vec<u8> = (0..200_000u32).map(|j| (j as u8) ^ i).collect();
                let back = echo_on(conn, &mine);
                (back == mine)
                    .then_some(())
                    .ok_or(format!("connection {i}: {} bytes back", back.len()))
            })
        })
        .collect();
    let bad: Vec<String> = parallel
        .into_iter()
        .filter_map(|p| p.join().unwrap().err())
        .collect();
    if !bad.is_empty() {
        let (_, logs) = d.get("/v1/sandboxes/quiet/logs").await;
        panic!(
            "{bad:?}\nsandbox log: {}",
            logs.as_str().unwrap_or_default()
        );
    }
    drop(t);
    // A big download (one direction, measured against the exec path).
    let (t, local) = tunnel(&c, "web", "localhost:8080");
    let t0 = Instant::now();
    let big = d
        .http
        .get(format!("http://127.0.0.1:{local}/big.bin"))
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let fwd_secs = t0.elapsed().as_secs_f64();
    drop(t);
    assert_eq!(big.len(), 8 << 20);
    // The reference: the exec path, less an ssh login's own time.
    let t0 = Instant::now();
    let out = c.run("k", "web", &["true"], b"");
    assert_eq!(out.status.code(), Some(0));
    let login_secs = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    // (output() reads stdout as it comes; 8 MiB would fill the pipe.)
    let out = c
        .ssh("k", "web", &[], &["cat /tmp/www/big.bin"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let exec_secs = (t0.elapsed().as_secs_f64() - login_secs).max(1e-3);
    assert_eq!(out.stdout.len(), 8 << 20);
    assert_eq!(Sha256::digest(&out.stdout), Sha256::digest(&big));
    eprintln!(
        "8 MiB from the sandbox: ssh -L {:.1} MiB/s, ssh exec cat {:.1} MiB/s (ratio {:.2})",
        8.0 / fwd_secs,
        8.0 / exec_secs,
        exec_secs / fwd_secs
    );

    // A port nothing listens on: the channel open fails cleanly.
    let out = stdio_forward(&c, "quiet", "localhost:9999");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        text(&out.stderr).contains("open failed: connect failed"),
        "{out:?}"
    );
    // Through -L the local connection is closed with nothing read, and
    // the tunnel stays up for the next one.
    let (t, local) = tunnel(&c, "quiet", "localhost:9999");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", local)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(buf.is_empty());
    drop(t);

    // Other destinations are refused, nothing is reached.
    for dest in ["127.0.0.2:8080", "example.com:80", "quiet:8080"] {
        let out = stdio_forward(&c, "web", dest);
        assert_eq!(out.status.code(), Some(255), "{dest}: {out:?}");
        assert!(
            text(&out.stderr).contains("reaches only the sandbox's own ports"),
            "{dest}: {out:?}"
        );
    }
}

/// Drill: a forward reaches nothing outside the sandbox. A server on the
/// host's loopback and one on every host address (the sandbox's gateway
/// included) are never connected to, whatever the forward names.
#[tokio::test(flavor = "multi_thread")]
async fn drill_forward_reaches_no_host_address() {
    let d = Daemon::start_with("[network]\n").await;
    let c = Client::new(&d).await;
    let key = c.keygen("k");
    add_key(&d, &d.token, &key).await;
    d.sandbox("box", json!({"network": "internet"})).await;
    d.sandbox("lo", json!({"network": "none"})).await;
    // Host-only servers: on loopback, and on all addresses.
    let host_lo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host_any = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    host_lo.set_nonblocking(true).unwrap();
    host_any.set_nonblocking(true).unwrap();
    let lo_port = host_lo.local_addr().unwrap().port();
    let any_port = host_any.local_addr().unwrap().port();
    // The host's address on the sandbox's bridge.
    let gateway = d.subnet.replace(".0/24", ".1");
    let mut tries = Vec::new();
    for user in ["box", "lo"] {
        for port in [lo_port, any_port] {
            for host in ["localhost", "127.0.0.1", user] {
                tries.push((user, format!("{host}:{port}")));
            }
            tries.push((user, format!("{gateway}:{port}")));
        }
    }
    for (user, dest) in &tries {
        let out = stdio_forward(&c, user, dest);
        assert_eq!(out.status.code(), Some(255), "{user} -> {dest}: {out:?}");
        assert!(out.stdout.is_empty(), "{user} -> {dest}: {out:?}");
    }
    for (what, l) in [("loopback", &host_lo), ("any-address", &host_any)] {
        assert!(
            matches!(l.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a forward reached the host's {what} server"
        );
    }
}

/// `ssh_listen = "none"` turns the endpoint off (and says so); a bad
/// address is refused at start.
#[tokio::test(flavor = "multi_thread")]
async fn endpoint_off_and_bad_address() {
    let d = Daemon::start_with("ssh_listen = \"none\"\n").await;
    let (_, host) = d.get("/v1/host").await;
    assert!(host["ssh"].is_null(), "{host}");
    let out = d.cli(&["doctor"]);
    assert!(text(&out.stdout).contains("ssh: off"), "{out:?}");
    let out = d.cli(&["ssh", "dev"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("SSH endpoint is off"), "{out:?}");

    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::workspace_bin("ironclawd"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--ssh-listen", "port 22"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("ssh_listen"), "{out:?}");
    assert!(!dir.path().join("ssh_host_ed25519_key").exists());
}
