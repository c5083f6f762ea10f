//! A QEMU sandbox on a host bridge: the daemon opens the tap, the guest
//! configures eth0 from the kernel command line, and the guest reaches a
//! server on the bridge address. The bridge is this test's own (unique
//! name, test subnet) and no traffic goes anywhere else. Needs what the
//! other qemu tests need plus `ip` and /dev/net/tun; skipped otherwise.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ironclaw_proto::ExecRequest;
use ironclaw_sandbox::backend::Backend;
use ironclaw_sandbox::netdev::{tap, NetAttachment};
use ironclaw_sandbox::qemu::QemuBackend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::bridge::Bridge;
use common::{shared, skip_reason, spec};

/// Kills a VM the test did not get to stop (a failed assertion), so its
/// tap goes too.
struct KillOnDrop(Option<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // SAFETY: kill has no memory effects.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn sh(cmd: &str) -> ExecRequest {
    ExecRequest {
        argv: vec!["sh".into(), "-c".into(), cmd.into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn qemu_vm_on_a_bridge_reaches_the_gateway() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    if ironclaw_sandbox::util::which("ip").is_none()
        || !std::path::Path::new("/dev/net/tun").exists()
    {
        eprintln!("skipped: needs `ip` (iproute2) and /dev/net/tun");
        return;
    }
    let data = &shared().data;
    let backend = QemuBackend::for_data_dir(data);
    let bridge = Bridge::create();
    let address = Ipv4Addr::from(u32::from(bridge.gateway) + 1);
    let att = NetAttachment {
        bridge: bridge.name.clone(),
        host_ifname: format!("ictp{}", rand::random::<u32>() % 1_000_000),
        address,
        prefix_len: 24,
        gateway: bridge.gateway,
        mac: NetAttachment::mac_for(address),
        trust_ca: None,
    };
    // A one-line HTTP server on the gateway address, which says who called.
    let listener = tokio::net::TcpListener::bind((bridge.gateway, 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut s, peer) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        let body = "hello from the gateway\n";
        let resp = format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(resp.as_bytes()).await.unwrap();
        peer
    });

    let mut spec = spec(data, "qnet-1");
    spec.network = Some(att.clone());
    let t = Instant::now();
    let (running, agent) = backend.start(&spec).await.expect("VM boots");
    let mut guard = KillOnDrop(Some(running.pid));
    eprintln!("boot with a NIC: {:.2}s", t.elapsed().as_secs_f64());
    let console = std::fs::read_to_string(spec.console_log()).unwrap_or_default();
    for l in console.lines().filter(|l| l.contains("eth0")) {
        eprintln!("console: {l}");
    }

    // The tap exists while QEMU runs, as a port of our bridge.
    let master = std::fs::read_link(format!("/sys/class/net/{}/master", att.host_ifname))
        .expect("the tap is a bridge port");
    assert!(master.ends_with(&bridge.name), "{master:?}");

    let gw = bridge.gateway;
    let out = agent
        .exec_collect(
            sh(&format!(
                "cat /proc/net/route /sys/class/net/eth0/carrier /etc/resolv.conf; ifconfig eth0; \
                 printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 20 {gw} {port}"
            )),
            None,
        )
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "guest:\n{text}{}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    assert_eq!(out.status.code, 0, "guest commands failed");
    // /proc/net/route: the default route (dest 0, flags UP|GATEWAY) via
    // the gateway, in the kernel's native-endian hex.
    let gw_hex = format!("{:08X}", u32::from_le_bytes(gw.octets()));
    assert!(
        text.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[0] == "eth0" && f[1] == "00000000" && f[2] == gw_hex && f[3] == "0003"
        }),
        "no default route via {gw} on eth0"
    );
    // busybox ifconfig: address, mask, MAC (upper case) and RUNNING.
    assert!(
        text.contains(&format!("inet addr:{address} ")) && text.contains("Mask:255.255.255.0"),
        "eth0 address"
    );
    let mac = att.mac.map(|b| format!("{b:02X}")).join(":");
    assert!(text.contains(&format!("HWaddr {mac}")), "eth0 MAC");
    // Carrier already there when the agent answers (the guest waits for
    // it), so the connection below is the guest's very first traffic.
    assert!(
        text.lines().any(|l| l == "1"),
        "eth0 without carrier at start"
    );
    assert!(text.contains(&format!("nameserver {gw}")), "resolv.conf");
    assert!(text.ends_with("hello from the gateway\n"), "HTTP body");
    let peer = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server saw a connection")
        .unwrap();
    assert_eq!(peer.ip(), std::net::IpAddr::V4(address), "from the guest");

    let t = Instant::now();
    backend
        .stop(&spec, &running, Some(&agent), Duration::from_secs(20))
        .await
        .unwrap();
    guard.0 = None;
    eprintln!("stop: {:.2}s", t.elapsed().as_secs_f64());
    // Not persistent: QEMU's exit took the tap with it.
    let until = Instant::now() + Duration::from_secs(5);
    while tap::exists(&att.host_ifname) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !tap::exists(&att.host_ifname),
        "{} left after stop",
        att.host_ifname
    );
    drop(bridge);
    let _ = std::fs::remove_dir_all(&spec.dir);
}
