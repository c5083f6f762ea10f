//! Test harness: a real ironclawd on a temporary data dir and a free port,
//! with a busybox image built through its own API. Everything it started is
//! removed on drop (sandboxes first, then the daemon, then the data dir).
#![allow(dead_code)]

#[allow(dead_code)]
pub mod chat;
#[allow(dead_code)]
pub mod fakenet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub token: String,
    pub child: Option<Child>,
    pub http: reqwest::Client,
    extra_config: String,
    env: Vec<(String, String)>,
    /// This daemon's own bridge and subnet (so test daemons, and a daemon
    /// installed on the machine, never share one).
    pub bridge: String,
    pub subnet: String,
}

/// A bridge name and /24 no other daemon of this run uses: the pid and a
/// counter name the bridge, a random /24 of 10.128.0.0/9 the subnet.
fn unique_network() -> (String, String) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let bridge = format!("ict{:x}x{n}", std::process::id());
    let r: u16 = rand_u16();
    let subnet = format!("10.{}.{}.0/24", 128 + (r >> 8) % 128, r & 0xff);
    (bridge, subnet)
}

fn rand_u16() -> u16 {
    let mut b = [0u8; 2];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    u16::from_le_bytes(b)
}

/// The static guest binary the test run was prepared with (scripts/test.sh builds it).
pub fn guest_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("IRONCLAW_GUEST_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().unwrap().parent().unwrap().parent().unwrap();
    for prof in ["release", "debug"] {
        let p = target
            .join("x86_64-unknown-linux-gnu")
            .join(prof)
            .join("ironclaw-guest");
        if p.exists() {
            return p;
        }
    }
    panic!("static ironclaw-guest not built: run scripts/test.sh (or set IRONCLAW_GUEST_BIN)");
}

/// A workspace binary next to the test executable (target/<profile>/NAME).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        p.exists(),
        "{} not built (cargo test --workspace builds it)",
        p.display()
    );
    p
}

impl Daemon {
    pub async fn start() -> Daemon {
        Self::start_with("").await
    }

    /// Start with extra TOML config lines.
    pub async fn start_with(config: &str) -> Daemon {
        Self::start_env(config, &[]).await
    }

