//! `ns-init` end to end: a busybox root filesystem in fresh namespaces, as
//! the namespace backend starts it. Needs root and a static busybox
//! (`apt-get install busybox-static`); skipped with a reason otherwise.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{argv, guest, wait_ready, Client};
use ironclaw_proto::{ExecRequest, GuestMsg, HostMsg, TtySize};

const BUSYBOX: &str = "/bin/busybox";
/// Root inside the test sandbox is this host uid/gid (a block no real
/// sandbox of a test daemon uses: the store hands out low slots first).
const UID_BASE: u32 = (1 << 30) + 40_000 * 65_536;

fn skip_reason() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root");
    }
    if !Path::new(BUSYBOX).exists() {
        return Some("needs /bin/busybox (apt-get install busybox-static)");
    }
    None
}

/// Killing the shim takes the whole sandbox down (PID 1 has
/// PR_SET_PDEATHSIG), so a failing test leaves nothing running.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Host processes whose command line is exactly `argv`.
fn host_processes(argv: &[&str]) -> usize {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want))
        .count()
}

/// A running namespace sandbox over a busybox root filesystem.
struct Sandbox {
    // First, so the sandbox is gone before its directories are removed.
    shim: KillOnDrop,
    upper: PathBuf,
    merged: PathBuf,
    agent_dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Sandbox {
    fn start() -> Sandbox {
        let tmp = tempfile::tempdir().unwrap();
        let d = |p: &str| {
            let p = tmp.path().join(p);
            std::fs::create_dir_all(&p).unwrap();
            p
        };
        let (lower, upper, work, merged, agent_dir) =
            (d("lower"), d("upper"), d("work"), d("merged"), d("agent"));
        for dir in ["bin", "root", "tmp", "etc", "proc", "sys", "dev", "run"] {
            std::fs::create_dir_all(lower.join(dir)).unwrap();
        }
        std::fs::copy(BUSYBOX, lower.join("bin/busybox")).unwrap();
        // The sandbox's root owns its writable layer, as the daemon's disk
        // setup arranges.
        std::os::unix::fs::chown(&upper, Some(UID_BASE), Some(UID_BASE)).unwrap();
        // Relative links: `busybox --install` would point at the host's path.
        let applets = Command::new(BUSYBOX).arg("--list").output().unwrap();
        for applet in String::from_utf8(applets.stdout)
            .unwrap()
            .lines()
            .filter(|a| *a != "busybox")
        {
            std::os::unix::fs::symlink("busybox", lower.join("bin").join(applet)).unwrap();
        }

        let mut cmd = Command::new(guest());
        cmd.arg("ns-init")
            .args(["--lower".as_ref(), lower.as_os_str()])
            .args(["--upper".as_ref(), upper.as_os_str()])
            .args(["--work".as_ref(), work.as_os_str()])
            .args(["--merged".as_ref(), merged.as_os_str()])
            .args(["--agent-dir".as_ref(), agent_dir.as_os_str()])
            .args(["--uid-base", &UID_BASE.to_string()])
            .args(["--hostname", "sbx-test"])
            .stdout(Stdio::piped());
        // SAFETY: unshare is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                let flags = libc::CLONE_NEWNS
                    | libc::CLONE_NEWUTS
                    | libc::CLONE_NEWIPC
                    | libc::CLONE_NEWNET
                    | libc::CLONE_NEWCGROUP
                    | libc::CLONE_NEWPID;
                if libc::unshare(flags) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut shim = KillOnDrop(Some(cmd.spawn().unwrap()));
        wait_ready(shim.0.as_mut().unwrap());
        Sandbox {
            _tmp: tmp,
            upper,
            merged,
            agent_dir,
            shim,
        }
    }
}

#[tokio::test]
async fn ns_init_runs_a_sandbox_and_shuts_it_down() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping ns-init test: {why}");
        return;
    }
    let sbx = Sandbox::start();
    let (upper, merged) = (sbx.upper.clone(), sbx.merged.clone());
    let mut shim = sbx.shim;
    let c = Client::connect(&sbx.agent_dir.join("agent.sock")).await;

    let out = c.exec(&["hostname"]).await;
    assert_eq!(
        (out.stdout().as_str(), out.code()),
        ("sbx-test\n", 0),
        "{out:?}"
    );

    let out = c.exec(&["ps"]).await;
    let text = out.stdout();
    let pid1 = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some("1"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        pid1.contains("ironclaw-guest") && pid1.contains("ns-init"),
        "pid 1 is not the guest: {text}"
    );

    // The root is the overlay; the host's filesystem is out of sight.
    let out = c.exec(&["sh", "-c", "pwd; ls /; ls /.oldroot 2>&1; echo x > /dev/null && echo devnull-ok; cat /sys/class/net/lo/flags"]).await;
    let text = out.stdout();
    assert!(text.starts_with("/root\n"), "{text}");
    assert!(
        !text.contains("oldroot\n") && text.contains("devnull-ok"),
        "{text}"
    );
    let flags = text
        .lines()
        .last()
        .and_then(|l| i64::from_str_radix(l.trim_start_matches("0x"), 16).ok())
        .unwrap();
    assert_eq!(
        flags & libc::IFF_UP as i64,
        libc::IFF_UP as i64,
        "lo is down"
    );

    // Terminals work on the sandbox's own devpts.
    let req = ExecRequest {
        argv: argv(&["tty"]),
        tty: Some(TtySize { rows: 10, cols: 40 }),
        ..Default::default()
    };
    let out = c.exec_req(req).await;
    assert!(out.stdout().starts_with("/dev/pts/0"), "{out:?}");

    // Files written inside land in the upper layer.
    let GuestMsg::Stat(_) = ({
        let mut s = c
            .open(HostMsg::FileWrite(ironclaw_proto::FileWrite {
                path: "note.txt".into(),
                mode: 0o644,
                parents: false,
                user: None,
            }))
            .await;
        s.send(HostMsg::Data(b"inside".to_vec())).await;
        s.send(HostMsg::Eof).await;
        s.next().await
    }) else {
        panic!("upload failed")
    };
    let note = upper.join("root/note.txt");
    assert_eq!(std::fs::read(&note).unwrap(), b"inside");
    // Written by root inside, owned by the sandbox's block on the host.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&note).unwrap().uid(), UID_BASE);

    // Root inside is unprivileged on the host: Docker's capabilities in
    // its own user namespace, no_new_privs and the seccomp filter.
    let out = c
        .exec(&["sh", "-c", "cat /proc/self/uid_map; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; stat -c %u /bin/busybox"])
        .await;
    let text = out.stdout();
    let map: Vec<&str> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        map,
        ["0", &UID_BASE.to_string(), "65536"],
        "uid map: {text}"
    );
    assert!(text.contains("CapEff:\t00000000a80425fb"), "{text}");
    assert!(
        text.contains("NoNewPrivs:\t1") && text.contains("Seccomp:\t2"),
        "{text}"
    );
    assert!(
        text.trim_end().ends_with("\n0"),
        "image files are root's inside: {text}"
    );

    // The agent is shielded from the OOM killer, its commands are not.
    let out = c
        .exec(&["cat", "/proc/1/oom_score_adj", "/proc/self/oom_score_adj"])
        .await;
    // Lowering a score needs CAP_SYS_RESOURCE, which some hosts (these CI
    // machines) withhold even from root.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    // CAP_SYS_RESOURCE is capability 24.
    if cap_eff & (1 << 24) != 0 {
        assert_eq!(out.stdout(), "-999\n0\n", "{out:?}");
    } else {
        eprintln!("this host withholds CAP_SYS_RESOURCE: the agent cannot be shielded from the OOM killer here");
        assert_eq!(out.stdout(), "0\n0\n", "{out:?}");
    }

    let GuestMsg::Info(info) = c.call(HostMsg::Info).await else {
        panic!()
    };
    assert!(info.pid1);
    assert_eq!(info.hostname, "sbx-test");

    // A background process, orphaned to PID 1, must not survive shutdown.
    let out = c.exec(&["sh", "-c", "sleep 987 >/dev/null 2>&1 &"]).await;
    assert_eq!(out.code(), 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(host_processes(&["sleep", "987"]), 1);

    let t0 = Instant::now();
    assert_eq!(c.call(HostMsg::Shutdown).await, GuestMsg::Ok);
    let mut child = shim.0.take().unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "shim exited with {status:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        t0.elapsed()
    );
    assert_eq!(
        host_processes(&["sleep", "987"]),
        0,
        "a sandbox process survived shutdown"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(merged.to_str().unwrap()),
        "sandbox mounts leaked to the host"
    );
}

