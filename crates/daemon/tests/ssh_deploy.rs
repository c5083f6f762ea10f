//! Deploy and file sync over the SSH endpoint with the real clients: `git
//! push` over ssh (both remote forms) deploys through the same hook as
//! smart HTTP and the URL answers; only the owner's key pushes; old
//! releases are pruned from the sandbox's disk; a push over the repository
//! limit is refused with nothing stored; `rsync -e ssh` round trips a tree;
//! and SSH exec and console work against a QEMU microVM. Traffic goes only
//! to the daemon on loopback and the sandboxes these tests create.

mod common;
#[path = "common/ssh_client.rs"]
mod ssh_client;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Daemon;
use serde_json::json;
use sha2::{Digest, Sha256};
use ssh_client::{add_key, text, wait_output, Client, Interactive};

const BASE: &str = "127-0-0-1.sslip.io";
const GOOD: &str = "web: httpd -f -p $PORT -h .\n";

async fn get_app(d: &Daemon, name: &str) -> (u16, String) {
    let port = d.url.rsplit(':').next().unwrap();
    let r = d
        .http
        .get(d.u("/index.html"))
        .header("host", format!("8000-{name}.{BASE}:{port}"))
        .bearer_auth(&d.token)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The ssh command git runs: the test's key and pinned host key.
fn git_ssh(c: &Client, key: &str) -> String {
    c.common_opts(key)
        .into_iter()
        .fold("ssh".to_string(), |acc, o| format!("{acc} {o}"))
}

/// `git ARGS` in `dir`, hermetic, over ssh with key `key`.
fn git(c: &Client, key: &str, dir: &Path, args: &[&str]) -> std::process::Output {
    let child = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_SSH_COMMAND", git_ssh(c, key))
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(180))
}