    /// Start with extra TOML config lines and environment variables.
    pub async fn start_env(config: &str, env: &[(&str, &str)]) -> Daemon {
        // Short path: the agent socket path must fit in sun_path.
        let dir = tempfile::Builder::new()
            .prefix("icl")
            .tempdir_in("/tmp")
            .unwrap();
        let (bridge, subnet) = unique_network();
        let mut d = Daemon {
            bridge,
            subnet,
            dir,
            url: String::new(),
            token: String::new(),
            child: None,
            http: reqwest::Client::new(),
            extra_config: config.to_string(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        d.spawn();
        d
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// (Re)start the daemon process on the same data dir.
    pub fn spawn(&mut self) {
        let cfg = self.dir.path().join("config.toml");
        // Every daemon gets its own bridge and subnet; sandboxes are
        // loopback-only unless a test's own `[network]` table says more.
        let own = format!(
            "[network]\nbridge = \"{}\"\nsubnet = \"{}\"\n",
            self.bridge, self.subnet
        );
        let config = if self.extra_config.contains("[network]\n") {
            self.extra_config.replacen("[network]\n", &own, 1)
        } else {
            format!("{}\n{own}default_mode = \"none\"\n", self.extra_config)
        };
        // The SSH endpoint on a free port (never the default 2222, which
        // parallel tests would fight over), unless the test sets its own.
        let ssh = if self.extra_config.contains("ssh_listen") {
            ""
        } else {
            "ssh_listen = \"127.0.0.1:0\"\n"
        };
        std::fs::write(&cfg, format!("default_image = \"mini\"\n{ssh}{config}")).unwrap();
        let mut child = Command::new(workspace_bin("ironclawd"))
            .arg("--data-dir")
            .arg(self.dir.path())
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--config")
            .arg(&cfg)
            .env("IRONCLAW_GUEST_BIN", guest_bin())
            .env("IRONCLAW_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ironclawd");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("ironclawd listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        self.url = url.to_string();
        self.token = std::fs::read_to_string(self.dir.path().join("admin.token"))
            .unwrap()
            .trim()
            .to_string();
        self.child = Some(child);
    }

    /// Graceful stop (SIGTERM), leaving sandboxes running.
    pub fn stop_daemon(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            c.wait().unwrap();
        }
    }

    /// Crash the daemon (SIGKILL).
    pub fn kill_daemon(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn u(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    pub async fn req(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.call_as(&self.token, method, path, body).await
    }

    /// A request with `token` (another user's, a bad one): status and JSON
    /// body (a JSON string when the body is not JSON).
    pub async fn call_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self.http.request(method, self.u(path)).bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Add a user through the admin API; their token.
    #[allow(dead_code)]
    pub async fn add_user(&self, name: &str) -> String {
        let (st, v) = self.post("/v1/users", json!({"name": name})).await;
        assert_eq!(st, 201, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.req(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.req(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn build_image(&self, name: &str, from: &str) {
        let (st, body) = self
            .post("/v1/images", json!({"name": name, "from": from}))
            .await;
        assert_eq!(st, 200, "{body}");
        let text = body
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| body.to_string());
        assert!(
            text.contains("\"type\":\"done\""),
            "image build failed: {text}"
        );
    }

    /// Create a running sandbox from the busybox image (built on first use).
    pub async fn sandbox(&self, name: &str, extra: Value) -> Value {
        let (_, imgs) = self.get("/v1/images").await;
        if !imgs["images"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "mini")
        {
            self.build_image("mini", "busybox").await;
        }
        let mut body = json!({"name": name, "image": "mini"});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let (st, v) = self.post("/v1/sandboxes", body).await;
        assert_eq!(st, 201, "create {name}: {v}");
        v
    }

    pub async fn exec(&self, name: &str, argv: &[&str]) -> Value {
        let (st, v) = self
            .post(&format!("/v1/sandboxes/{name}/exec"), json!({"argv": argv}))
            .await;
        assert_eq!(st, 200, "exec {argv:?}: {v}");
        v
    }

    /// The `ironclaw` CLI aimed at this daemon with a hermetic environment
    /// and no token: `IRONCLAW_TOKEN`/`IRONCLAW_TOKEN_FILE` unset,
    /// `$XDG_CONFIG_HOME` and `$HOME` in this test's (empty) dirs, and
    /// `IRONCLAW_DATA_DIR` this daemon's data dir, so the only token file it
    /// can find is this daemon's `admin.token`, never the host's
    /// `/var/lib/ironclaw/admin.token`.
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(workspace_bin("ironclaw"));
        cmd.args(args)
            .env("IRONCLAW_HOST", &self.url)
            .env_remove("IRONCLAW_TOKEN")
            .env_remove("IRONCLAW_TOKEN_FILE")
            .env("XDG_CONFIG_HOME", self.dir.path().join("cli-xdg"))
            .env("HOME", self.dir.path().join("cli-home"))
            .env("IRONCLAW_DATA_DIR", self.dir.path());
        cmd
    }

    /// Run the `ironclaw` CLI against this daemon with the admin token.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        self.cli_command(args)
            .env("IRONCLAW_TOKEN", &self.token)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn ws_url(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!(
            "{}{path}{sep}token={}",
            self.url.replacen("http", "ws", 1),
            self.token
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_none() && self.dir.path().join("ironclaw.db").exists() {
            self.spawn();
        }
        // Remove every sandbox through the API so no process or cgroup outlives the test.
        // On its own thread: Drop may run inside a test's tokio runtime.
        let url = self.url.clone();
        let token = self.token.clone();
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let http = reqwest::Client::new();
                // Again until none is left: a turn may be creating one.
                for _ in 0..3 {
                    let Ok(resp) = http
                        .get(format!("{url}/v1/sandboxes"))
                        .bearer_auth(&token)
                        .send()
                        .await
                    else {
                        return;
                    };
                    let v: Value = resp.json().await.unwrap_or_default();
                    let all = v["sandboxes"].as_array().cloned().unwrap_or_default();
                    if all.is_empty() {
                        return;
                    }
                    for s in all {
                        let name = s["name"].as_str().unwrap_or_default();
                        let owner = s["owner"].as_str().unwrap_or("admin");
                        let _ = http
                            .delete(format!("{url}/v1/sandboxes/{name}?owner={owner}"))
                            .bearer_auth(&token)
                            .timeout(Duration::from_secs(30))
                            .send()
                            .await;
                    }
                }
            })
        });
        let _ = cleanup.join();
        self.stop_daemon();
        reap_leftovers(self.dir.path());
        remove_network_leftovers(&self.bridge);
    }
}

/// The daemon removes its bridge and nft table with its last networked
/// sandbox; a test that killed it mid-way may leave them: say so, remove.
fn remove_network_leftovers(bridge: &str) {
    let quiet = |cmd: &mut Command| {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if quiet(Command::new("ip").args(["link", "del", bridge])) {
        eprintln!("test harness: bridge {bridge} outlived its daemon; removed it");
    }
    for family in ["inet", "bridge"] {
        if quiet(Command::new("nft").args(["delete", "table", family, bridge])) {
            eprintln!("test harness: nft table {family} {bridge} outlived its daemon; removed it");
        }
    }
}

/// Sandboxes still running once their daemon is gone (one created by a
/// turn that started while the test was ending): killed with their
/// cgroup (said on stderr), so a test never leaves a process behind.
fn reap_leftovers(data_dir: &Path) {
    let ids: Vec<String> = std::fs::read_dir(data_dir.join("sandboxes"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if ids.is_empty() {
        return;
    }
    let reaper = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            for id in ids {
                let Ok(cg) = ironclaw_sandbox::cgroup::Cgroup::for_sandbox(&id) else {
                    continue;
                };
                if !cg.pids().is_empty() {
                    eprintln!("test harness: sandbox {id} outlived its daemon; killing it");
                }
                let _ = cg.destroy().await;
            }
        })
    });
    let _ = reaper.join();
}

/// Processes whose command line mentions `needle` (orphan checks).
pub fn processes_matching(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                out.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
            }
        }
    }
    out
}

