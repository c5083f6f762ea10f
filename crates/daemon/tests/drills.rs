//! Escape and resource drills: from inside real sandboxes, try what a
//! hostile root (a prompt-injected agent) would try. Every drill prints
//! `contained` or `ESCAPED`; one `ESCAPED` fails the suite. The summary
//! line at the end is what README.md quotes.
//!
//! Namespace backend (the default where KVM guests do not boot, as here).

mod common;
#[path = "drills/faults.rs"]
mod faults;

use std::time::{Duration, Instant};

use common::{record_summary, rss_kib, Daemon};
use reqwest::Method;
use serde_json::{json, Value};

const ESCAPES: &str = include_str!("drills/escapes.py");

/// Verdicts of a set of drills. "escaped" means the drill's attack or
/// fault got through (an escape, or something lost).
pub struct Tally {
    words: [&'static str; 2],
    contained: usize,
    escaped: Vec<String>,
}

impl Tally {
    fn new(held: &'static str, broke: &'static str) -> Tally {
        Tally {
            words: [held, broke],
            contained: 0,
            escaped: Vec::new(),
        }
    }

    pub fn record(&mut self, name: &str, escaped: bool, detail: &str) {
        let verdict = self.words[usize::from(escaped)];
        println!("drill {name}: {verdict} ({detail})");
        if escaped {
            self.escaped.push(format!("{name}: {detail}"));
        } else {
            self.contained += 1;
        }
    }
}

/// A drill that hangs the daemon has escaped too: every call has a deadline
/// (status 0 when it passed).
async fn call(
    d: &Daemon,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = d
        .http
        .request(method, d.u(path))
        .bearer_auth(token)
        .timeout(Duration::from_secs(150));
    if let Some(b) = body {
        r = r.json(&b);
    }
    match r.send().await {
        Ok(resp) => {
            let st = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            (
                st,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        }
        Err(e) => (0, Value::String(format!("no answer: {e}"))),
    }
}

async fn exec_body(d: &Daemon, name: &str, body: Value) -> (u16, Value) {
    call(
        d,
        &d.token,
        Method::POST,
        &format!("/v1/sandboxes/{name}/exec"),
        Some(body),
    )
    .await
}

/// Whether the daemon and a sandbox's agent still answer promptly.
async fn still_answers(d: &Daemon, name: &str) -> bool {
    let t0 = Instant::now();
    let (st, v) = exec_body(d, name, json!({"argv": ["true"], "timeout_ms": 10000})).await;
    st == 200 && v["exit_code"] == 0 && t0.elapsed() < Duration::from_secs(10)
}

fn sandbox_ids(d: &Daemon) -> Vec<String> {
    std::fs::read_dir(d.data_dir().join("sandboxes"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn upload(d: &Daemon, sandbox: &str, path: &str, data: &[u8]) {
    let resp = reqwest::Client::new()
        .put(d.u(&format!("/v1/sandboxes/{sandbox}/files?path={path}")))
        .bearer_auth(&d.token)
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "upload {path}: {}",
        resp.status()
    );
}

/// The escape drills of `drills/escapes.py`, plus what only the host can
/// check (host files unchanged, the device cgroup).
async fn escape_drills(d: &Daemon, t: &mut Tally) {
    let before: Vec<String> = sandbox_ids(d);
    d.sandbox("victim", json!({})).await;
    d.exec("victim", &["sh", "-c", "echo victim-secret > /root/secret"])
        .await;
    let victim_id = sandbox_ids(d)
        .into_iter()
        .find(|id| !before.contains(id))
        .expect("victim's directory");
    let (st, v) = d
        .post(
            "/v1/sandboxes",
            json!({"name": "attacker", "image": "base"}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let attacker_id = sandbox_ids(d)
        .into_iter()
        .find(|id| !before.contains(id) && *id != victim_id)
        .expect("attacker's directory");

    let core_pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let mut host = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    upload(d, "attacker", "/root/escapes.py", ESCAPES.as_bytes()).await;
    let other = d
        .data_dir()
        .join("sandboxes")
        .join(&victim_id)
        .join("disk.img");
    let (st, v) = exec_body(
        d,
        "attacker",
        json!({"argv": ["python3", "/root/escapes.py", host.id().to_string(), other.to_str().unwrap()],
               "timeout_ms": 120000}),
    )
    .await;
    let _ = host.kill();
    let _ = host.wait();
    assert_eq!(st, 200, "{v}");
    let out = v["stdout"].as_str().unwrap_or_default();
    assert!(
        out.lines().last() == Some("done"),
        "the drill script did not finish: {v}"
    );
    for line in out.lines().filter(|l| *l != "done") {
        let mut parts = line.splitn(3, ' ');
        let (name, verdict, detail) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        assert!(
            verdict == "contained" || verdict == "ESCAPED",
            "bad drill line {line:?}"
        );
        t.record(name, verdict == "ESCAPED", detail);
    }

    let after = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    t.record(
        "host_core_pattern_unchanged",
        after != core_pattern,
        &format!("host core_pattern is {:?}", after.trim()),
    );
    // The attacker's files are its own ids on the host, the victim's are
    // another block: even a shared path would not give one the other's
    // 0600 files.
    let owner = |id: &str| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(d.data_dir().join("sandboxes").join(id).join("disk.img"))
            .map(|m| m.uid())
            .unwrap_or(u32::MAX)
    };
    t.record(
        "disk_images_host_owned",
        owner(&attacker_id) != 0 || owner(&victim_id) != 0,
        "disk images belong to host root, mounted only inside each sandbox",
    );
    let uid_map = ["cat", "/proc/self/uid_map"];
    let ma = d.exec("attacker", &uid_map).await["stdout"].to_string();
    let mv = d.exec("victim", &uid_map).await["stdout"].to_string();
    t.record(
        "distinct_id_blocks",
        ma == mv,
        &format!("attacker {}, victim {}", ma.trim(), mv.trim()),
    );
    let devices = format!("/sys/fs/cgroup/devices/ironclaw/{attacker_id}/devices.list");
    match std::fs::read_to_string(&devices) {
        Ok(list) => {
            let mut got: Vec<&str> = list.lines().collect();
            let mut want: Vec<&str> = ironclaw_sandbox::cgroup::ALLOWED_DEVICES.to_vec();
            got.sort_unstable();
            want.sort_unstable();
            t.record(
                "device_cgroup_allowlist",
                got != want,
                &format!("devices.list {got:?}"),
            );
        }
        Err(_) => println!("drill device_cgroup_allowlist: not run (no cgroup v1 devices controller on this host; nodev and no CAP_MKNOD hold)"),
    }
}

/// Commands run as the image's unprivileged `user` (the exec API's
/// `user`, what E2B's SDK uses by default) cannot get root back: no
/// capabilities left, no_new_privs keeps a setuid-root binary that root
/// left behind from raising anything, su and setuid(0) fail, and root's
/// files stay root's.
async fn user_drills(d: &Daemon, t: &mut Tally) {
    // Root leaves the bait: a setuid-root copy of bash and python.
    let bait = "cp /bin/bash /tmp/rootsh && cp $(readlink -f $(command -v python3)) /tmp/rootpy \
                && chmod 4755 /tmp/rootsh /tmp/rootpy && sha256sum /etc/passwd /etc/shadow";
    let (st, v) = exec_body(d, "attacker", json!({"argv": ["sh", "-c", bait]})).await;
    assert_eq!((st, &v["exit_code"]), (200, &json!(0)), "{v}");
    let sums = v["stdout"].as_str().unwrap_or_default().to_string();
    let as_user = |script: &str| {
        exec_body(
            d,
            "attacker",
            json!({"argv": ["sh", "-c", script], "user": "user", "timeout_ms": 30000}),
        )
    };
    let (st, v) =
        as_user("id -un; grep -E '^(CapInh|CapPrm|CapEff|CapAmb|NoNewPrivs)' /proc/self/status")
            .await;
    let out = v["stdout"].as_str().unwrap_or_default().to_string();
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    assert!(st == 200 && out.starts_with("user\n"), "exec as user: {v}");
    let caps: Vec<String> = ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"]
        .iter()
        .map(|f| field(f))
        .collect();
    t.record(
        "user_has_no_capabilities",
        caps.iter().any(|c| c != "0000000000000000"),
        &format!("as user: CapInh/CapPrm/CapEff/CapAmb {}", caps.join("/")),
    );
    t.record(
        "user_no_new_privs",
        field("NoNewPrivs:") != "1",
        &format!("as user: NoNewPrivs {}", field("NoNewPrivs:")),
    );
    let (_, v) = as_user(
        "/tmp/rootsh -p -c 'id -u; grep CapEff /proc/self/status'; \
         /tmp/rootpy -c 'import os; print(os.geteuid())'",
    )
    .await;
    let out = v["stdout"].as_str().unwrap_or_default().to_string();
    t.record(
        "user_setuid_root_binary",
        out != "1000\nCapEff:\t0000000000000000\n1000\n",
        &format!("setuid-root bash and python run as user: {:?}", out.trim()),
    );
    let (_, v) = as_user("su -c 'id -u' root </dev/null 2>&1; echo rc=$?").await;
    let out = v["stdout"].as_str().unwrap_or_default().to_string();
    t.record(
        "user_su_to_root",
        out.lines().any(|l| l.trim() == "0") || out.trim_end().ends_with("rc=0"),
        &format!("su as user: {:?}", out.trim()),
    );
    let (_, v) = as_user(
        "python3 -c 'import os\ntry:\n os.setuid(0); print(\"root\")\nexcept PermissionError as e: print(e.errno)'",
    )
    .await;
    let out = v["stdout"].as_str().unwrap_or_default().to_string();
    t.record(
        "user_setuid_syscall",
        out.trim() != libc::EPERM.to_string(),
        &format!("setuid(0) as user: {}", out.trim()),
    );
    // Root's files: directly, through the bait, in a nested user namespace.
    let (_, v) = as_user(
        "echo x >> /etc/passwd; /tmp/rootsh -p -c 'echo x >> /etc/shadow'; \
         unshare -Ur sh -c 'echo x >> /etc/passwd'; cat /etc/shadow; true",
    )
    .await;
    let tried = v["stderr"].as_str().unwrap_or_default().to_string();
    let (_, after) = exec_body(
        d,
        "attacker",
        json!({"argv": ["sha256sum", "/etc/passwd", "/etc/shadow"]}),
    )
    .await;
    let after = after["stdout"].as_str().unwrap_or_default();
    t.record(
        "user_writes_root_files",
        after != sums || v["stdout"].as_str().is_some_and(|o| o.contains("root:")),
        &format!(
            "/etc/passwd and /etc/shadow unchanged and unread: {}",
            tried.trim().replace('\n', "; ")
        ),
    );
}

/// Resource exhaustion from inside: each must stay inside its sandbox.
async fn resource_drills(d: &Daemon, t: &mut Tally) {
    // Fork bomb under the pids limit.
    d.sandbox("bomb", json!({})).await;
    let bomb = exec_body(
        d,
        "bomb",
        json!({"argv": ["sh", "-c", "b() { b | b & }; b; sleep 5"], "timeout_ms": 8000}),
    );
    let probe = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        still_answers(d, "victim").await
    };
    let (_, ok) = tokio::join!(bomb, probe);
    t.record(
        "fork_bomb",
        !ok,
        "the host and another sandbox answered during the bomb",
    );
    let (st, _) = d.req(Method::DELETE, "/v1/sandboxes/bomb", None).await;
    assert_eq!(st, 204);

    // Memory hog over a 64 MiB limit.
    let (st, v) = d
        .post(
            "/v1/sandboxes",
            json!({"name": "hog", "image": "base", "memory_mib": 64}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let (_, v) = exec_body(
        d,
        "hog",
        json!({"argv": ["python3", "-c", "b = bytearray(512 << 20); print(len(b))"], "timeout_ms": 60000}),
    )
    .await;
    t.record(
        "memory_hog",
        v["exit_code"] == 0,
        &format!(
            "512 MiB in a 64 MiB sandbox: exit {} signal {}",
            v["exit_code"], v["signal"]
        ),
    );

    // Disk fill past --disk.
    let (st, v) = d
        .post(
            "/v1/sandboxes",
            json!({"name": "full", "image": "mini", "disk_mib": 64}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let (_, v) = exec_body(
        d,
        "full",
        json!({"argv": ["sh", "-c", "dd if=/dev/zero of=/root/fill bs=1M count=128 2>&1; echo rc=$?"], "timeout_ms": 60000}),
    )
    .await;
    let out = v["stdout"].as_str().unwrap_or_default();
    t.record(
        "disk_fill",
        !out.contains("No space left on device"),
        out.lines().find(|l| l.contains("space")).unwrap_or(out),
    );
    let used = d.get("/v1/sandboxes/full").await.1["disk_used_bytes"]
        .as_u64()
        .unwrap_or(u64::MAX);
    t.record(
        "disk_fill_host_bytes",
        used > 64 << 20,
        &format!("the image takes {} MiB of host disk", used >> 20),
    );
    d.exec("full", &["rm", "/root/fill"]).await;
    t.record(
        "disk_fill_recovers",
        !still_answers(d, "full").await,
        "the sandbox works after the fill",
    );

    // 100,000 small files, then list them through the API.
    let (_, v) = exec_body(
        d,
        "attacker",
        json!({"argv": ["python3", "-c",
            "import os\nos.makedirs('/root/many', exist_ok=True)\nfor i in range(100000):\n    open(f'/root/many/{i}', 'w').close()\nprint(len(os.listdir('/root/many')))"],
            "timeout_ms": 120000}),
    )
    .await;
    let made = v["stdout"].as_str().unwrap_or_default().trim().to_string();
    let (st, _) = call(
        d,
        &d.token,
        Method::GET,
        "/v1/sandboxes/attacker/fs/list?path=/root/many",
        None,
    )
    .await;
    t.record(
        "many_small_files",
        !still_answers(d, "attacker").await,
        &format!("{made} files made; listing answered {st}; the agent still answers"),
    );

    // A 1 MiB argv.
    // sh -c SCRIPT $0 ARGS...: $# counts the 16 big ones.
    let mut argv = vec!["sh".to_string(), "-c".into(), "echo $#".into(), "x".into()];
    argv.extend((0..16).map(|_| "a".repeat(64 * 1024)));
    let (st, v) = exec_body(d, "victim", json!({"argv": argv})).await;
    let alive = still_answers(d, "victim").await;
    t.record(
        "one_mib_argv",
        st != 200 || v["stdout"] != "16\n" || !alive,
        &format!(
            "answered {st}, {} args seen; the agent answers afterwards: {alive}",
            v["stdout"]
        ),
    );
}

/// `yes` through the collecting exec API: the daemon keeps at most the
/// output limit, and the command ends at its timeout.
async fn output_flood(d: &Daemon, t: &mut Tally) {
    let pid = d.child.as_ref().unwrap().id();
    d.exec("victim", &["true"]).await;
    let before = rss_kib(pid);
    let (st, v) = exec_body(d, "victim", json!({"argv": ["yes"], "timeout_secs": 3})).await;
    let after = rss_kib(pid);
    let kept = v["stdout"].as_str().map_or(0, str::len);
    t.record(
        "output_flood",
        st != 200 || v["truncated"] != true || kept > 17 << 20 || after > before + (96 << 10),
        &format!(
            "`yes` for 3 s: {st}, {} MiB kept, truncated {}, daemon RSS {} -> {} MiB",
            kept >> 20,
            v["truncated"],
            before >> 10,
            after >> 10
        ),
    );
}

/// A second user against the first one's sandboxes: squatting the agent
/// name, guessing names and ids, every route refused alike. (Chat turns
/// landing in the victim's own sandbox: `ownership.rs`.)
async fn cross_user(d: &Daemon, t: &mut Tally) {
    let (st, v) = d.post("/v1/users", json!({"name": "mallory"})).await;
    assert_eq!(st, 201, "{v}");
    let mallory = v["token"].as_str().unwrap().to_string();
    for name in ["agent-admin", "victim"] {
        let (st, v) = call(
            d,
            &mallory,
            Method::POST,
            "/v1/sandboxes",
            Some(json!({"name": name, "image": "mini"})),
        )
        .await;
        t.record(
            &format!("squat_{name}"),
            st != 201,
            &format!("mallory may name her own sandbox {name}: {st} {v}"),
        );
    }
    let (_, mine) = call(d, &mallory, Method::GET, "/v1/sandboxes", None).await;
    let names: Vec<String> = mine["sandboxes"]
        .as_array()
        .map(|a| a.iter().map(|s| s["name"].to_string()).collect())
        .unwrap_or_default();
    t.record(
        "list_only_own",
        names.len() != 2,
        &format!("mallory lists {names:?}"),
    );
    // Every answer must read exactly like the one for a name nobody has.
    let (_, missing) = call(
        d,
        &mallory,
        Method::GET,
        "/v1/sandboxes/no-such-sandbox",
        None,
    )
    .await;
    let want = missing["error"]["message"]
        .as_str()
        .unwrap_or("?")
        .replace("no-such-sandbox", "X");
    let mut probes = 0;
    let mut leaks = vec![];
    for target in ["attacker".to_string(), "hog".to_string()]
        .into_iter()
        .chain(sandbox_ids(d))
    {
        let calls = [
            (
                Method::GET,
                format!("/v1/sandboxes/{target}?owner=admin"),
                None,
            ),
            (
                Method::POST,
                format!("/v1/sandboxes/{target}/exec"),
                Some(json!({"argv": ["true"]})),
            ),
            (
                Method::GET,
                format!("/v1/sandboxes/{target}/files?path=/etc/hostname"),
                None,
            ),
            (
                Method::GET,
                format!("/v1/sandboxes/{target}/logs?owner=admin"),
                None,
            ),
            (Method::POST, format!("/v1/sandboxes/{target}/stop"), None),
            (
                Method::DELETE,
                format!("/v1/sandboxes/{target}?owner=admin"),
                None,
            ),
        ];
        for (m, path, body) in calls {
            probes += 1;
            let (st, v) = call(d, &mallory, m.clone(), &path, body).await;
            let msg = v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .replace(&target, "X");
            if st != 404 || msg != want {
                leaks.push(format!("{m} {path}: {st} {v}"));
            }
        }
    }
    // The console WebSocket and the OpenAI-compatible endpoint.
    let ws = format!(
        "{}/v1/sandboxes/attacker/console/ws?session=main&owner=admin&token={mallory}",
        d.url.replacen("http", "ws", 1)
    );
    match tokio_tungstenite::connect_async(ws).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 404 => {}
        Err(e) => leaks.push(format!("console ws: {e}")),
        Ok(_) => leaks.push("console ws: opened".into()),
    }
    probes += 1;
    for model in ["admin", "agent-admin", "attacker"] {
        probes += 1;
        let (st, v) = call(
            d,
            &mallory,
            Method::POST,
            "/v1/chat/completions",
            Some(json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})),
        )
        .await;
        if st != 404 {
            leaks.push(format!("completions as {model}: {st} {v}"));
        }
    }
    t.record(
        "guess_names_and_ids",
        !leaks.is_empty(),
        &format!("{probes} probes answered like a missing sandbox; differing: {leaks:?}"),
    );
    t.record(
        "victim_untouched",
        !(still_answers(d, "attacker").await && still_answers(d, "hog").await),
        "the admin's sandboxes still run after mallory's stop/rm attempts",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drills_namespace_backend() {
    // A slow answer for the mid-turn fault drill.
    let mock = ironclaw_agent::mock::MockLlm::start([ironclaw_agent::mock::MockReply::Slow {
        chunks: (0..100).map(|i| format!("word{i} ")).collect(),
        delay: Duration::from_millis(100),
    }])
    .await;
    let mut d = common::chat::mock_daemon(&mock, "").await;
    d.build_image("base", "debian").await;
    let mut t = Tally::new("contained", "ESCAPED");
    escape_drills(&d, &mut t).await;
    user_drills(&d, &mut t).await;
    resource_drills(&d, &mut t).await;
    output_flood(&d, &mut t).await;
    cross_user(&d, &mut t).await;
    let escapes = (t.contained, t.escaped.len());
    let mut f = Tally::new("survived", "LOST");
    faults::run(&mut d, &mut f).await;
    println!(
        "drills: {} contained, {} escaped; faults: {} survived, {} lost",
        escapes.0,
        escapes.1,
        f.contained,
        f.escaped.len()
    );
    record_summary("drills", escapes.0, escapes.1);
    record_summary("faults", f.contained, f.escaped.len());
    assert!(t.escaped.is_empty(), "escapes: {:#?}", t.escaped);
    assert!(f.escaped.is_empty(), "faults: {:#?}", f.escaped);
}

/// The same idea on the VM backends: root inside a QEMU microVM owns only
/// the guest kernel, and the VMM holding it is an unprivileged, seccomp'd
/// host process that cannot open another sandbox's files. Firecracker runs
/// where KVM guests boot; here it says why not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drills_vm_backends() {
    let config = match std::env::var("IRONCLAW_FIRECRACKER_BIN") {
        Ok(fc) => format!("firecracker_bin = {fc:?}\n"),
        Err(_) => String::new(),
    };
    let d = Daemon::start_with(&config).await;
    d.build_image("mini", "busybox").await;
    let mut t = Tally::new("contained", "ESCAPED");
    let (_, host) = d.get("/v1/host").await;
    for b in host["backends"].as_array().cloned().unwrap_or_default() {
        if b["name"] == "firecracker" && b["available"] != true {
            println!("drills on firecracker: not run here: {}", b["reason"]);
        }
    }
    let core_pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    for name in ["vm-victim", "vm-attacker"] {
        let (st, v) = d
            .post(
                "/v1/sandboxes",
                json!({"name": name, "backend": "qemu", "memory_mib": 256}),
            )
            .await;
        assert_eq!(st, 201, "{v}");
    }
    let mut host_proc = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let data = d.data_dir().display().to_string();
    let script = format!(
        "echo '|/tmp/pwn' > /proc/sys/kernel/core_pattern && echo guest-core-pattern-set; \
         kill -0 {} 2>/dev/null && echo host-pid-visible; \
         ls {data} 2>/dev/null && echo host-dir-visible; echo end",
        host_proc.id()
    );
    let out = d.exec("vm-attacker", &["sh", "-c", &script]).await["stdout"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let _ = host_proc.kill();
    let _ = host_proc.wait();
    assert!(out.ends_with("end\n"), "{out}");
    let after = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    t.record(
        "vm_core_pattern",
        after != core_pattern,
        &format!(
            "guest root set its own kernel's core_pattern ({}); the host's is {:?}",
            out.contains("guest-core-pattern-set"),
            after.trim()
        ),
    );
    t.record(
        "vm_host_process",
        out.contains("host-pid-visible"),
        "host pids do not exist in the guest",
    );
    t.record(
        "vm_host_files",
        out.contains("host-dir-visible"),
        "the host's data dir is not in the guest",
    );

    // The VMM: unprivileged, filtered, and if compromised still unable to
    // open the other VM's disk.
    let (_, v) = d.get("/v1/sandboxes/vm-attacker").await;
    let pid = v["pid"].as_i64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    t.record(
        "vmm_unprivileged",
        field("Uid") == "0" || field("CapEff") != "0000000000000000" || field("Seccomp") != "2",
        &format!(
            "QEMU uid {}, CapEff {}, Seccomp {}, NoNewPrivs {}",
            field("Uid"),
            field("CapEff"),
            field("Seccomp"),
            field("NoNewPrivs")
        ),
    );
    let uid = field("Uid");
    let mut opened = vec![];
    for e in std::fs::read_dir(d.data_dir().join("sandboxes"))
        .unwrap()
        .flatten()
    {
        for f in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
            let p = f.path();
            let r = std::process::Command::new("setpriv")
                .args([
                    &format!("--reuid={uid}"),
                    &format!("--regid={uid}"),
                    "--clear-groups",
                    "cat",
                ])
                .arg(&p)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            if r.success() {
                opened.push(p.display().to_string());
            }
        }
    }
    t.record(
        "vmm_uid_opens_sandbox_files",
        !opened.is_empty(),
        &format!("as QEMU's uid {uid}, readable sandbox files: {opened:?}"),
    );
    println!(
        "drills (qemu): {} contained, {} escaped",
        t.contained,
        t.escaped.len()
    );
    record_summary("drills", t.contained, t.escaped.len());
    assert!(t.escaped.is_empty(), "escapes: {:#?}", t.escaped);
}
