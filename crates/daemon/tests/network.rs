//! Sandbox networking end to end: real veths, bridge, nft table, resolver
//! and egress proxy, with a fake internet in a network namespace this test
//! creates. Every request goes to loopback, the daemon, a sandbox or the
//! fake internet; nothing else.

mod common;

use std::process::Command;

use common::fakenet::FakeInternet;
use common::Daemon;
use serde_json::{json, Value};

/// Why this host cannot run these tests, if it cannot.
fn cannot_run() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (bridges, veths, nft)".into());
    }
    for tool in ["ip", "nft"] {
        let found = Command::new(tool).arg("-V").output().is_ok();
        if !found {
            return Some(format!(
                "{tool} not installed (scripts/setup-host.sh installs it)"
            ));
        }
    }
    None
}

macro_rules! need_network {
    () => {
        if let Some(why) = cannot_run() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

async fn sh(d: &Daemon, sandbox: &str, script: &str) -> (i64, String) {
    let v = d.exec(sandbox, &["sh", "-c", script]).await;
    let out = format!(
        "{}{}",
        v["stdout"].as_str().unwrap_or(""),
        v["stderr"].as_str().unwrap_or("")
    );
    (v["exit_code"].as_i64().unwrap_or(-1), out)
}

/// One HTTP/1.1 request from inside the sandbox with busybox nc: to
/// `target` port 80 with that Host header; the response as text.
async fn http(d: &Daemon, sandbox: &str, target: &str, host: &str) -> String {
    let script = format!(
        "printf 'GET / HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n' | nc -w 5 {target} 80; echo nc-exit=$?"
    );
    sh(d, sandbox, &script).await.1
}

/// A raw TCP connection from inside to `addr` `port`; what it read.
async fn tcp(d: &Daemon, sandbox: &str, addr: &str, port: u16) -> String {
    sh(d, sandbox, &format!("nc -w 3 {addr} {port} </dev/null"))
        .await
        .1
}

fn exists(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn bridge_exists(d: &Daemon) -> bool {
    exists(&["ip", "link", "show", &d.bridge])
}

fn table_exists(d: &Daemon) -> bool {
    exists(&["nft", "list", "table", "inet", &d.bridge])
        || exists(&["nft", "list", "table", "bridge", &d.bridge])
}

async fn set_egress(d: &Daemon, name: &str, policy: Value) -> Value {
    let (st, v) = d
        .req(
            reqwest::Method::PUT,
            &format!("/v1/sandboxes/{name}/egress"),
            Some(policy),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    v
}

fn start_fake() -> FakeInternet {
    let mut fake = FakeInternet::start();
    let names = [
        ("allowed.test", fake.addr(10)),
        ("other.test", fake.addr(20)),
        ("files.pypi.test", fake.addr(10)),
        ("rebind.test", "127.0.0.1".parse().unwrap()),
        ("meta.test", "169.254.169.254".parse().unwrap()),
    ];
    fake.serve(&names);
    fake
}

async fn networked_daemon(fake: &FakeInternet) -> Daemon {
    Daemon::start_with(&format!(
        "[network]\ndefault_mode = \"internet\"\nupstream_dns = [\"{}\"]\n",
        fake.dns()
    ))
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_follows_the_policy_and_the_always_denied_set_holds() {
    need_network!();
    let fake = start_fake();
    let d = networked_daemon(&fake).await;
    assert!(
        !bridge_exists(&d),
        "no bridge before the first networked sandbox"
    );
    let a = d
        .sandbox(
            "a",
            json!({"egress": {"allow_domains": ["allowed.test", "*.pypi.test", "rebind.test", "meta.test"]}}),
        )
        .await;
    let a_ip = a["address"].as_str().expect("an address").to_string();
    assert_eq!(a["network"], "internet");
    assert!(bridge_exists(&d) && table_exists(&d));
    let b = d.sandbox("b", json!({"egress": {"allow_all": true}})).await;
    let b_ip = b["address"].as_str().unwrap().to_string();
    assert_ne!(a_ip, b_ip);
    let (web, other) = (fake.addr(10).to_string(), fake.addr(20).to_string());

    // DNS: allowed names answer, others do not exist, rebinding answers
    // carry no internal address.
    let (_, out) = sh(&d, "a", "nslookup allowed.test").await;
    assert!(out.contains(&web), "{out}");
    let (_, out) = sh(&d, "a", "nslookup files.pypi.test").await;
    assert!(out.contains(&web), "{out}");
    let (_, out) = sh(&d, "a", "nslookup other.test").await;
    assert!(!out.contains(&other), "{out}");
    let (_, out) = sh(&d, "a", "nslookup rebind.test").await;
    assert!(!out.contains("127.0.0.1"), "{out}");

    // HTTP goes by name through the proxy.
    let out = http(&d, "a", "allowed.test", "allowed.test").await;
    assert!(
        out.contains(&format!("fake-internet {web} host=allowed.test")),
        "{out}"
    );
    let out = http(&d, "a", &other, "other.test").await;
    assert!(
        out.contains("403") && !out.contains("fake-internet"),
        "{out}"
    );
    // A direct IP, the host, cloud metadata, a rebinding name: refused.
    for host in [
        other.clone(),
        fake.addr(1).to_string(),
        "169.254.169.254".into(),
        "meta.test".into(),
        "rebind.test".into(),
        b_ip.clone(),
    ] {
        let out = http(&d, "a", &web, &host).await;
        assert!(!out.contains("fake-internet"), "Host {host}: {out}");
    }
    // Other ports: only by CIDR or allow_all.
    assert!(!tcp(&d, "a", &other, 9000).await.contains("tcp-ok"));
    assert!(tcp(&d, "b", &other, 9000).await.contains("tcp-ok"));

    // The host is unreachable on every address, its API included.
    let api_port = d
        .url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let gateway = fake_gateway(&a_ip);
    let probe = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    for (addr, port) in [
        (gateway.clone(), port.to_string()),
        (gateway.clone(), api_port.clone()),
        (fake.addr(1).to_string(), port.to_string()),
    ] {
        let (code, out) = sh(
            &d,
            "b",
            &format!("nc -w 2 {addr} {port} </dev/null && echo CONNECTED"),
        )
        .await;
        assert!(
            !out.contains("CONNECTED"),
            "{addr}:{port} reachable ({code}): {out}"
        );
    }
    // Other sandboxes: not even with allow_all.
    sh(
        &d,
        "a",
        "nc -l -p 9999 -e echo from-a </dev/null >/dev/null 2>&1 &",
    )
    .await;
    let (_, out) = sh(
        &d,
        "b",
        &format!("nc -w 2 {a_ip} 9999 </dev/null && echo CONNECTED"),
    )
    .await;
    assert!(
        !out.contains("from-a") && !out.contains("CONNECTED"),
        "{out}"
    );
    let (_, out) = sh(&d, "b", &format!("ping -c 1 -W 1 {a_ip}")).await;
    assert!(!out.contains(" 0% packet loss"), "{out}");

    // Root inside cannot touch its own network: no CAP_NET_ADMIN or
    // CAP_NET_RAW over a namespace that belongs to the host. Each attempt
    // must fail, and the address must still be the one the host gave.
    let attempts = [
        format!("ip addr add {b_ip}/24 dev eth0"),
        "ip addr flush dev eth0".to_string(),
        "ip link set eth0 address 02:00:00:00:00:99".to_string(),
        "ip link set eth0 down".to_string(),
        "ip route del default".to_string(),
        "ip link add x0 type dummy".to_string(),
        format!("arping -c 1 -w 1 -I eth0 {gateway}"),
        "ifconfig eth0 10.1.2.3".to_string(),
    ];
    let mut escaped = Vec::new();
    for cmd in &attempts {
        let (code, out) = sh(&d, "a", &format!("{cmd}; echo exit=$?")).await;
        if code != 0 || out.trim_end().ends_with("exit=0") {
            escaped.push(format!("{cmd}: {out}"));
        }
    }
    let (_, out) = sh(&d, "a", "ip -4 addr show eth0").await;
    if !out.contains(&format!("inet {a_ip}/")) {
        escaped.push(format!("eth0 changed: {out}"));
    }
    common::record_summary(
        "drills",
        attempts.len() - escaped.len().min(attempts.len()),
        escaped.len(),
    );
    assert!(escaped.is_empty(), "ESCAPED: {escaped:#?}");

    // A policy change applies to the running sandbox at once.
    let v = set_egress(&d, "a", json!({"allow_all": true})).await;
    assert_eq!(v["egress"]["allow_all"], true);
    assert!(tcp(&d, "a", &other, 9000).await.contains("tcp-ok"));
    let out = http(&d, "a", &other, "other.test").await;
    assert!(out.contains("fake-internet"), "{out}");
    let out = d.cli(&[
        "sandbox",
        "policy",
        "a",
        "--deny-all",
        "--allow-domain",
        "other.test",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("deny all; domains other.test"));
    let out = http(&d, "a", &web, "allowed.test").await;
    assert!(out.contains("403"), "{out}");
    let out = http(&d, "a", &other, "other.test").await;
    assert!(out.contains(&format!("fake-internet {other}")), "{out}");
    assert!(!tcp(&d, "a", &other, 9000).await.contains("tcp-ok"));
    let show = d.cli(&["sandbox", "show", "a"]);
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(
        show.contains(&format!("internet, address {a_ip}\n")),
        "{show}"
    );
    assert!(show.contains(" deny all; domains other.test\n"), "{show}");

    // Bad policies change nothing.
    let (st, _) = d
        .req(
            reqwest::Method::PUT,
            "/v1/sandboxes/a/egress",
            Some(json!({"allow_domains": ["*.com"]})),
        )
        .await;
    assert_eq!(st, 400);
    let (_, v) = d.get("/v1/sandboxes/a").await;
    assert_eq!(v["egress"]["allow_domains"], json!(["other.test"]));

    // Nothing is left after rm: links, bridge, table.
    for n in ["a", "b"] {
        let (st, _) = d
            .req(reqwest::Method::DELETE, &format!("/v1/sandboxes/{n}"), None)
            .await;
        assert_eq!(st, 204);
    }
    assert!(!bridge_exists(&d), "bridge left after the last sandbox");
    assert!(!table_exists(&d), "nft table left after the last sandbox");
}

/// The bridge's address: the first of the sandbox's /24 (the harness
/// gives every daemon a /24).
fn fake_gateway(sandbox_ip: &str) -> String {
    let mut o: Vec<&str> = sandbox_ip.split('.').collect();
    o[3] = "1";
    o.join(".")
}

#[tokio::test(flavor = "multi_thread")]
async fn network_survives_daemon_restart_and_stop_start() {
    need_network!();
    let fake = start_fake();
    let mut d = networked_daemon(&fake).await;
    let v = d.sandbox("w", json!({"egress": {"allow_all": true}})).await;
    let ip = v["address"].as_str().unwrap().to_string();
    let other = fake.addr(20).to_string();
    assert!(tcp(&d, "w", &other, 9000).await.contains("tcp-ok"));

    // SIGKILL: the sandbox keeps running; the new daemon re-attaches it.
    d.kill_daemon();
    d.spawn();
    assert!(tcp(&d, "w", &other, 9000).await.contains("tcp-ok"));
    let out = http(&d, "w", "allowed.test", "allowed.test").await;
    assert!(out.contains("fake-internet"), "{out}");

    // Stop: the last sandbox takes the bridge; start: same address back.
    let (st, _) = d.post("/v1/sandboxes/w/stop", json!({})).await;
    assert_eq!(st, 200);
    assert!(!bridge_exists(&d) && !table_exists(&d));
    let (st, v) = d.post("/v1/sandboxes/w/start", json!({})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["address"].as_str(), Some(ip.as_str()));
    assert!(tcp(&d, "w", &other, 9000).await.contains("tcp-ok"));

    // A loopback-only sandbox beside it has no way out.
    d.sandbox("lo", json!({"network": "none"})).await;
    let (_, v) = d.get("/v1/sandboxes/lo").await;
    assert_eq!(
        (v["network"].as_str(), v["address"].as_str()),
        (Some("none"), None)
    );
    assert!(!tcp(&d, "lo", &other, 9000).await.contains("tcp-ok"));
    let (st, _) = d
        .req(reqwest::Method::DELETE, "/v1/sandboxes/w", None)
        .await;
    assert_eq!(st, 204);
    assert!(!bridge_exists(&d));
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_added_at_egress_and_never_enter_the_sandbox() {
    need_network!();
    const SECRET: &str = "sk-live-4f9d2c7e1b";
    let fake = start_fake();
    let d = Daemon::start_env(
        &format!(
            "[network]\ndefault_mode = \"internet\"\nupstream_dns = [\"{}\"]\n\
             [[network.egress_headers]]\ndomain = \"allowed.test\"\nheader = \"X-Api-Key\"\nvalue = \"key ${{FAKE_API_KEY}}\"\n",
            fake.dns()
        ),
        &[("FAKE_API_KEY", SECRET)],
    )
    .await;
    d.sandbox(
        "s",
        json!({"egress": {"allow_domains": ["allowed.test", "other.test"]}}),
    )
    .await;
    // The sandbox sends its own value; the proxy replaces it.
    let script = "printf 'GET / HTTP/1.1\\r\\nHost: allowed.test\\r\\nX-Api-Key: guess\\r\\nConnection: close\\r\\n\\r\\n' | nc -w 5 allowed.test 80";
    let (_, out) = sh(&d, "s", script).await;
    assert!(out.contains("fake-internet"), "{out}");
    let out = http(&d, "s", &fake.addr(20).to_string(), "other.test").await;
    assert!(out.contains("fake-internet"), "{out}");
    let at_web = fake.seen_by(10);
    let (_, headers) = at_web
        .last()
        .expect("the request reached the fake upstream");
    assert_eq!(
        headers.get("x-api-key").map(String::as_str),
        Some(&*format!("key {SECRET}"))
    );
    let at_other = fake.seen_by(20);
    assert!(
        at_other.iter().all(|(_, h)| !h.contains_key("x-api-key")),
        "the header went to a domain without a rule"
    );
    // The sandbox trusts the daemon's egress CA (HTTPS to allowed.test is
    // intercepted to add the header); the CA's key stays on the host.
    let ca = std::fs::read_to_string(d.data_dir().join("egress-ca/egress-ca.pem")).unwrap();
    let (_, inside) = sh(
        &d,
        "s",
        "cat /usr/local/share/ca-certificates/ironclaw-egress.crt",
    )
    .await;
    assert_eq!(inside.trim(), ca.trim());
    let (_, out) = sh(
        &d,
        "s",
        "for d in /bin /etc /home /root /run /sbin /tmp /usr /var; do grep -rl 'PRIVATE KEY' $d; done 2>/dev/null",
    )
    .await;
    assert!(out.trim().is_empty(), "a private key inside: {out}");
    // Nowhere inside: environment, files, any process's environ or argv.
    // The pattern matches the secret without containing it, so the probe's
    // own argv is no hit.
    let (head, last) = SECRET.split_at(SECRET.len() - 1);
    let pattern = format!("'{head}[{last}]'");
    for probe in [
        format!("env | grep -c {pattern}"),
        format!(
            "for d in /bin /etc /home /root /run /sbin /tmp /usr /var; do grep -rl {pattern} $d; done 2>/dev/null"
        ),
        format!("cat /proc/*/environ /proc/*/cmdline 2>/dev/null | grep -c {pattern}"),
    ] {
        let (_, out) = sh(&d, "s", &probe).await;
        let hits = out.trim();
        assert!(hits.is_empty() || hits == "0", "{probe}: {out}");
    }
}

/// Whether the daemon can start QEMU sandboxes here (TCG is enough).
async fn qemu_usable(d: &Daemon) -> bool {
    let (_, host) = d.get("/v1/host").await;
    host["backends"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["name"] == "qemu" && b["available"] == true)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_qemu_vm_gets_the_same_network_and_cannot_spoof_its_way_out() {
    need_network!();
    let fake = start_fake();
    // A header rule, so there is an egress CA for the VM to trust.
    let d = Daemon::start_env(
        &format!(
            "[network]\ndefault_mode = \"internet\"\nupstream_dns = [\"{}\"]\n\
             [[network.egress_headers]]\ndomain = \"allowed.test\"\nheader = \"X-Key\"\nvalue = \"${{VM_KEY}}\"\n",
            fake.dns()
        ),
        &[("VM_KEY", "vm-secret")],
    )
    .await;
    d.build_image("mini", "busybox").await;
    if !qemu_usable(&d).await {
        eprintln!("skipped: the qemu backend is not available here (see `ironclaw doctor`)");
        return;
    }
    let v = d
        .sandbox(
            "vm",
            json!({"backend": "qemu", "memory_mib": 256, "egress": {"allow_domains": ["allowed.test"]}}),
        )
        .await;
    let vm_ip = v["address"].as_str().unwrap().to_string();
    let b = d.sandbox("b", json!({"egress": {"allow_all": true}})).await;
    let b_ip = b["address"].as_str().unwrap().to_string();
    let (web, other) = (fake.addr(10).to_string(), fake.addr(20).to_string());

    let (_, out) = sh(&d, "vm", "cat /etc/resolv.conf; nslookup allowed.test").await;
    assert!(out.contains(&web), "{out}");
    // The guest trusts the egress CA (from its kernel command line).
    let ca = std::fs::read_to_string(d.data_dir().join("egress-ca/egress-ca.pem")).unwrap();
    let (_, inside) = sh(
        &d,
        "vm",
        "cat /usr/local/share/ca-certificates/ironclaw-egress.crt",
    )
    .await;
    assert_eq!(inside.trim(), ca.trim());
    let out = http(&d, "vm", "allowed.test", "allowed.test").await;
    assert!(
        out.contains(&format!("fake-internet {web} host=allowed.test")),
        "{out}"
    );
    let out = http(&d, "vm", &other, "other.test").await;
    assert!(out.contains("403"), "{out}");
    assert!(!tcp(&d, "vm", &other, 9000).await.contains("tcp-ok"));

    // The guest kernel is root over its own NIC: it takes b's address to
    // get b's allow-all policy. The bridge drops every frame it sends so.
    // busybox has no `nc -u`; a tftp read request is one UDP datagram
    // carrying the file name.
    let udp = |marker: &str| format!("timeout 2 tftp -g -r {marker} -l /dev/null {other} 9002");
    let (_, control) = sh(&d, "b", &udp("from-b")).await;
    let spoof = format!(
        "ifconfig eth0 {b_ip} netmask 255.255.255.0 && route add default gw {gw} && {}; \
         ifconfig eth0 {vm_ip} netmask 255.255.255.0; route add default gw {gw}",
        udp("spoofed"),
        gw = fake_gateway(&vm_ip)
    );
    sh(&d, "vm", &spoof).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let seen = fake.udp_seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|(_, m)| m.contains("from-b")),
        "control: {seen:?} {control}"
    );
    assert!(
        !seen.iter().any(|(_, m)| m.contains("spoofed")),
        "a spoofed datagram passed: {seen:?}"
    );
    common::record_summary("drills", 1, 0);
    for n in ["vm", "b"] {
        let (st, _) = d
            .req(reqwest::Method::DELETE, &format!("/v1/sandboxes/{n}"), None)
            .await;
        assert_eq!(st, 204);
    }
    assert!(!bridge_exists(&d) && !table_exists(&d));
}

#[tokio::test(flavor = "multi_thread")]
async fn members_of_a_named_network_reach_each_other_and_nobody_else() {
    need_network!();
    let fake = start_fake();
    let d = networked_daemon(&fake).await;
    let bob = d.add_user("bob").await;
    let ip = |v: &Value| v["address"].as_str().unwrap().to_string();
    let a1 = ip(&d.sandbox("a1", json!({"join": "backend"})).await);
    let a2 = ip(&d.sandbox("a2", json!({"join": "backend"})).await);
    let c = ip(&d.sandbox("c", json!({"egress": {"allow_all": true}})).await);
    // Bob's "backend" is another network.
    let (st, v) = d
        .call_as(
            &bob,
            reqwest::Method::POST,
            "/v1/sandboxes",
            Some(json!({"name": "b1", "image": "mini", "join": "backend"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let b1 = ip(&v);
    let out = d.cli(&["sandbox", "show", "a1"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("address {a1}, joined backend")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let listen = "nc -l -p 9999 -e echo hello </dev/null >/dev/null 2>&1 &";
    for n in ["a2", "c"] {
        sh(&d, n, listen).await;
    }
    let (st, _) = d
        .call_as(
            &bob,
            reqwest::Method::POST,
            "/v1/sandboxes/b1/exec",
            Some(json!({"argv": ["sh", "-c", listen]})),
        )
        .await;
    assert_eq!(st, 200);
    let reach = |from: &'static str, to: String| {
        let d = &d;
        async move { tcp(d, from, &to, 9999).await.contains("hello") }
    };
    assert!(reach("a1", a2.clone()).await, "a member reaches a member");
    let mut escaped = Vec::new();
    for (from, to) in [("a1", c.clone()), ("c", a2.clone()), ("a1", b1.clone())] {
        if reach(from, to.clone()).await {
            escaped.push(format!("{from} reached {to}"));
        }
    }
    common::record_summary("drills", 3 - escaped.len(), escaped.len());
    assert!(escaped.is_empty(), "ESCAPED: {escaped:?}");
    // Joining needs a network, and a valid name.
    let (st, _) = d
        .post(
            "/v1/sandboxes",
            json!({"name": "x", "image": "mini", "network": "none", "join": "backend"}),
        )
        .await;
    assert_eq!(st, 400);
    let (st, _) = d
        .post(
            "/v1/sandboxes",
            json!({"name": "y", "image": "mini", "join": "Bad Name"}),
        )
        .await;
    assert_eq!(st, 400);
}
