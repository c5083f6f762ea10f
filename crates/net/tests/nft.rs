//! The daemon's nft table: `render` checked as data (anywhere), then the
//! ruleset applied for real (root and nft only) inside network namespaces
//! this test makes: a "host" with the bridge and the table, two sandboxes
//! on it, and a fake internet behind a veth with listeners on public and
//! private addresses. No packet leaves those namespaces, and the host's
//! own ruleset is never touched.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ironclaw_net::nft::{self, RulesetSpec};
use ironclaw_net::policy::parse_cidr;
use ironclaw_net::{AlwaysDeny, Attached, EgressPolicy};
use ironclaw_sandbox::netdev::{bridge, veth, NetAttachment};
use nix::sched::{setns, unshare, CloneFlags};
use serde_json::Value;

fn sandbox(address: [u8; 4], policy: EgressPolicy) -> Attached {
    Attached {
        sandbox_id: format!("sb{}", address[3]),
        address: address.into(),
        policy,
        group: None,
    }
}

fn spec<'a>(
    table: &'a str,
    bridge: &'a str,
    always: &'a AlwaysDeny,
    sandboxes: &'a [Attached],
    ports: &'a [nft::Port],
) -> RulesetSpec<'a> {
    RulesetSpec {
        table,
        bridge,
        gateway: Ipv4Addr::new(10, 213, 9, 1),
        subnet: "10.213.9.0/24".parse().unwrap(),
        dns_port: 5353,
        http_port: 8080,
        tls_port: 8443,
        always,
        sandboxes,
        ports,
    }
}

fn always() -> AlwaysDeny {
    AlwaysDeny::new(
        "10.213.9.0/24".parse().unwrap(),
        vec![
            "198.51.100.1".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
        ],
    )
}