/// Resident memory of a process in KiB (0 if it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Record a drill or fuzz tally for the suite's closing line: appended to
/// the file `IRONCLAW_SUMMARY` names (scripts/test.sh sets it and adds the
/// lines up), as `KIND HELD BROKE` (e.g. `drills 55 0`).
#[allow(dead_code)]
pub fn record_summary(kind: &str, held: usize, broke: usize) {
    if let Ok(path) = std::env::var("IRONCLAW_SUMMARY") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{kind} {held} {broke}");
        }
    }
}

/// Poll `f` every 100 ms until it holds; fail after `secs`, naming `what`.
pub async fn wait_for<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Run a Python script with an E2B SDK (`e2b`, `e2b-code-interpreter`)
/// aimed at the daemon at `url` as `key`, with `env` added; its stdout.
/// Only E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY point it here.
pub async fn e2b_sdk(url: &str, key: &str, script: &str, env: &[(&str, &str)]) -> String {
    let out = tokio::process::Command::new("python3")
        .args(["-c", script])
        .env("E2B_API_URL", url)
        .env("E2B_SANDBOX_URL", url)
        .env("E2B_API_KEY", key)
        .env_remove("E2B_DOMAIN")
        .env_remove("E2B_DEBUG")
        .env_remove("E2B_HTTP_VERSION")
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
