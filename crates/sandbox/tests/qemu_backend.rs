//! The qemu backend booting real microVMs (TCG on hosts whose KVM cannot
//! boot guests): the busybox image with the real static guest agent,
//! driven through the Backend trait. Needs root, qemu-system-x86_64, apt
//! (for the kernel) and the static guest (scripts/test.sh builds it);
//! skipped with a reason otherwise.

use std::time::{Duration, Instant};

use ironclaw_proto::{ExecRequest, FileWrite, GuestMsg, HostMsg, PtyOpen, TtySize};
use ironclaw_sandbox::backend::Backend;
use ironclaw_sandbox::qemu::QemuBackend;
use ironclaw_sandbox::{AgentClient, SandboxSpec};
use sha2::{Digest, Sha256};

mod common;
use common::{cgroup_exists, shared, skip_reason, spec};

/// QEMU processes of this sandbox still alive (by the `-name` we give them).
fn qemu_processes(spec: &SandboxSpec) -> Vec<i32> {
    let want = format!("ironclaw-{}", spec.id);
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|&b| b == 0).any(|a| a == want.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

fn sh(cmd: &str) -> ExecRequest {
    ExecRequest {
        argv: vec!["sh".into(), "-c".into(), cmd.into()],
        ..Default::default()
    }
}

async fn write_file(agent: &AgentClient, path: &str, data: &[u8]) {
    let mut s = agent
        .open(HostMsg::FileWrite(FileWrite {
            path: path.into(),
            mode: 0o600,
            parents: true,
            ..Default::default()
        }))
        .await
        .unwrap();
    for chunk in data.chunks(ironclaw_proto::CHUNK) {
        s.send(HostMsg::Data(chunk.to_vec())).await.unwrap();
    }
    s.send(HostMsg::Eof).await.unwrap();
    match s.recv().await.unwrap() {
        GuestMsg::Stat(st) => assert_eq!(st.size, data.len() as u64),
        other => panic!("file write: {other:?}"),
    }
}

async fn read_file(agent: &AgentClient, path: &str) -> Vec<u8> {
    let mut s = agent
        .open(HostMsg::FileRead { path: path.into() })
        .await
        .unwrap();
    let mut out = Vec::new();
    loop {
        match s.recv().await.unwrap() {
            GuestMsg::Data(d) => out.extend_from_slice(&d),
            GuestMsg::Eof => return out,
            other => panic!("file read: {other:?}"),
        }
    }
}

/// Reads PTY output until it contains `needle` (or 30 s pass).
async fn pty_until(s: &mut ironclaw_sandbox::agent::AgentStream, needle: &str) -> String {
    let mut seen = String::new();
    let until = Instant::now() + Duration::from_secs(30);
    while !seen.contains(needle) {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.recv()).await {
            Ok(Ok(GuestMsg::Stdout(d))) => seen.push_str(&String::from_utf8_lossy(&d)),
            Ok(Ok(GuestMsg::Started { .. })) => {}
            Ok(other) => panic!("pty: {other:?} (seen {seen:?})"),
            Err(_) => panic!("pty: no {needle:?} within 30 s; seen {seen:?}"),
        }
    }
    seen
}

