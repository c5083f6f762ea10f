//! A Firecracker VM on a host bridge, through the real jailer: the daemon
//! makes a persistent tap owned by the jail's user, the unprivileged VMM
//! attaches to it by name, and the tap is gone after the VM.
//!
//! Where KVM guests boot, the guest configures eth0 from its kernel
//! command line and reaches a server on the gateway. Where they do not
//! (nested virtualization, as on the CI machines), the real VMM is driven
//! anyway: it must accept the network interface (it opens the tap while
//! handling that request, as uid 10000 inside its chroot) and every other
//! call, and the guest's death must leave no tap behind.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::bridge::Bridge;
use common::{firecracker_bin, shared, skip_reason, spec};
use ironclaw_proto::ExecRequest;
use ironclaw_sandbox::backend::Backend;
use ironclaw_sandbox::firecracker::FirecrackerBackend;
use ironclaw_sandbox::netdev::{tap, NetAttachment};
use ironclaw_sandbox::BackendError;

/// IFF_PERSIST in /sys/class/net/*/tun_flags.
const IFF_PERSIST: u32 = 0x0800;

fn sysfs(tap: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{tap}/{file}"))
        .ok()
        .map(|s| s.trim().to_string())
}

fn attachment(bridge: &Bridge) -> NetAttachment {
    let address = Ipv4Addr::from(u32::from(bridge.gateway) + 1);
    NetAttachment {
        bridge: bridge.name.clone(),
        host_ifname: format!("ictf{}", rand::random::<u32>() % 1_000_000),
        address,
        prefix_len: 24,
        gateway: bridge.gateway,
        mac: NetAttachment::mac_for(address),
        trust_ca: None,
    }
}

/// Try TUNSETIFF on `name` as `uid`, the way a VMM opens its tap: 0 on
/// success, else the errno. The attempt runs in a forked child that
/// drops to `uid` and exits with the result before it would exec. The
/// tun device is opened here, as root, as the jailer makes a node the
/// jail's user may open: what is checked is the device's owner.
fn attach_as(uid: u32, name: &str) -> i32 {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .unwrap();
    let fd = tun.as_raw_fd();
    let mut req = [0u8; 40];
    req[..name.len()].copy_from_slice(name.as_bytes());
    let flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as u16;
    req[16..18].copy_from_slice(&flags.to_ne_bytes());
    let mut cmd = Command::new("/bin/true");
    cmd.uid(uid).gid(uid);
    // SAFETY: the closure runs in the child after fork (where the
    // close-on-exec descriptor is still open), calls only ioctl(2) and
    // _exit(2), and never returns.
    unsafe {
        cmd.pre_exec(move || {
            let rc = if libc::ioctl(fd, libc::TUNSETIFF, req.as_ptr()) < 0 {
                *libc::__errno_location()
            } else {
                0
            };
            libc::_exit(rc)
        });
    }
    let code = cmd.status().unwrap().code().unwrap();
    drop(tun);
    code
}

/// Deletes the tap if an assertion failed first.
struct TapGuard(String);

impl Drop for TapGuard {
    fn drop(&mut self) {
        let _ = tap::delete_persistent(&self.0);
    }
}

fn can_run() -> Result<(), String> {
    if let Some(why) = skip_reason() {
        return Err(why);
    }
    if ironclaw_sandbox::util::which("ip").is_none() || !Path::new("/dev/net/tun").exists() {
        return Err("needs `ip` (iproute2) and /dev/net/tun".into());
    }
    Ok(())
}

