//! Git-push deploy end to end with the host's real `git`: pushes over smart
//! HTTP to the daemon, releases of a busybox `httpd` app (and one Python
//! app on a Debian image) served through the port proxy, a broken release
//! rejected while the old one serves, rollback, daemon restart and sandbox
//! restart, and another user's token refused like a missing sandbox.
//! Traffic goes only to the daemon on loopback and to the sandboxes these
//! tests create.

mod common;

use std::path::Path;
use std::time::Duration;

use common::Daemon;
use reqwest::Method;
use serde_json::{json, Value};

const BASE: &str = "127-0-0-1.sslip.io";

fn listen_port(d: &Daemon) -> String {
    d.url.rsplit(':').next().unwrap().to_string()
}

fn app_url(d: &Daemon, name: &str) -> String {
    format!("http://8000-{name}.{BASE}:{}", listen_port(d))
}

async fn get_app(d: &Daemon, name: &str) -> (u16, String) {
    let host = format!("8000-{name}.{BASE}:{}", listen_port(d));
    let r = d
        .http
        .get(d.u("/index.html"))
        .header("host", host)
        .bearer_auth(&d.token)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// `git ARGS` in `dir`, hermetic: no user or system config, no prompts.
async fn git(dir: &Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .await
        .unwrap()
}

async fn git_ok(dir: &Path, args: &[&str]) -> String {
    let o = git(dir, args).await;
    assert!(
        o.status.success(),
        "git {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Commit `procfile` and an index.html saying `body`.
async fn commit(dir: &Path, procfile: &str, body: &str) {
    std::fs::write(dir.join("Procfile"), procfile).unwrap();
    std::fs::write(dir.join("index.html"), body).unwrap();
    git_ok(dir, &["add", "-A"]).await;
    git_ok(dir, &["commit", "-q", "-m", body]).await;
}

/// The remote URL with `token` as the basic-auth password.
fn with_token(remote: &str, token: &str) -> String {
    remote.replacen("http://", &format!("http://x:{token}@"), 1)
}

const GOOD: &str = "web: httpd -f -p $PORT -h .\n";

async fn releases(d: &Daemon, name: &str) -> Vec<(u64, String)> {
    let (st, v) = d
        .get(&format!("/v1/sandboxes/{name}/deploy/releases"))
        .await;
    assert_eq!(st, 200, "{v}");
    v["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["number"].as_u64().unwrap(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn push_release_reject_rollback_and_restart() {
    flow(&[]).await;
}

/// The same with the shell supervisor that agents without supervised
/// services (VM images built by an older daemon) get.
#[tokio::test]
async fn shell_supervisor_fallback() {
    flow(&[("IRONCLAW_DEPLOY_SHELL_SUPERVISOR", "1")]).await;
}

async fn flow(env: &[(&str, &str)]) {
    let mut d = Daemon::start_env("[network]\n", env).await;
    d.sandbox("app", json!({"network": "internet"})).await;
    let (st, v) = d.post("/v1/sandboxes/app/deploy", json!({})).await;
    assert_eq!(st, 201, "{v}");
    let remote = v["remote"].as_str().unwrap().to_string();
    assert_eq!(remote, format!("{}/v1/sandboxes/app/git", d.url));
    assert_eq!(v["port"], 8000);
    // Idempotent; the port stays.
    let (st, v) = d
        .post("/v1/sandboxes/app/deploy", json!({"port": 9000}))
        .await;
    assert_eq!((st, &v["port"]), (200, &json!(8000)), "{v}");
    for bad in [json!({"port": 0}), json!({"port": 70000}), json!({"x": 1})] {
        let (st, v) = d.post("/v1/sandboxes/app/deploy", bad.clone()).await;
        assert_eq!(st, 400, "{bad}: {v}");
    }

    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    git_ok(w, &["init", "-q", "-b", "main"]).await;
    let url = with_token(&remote, &d.token);

    // 1: a good release; the push output ends with the app's URL.
    commit(w, GOOD, "release one").await;
    let out = git_ok(w, &["push", &url, "main"]).await;
    assert!(out.contains("remote: -----> Release 1 is live"), "{out}");
    assert!(
        out.contains(&format!("remote: {}", app_url(&d, "app"))),
        "{out}"
    );
    assert_eq!(get_app(&d, "app").await, (200, "release one".into()));
    // The supervisor in use: the agent's own, or the shell one.
    let shell = !env.is_empty();
    let v = d
        .exec(
            "app",
            &["test", "-f", "/app/releases/1/.ironclaw/supervisor.pid"],
        )
        .await;
    assert_eq!(v["exit_code"], if shell { 0 } else { 1 }, "{v}");

    // 2: a web process that exits: the push fails with its log tail, the
    // ref is not updated and release 1 keeps serving.
    commit(w, "web: echo broken app starting; exit 3\n", "release two").await;
    let o = git(w, &["push", &url, "main"]).await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("broken app starting"), "{err}");
    assert!(err.contains("release 1 keeps serving"), "{err}");
    assert!(err.contains("pre-receive hook declined"), "{err}");
    assert_eq!(get_app(&d, "app").await, (200, "release one".into()));
    assert_eq!(
        releases(&d, "app").await,
        vec![(1, "live".into()), (2, "failed".into())]
    );

    // 3: a good one again switches. Its requirements.txt asks for pip,
    // which the busybox image lacks: skipped, said so.
    std::fs::write(w.join("requirements.txt"), "").unwrap();
    commit(w, GOOD, "release three").await;
    let out = git_ok(w, &["push", &url, "main"]).await;
    assert!(out.contains("the image has no pip: skipped"), "{out}");
    assert!(out.contains("Release 3 is live"), "{out}");
    assert_eq!(get_app(&d, "app").await, (200, "release three".into()));
    let (st, log) = d.get("/v1/sandboxes/app/deploy/logs").await;
    assert_eq!(st, 200);
    assert!(
        log.as_str().unwrap().contains("starting release-3"),
        "{log}"
    );

    // A clone (upload-pack) sees what was pushed last successfully.
    let clone = tempfile::tempdir().unwrap();
    git_ok(clone.path(), &["clone", "-q", &url, "c"]).await;
    assert_eq!(
        std::fs::read_to_string(clone.path().join("c/index.html")).unwrap(),
        "release three"
    );

    // Rollback to release 1 (release 2 failed, so it is skipped).
    let (st, v) = d.post("/v1/sandboxes/app/deploy/rollback", json!({})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["release"], 1);
    assert_eq!(get_app(&d, "app").await, (200, "release one".into()));
    assert_eq!(
        releases(&d, "app").await,
        vec![
            (1, "live".into()),
            (2, "failed".into()),
            (3, "rolled-back".into())
        ]
    );
    // Nothing earlier than 1 to roll back to.
    let (st, _) = d.post("/v1/sandboxes/app/deploy/rollback", json!({})).await;
    assert_eq!(st, 409);

    // A daemon restart: the app answers again.
    d.stop_daemon();
    d.spawn();
    assert_eq!(get_app(&d, "app").await, (200, "release one".into()));
    assert_eq!(releases(&d, "app").await[0], (1, "live".into()));
    // A sandbox stop and start: the live release's process comes back.
    let (st, v) = d.post("/v1/sandboxes/app/stop", json!({})).await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = d.post("/v1/sandboxes/app/start", json!({})).await;
    assert_eq!(st, 200, "{v}");
    // The start returns before the web process is back up: poll.
    let t0 = std::time::Instant::now();
    loop {
        let got = get_app(&d, "app").await;
        if got == (200, "release one".into()) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "not back: {got:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And pushing still works after all that (the restarted daemon
    // listens on a new port).
    let url = with_token(&format!("{}/v1/sandboxes/app/git", d.url), &d.token);
    commit(w, GOOD, "release four").await;
    git_ok(w, &["push", &url, "main"]).await;
    assert_eq!(get_app(&d, "app").await, (200, "release four".into()));
}

#[tokio::test]
async fn another_users_token_reaches_no_repository() {
    let d = Daemon::start_with("[network]\n").await;
    let bob = d.add_user("bob").await;
    d.sandbox("app", json!({"network": "internet"})).await;
    let (st, v) = d.post("/v1/sandboxes/app/deploy", json!({})).await;
    assert_eq!(st, 201, "{v}");
    let remote = v["remote"].as_str().unwrap().to_string();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    git_ok(w, &["init", "-q", "-b", "main"]).await;
    commit(w, GOOD, "mine").await;
    git_ok(w, &["push", &with_token(&remote, &d.token), "main"]).await;

    // The same answer as a sandbox that does not exist, on every endpoint.
    for (method, ep) in [
        (Method::GET, "info/refs?service=git-upload-pack"),
        (Method::GET, "info/refs?service=git-receive-pack"),
        (Method::POST, "git-upload-pack"),
        (Method::POST, "git-receive-pack"),
    ] {
        let theirs = d
            .call_as(
                &bob,
                method.clone(),
                &format!("/v1/sandboxes/app/git/{ep}"),
                None,
            )
            .await;
        let missing = d
            .call_as(&bob, method, &format!("/v1/sandboxes/ghost/git/{ep}"), None)
            .await;
        assert_eq!(theirs.0, missing.0, "{ep}");
        assert_eq!(
            missing.1.to_string().replace("ghost", "app"),
            theirs.1.to_string(),
            "{ep}"
        );
    }
    // Real git with bob's token: no clone, no push, nothing changes.
    let bobs = with_token(&remote, &bob);
    let o = git(w, &["clone", "-q", &bobs, "stolen"]).await;
    assert!(!o.status.success());
    assert!(!w.join("stolen/index.html").exists());
    commit(w, GOOD, "bob's").await;
    let o = git(w, &["push", &bobs, "main"]).await;
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("404") || err.contains("not found"), "{err}");
    assert_eq!(releases(&d, "app").await, vec![(1, "live".into())]);
    // A bad token and no token: 401 asking for basic auth.
    let r = d
        .http
        .get(d.u("/v1/sandboxes/app/git/info/refs?service=git-upload-pack"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    // Garbage to every endpoint: refused, never a server error, and the
    // push socket of a refused push is gone.
    for (ep, ct, enc) in [
        (
            "git-upload-pack",
            "application/x-git-upload-pack-request",
            None,
        ),
        (
            "git-upload-pack",
            "application/x-git-upload-pack-request",
            Some("gzip"),
        ),
        (
            "git-receive-pack",
            "application/x-git-receive-pack-request",
            None,
        ),
        (
            "git-receive-pack",
            "application/x-git-receive-pack-request",
            Some("gzip"),
        ),
        ("info/refs?service=git-bogus", "text/plain", None),
    ] {
        let mut r = d
            .http
            .request(
                if ep.starts_with("info") {
                    Method::GET
                } else {
                    Method::POST
                },
                d.u(&format!("/v1/sandboxes/app/git/{ep}")),
            )
            .bearer_auth(&d.token)
            .header("content-type", ct)
            .body(vec![0xffu8; 3000]);
        if let Some(e) = enc {
            r = r.header("content-encoding", e);
        }
        let resp = r.send().await.unwrap();
        let st = resp.status().as_u16();
        let _ = resp.bytes().await;
        assert!(st < 500, "{ep} {enc:?}: {st}");
    }
    let run = d.data_dir().join("deploy/run");
    let left: Vec<_> = std::fs::read_dir(&run).unwrap().collect();
    assert!(left.is_empty(), "push sockets left: {left:?}");
    assert_eq!(releases(&d, "app").await, vec![(1, "live".into())]);
    // Only the smart endpoints are served (no dumb-protocol object paths).
    let (st, _) = d
        .call_as(&d.token, Method::GET, "/v1/sandboxes/app/git/HEAD", None)
        .await;
    assert_eq!(st, 404);
    // The pushed secret (the token) never reached the sandbox's files or
    // environment.
    let v = d
        .exec(
            "app",
            &[
                "sh",
                "-c",
                "cat /proc/*/environ 2>/dev/null; grep -r . /app 2>/dev/null",
            ],
        )
        .await;
    let all: Value = v;
    assert!(!all.to_string().contains(&d.token), "token in the sandbox");
    assert!(!all.to_string().contains("IRONCLAW_DEPLOY_SECRET"));
}

/// The CLI around it: `deploy init | ls | logs | rollback`.
#[tokio::test]
async fn cli_init_ls_logs_rollback() {
    let d = Daemon::start_with("[network]\n").await;
    d.sandbox("web", json!({"network": "internet"})).await;
    let o = d.cli(&["deploy", "init", "web", "--port", "8000"]);
    assert!(o.status.success(), "{o:?}");
    // The HTTP remote, then the SSH one.
    let stdout = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let remote = lines[0].to_string();
    assert_eq!(remote, format!("{}/v1/sandboxes/web/git", d.url));
    assert!(
        lines[1].starts_with("ssh://web@127.0.0.1:") && lines[1].ends_with("/web.git"),
        "{stdout}"
    );
    let hint = String::from_utf8_lossy(&o.stderr);
    assert!(hint.contains("git push"), "{hint}");
    let o = d.cli(&["deploy", "ls", "web"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no releases yet"));

    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    git_ok(w, &["init", "-q", "-b", "main"]).await;
    commit(w, GOOD, "via the cli").await;
    // The bearer-header form, the token kept out of the remote URL.
    let header = format!("http.extraHeader=Authorization: Bearer {}", d.token);
    git_ok(w, &["-c", &header, "push", &remote, "main"]).await;
    assert_eq!(get_app(&d, "web").await, (200, "via the cli".into()));

    let o = d.cli(&["deploy", "ls", "web"]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("RELEASE") && table.contains("live"),
        "{table}"
    );
    let o = d.cli(&["deploy", "logs", "web", "-n", "5"]);
    assert!(o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("starting release-1"),
        "{o:?}"
    );
    // Follow: the stream stays open until the client goes.
    let mut follow = d
        .cli_command(&["deploy", "logs", "web", "-f"])
        .env("IRONCLAW_TOKEN", &d.token)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(follow.try_wait().unwrap().is_none(), "-f ended by itself");
    follow.kill().unwrap();
    follow.wait().unwrap();
    // Nothing to roll back to: an error saying so.
    let o = d.cli(&["deploy", "rollback", "web"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no earlier good release"),
        "{o:?}"
    );
    let o = d.cli(&["deploy", "ls", "nosuch"]);
    assert!(!o.status.success());
}

/// The issue's own sample: a small Python web app that needs no
/// downloads, pushed into a Debian image (which has python3), served at
/// its URL through the port proxy.
#[tokio::test]
async fn a_python_app_is_pushed_and_served() {
    let d = Daemon::start_with("[network]\n").await;
    d.build_image("py", "debian").await;
    d.sandbox("pyapp", json!({"image": "py", "network": "internet"}))
        .await;
    let (st, v) = d.post("/v1/sandboxes/pyapp/deploy", json!({})).await;
    assert_eq!(st, 201, "{v}");
    let url = with_token(v["remote"].as_str().unwrap(), &d.token);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    git_ok(w, &["init", "-q", "-b", "main"]).await;
    std::fs::write(
        w.join("app.py"),
        "import os\nfrom http.server import BaseHTTPRequestHandler, HTTPServer\n\n\
         class App(BaseHTTPRequestHandler):\n    def do_GET(self):\n        \
         body = ('hello from python at ' + self.path).encode()\n        \
         self.send_response(200)\n        self.send_header('Content-Length', str(len(body)))\n        \
         self.end_headers()\n        self.wfile.write(body)\n\n\
         HTTPServer(('0.0.0.0', int(os.environ['PORT'])), App).serve_forever()\n",
    )
    .unwrap();
    // No dependencies to fetch: an empty requirements file.
    std::fs::write(w.join("requirements.txt"), "").unwrap();
    std::fs::write(w.join("Procfile"), "web: python3 app.py\n").unwrap();
    git_ok(w, &["add", "-A"]).await;
    git_ok(w, &["commit", "-q", "-m", "python app"]).await;
    let out = git_ok(w, &["push", &url, "main"]).await;
    assert!(out.contains("remote: -----> Release 1 is live"), "{out}");
    assert!(
        out.contains(&format!("remote: {}", app_url(&d, "pyapp"))),
        "{out}"
    );
    assert_eq!(
        get_app(&d, "pyapp").await,
        (200, "hello from python at /index.html".into())
    );
}
