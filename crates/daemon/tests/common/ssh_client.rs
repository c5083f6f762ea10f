//! The real OpenSSH client against a test daemon's SSH endpoint, shared
//! by the SSH test files (`#[path]`-included next to `mod common`).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::Daemon;

/// A client side: a temp dir with keys and a known_hosts file pinning the
/// daemon's host key as `/v1/host` reports it.
pub struct Client {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Client {
    pub async fn new(d: &Daemon) -> Client {
        let (st, host) = d.get("/v1/host").await;
        assert_eq!(st, 200, "{host}");
        let ssh = &host["ssh"];
        let listen: std::net::SocketAddr = ssh["listen"].as_str().unwrap().parse().unwrap();
        let fingerprint = ssh["fingerprint"].as_str().unwrap();
        assert!(fingerprint.starts_with("SHA256:"), "{ssh}");
        let dir = tempfile::tempdir().unwrap();
        let line = format!(
            "[127.0.0.1]:{} {}\n",
            listen.port(),
            ssh["host_key"].as_str().unwrap()
        );
        std::fs::write(dir.path().join("known_hosts"), &line).unwrap();
        // The pinned key is the one whose fingerprint the daemon reports.
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(dir.path().join("known_hosts"))
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(fingerprint),
            "{out:?}"
        );
        Client {
            dir,
            port: listen.port(),
        }
    }

    /// Make key `name` (ed25519, no passphrase); its .pub path.
    pub fn keygen(&self, name: &str) -> PathBuf {
        let key = self.dir.path().join(name);
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(st.success());
        key.with_extension("pub")
    }

    pub fn common_opts(&self, key: &str) -> Vec<String> {
        let kh = self.dir.path().join("known_hosts");
        let mut v = vec![
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", kh.display()),
            "-o".into(),
            "GlobalKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
            "-F".into(),
            "/dev/null".into(),
        ];
        v.extend(["-i".into(), self.dir.path().join(key).display().to_string()]);
        v
    }

    /// `ssh -p PORT <opts> USER@127.0.0.1 CMD...` with key `key`.
    pub fn ssh(&self, key: &str, user: &str, opts: &[&str], cmd: &[&str]) -> Command {
        let mut c = Command::new("ssh");
        c.arg("-p")
            .arg(self.port.to_string())
            .args(self.common_opts(key))
            .args(opts)
            .arg(format!("{user}@127.0.0.1"))
            .args(cmd);
        c
    }

    pub fn run(&self, key: &str, user: &str, cmd: &[&str], stdin: &[u8]) -> Output {
        self.run_with(key, user, &[], cmd, stdin)
    }

    pub fn run_with(
        &self,
        key: &str,
        user: &str,
        opts: &[&str],
        cmd: &[&str],
        stdin: &[u8],
    ) -> Output {
        let mut c = self.ssh(key, user, opts, cmd);
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        wait_output(child, Duration::from_secs(60))
    }

    pub fn scp(&self, key: &str, from: &str, to: &str) -> Output {
        self.scp_with(key, &[], from, to)
    }

    pub fn scp_with(&self, key: &str, opts: &[&str], from: &str, to: &str) -> Output {
        let child = Command::new("scp")
            .arg("-P")
            .arg(self.port.to_string())
            .args(self.common_opts(key))
            .args(opts)
            .args([from, to])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_output(child, Duration::from_secs(120))
    }
}

/// The child's output; killed (and the test failed) past `limit`.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let t0 = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("ssh did not finish within {limit:?}: {out:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub async fn add_key(d: &Daemon, token: &str, pub_path: &Path) -> Value {
    let key = std::fs::read_to_string(pub_path).unwrap();
    let (st, v) = d
        .call_as(
            token,
            reqwest::Method::POST,
            "/v1/keys",
            Some(json!({ "key": key })),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    v
}

/// An interactive `ssh -tt` whose output is collected as it comes.
pub struct Interactive {
    pub child: Child,
    pub out: Arc<Mutex<Vec<u8>>>,
}

impl Interactive {
    pub fn start(mut c: Command) -> Interactive {
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut stdout = child.stdout.take().unwrap();
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Interactive { child, out }
    }

    pub fn send(&mut self, s: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(s.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    pub fn wait_for(&self, needle: &str, within: Duration) {
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

    /// Disconnect: kill the client, as a dropped connection would.
    pub fn disconnect(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