fn git_ok(c: &Client, key: &str, dir: &Path, args: &[&str]) -> String {
    let o = git(c, key, dir, args);
    assert!(
        o.status.success(),
        "git {args:?}: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stderr)
}

fn commit(c: &Client, dir: &Path, procfile: &str, body: &str) {
    std::fs::write(dir.join("Procfile"), procfile).unwrap();
    std::fs::write(dir.join("index.html"), body).unwrap();
    git_ok(c, "k", dir, &["add", "-A"]);
    git_ok(c, "k", dir, &["commit", "-q", "-m", body]);
}

async fn on_disk(d: &Daemon, name: &str) -> String {
    let v = d.exec(name, &["ls", "/app/releases"]).await;
    v["stdout"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// `git push` over ssh deploys; the CLI prints both remotes; another
/// user's key pushes nothing; old releases leave the disk; a push over
/// the repository limit is refused and stores nothing.
#[tokio::test(flavor = "multi_thread")]
async fn git_push_over_ssh_deploys() {
    let d = Daemon::start_with(
        "deploy_keep_releases = 2\ndeploy_repo_max_bytes = 1048576\n[network]\n",
    )
    .await;
    let c = Client::new(&d).await;
    add_key(&d, &d.token, &c.keygen("k")).await;
    let bob = d.add_user("bob").await;
    add_key(&d, &bob, &c.keygen("bob")).await;
    d.sandbox("app", json!({"network": "internet"})).await;

    let o = d.cli(&["deploy", "init", "app"]);
    assert!(o.status.success(), "{o:?}");
    let stdout = text(&o.stdout);
    let remotes: Vec<&str> = stdout.lines().collect();
    let ssh_remote = format!("ssh://app@127.0.0.1:{}/app.git", c.port);
    assert_eq!(
        remotes,
        [
            format!("{}/v1/sandboxes/app/git", d.url),
            ssh_remote.clone()
        ],
        "{o:?}"
    );
    assert!(text(&o.stderr).contains("ironclaw key add"), "{o:?}");

    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    git_ok(&c, "k", w, &["init", "-q", "-b", "main"]);
    // 1: the ssh:// form.
    commit(&c, w, GOOD, "over ssh one");
    let t0 = std::time::Instant::now();
    let out = git_ok(&c, "k", w, &["push", &ssh_remote, "main"]);
    eprintln!("git push over ssh to serving: {:?}", t0.elapsed());
    assert!(out.contains("remote: -----> Release 1 is live"), "{out}");
    let port = d.url.rsplit(':').next().unwrap();
    assert!(
        out.contains(&format!("remote: http://8000-app.{BASE}:{port}")),
        "{out}"
    );
    assert_eq!(get_app(&d, "app").await, (200, "over ssh one".into()));

    // 2, 3: the scp-like form (the port from the ssh command line).
    let scp_like = "app@127.0.0.1:app.git";
    let mut key_port = c.common_opts("k");
    key_port.extend(["-p".to_string(), c.port.to_string()]);
    let with_port = key_port
        .iter()
        .fold("ssh".to_string(), |acc, o| format!("{acc} {o}"));
    for n in ["two", "three"] {
        commit(&c, w, GOOD, &format!("over ssh {n}"));
        let o = Command::new("git")
            .args(["push", scp_like, "main"])
            .current_dir(w)
            .env("HOME", w)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_SSH_COMMAND", &with_port)
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        assert_eq!(get_app(&d, "app").await, (200, format!("over ssh {n}")));
    }
    // Kept: the newest two (2 and 3; 2 is also the rollback target).
    let listing = on_disk(&d, "app").await;
    assert_eq!(listing, "2 3", "{listing}");

    // A failed release, then a good one: 4 failed, 5 live; kept on disk:
    // 4 and 5 (the newest), 3 (the rollback target).
    commit(&c, w, "web: exit 3\n", "broken");
    let o = git(&c, "k", w, &["push", &ssh_remote, "main"]);
    assert!(!o.status.success(), "{o:?}");
    assert!(text(&o.stderr).contains("release 3 keeps serving"), "{o:?}");
    commit(&c, w, GOOD, "over ssh five");
    let out = git_ok(&c, "k", w, &["push", &ssh_remote, "main"]);
    assert!(out.contains("Removed old releases 2"), "{out}");
    assert_eq!(on_disk(&d, "app").await, "3 4 5");
    // Rollback goes to 3; a second one finds nothing left on disk.
    let (st, v) = d.post("/v1/sandboxes/app/deploy/rollback", json!({})).await;
    assert_eq!((st, &v["release"]), (200, &json!(3)), "{v}");
    assert_eq!(get_app(&d, "app").await, (200, "over ssh three".into()));
    let (st, v) = d.post("/v1/sandboxes/app/deploy/rollback", json!({})).await;
    assert_eq!(st, 409, "{v}");

    // A clone over ssh (upload-pack) gets what was pushed.
    let clone = tempfile::tempdir().unwrap();
    git_ok(&c, "k", clone.path(), &["clone", "-q", &ssh_remote, "c"]);
    assert_eq!(
        std::fs::read_to_string(clone.path().join("c/index.html")).unwrap(),
        "over ssh five"
    );

    // bob's key does not log in as app: no push, nothing changes.
    commit(&c, w, GOOD, "bob's");
    let o = git(&c, "bob", w, &["push", &ssh_remote, "main"]);
    assert!(!o.status.success(), "{o:?}");
    assert!(text(&o.stderr).contains("Permission denied"), "{o:?}");
    let (_, v) = d.get("/v1/sandboxes/app/deploy/releases").await;
    assert_eq!(v["releases"].as_array().unwrap().len(), 5, "{v}");

    // The repository limit (1 MiB): a push that fits goes; one that
    // would take the repository over is refused by the hook with the
    // reason; a pack bigger than the whole limit is cut off by git while
    // it arrives. Nothing of a refused push is stored; the branch stays.
    let noise = |name: &str, size: usize| {
        let mut b = vec![0u8; size];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
            .unwrap();
        std::fs::write(w.join(name), &b).unwrap();
    };
    noise("noise1.bin", 500_000);
    commit(&c, w, GOOD, "fits");
    git_ok(&c, "k", w, &["push", &ssh_remote, "main"]);
    let fits = text(&git(&c, "k", w, &["rev-parse", "HEAD"]).stdout)
        .trim()
        .to_string();
    let repo = d.data_dir().join("deploy");
    for (name, size, says) in [
        (
            "noise2.bin",
            600_000,
            "over the limit of 1048576 (deploy_repo_max_bytes); nothing was stored",
        ),
        ("noise3.bin", 1_500_000, "pack exceeds maximum allowed size"),
    ] {
        let before = dir_bytes(&repo);
        git_ok(&c, "k", w, &["reset", "-q", "--hard", &fits]);
        noise(name, size);
        commit(&c, w, GOOD, name);
        let o = git(&c, "k", w, &["push", &ssh_remote, "main"]);
        assert!(!o.status.success(), "{o:?}");
        assert!(text(&o.stderr).contains(says), "{}", text(&o.stderr));
        let after = dir_bytes(&repo);
        assert!(after < before + 64 * 1024, "{name}: {before} -> {after}");
    }
    let clone2 = tempfile::tempdir().unwrap();
    git_ok(&c, "k", clone2.path(), &["clone", "-q", &ssh_remote, "c"]);
    assert_eq!(
        std::fs::read_to_string(clone2.path().join("c/index.html")).unwrap(),
        "fits"
    );
    assert!(!clone2.path().join("c/noise2.bin").exists());
}

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(p).unwrap().flatten() {
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            dir_bytes(&e.path())
        } else {
            m.len()
        };
    }
    total
}

/// sha256 over a tree: every file's relative path, mode and contents, and
/// every symlink's target, in path order.
fn tree_hash(root: &Path) -> String {
    fn walk(root: &Path, p: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&path).unwrap();
            use std::os::unix::fs::PermissionsExt;
            if m.file_type().is_symlink() {
                let t = std::fs::read_link(&path).unwrap();
                out.push((format!("L {rel}"), t.display().to_string().into_bytes()));
            } else if m.is_dir() {
                out.push((format!("D {rel} {:o}", m.permissions().mode()), vec![]));
                walk(root, &path, out);
            } else {
                let mode = m.permissions().mode();
                out.push((format!("F {rel} {mode:o}"), std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut all = Vec::new();
    walk(root, root, &mut all);
    all.sort();
    let mut h = Sha256::new();
    for (k, v) in all {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(Sha256::digest(&v));
    }
    format!("{:x}", h.finalize())
}

/// `rsync -a -e ssh` of a tree into a Debian sandbox and back: the same
/// sha256 over paths, modes, contents and symlinks; a second run sends
/// only what changed.
#[tokio::test(flavor = "multi_thread")]
async fn rsync_round_trip() {
    let d = Daemon::start().await;
    d.build_image("deb", "debian").await;
    let c = Client::new(&d).await;
    add_key(&d, &d.token, &c.keygen("k")).await;
    d.sandbox("sync", json!({"image": "deb"})).await;

    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("a/b/c")).unwrap();
    let mut rnd = std::fs::File::open("/dev/urandom").unwrap();
    for (i, size) in [0usize, 1, 4096, 100_000, 3 << 20].iter().enumerate() {
        let mut data = vec![0u8; *size];
        std::io::Read::read_exact(&mut rnd, &mut data).unwrap();
        let dir = ["", "a", "a/b", "a/b/c", "a"][i];
        std::fs::write(src.join(dir).join(format!("f{i}.bin")), data).unwrap();
    }
    std::fs::write(src.join("a/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(src.join("a/run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("b/c/f3.bin", src.join("a/link")).unwrap();
    let want = tree_hash(&src);

    let ssh = git_ssh(&c, "k").replacen("ssh", &format!("ssh -p {}", c.port), 1);
    let rsync = |args: &[&str]| {
        let child = Command::new("rsync")
            .args(["-a", "-e", &ssh])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rsync (scripts/setup-host.sh installs it)");
        wait_output(child, Duration::from_secs(180))
    };
    let up = format!("{}/", src.display());
    let o = rsync(&[&up, "sync@127.0.0.1:/root/dir/"]);
    assert!(o.status.success(), "rsync up: {o:?}");
    let v = d
        .exec(
            "sync",
            &[
                "sh",
                "-c",
                "cd /root/dir && sha256sum a/b/c/f3.bin && stat -c %a a/run.sh && readlink a/link",
            ],
        )
        .await;
    let got = v["stdout"].as_str().unwrap();
    let f3 = format!(
        "{:x}",
        Sha256::digest(std::fs::read(src.join("a/b/c/f3.bin")).unwrap())
    );
    assert!(got.starts_with(&f3), "{v}");
    assert!(got.contains("\n750\nb/c/f3.bin\n"), "{v}");

    let back = work.path().join("back");
    let o = rsync(&["sync@127.0.0.1:/root/dir/", &format!("{}/", back.display())]);
    assert!(o.status.success(), "rsync down: {o:?}");
    assert_eq!(tree_hash(&back), want);

    // A change: only it goes (--stats counts the files sent).
    std::fs::write(src.join("a/b/f2.bin"), b"changed").unwrap();
    let o = rsync(&["--stats", &up, "sync@127.0.0.1:/root/dir/"]);
    assert!(o.status.success(), "{o:?}");
    assert!(
        text(&o.stdout).contains("Number of regular files transferred: 1"),
        "{}",
        text(&o.stdout)
    );
    // A sandbox without rsync: rsync says the remote end is missing.
    d.sandbox("bare", json!({})).await;
    let o = rsync(&[&up, "bare@127.0.0.1:/root/dir/"]);
    assert!(!o.status.success(), "{o:?}");
    assert!(text(&o.stderr).contains("rsync"), "{o:?}");
}

/// SSH exec and the console against a QEMU microVM (TCG here): the same
/// agent protocol over the VM's serial port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_exec_and_console_on_a_qemu_vm() {
    let d = Daemon::start().await;
    d.build_image("mini", "busybox").await;
    let c = Client::new(&d).await;
    add_key(&d, &d.token, &c.keygen("k")).await;
    let (st, v) = d
        .post(
            "/v1/sandboxes",
            json!({"name": "vm", "image": "mini", "backend": "qemu", "memory_mib": 256}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let out = c.run("k", "vm", &["cat /proc/1/comm; uname -r; exit 4"], b"");
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("ironclaw-guest\n") && stdout.contains("cloud-amd64"),
        "{stdout}"
    );
    let out = c.run("k", "vm", &["sha256sum"], &[7u8; 300_000]);
    let want = format!("{:x}", Sha256::digest([7u8; 300_000]));
    assert!(text(&out.stdout).starts_with(&want), "{out:?}");
    let mut s = Interactive::start(c.ssh("k", "vm", &["-tt"], &[]));
    s.send("echo vm-console-$((20+3))\n");
    s.wait_for("vm-console-23", Duration::from_secs(60));
    s.disconnect();
    // -L into the VM: to its loopback, through the agent.
    let v = d
        .exec(
            "vm",
            &[
                "sh",
                "-c",
                "mkdir -p /tmp/w && echo in-vm > /tmp/w/i && httpd -p 127.0.0.1:8080 -h /tmp/w",
            ],
        )
        .await;
    assert_eq!(v["exit_code"], 0, "{v}");
    let child = c
        .ssh("k", "vm", &["-W", "localhost:8080"], &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = child;
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        b"GET /i HTTP/1.0\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let out = wait_output(child, Duration::from_secs(60));
    assert!(text(&out.stdout).ends_with("in-vm\n"), "{out:?}");
}