/// Upload `data` to `path` as `user`; the guest's final answer.
async fn upload(c: &Client, path: &str, user: Option<&str>, data: &[u8]) -> GuestMsg {
    let mut s = c
        .open(HostMsg::FileWrite(ironclaw_proto::FileWrite {
            path: path.into(),
            mode: 0o644,
            parents: true,
            user: user.map(Into::into),
        }))
        .await;
    s.send(HostMsg::Data(data.to_vec())).await;
    s.send(HostMsg::Eof).await;
    s.next().await
}

fn as_user(user: &str, script: &str) -> ExecRequest {
    ExecRequest {
        argv: argv(&["sh", "-c", script]),
        user: Some(user.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn commands_and_files_run_as_a_user_of_the_sandboxs_own_passwd() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping ns-init users test: {why}");
        return;
    }
    let sbx = Sandbox::start();
    let c = Client::connect(&sbx.agent_dir.join("agent.sock")).await;
    // The sandbox's own account files (the host's have no such users).
    let passwd = "root:x:0:0:root:/root:/bin/sh\n\
                  user:x:1000:1000::/home/user:/bin/sh\n\
                  nohome:x:1500:1500::/nonexistent:/bin/sh\n";
    let group = "root:x:0:\nuser:x:1000:\nwheel:x:10:other,user\n";
    for (path, text) in [("/etc/passwd", passwd), ("/etc/group", group)] {
        assert!(matches!(
            upload(&c, path, None, text.as_bytes()).await,
            GuestMsg::Stat(_)
        ));
    }
    let made = c
        .call(HostMsg::Mkdir {
            path: "/home/user".into(),
            parents: true,
            mode: 0o750,
            user: Some("user".into()),
        })
        .await;
    assert_eq!(made, GuestMsg::Ok);

    // ids, groups from /etc/group, the user's environment and home, and
    // no capabilities left.
    let out = c
        .exec_req(as_user(
            "user",
            "id -u; id -g; id -G; echo $HOME $USER $LOGNAME; pwd; grep -E 'Cap(Inh|Prm|Eff|Amb)' /proc/self/status",
        ))
        .await;
    let none = "0000000000000000";
    assert_eq!(
        (out.stdout(), out.code()),
        (
            format!("1000\n1000\n1000 10\n/home/user user user\n/home/user\nCapInh:\t{none}\nCapPrm:\t{none}\nCapEff:\t{none}\nCapAmb:\t{none}\n"),
            0
        ),
        "{out:?}"
    );
    // A uid works as well as a name; root is still root by default.
    let out = c
        .exec_req(as_user("1000", "id -un; stat -c %U:%G /home/user"))
        .await;
    assert_eq!(out.stdout(), "user\nuser:user\n", "{out:?}");
    let out = c.exec(&["sh", "-c", "id -u; echo $HOME"]).await;
    assert_eq!(out.stdout(), "0\n/root\n", "{out:?}");
    // A home that does not exist: the command starts in /.
    let out = c.exec_req(as_user("nohome", "pwd; echo $HOME")).await;
    assert_eq!(out.stdout(), "/\n/nonexistent\n", "{out:?}");
    // As the user, root's files are out of reach and root is not to be had.
    let secret = HostMsg::Mkdir {
        path: "/secret".into(),
        parents: false,
        mode: 0o700,
        user: None,
    };
    assert_eq!(c.call(secret).await, GuestMsg::Ok);
    let out = c
        .exec_req(as_user(
            "user",
            "ls /secret >/dev/null 2>&1 || echo denied; su -c id root </dev/null >/dev/null 2>&1 || echo no-su",
        ))
        .await;
    assert_eq!(out.stdout(), "denied\nno-su\n", "{out:?}");

    // An unknown user is refused before anything runs.
    let GuestMsg::Error { kind, message } = c
        .open(HostMsg::Exec(as_user("nobody-here", "touch /tmp/ran")))
        .await
        .next()
        .await
    else {
        panic!("an unknown user ran")
    };
    assert_eq!(kind, ironclaw_proto::ErrorKind::InvalidInput);
    assert_eq!(message, "no user nobody-here in the sandbox's /etc/passwd");
    assert_eq!(c.exec(&["ls", "/tmp/ran"]).await.code(), 1);

    // On a terminal too.
    let req = ExecRequest {
        tty: Some(TtySize { rows: 10, cols: 40 }),
        ..as_user("user", "id -un; stat -c %u $(tty); echo reopened > $(tty)")
    };
    assert_eq!(
        c.exec_req(req).await.stdout(),
        "user\r\n1000\r\nreopened\r\n"
    );

    // A write as the user lands in its home (a relative path), owned by
    // it, the directories made for it too; root's are root's.
    let GuestMsg::Stat(st) = upload(&c, "notes/a.txt", Some("user"), b"mine").await else {
        panic!("upload as user failed")
    };
    assert_eq!(st.path, "/home/user/notes/a.txt");
    let out = c
        .exec(&[
            "stat",
            "-c",
            "%u:%g",
            "/home/user/notes",
            "/home/user/notes/a.txt",
            "/etc/passwd",
        ])
        .await;
    assert_eq!(out.stdout(), "1000:1000\n1000:1000\n0:0\n", "{out:?}");
    // On the host, the file belongs to the sandbox's uid 1000.
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(sbx.upper.join("home/user/notes/a.txt")).unwrap();
    assert_eq!((m.uid(), m.gid()), (UID_BASE + 1000, UID_BASE + 1000));
    let GuestMsg::Error { message, .. } = upload(&c, "/tmp/x", Some("ghost"), b"x").await else {
        panic!("a write for an unknown user succeeded")
    };
    assert_eq!(message, "no user ghost in the sandbox's /etc/passwd");
    assert_eq!(c.exec(&["ls", "/tmp/x"]).await.code(), 1);
}

#[tokio::test]
async fn ns_init_setup_errors_are_reported() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping ns-init test: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let mut cmd = Command::new(guest());
    cmd.arg("ns-init");
    for flag in ["--lower", "--upper", "--work", "--merged", "--agent-dir"] {
        cmd.arg(flag).arg(&missing);
    }
    cmd.args(["--hostname", "x", "--uid-base", &UID_BASE.to_string()]);
    // SAFETY: unshare is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWPID) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("idmapped mount of"), "{stderr}");
}