#[tokio::test]
async fn qemu_lifecycle_exec_files_pty_persistence() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let sh_data = shared();
    let backend = QemuBackend::for_data_dir(&sh_data.data);
    let avail = backend.availability();
    eprintln!("qemu availability: {}", avail.reason);
    assert!(avail.available, "{}", avail.reason);
    let spec = spec(&sh_data.data, "qvm-1");

    let t = Instant::now();
    let (running, agent) = backend.start(&spec).await.expect("VM boots");
    eprintln!(
        "qemu boot to agent ready: {:.2}s",
        t.elapsed().as_secs_f64()
    );
    let info = agent.info().await.unwrap();
    assert!(info.pid1, "the agent is PID 1 of the VM");
    assert_eq!(info.hostname, "qvm-1");
    assert!(info.kernel.contains("cloud"), "kernel {}", info.kernel);
    assert!(
        info.disk_total_bytes > 200 << 20,
        "disk grown to disk_mib: {}",
        info.disk_total_bytes
    );

    // Exit codes, stdout and stderr apart.
    let out = agent
        .exec_collect(sh("echo out; echo err >&2; exit 3"), None)
        .await
        .unwrap();
    assert_eq!(out.status.code, 3);
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    let out = agent
        .exec_collect(
            ExecRequest {
                argv: vec!["no-such-binary".into()],
                ..Default::default()
            },
            None,
        )
        .await;
    match out {
        Ok(o) => assert_eq!(o.status.code, 127),
        Err(e) => assert!(e.to_string().contains("no-such-binary"), "{e}"),
    }

    // Streamed: output arrives in pieces while the command still runs.
    let mut s = agent
        .open(HostMsg::Exec(sh(
            "for i in 1 2 3; do echo line$i; sleep 0.3; done",
        )))
        .await
        .unwrap();
    let mut pieces = 0;
    let mut text = String::new();
    let code = loop {
        match s.recv().await.unwrap() {
            GuestMsg::Stdout(d) => {
                pieces += 1;
                text.push_str(&String::from_utf8_lossy(&d));
            }
            GuestMsg::Started { .. } => {}
            GuestMsg::Exited(st) => break st.code,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!((code, text.as_str()), (0, "line1\nline2\nline3\n"));
    assert!(pieces >= 2, "output was not streamed ({pieces} piece)");
    drop(s);

    // A few MiB through the serial port, checked on both sides.
    let blob: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let digest = format!("{:x}", Sha256::digest(&blob));
    let t = Instant::now();
    write_file(&agent, "/root/blob", &blob).await;
    let up = t.elapsed().as_secs_f64();
    let t = Instant::now();
    assert_eq!(read_file(&agent, "/root/blob").await, blob);
    let down = t.elapsed().as_secs_f64();
    eprintln!(
        "3 MiB file: upload {:.2} MiB/s, download {:.2} MiB/s",
        3.0 / up,
        3.0 / down
    );
    let out = agent
        .exec_collect(sh("sha256sum /root/blob"), None)
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(&digest),
        "guest sha256 {:?}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A PTY session survives the host connection: drop the client, connect
    // anew through the same chardev socket (the handshake resyncs), reattach.
    let mut pty = agent
        .open(HostMsg::PtyOpen(PtyOpen {
            name: "main".into(),
            argv: vec!["sh".into()],
            size: TtySize { rows: 24, cols: 80 },
            ..Default::default()
        }))
        .await
        .unwrap();
    match pty.recv().await.unwrap() {
        GuestMsg::PtyAttached { created: true, .. } => {}
        other => panic!("{other:?}"),
    }
    pty.send(HostMsg::Stdin(b"echo marker-$((6*7))\n".to_vec()))
        .await
        .unwrap();
    pty_until(&mut pty, "marker-42").await;
    drop(pty);
    drop(agent);
    let t = Instant::now();
    let agent = backend
        .connect(&spec, &running)
        .await
        .expect("a second connection to the chardev socket resyncs");
    eprintln!(
        "reconnect after drop: {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let mut pty = agent
        .open(HostMsg::PtyOpen(PtyOpen {
            name: "main".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    match pty.recv().await.unwrap() {
        GuestMsg::PtyAttached { created: false, .. } => {}
        other => panic!("expected a reattach: {other:?}"),
    }
    pty_until(&mut pty, "marker-42").await;
    pty.send(HostMsg::Stdin(b"echo again-$((7*7))\n".to_vec()))
        .await
        .unwrap();
    pty_until(&mut pty, "again-49").await;
    drop(pty);

    // Stop: the guest syncs and powers off; nothing is left running.
    let t = Instant::now();
    backend
        .stop(&spec, &running, Some(&agent), Duration::from_secs(20))
        .await
        .unwrap();
    eprintln!("stop: {:.2}s", t.elapsed().as_secs_f64());
    drop(agent);
    assert!(qemu_processes(&spec).is_empty(), "QEMU still running");
    assert!(!cgroup_exists(&spec), "cgroup left after stop");
    assert!(spec.dir.join("disk.ext4").exists());
    assert!(backend.disk_used(&spec) > 3 << 20);

    // Start again: the file is still there.
    let t = Instant::now();
    let (running, agent) = backend.start(&spec).await.expect("VM boots again");
    eprintln!(
        "qemu second boot to agent ready: {:.2}s",
        t.elapsed().as_secs_f64()
    );
    let out = agent
        .exec_collect(sh("sha256sum /root/blob"), None)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&digest));
    backend
        .stop(&spec, &running, Some(&agent), Duration::from_secs(20))
        .await
        .unwrap();
    drop(agent);

    backend.destroy(&spec).await.unwrap();
    assert!(!spec.dir.exists(), "sandbox dir left after destroy");
    assert!(qemu_processes(&spec).is_empty());
    assert!(!cgroup_exists(&spec));
}

#[tokio::test]
async fn qemu_stop_without_agent_and_readopt() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let sh_data = shared();
    let backend = QemuBackend::for_data_dir(&sh_data.data);
    // Two vCPUs: the agent runs its multi-thread runtime here (one-vCPU
    // VMs, as in the other tests, get the current-thread one).
    let mut spec = spec(&sh_data.data, "qvm-2");
    spec.resources.vcpus = 2;
    let (running, agent) = backend.start(&spec).await.expect("VM boots");
    // A daemon restart: the old connection is gone, a new backend adopts
    // the VM through its socket.
    drop(agent);
    let backend2 = QemuBackend::for_data_dir(&sh_data.data);
    let agent = backend2.connect(&spec, &running).await.expect("re-adopt");
    let out = agent
        .exec_collect(sh("echo adopted; grep -c ^processor /proc/cpuinfo"), None)
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "adopted\n2\n");
    drop(agent);
    // Stop with no connected agent: the backend connects itself.
    backend2
        .stop(&spec, &running, None, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(qemu_processes(&spec).is_empty());
    assert!(!cgroup_exists(&spec));
    backend2.destroy(&spec).await.unwrap();
    assert!(!spec.dir.exists());
}

#[tokio::test]
async fn qemu_broken_root_disk_fails_fast_with_console_tail() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let sh_data = shared();
    let backend = QemuBackend::for_data_dir(&sh_data.data);
    let spec = spec(&sh_data.data, "qvm-broken");
    backend.prepare(&spec).await.unwrap();
    // Wipe the superblock: the initramfs cannot mount the root disk.
    {
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(spec.dir.join("disk.ext4"))
            .unwrap();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.write_all(&vec![0u8; 1 << 20]).unwrap();
    }
    let t = Instant::now();
    let err = match backend.start(&spec).await {
        Ok(_) => panic!("booted from a wiped disk"),
        Err(e) => e.to_string(),
    };
    eprintln!(
        "broken boot reported after {:.2}s: {err}",
        t.elapsed().as_secs_f64()
    );
    assert!(
        err.contains("ironclaw-initramfs: cannot mount /dev/vda"),
        "{err}"
    );
    // QEMU exited on its own (power off): no retry, no waiting for a deadline.
    assert!(
        err.contains("QEMU exited") && err.contains("attempt 1"),
        "{err}"
    );
    assert!(qemu_processes(&spec).is_empty());
    assert!(!cgroup_exists(&spec));
    backend.destroy(&spec).await.unwrap();
}

/// `Name:\tvalue` from /proc/PID/status.
fn status_field(pid: i32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// QEMU never runs as root: it starts as the unprivileged qemu uid/gid with
/// no groups, no capabilities, no_new_privs and its seccomp filter on, and
/// reaches the sandbox's files only through descriptors the daemon opened
/// (they stay root-owned and private; the data dir here is a 0700 tempdir
/// that uid cannot even enter).
#[tokio::test]
async fn qemu_runs_unprivileged_with_seccomp() {
    use ironclaw_sandbox::qemu::{DEFAULT_QEMU_GID, DEFAULT_QEMU_UID, SECCOMP};
    use std::os::unix::fs::MetadataExt;

    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let sh_data = shared();
    let backend = QemuBackend::for_data_dir(&sh_data.data);
    assert_eq!(backend.user(), (DEFAULT_QEMU_UID, DEFAULT_QEMU_GID));
    assert_eq!(backend.privilege_warning(), None);
    let spec = spec(&sh_data.data, "qvm-unpriv");
    let (running, agent) = backend.start(&spec).await.expect("VM boots");
    let pid = running.pid;
    assert_eq!(qemu_processes(&spec), vec![pid]);

    let uid = DEFAULT_QEMU_UID.to_string();
    let gid = DEFAULT_QEMU_GID.to_string();
    assert_eq!(status_field(pid, "Uid"), [uid.as_str(); 4].join(" "));
    assert_eq!(status_field(pid, "Gid"), [gid.as_str(); 4].join(" "));
    assert_eq!(status_field(pid, "Groups"), "");
    assert_eq!(status_field(pid, "Seccomp"), "2");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(pid, "CapEff"), "0000000000000000");
    assert_eq!(status_field(pid, "CapPrm"), "0000000000000000");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    assert!(
        args.windows(2)
            .any(|w| w[0] == b"-sandbox" && w[1] == SECCOMP.as_bytes()),
        "no -sandbox {SECCOMP} in {:?}",
        String::from_utf8_lossy(&cmdline)
    );
    assert!(
        !args.contains(&&b"-runas"[..]),
        "started as the user, not -runas"
    );

    // The sandbox's files: root's, private, never the qemu uid's.
    for (path, mode) in [
        (spec.dir.clone(), 0o700),
        (spec.dir.join("disk.ext4"), 0o600),
        (spec.console_log(), 0o600),
        (spec.dir.join("agent.sock"), 0o600),
        (spec.dir.join("qmp.sock"), 0o600),
    ] {
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!(m.uid(), 0, "{} owner", path.display());
        assert_eq!(m.mode() & 0o7777, mode, "{} mode", path.display());
    }
    // QEMU holds the disk and the console log as descriptors.
    let held: Vec<std::path::PathBuf> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .collect();
    for want in [spec.dir.join("disk.ext4"), spec.console_log()] {
        assert!(
            held.contains(&want),
            "{} not held: {held:?}",
            want.display()
        );
    }

    // And the VM works: a write reaches the disk through that descriptor.
    let out = agent
        .exec_collect(sh("echo hi > /root/f && sync && cat /root/f"), None)
        .await
        .unwrap();
    assert_eq!(out.stdout, b"hi\n");
    let console = std::fs::read_to_string(spec.console_log()).unwrap();
    assert!(console.contains("ironclaw-guest"), "console log: {console}");

    backend
        .stop(&spec, &running, Some(&agent), Duration::from_secs(20))
        .await
        .unwrap();
    assert!(qemu_processes(&spec).is_empty());
    assert!(!cgroup_exists(&spec));
    backend.destroy(&spec).await.unwrap();
    assert!(!spec.dir.exists());
}

/// Configured as uid 0, QEMU would run as root: doctor's warning says so.
#[test]
fn qemu_as_root_is_warned_about() {
    let t = tempfile::tempdir().unwrap();
    let backend = QemuBackend::for_data_dir(t.path());
    if ironclaw_sandbox::util::which("qemu-system-x86_64").is_none() {
        eprintln!("skipped: no qemu-system-x86_64");
        return;
    }
    assert_eq!(backend.privilege_warning(), None);
    let root = backend.with_user(0, 0);
    let w = root.privilege_warning().expect("a warning");
    assert!(w.starts_with("qemu would run as root"), "{w}");
}

/// Where KVM guests boot, QEMU gets /dev/kvm the same way as its files: the
/// daemon opens it and passes the descriptor (`-accel kvm,device=/dev/fdset/N`),
/// so the unprivileged uid needs no access to /dev/kvm (0600 root here).
/// KVM guests cannot boot on these hosts, so this starts QEMU paused (-S)
/// through the same spawn path and checks KVM initialised under that uid.
#[tokio::test]
async fn unprivileged_qemu_opens_kvm_through_a_descriptor() {
    use ironclaw_sandbox::process::{self, Credentials, Launch};
    use ironclaw_sandbox::qemu::{DEFAULT_QEMU_GID, DEFAULT_QEMU_UID, SECCOMP};
    use std::os::fd::AsRawFd;

    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let Ok(kvm) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    else {
        eprintln!("skipped: no usable /dev/kvm");
        return;
    };
    let qemu = ironclaw_sandbox::util::which("qemu-system-x86_64").unwrap();
    let help = std::process::Command::new(&qemu)
        .arg("-help")
        .output()
        .unwrap();
    if !String::from_utf8_lossy(&help.stdout).contains("device=path") {
        eprintln!(
            "skipped: this QEMU has no -accel kvm,device= (it opens /dev/kvm through its group)"
        );
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let log = t.path().join("qemu.log");
    let id = format!("kvmfd{:06x}", rand::random::<u32>() & 0xff_ffff);
    let cg = ironclaw_sandbox::cgroup::Cgroup::fresh(&id, &Default::default())
        .await
        .unwrap();
    let fd = kvm.as_raw_fd();
    let mut cmd = std::process::Command::new(&qemu);
    cmd.args(["-M", "microvm,acpi=on", "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-S", "-sandbox", SECCOMP])
        .arg("-add-fd")
        .arg(format!("fd={fd},set=1"))
        .args(["-accel", "kvm,device=/dev/fdset/1", "-m", "64M"])
        .current_dir("/");
    let launch = Launch {
        user: Some(Credentials {
            uid: DEFAULT_QEMU_UID,
            gid: DEFAULT_QEMU_GID,
            groups: Vec::new(),
        }),
        inherit: vec![fd],
    };
    let pid = process::spawn_sandbox_process_as(
        &mut cmd,
        &cg,
        &log,
        nix::sched::CloneFlags::empty(),
        &launch,
    )
    .unwrap() as i32;
    drop(kvm);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let alive = process::start_time(pid).is_some()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s[s.rfind(')').unwrap() + 2..].starts_with('Z'));
    let held_kvm = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .any(|p| p == std::path::Path::new("/dev/kvm"))
        })
        .unwrap_or(false);
    let uid = alive.then(|| status_field(pid, "Uid"));
    let seccomp = alive.then(|| status_field(pid, "Seccomp"));
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = tokio::time::timeout(Duration::from_secs(5), process::wait_exit(pid)).await;
    cg.destroy().await.unwrap();
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(alive, "QEMU exited: {out}");
    assert!(held_kvm, "QEMU does not hold /dev/kvm: {out}");
    assert_eq!(uid.as_deref(), Some("10001 10001 10001 10001"));
    assert_eq!(seccomp.as_deref(), Some("2"));
}