#[test]
fn a_persistent_tap_is_the_vmm_users_alone_and_goes_at_delete() {
    if let Err(why) = can_run() {
        eprintln!("skipped: {why}");
        return;
    }
    let bridge = Bridge::create();
    let att = attachment(&bridge);
    let name = att.host_ifname.clone();
    let _guard = TapGuard(name.clone());
    tap::make_persistent(&att, 10_000, 10_000).unwrap();
    assert_eq!(sysfs(&name, "owner").as_deref(), Some("10000"));
    assert_eq!(sysfs(&name, "group").as_deref(), Some("10000"));
    let flags = sysfs(&name, "tun_flags").expect("tun_flags");
    let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap();
    assert_ne!(flags & IFF_PERSIST, 0, "not persistent: {flags:#x}");
    let master = std::fs::read_link(format!("/sys/class/net/{name}/master")).unwrap();
    assert!(master.ends_with(&bridge.name), "{master:?}");
    // Another unprivileged user cannot take the device; its owner can.
    assert_eq!(attach_as(10_001, &name), libc::EPERM);
    assert_eq!(attach_as(10_000, &name), 0);
    // Made again (as after a crash): replaced, not an error.
    tap::make_persistent(&att, 10_000, 10_000).unwrap();
    tap::delete_persistent(&name).unwrap();
    assert!(!tap::exists(&name), "{name} left after delete");
    tap::delete_persistent(&name).unwrap();
    // Another kind of link of that name is not touched.
    assert!(tap::exists(&bridge.name));
    tap::delete_persistent(&bridge.name).unwrap();
    assert!(tap::exists(&bridge.name), "the bridge was deleted as a tap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jailed_firecracker_vm_gets_its_tap_and_leaves_none() {
    if let Err(why) = can_run() {
        eprintln!("skipped: {why}");
        return;
    }
    let Some(bin) = firecracker_bin() else {
        eprintln!("skipped: no firecracker binary (scripts/test.sh sets IRONCLAW_FIRECRACKER_BIN)");
        return;
    };
    let data = shared().data.clone();
    let (prober, probe) = common::kvm_probe().await;
    let mut fc = FirecrackerBackend::new(Some(bin), prober);
    let Some(jailer) = fc.jailer().cloned() else {
        eprintln!("skipped: no jailer next to firecracker");
        return;
    };
    fc.ignore_probe = !probe.boots;
    let bridge = Bridge::create();
    let att = attachment(&bridge);
    let mut s = spec(&data, "fc-net");
    s.network = Some(att.clone());
    let _guard = TapGuard(att.host_ifname.clone());

    // Watch the tap while the VM lives: who owns it, and on which bridge.
    let watch = {
        let name = att.host_ifname.clone();
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(60);
            while Instant::now() < until {
                if let (Some(owner), Ok(master)) = (
                    sysfs(&name, "owner"),
                    std::fs::read_link(format!("/sys/class/net/{name}/master")),
                ) {
                    return Some((owner, master));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            None
        })
    };
    let jail_log = s
        .dir
        .join("jail/firecracker")
        .join(format!("ironclaw-{}", s.id))
        .join("root/firecracker.log");
    match fc.start(&s).await {
        Ok((running, agent)) => {
            assert!(probe.boots);
            let gw = bridge.gateway;
            let out = agent
                .exec_collect(
                    ExecRequest {
                        argv: vec![
                            "sh".into(),
                            "-c".into(),
                            format!("ifconfig eth0; ping -c 1 -W 5 {gw}"),
                        ],
                        ..Default::default()
                    },
                    None,
                )
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains(&format!("inet addr:{} ", att.address)),
                "{text}"
            );
            assert_eq!(out.status.code, 0, "{text}");
            fc.stop(&s, &running, Some(&agent), Duration::from_secs(10))
                .await
                .unwrap();
        }
        Err(BackendError::Crashed(report)) => {
            assert!(!probe.boots, "{report}");
            assert!(
                report.contains("KVM_EXIT_INTERNAL_ERROR") || report.contains("KVM internal error"),
                "{report}"
            );
            // The VMM took the interface (opening the tap as the jail's
            // user) and went on to start the instance.
            let log = std::fs::read_to_string(&jail_log).unwrap();
            assert!(log.contains("/network-interfaces/eth0"), "{log}");
            assert!(
                log.contains("InstanceStart") && !log.contains("Status code: 400"),
                "{log}"
            );
        }
        Err(e) => panic!("jailed firecracker with a network: {e}"),
    }
    let (owner, master) = watch.join().unwrap().expect("the tap was never seen");
    assert_eq!(owner, jailer.uid.to_string());
    assert!(master.ends_with(&bridge.name), "{master:?}");
    assert!(
        !tap::exists(&att.host_ifname),
        "{} left after the VM",
        att.host_ifname
    );
    fc.destroy(&s).await.unwrap();
    drop(bridge);
}