/// The rules of `chain` in a rendered batch, as their statement lists.
fn rules(batch: &Value, chain: &str) -> Vec<Vec<Value>> {
    batch["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["add"]["rule"].as_object())
        .filter(|r| r["chain"] == chain)
        .map(|r| r["expr"].as_array().unwrap().clone())
        .collect()
}

/// (what `ip daddr` is matched against, the verdict) of each rule.
fn decisions(batch: &Value, chain: &str) -> Vec<(Value, String)> {
    rules(batch, chain)
        .into_iter()
        .map(|stmts| {
            let daddr = stmts
                .iter()
                .find(|s| s["match"]["left"]["payload"]["field"] == "daddr")
                .map(|s| s["match"]["right"].clone())
                .unwrap_or(Value::Null);
            let verdict = stmts
                .last()
                .unwrap()
                .as_object()
                .unwrap()
                .keys()
                .next()
                .unwrap()
                .clone();
            (daddr, verdict)
        })
        .collect()
}

#[test]
fn render_decides_in_the_order_of_ip_verdict() {
    let always = always();
    let a = sandbox(
        [10, 213, 9, 2],
        EgressPolicy {
            allow_all: true,
            allow_cidrs: vec![
                parse_cidr("192.168.1.0/24").unwrap(),
                parse_cidr("fd00::/8").unwrap(),
            ],
            deny_cidrs: vec![parse_cidr("203.0.113.9").unwrap()],
            ..Default::default()
        },
    );
    let b = sandbox([10, 213, 9, 3], EgressPolicy::deny_all());
    let sbs = [a, b];
    let batch =
        serde_json::to_value(nft::render(&spec("ict", "icbr", &always, &sbs, &[]))).unwrap();
    let objs = batch["nftables"].as_array().unwrap();
    // Replaced whole whether or not it existed: add, delete, add.
    assert!(objs[0]["add"]["table"]["name"] == "ict");
    assert!(objs[1]["delete"]["table"]["name"] == "ict");
    assert!(objs[2]["add"]["table"]["name"] == "ict");

    let prefix = |a: &str, l: u32| serde_json::json!({"prefix": {"addr": a, "len": l}});
    let set = |items: Vec<Value>| serde_json::json!({ "set": items });
    assert_eq!(
        decisions(&batch, "sb_10-213-9-2"),
        vec![
            (Value::from("@hard4"), "drop".to_string()),
            (set(vec!["203.0.113.9".into()]), "drop".into()),
            (set(vec![prefix("192.168.1.0", 24)]), "accept".into()),
            (Value::from("@private4"), "drop".into()),
            (Value::Null, "accept".into()),
        ],
        "hard set, deny, allow, private, allow_all (IPv6 CIDRs left out)"
    );
    assert_eq!(
        decisions(&batch, "sb_10-213-9-3"),
        vec![
            (Value::from("@hard4"), "drop".to_string()),
            (Value::from("@private4"), "drop".into()),
            (Value::Null, "drop".into()),
        ]
    );

    // The hard set: fixed IPv4 ranges, the host's IPv4 addresses, the
    // subnet (once, though it is given twice).
    let hard = objs
        .iter()
        .find(|o| o["add"]["set"]["name"] == "hard4")
        .unwrap();
    let elems = hard["add"]["set"]["elem"].as_array().unwrap();
    for e in [
        prefix("127.0.0.0", 8),
        prefix("169.254.0.0", 16),
        prefix("10.213.9.0", 24),
        "198.51.100.1".into(),
    ] {
        assert!(elems.contains(&e), "{e} not in {elems:?}");
    }
    assert_eq!(
        elems
            .iter()
            .filter(|e| **e == prefix("10.213.9.0", 24))
            .count(),
        1
    );
    let addr = |e: &Value| {
        e.as_str()
            .or(e["prefix"]["addr"].as_str())
            .unwrap()
            .to_string()
    };
    assert!(
        elems.iter().all(|e| !addr(e).contains(':')),
        "no IPv6 in an ipv4 set: {elems:?}"
    );

    // Forward: by source address to the sandbox's chain, else dropped.
    let fwd = rules(&batch, "forward");
    let vmap = fwd
        .iter()
        .find_map(|r| r.iter().find(|s| s.get("vmap").is_some()))
        .unwrap();
    assert_eq!(vmap["vmap"]["key"]["payload"]["field"], "saddr");
    let map = vmap["vmap"]["data"]["set"].as_array().unwrap();
    assert_eq!(map.len(), 2);
    assert_eq!(
        map[0],
        serde_json::json!(["10.213.9.2", {"jump": {"target": "sb_10-213-9-2"}}])
    );
    assert_eq!(decisions(&batch, "forward").last().unwrap().1, "drop");

    // No sandbox: no (invalid) empty verdict map, and still a drop.
    let none = serde_json::to_value(nft::render(&spec("ict", "icbr", &always, &[], &[]))).unwrap();
    let fwd = rules(&none, "forward");
    assert!(!fwd.iter().flatten().any(|s| s.get("vmap").is_some()));
    assert_eq!(decisions(&none, "forward").last().unwrap().1, "drop");
    // Redirects: DNS (both protocols), 80 and 443.
    let pre = rules(&none, "prerouting");
    assert_eq!(pre.len(), 4);
    assert!(pre
        .iter()
        .all(|r| r.last().unwrap().get("redirect").is_some()));
}

/// A process in a network namespace of its own, killed on drop.
struct Ns(Child);

impl Ns {
    fn start() -> Ns {
        let child = Command::new("unshare")
            .args(["-n", "sleep", "120"])
            .spawn()
            .expect("unshare -n sleep");
        let ns = Ns(child);
        let ours = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(format!("/proc/{}/ns/net", ns.pid()))
            .ok()
            .as_ref()
            == Some(&ours)
        {
            assert!(Instant::now() < deadline, "the child never unshared");
            std::thread::sleep(Duration::from_millis(10));
        }
        ns
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn in_netns<T: Send>(pid: i32, f: impl FnOnce() -> T + Send) -> T {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(&ns, CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

fn sh(pid: Option<i32>, args: &[&str]) {
    let mut cmd = match pid {
        Some(p) => {
            let mut c = Command::new("nsenter");
            c.args(["-t", &p.to_string(), "-n"]).args(args);
            c
        }
        None => {
            let mut c = Command::new(args[0]);
            c.args(&args[1..]);
            c
        }
    };
    let st = cmd.status().unwrap();
    assert!(st.success(), "{cmd:?}");
}

/// Can the sandbox in `pid` open a TCP connection to `to`?
fn can(pid: i32, to: &str) -> bool {
    let to: SocketAddr = to.parse().unwrap();
    in_netns(pid, move || {
        TcpStream::connect_timeout(&to, Duration::from_millis(800)).is_ok()
    })
}

fn chains(table: &str) -> Vec<String> {
    let listed = serde_json::to_value(nft::list(table).unwrap()).unwrap();
    listed["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["chain"]["name"].as_str().map(String::from))
        .collect()
}

#[test]
fn ruleset_filters_redirects_and_nats_in_namespaces() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: applying a ruleset needs root");
        return;
    }
    if Command::new("nft").arg("--version").output().is_err() {
        eprintln!("skipping: no nft");
        return;
    }
    let t = std::thread::spawn(|| {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(scenario());
    });
    if let Err(panic) = t.join() {
        std::panic::resume_unwind(panic);
    }
}

async fn scenario() {
    let tag = format!("{:x}", std::process::id() & 0xff_ffff);
    let (table, br) = (format!("ictest{tag}"), format!("icnb{tag}"));
    let gw = Ipv4Addr::new(10, 213, 9, 1);
    bridge::ensure_bridge(&br, gw, 24).await.unwrap();

    // The fake internet, one veth away, with the host's uplink at .1.
    let inet = Ns::start();
    let (up, down) = (format!("icup{tag}"), format!("icdn{tag}"));
    sh(
        None,
        &[
            "ip", "link", "add", &up, "type", "veth", "peer", "name", &down,
        ],
    );
    sh(
        None,
        &["ip", "link", "set", &down, "netns", &inet.pid().to_string()],
    );
    sh(None, &["ip", "addr", "add", "198.51.100.1/24", "dev", &up]);
    sh(None, &["ip", "link", "set", &up, "up"]);
    sh(
        None,
        &["ip", "route", "add", "default", "via", "198.51.100.2"],
    );
    let ip = Some(inet.pid());
    for a in [
        "198.51.100.2/24",
        "203.0.113.10/32",
        "203.0.113.11/32",
        "10.1.2.3/32",
    ] {
        sh(ip, &["ip", "addr", "add", a, "dev", &down]);
    }
    sh(ip, &["ip", "link", "set", &down, "up"]);
    let far: Vec<TcpListener> = in_netns(inet.pid(), || {
        ["203.0.113.10:7000", "203.0.113.11:7000", "10.1.2.3:7000"]
            .map(|a| TcpListener::bind(a).unwrap())
            .into()
    });
    // The host's own services: resolver (TCP side), HTTP proxy, and a
    // port no sandbox may reach, on the gateway; one on the uplink.
    let local: Vec<TcpListener> = [
        "10.213.9.1:5353",
        "10.213.9.1:8080",
        "10.213.9.1:7001",
        "198.51.100.1:7002",
    ]
    .map(|a| TcpListener::bind(a).unwrap())
    .into();

    let (a, b) = (Ns::start(), Ns::start());
    let mut ports = Vec::new();
    for (ns, last, ifname) in [(&a, 2, format!("icsa{tag}")), (&b, 3, format!("icsb{tag}"))] {
        let address = Ipv4Addr::new(10, 213, 9, last);
        let att = NetAttachment {
            bridge: br.clone(),
            host_ifname: ifname,
            address,
            prefix_len: 24,
            gateway: gw,
            mac: NetAttachment::mac_for(address),
            trust_ca: None,
        };
        veth::attach(ns.pid(), &att).await.unwrap();
        ports.push(nft::Port {
            ifname: att.host_ifname.clone(),
            mac: att.mac,
            address,
        });
    }
    let always = always();
    let a_policy = EgressPolicy {
        allow_all: true,
        deny_cidrs: vec![parse_cidr("203.0.113.11").unwrap()],
        ..Default::default()
    };
    let b_policy = EgressPolicy {
        allow_cidrs: vec![parse_cidr("10.1.2.0/24").unwrap()],
        ..Default::default()
    };
    let sbs = [
        sandbox([10, 213, 9, 2], a_policy),
        sandbox([10, 213, 9, 3], b_policy),
    ];
    // Control: without the table the host's ports are open to A.
    assert!(can(a.pid(), "10.213.9.1:7001") && can(a.pid(), "198.51.100.1:7002"));
    assert!(!nft::exists(&table).unwrap());
    nft::apply(&spec(&table, &br, &always, &sbs, &ports)).unwrap();
    assert!(nft::exists(&table).unwrap());
    let have = chains(&table);
    for c in [
        "prerouting",
        "postrouting",
        "input",
        "forward",
        "sb_10-213-9-2",
        "sb_10-213-9-3",
    ] {
        assert!(have.iter().any(|h| h == c), "no chain {c} in {have:?}");
    }

    // A: public yes (masqueraded), its denied CIDR no, private no, the
    // host no (uplink address, other gateway ports), resolver and proxy yes.
    assert!(can(a.pid(), "203.0.113.10:7000"));
    let (_, from) = far[0].accept().unwrap();
    assert_eq!(from.ip(), IpAddr::from([198, 51, 100, 1]), "masqueraded");
    assert!(!can(a.pid(), "203.0.113.11:7000"), "deny_cidrs");
    assert!(!can(a.pid(), "10.1.2.3:7000"), "private range");
    assert!(!can(a.pid(), "198.51.100.1:7002"), "a host address");
    assert!(
        !can(a.pid(), "10.213.9.1:7001"),
        "another port of the gateway"
    );
    assert!(can(a.pid(), "10.213.9.1:5353"), "the resolver");
    // DNS to any address reaches our resolver; port 80 our proxy.
    assert!(can(a.pid(), "192.0.2.53:53"));
    local[0].accept().unwrap();
    let resolver = UdpSocket::bind("10.213.9.1:5353").unwrap();
    resolver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    in_netns(a.pid(), || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(b"query", "192.0.2.53:53").unwrap();
    });
    let mut buf = [0u8; 16];
    let (n, from) = resolver.recv_from(&mut buf).expect("UDP DNS redirected");
    assert_eq!(
        (&buf[..n], from.ip()),
        (&b"query"[..], IpAddr::from([10, 213, 9, 2]))
    );
    assert!(can(a.pid(), "203.0.113.10:80"));
    let (_, from) = local[1].accept().unwrap();
    assert_eq!(
        from.ip(),
        IpAddr::from([10, 213, 9, 2]),
        "the proxy sees the sandbox"
    );
    // B: only its allowed private range.
    assert!(
        can(b.pid(), "10.1.2.3:7000"),
        "allow_cidrs opens a private range"
    );
    assert!(!can(b.pid(), "203.0.113.10:7000"), "deny all");

    // A connection open before a policy change...
    let open = in_netns(a.pid(), || {
        TcpStream::connect_timeout(
            &"203.0.113.10:7000".parse().unwrap(),
            Duration::from_secs(5),
        )
        .unwrap()
    });
    let (mut far_end, _) = far[0].accept().unwrap();
    far_end
        .set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    (&open).write_all(b"ok").unwrap();
    let mut buf = [0u8; 2];
    far_end.read_exact(&mut buf).unwrap();

    // Spoofing: A takes B's address (as a VM's kernel could) to get B's
    // policy. UDP, so no answer is needed for the packet to count: the far
    // end must see B's own datagram (control) and never A's.
    let sink = in_netns(inet.pid(), || UdpSocket::bind("10.1.2.3:7003").unwrap());
    sink.set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let send_from = |pid: i32, msg: &'static [u8]| {
        in_netns(pid, move || {
            let s = UdpSocket::bind("10.213.9.3:0").unwrap();
            s.send_to(msg, "10.1.2.3:7003").unwrap();
        })
    };
    let mut buf = [0u8; 16];
    send_from(b.pid(), b"from-b");
    let (n, _) = sink.recv_from(&mut buf).expect("B's own datagram");
    assert_eq!(&buf[..n], b"from-b");
    sh(
        Some(a.pid()),
        &["ip", "addr", "add", "10.213.9.3/32", "dev", "eth0"],
    );
    send_from(a.pid(), b"spoofed");
    assert!(
        sink.recv_from(&mut buf).is_err(),
        "a datagram with a spoofed source passed the bridge"
    );
    sh(
        Some(a.pid()),
        &["ip", "addr", "del", "10.213.9.3/32", "dev", "eth0"],
    );

    // Replace: B detached, A's policy now deny-all.
    let sbs = [sandbox([10, 213, 9, 2], EgressPolicy::deny_all())];
    nft::apply(&spec(&table, &br, &always, &sbs, &ports)).unwrap();
    // ...is cut by it: every packet is judged by the current policy.
    (&open).write_all(b"late").unwrap();
    let mut buf = [0u8; 4];
    assert!(
        far_end.read(&mut buf).is_err(),
        "data passed after the policy closed"
    );
    // A reset on close, not a FIN retransmitted for minutes.
    let no_linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    nix::sys::socket::setsockopt(&open, nix::sys::socket::sockopt::Linger, &no_linger).unwrap();
    drop(open);
    assert!(!chains(&table).iter().any(|c| c == "sb_10-213-9-3"));
    assert!(!can(a.pid(), "203.0.113.10:7000"), "new policy applies");
    assert!(
        !can(b.pid(), "10.1.2.3:7000"),
        "an unknown source gets nothing"
    );
    assert!(can(a.pid(), "10.213.9.1:5353"), "the resolver stays open");

    for _ in 0..2 {
        nft::remove(&table).unwrap();
    }
    assert!(!nft::exists(&table).unwrap());
    drop(far);
    drop(local);
}
