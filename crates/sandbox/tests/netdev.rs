//! The host side of a namespace sandbox's network card, end to end: a
//! bridge, two "sandboxes" (processes in new network namespaces) attached
//! by veth, checked from both sides, then torn down by their deaths.
//!
//! Runs as root only. The whole test lives in a network namespace of its
//! own (a thread that unshares), so the host's links, addresses and
//! forwarding switch are never touched, and whatever a failure leaves
//! behind dies with that namespace.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ironclaw_sandbox::netdev::{bridge, veth, NetAttachment};
use nix::sched::{setns, unshare, CloneFlags};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 213, 7, 1);

/// A process in a network namespace of its own, killed on drop.
struct Sandbox(Child);

impl Sandbox {
    fn start() -> Sandbox {
        let child = Command::new("unshare")
            .args(["-n", "sleep", "60"])
            .spawn()
            .expect("spawning unshare -n sleep");
        let s = Sandbox(child);
        // unshare execs sleep after unsharing: wait until the child's
        // namespace differs from ours.
        let ours = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let theirs = std::fs::read_link(format!("/proc/{}/ns/net", s.pid()));
            if matches!(&theirs, Ok(t) if *t != ours) {
                return s;
            }
            assert!(Instant::now() < deadline, "the child never unshared");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Deletes a link on drop (best effort; the test's namespace would take
/// it anyway).
struct LinkGuard(String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Run `f` on a thread inside the network namespace of `pid`.
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

fn json(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn nsenter(pid: i32, args: &[&str]) -> serde_json::Value {
    json(
        Command::new("nsenter")
            .arg("-t")
            .arg(pid.to_string())
            .arg("-n")
            .args(args),
    )
}

fn attachment(bridge: &str, host_ifname: &str, last: u8) -> NetAttachment {
    let address = Ipv4Addr::new(10, 213, 7, last);
    NetAttachment {
        bridge: bridge.into(),
        host_ifname: host_ifname.into(),
        address,
        prefix_len: 24,
        gateway: GATEWAY,
        mac: NetAttachment::mac_for(address),
        trust_ca: None,
    }
}

fn mac_str(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

async fn wait_gone(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while bridge::link_exists(name).await.unwrap() {
        assert!(Instant::now() < deadline, "{name} outlived its namespace");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn veth_pairs_join_an_isolated_bridge_and_die_with_their_namespace() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: creating links needs root");
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
    let br = format!("ictb{tag}");
    let (if_a, if_b, if_c) = (
        format!("icta{tag}"),
        format!("ictc{tag}"),
        format!("ictd{tag}"),
    );
    let _guards: Vec<_> = [&br, &if_a, &if_b, &if_c]
        .iter()
        .map(|n| LinkGuard(n.to_string()))
        .collect();

    // Twice: idempotent.
    for _ in 0..2 {
        bridge::ensure_bridge(&br, GATEWAY, 24).await.unwrap();
    }
    assert!(bridge::link_exists(&br).await.unwrap());
    let addrs = json(Command::new("ip").args(["-j", "addr", "show", "dev", &br]));
    let local: Vec<_> = addrs[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == "inet")
        .map(|a| {
            (
                a["local"].as_str().unwrap().to_string(),
                a["prefixlen"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        local,
        vec![("10.213.7.1".to_string(), 24)],
        "exactly one gateway address"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim(),
        "1"
    );
    let br_mtu = json(Command::new("ip").args(["-j", "link", "show", &br]))[0]["mtu"].clone();

    let mut a = Sandbox::start();
    let mut b = Sandbox::start();
    let att_a = attachment(&br, &if_a, 2);
    let att_b = attachment(&br, &if_b, 3);
    veth::attach(a.pid(), &att_a).await.unwrap();
    veth::attach(b.pid(), &att_b).await.unwrap();

    // Inside: eth0 with the address, MAC and MTU, up, default route.
    let eth0 = &nsenter(a.pid(), &["ip", "-j", "addr", "show", "dev", "eth0"])[0];
    assert_eq!(eth0["address"], mac_str(att_a.mac).as_str());
    assert_eq!(eth0["mtu"], br_mtu);
    let flags: Vec<_> = eth0["flags"].as_array().unwrap().iter().collect();
    assert!(flags.contains(&&serde_json::json!("UP")), "{flags:?}");
    let inet: Vec<_> = eth0["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == "inet")
        .collect();
    assert_eq!(inet.len(), 1);
    assert_eq!(inet[0]["local"], "10.213.7.2");
    assert_eq!(inet[0]["prefixlen"], 24);
    assert!(
        eth0["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["family"] == "inet"),
        "no IPv6 on eth0: {eth0}"
    );
    let routes = nsenter(a.pid(), &["ip", "-j", "route", "show", "default"]);
    assert_eq!(routes[0]["gateway"], "10.213.7.1", "{routes}");
    assert_eq!(routes[0]["dev"], "eth0");

    // Host side: an isolated port of the bridge, up, same MTU.
    let host = &json(Command::new("ip").args(["-d", "-j", "link", "show", &if_a]))[0];
    assert_eq!(host["master"], br.as_str(), "{host}");
    assert_eq!(host["linkinfo"]["info_slave_kind"], "bridge");
    assert_eq!(
        host["linkinfo"]["info_slave_data"]["isolated"], true,
        "{host}"
    );
    assert_eq!(host["mtu"], br_mtu);
    assert!(host["flags"].as_array().unwrap().iter().any(|f| f == "UP"));

    // The gateway is reachable from inside, and sees the sandbox's address.
    let gw = TcpListener::bind((GATEWAY, 0)).unwrap();
    let gw_addr = gw.local_addr().unwrap();
    in_netns(a.pid(), move || {
        let mut s = TcpStream::connect_timeout(&gw_addr, Duration::from_secs(5)).unwrap();
        s.write_all(b"hi").unwrap();
    });
    let (mut conn, from) = gw.accept().unwrap();
    assert_eq!(from.ip(), Ipv4Addr::new(10, 213, 7, 2));
    let mut buf = [0u8; 2];
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hi");

    // Isolation: the host reaches B's listener, A does not (isolated ports
    // do not forward to each other, so A's ARP for B goes unanswered).
    let b_listener = in_netns(b.pid(), || TcpListener::bind("10.213.7.3:0").unwrap());
    let b_addr: SocketAddr = b_listener.local_addr().unwrap();
    TcpStream::connect_timeout(&b_addr, Duration::from_secs(5)).expect("host to sandbox B");
    let a_to_b = in_netns(a.pid(), move || {
        TcpStream::connect_timeout(&b_addr, Duration::from_secs(2))
    });
    assert!(
        a_to_b.is_err(),
        "sandbox A reached sandbox B across the bridge"
    );
    // Control: with B's port not isolated A does reach B, so the refusal
    // above is the isolation's; joining again isolates it again.
    let status = Command::new("ip")
        .args([
            "link",
            "set",
            "dev",
            &if_b,
            "type",
            "bridge_slave",
            "isolated",
            "off",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    in_netns(a.pid(), move || {
        let s = TcpStream::connect_timeout(&b_addr, Duration::from_secs(5))
            .expect("A to B without isolation");
        // Close with a reset: an orphaned socket retransmitting its FIN
        // into the re-isolated port would keep A's namespace alive.
        let no_linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Linger, &no_linger).unwrap();
    });
    bridge::join(&if_b, &br).await.unwrap();
    let a_to_b = in_netns(a.pid(), move || {
        TcpStream::connect_timeout(&b_addr, Duration::from_secs(2))
    });
    assert!(
        a_to_b.is_err(),
        "a second join did not isolate the port again"
    );

    // A stale veth of a host end's name (a namespace still dying) is
    // replaced; a failed attach (A's namespace already has an eth0) then
    // leaves no link.
    let stale_peer = format!("icts{tag}");
    let status = Command::new("ip")
        .args([
            "link",
            "add",
            &if_c,
            "type",
            "veth",
            "peer",
            "name",
            &stale_peer,
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let err = veth::attach(a.pid(), &attachment(&br, &if_c, 4))
        .await
        .expect_err("a second eth0 in one namespace");
    assert!(err.to_string().contains("eth0"), "{err}");
    assert!(
        !bridge::link_exists(&if_c).await.unwrap(),
        "failed attach left {if_c}"
    );
    assert!(!bridge::link_exists(&stale_peer).await.unwrap());

    // Death of the namespace takes the pair. A socket made inside a
    // namespace keeps it (and so the pair) alive: close B's listener first.
    drop(b_listener);
    a.kill();
    wait_gone(&if_a).await;
    b.kill();
    wait_gone(&if_b).await;

    for _ in 0..2 {
        bridge::delete_link(&br).await.unwrap();
    }
    assert!(!bridge::link_exists(&br).await.unwrap());
    let left = json(Command::new("ip").args(["-j", "link", "show"]));
    let names: Vec<_> = left
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].clone())
        .collect();
    assert_eq!(names, vec![serde_json::json!("lo")], "links left behind");
}