#[tokio::test]
async fn sigterm_to_the_shim_shuts_the_sandbox_down() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping ns-init test: {why}");
        return;
    }
    let mut sbx = Sandbox::start();
    let c = Client::connect(&sbx.agent_dir.join("agent.sock")).await;
    let out = c.exec(&["sh", "-c", "sleep 986 >/dev/null 2>&1 &"]).await;
    assert_eq!(out.code(), 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(host_processes(&["sleep", "986"]), 1);
    let mut child = sbx.shim.0.take().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "shim exited with {status:?}");
    assert_eq!(
        host_processes(&["sleep", "986"]),
        0,
        "a sandbox process survived SIGTERM"
    );
}

/// Host pids of `sleep N` processes.
fn sleepers(n: u32) -> Vec<i32> {
    let want = format!("sleep\0{n}\0").into_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want))
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// PID 1's parent-death signal must survive its switch to the sandbox's
/// user namespace (the kernel clears it on any change of effective or
/// filesystem ids): killing the shim outright takes the sandbox with it.
#[tokio::test]
async fn sigkill_to_the_shim_takes_the_sandbox_down() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping ns-init test: {why}");
        return;
    }
    let mut sbx = Sandbox::start();
    let c = Client::connect(&sbx.agent_dir.join("agent.sock")).await;
    let out = c.exec(&["sh", "-c", "sleep 985 >/dev/null 2>&1 &"]).await;
    assert_eq!(out.code(), 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(host_processes(&["sleep", "985"]), 1);
    let mut child = sbx.shim.0.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sleepers(985).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = sleepers(985);
    // Do not leave it running: kill the sandbox's init (the sleeper's
    // parent) by its pid.
    for pid in &left {
        if let Some(ppid) = parent_of(*pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(ppid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    assert!(left.is_empty(), "the sandbox outlived its shim");
}
