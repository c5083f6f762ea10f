//! VM-init mode without a VM: the agent as PID 1 of fresh pid, mount, uts
//! and net namespaces, chrooted into a busybox root, started without
//! arguments as a kernel starts init. It mounts the API filesystems, reaps
//! orphans and "powers off" (in a pid namespace, reboot(RB_POWER_OFF) ends
//! the namespace's init with SIGINT). Needs root, util-linux `unshare` and
//! a static busybox; skipped with a reason otherwise.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{argv, guest, wait_ready, Client};
use ironclaw_proto::{ExecRequest, GuestMsg, HostMsg, TtySize};

const BUSYBOX: &str = "/bin/busybox";

fn skip_reason() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root");
    }
    if !Path::new(BUSYBOX).exists() {
        return Some("needs /bin/busybox (apt-get install busybox-static)");
    }
    if Command::new("unshare").arg("--version").output().is_err() {
        return Some("needs util-linux unshare");
    }
    None
}

/// Copy `file` to the same absolute path under `root`.
fn copy_in(root: &Path, file: &Path) {
    let dst = root.join(file.strip_prefix("/").unwrap());
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(file, &dst).unwrap();
}

/// A root filesystem with busybox, the agent as /sbin/ironclaw-guest and,
/// when the agent is dynamically linked (a debug build), its libraries.
fn rootfs(root: &Path) {
    for dir in [
        "bin", "sbin", "root", "proc", "sys", "dev", "run", "tmp", "etc",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    let applets = Command::new(BUSYBOX).arg("--list").output().unwrap();
    for applet in String::from_utf8(applets.stdout)
        .unwrap()
        .lines()
        .filter(|a| *a != "busybox")
    {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::copy(guest(), root.join("sbin/ironclaw-guest")).unwrap();
    let ldd = Command::new("ldd")
        .arg(guest())
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    for word in String::from_utf8_lossy(&ldd).split_whitespace() {
        if word.starts_with('/') && Path::new(word).exists() {
            copy_in(root, Path::new(word));
        }
    }
}

/// Kills the whole namespace (through its init) if the test fails.
struct Vm {
    unshare: std::process::Child,
    init_pid: i32,
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.unshare.try_wait() {
            // SAFETY: plain syscalls on processes this test started.
            unsafe { libc::kill(self.init_pid, libc::SIGKILL) };
            let _ = self.unshare.kill();
            let _ = self.unshare.wait();
        }
    }
}

#[tokio::test]
async fn vm_init_as_pid_1() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping vm-init test: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    rootfs(&root);
    let mut unshare = Command::new("unshare")
        .args([
            "--pid", "--fork", "--mount", "--uts", "--net", "--ipc", "chroot",
        ])
        .arg(&root)
        .arg("/sbin/ironclaw-guest")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(&mut unshare);
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.id())).unwrap();
    let init_pid: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    let vm = Vm { unshare, init_pid };
    // The socket lives on the VM's own /run tmpfs; reach it through the
    // init's root.
    let sock = PathBuf::from(format!("/proc/{init_pid}/root/run/ironclaw/agent.sock"));
    let c = Client::connect(&sock).await;

    let GuestMsg::Info(info) = c.call(HostMsg::Info).await else {
        panic!()
    };
    assert!(info.pid1);

    let out = c.exec(&["cat", "/proc/mounts"]).await;
    let mounts = out.stdout();
    for (fs, at) in [
        ("proc", "/proc"),
        ("sysfs", "/sys"),
        ("devtmpfs", "/dev"),
        ("devpts", "/dev/pts"),
        ("tmpfs", "/dev/shm"),
        ("tmpfs", "/run"),
        ("tmpfs", "/tmp"),
    ] {
        assert!(
            mounts
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(at)
                    && l.split_whitespace().nth(2) == Some(fs)),
            "{fs} on {at} missing:\n{mounts}"
        );
    }
    let req = ExecRequest {
        argv: argv(&["tty"]),
        tty: Some(TtySize { rows: 10, cols: 40 }),
        ..Default::default()
    };
    let out = c.exec_req(req).await;
    assert!(out.stdout().starts_with("/dev/pts/"), "{out:?}");

    // An orphan (its shell exits first) is reparented to PID 1, which must
    // reap it: no zombie may remain.
    let out = c
        .exec(&["sh", "-c", "sleep 0.2 >/dev/null 2>&1 & exit 0"])
        .await;
    assert_eq!(out.code(), 0);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let out = c.exec(&["sh", "-c", "cat /proc/[0-9]*/stat"]).await;
    let zombies: Vec<&str> = out
        .stdout
        .split(|b| *b == b'\n')
        .filter_map(|l| std::str::from_utf8(l).ok())
        .filter(|l| {
            l.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .collect();
    assert!(zombies.is_empty(), "unreaped: {zombies:?}");

    let t0 = Instant::now();
    assert_eq!(c.call(HostMsg::Shutdown).await, GuestMsg::Ok);
    let mut vm = vm;
    let status = loop {
        if let Some(st) = vm.unshare.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the VM init did not power off"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Power off in a pid namespace = the namespace's init dies of SIGINT;
    // unshare passes that on.
    assert!(
        status.signal() == Some(libc::SIGINT) || status.code() == Some(128 + libc::SIGINT),
        "{status:?}"
    );
}
