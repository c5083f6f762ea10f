//! Protocol robustness (issue 8): every failed request ends its stream
//! with a message, replies and requests bigger than a frame neither drop
//! the connection nor get lost. Every step has a deadline (`Stream::next`
//! gives up after `common::STEP`), so a hang fails the test.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{argv, Client, Guest};
use ironclaw_proto::{
    ErrorKind, ExecRequest, GuestMsg, HostMsg, PtyOpen, TtySize, CHUNK, MAX_ERROR, MAX_MESSAGE,
};

/// Read a stream to its final message: (stderr, final message).
async fn finish(c: &Client, req: HostMsg) -> (String, GuestMsg) {
    let mut s = c.open(req).await;
    let mut stderr = Vec::new();
    loop {
        match s.next().await {
            GuestMsg::Started { .. } | GuestMsg::Stdout(_) | GuestMsg::PtyAttached { .. } => {}
            GuestMsg::Stderr(b) => stderr.extend(b),
            m if m.is_final() => return (String::from_utf8_lossy(&stderr).into_owned(), m),
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn exec(argv_: Vec<String>) -> ExecRequest {
    ExecRequest {
        argv: argv_,
        ..Default::default()
    }
}

#[track_caller]
fn assert_error(m: &GuestMsg, want: ErrorKind) {
    match m {
        GuestMsg::Error { kind, message } => {
            assert_eq!(*kind, want, "{message}");
            assert!(message.len() <= MAX_ERROR, "{} bytes", message.len());
        }
        other => panic!("expected a {want:?} error, got {other:?}"),
    }
}

async fn alive(c: &Client) {
    assert_eq!(c.call(HostMsg::Ping).await, GuestMsg::Pong);
    let out = c.exec(&["echo", "still here"]).await;
    assert_eq!(out.stdout(), "still here\n");
}

#[tokio::test]
async fn exec_setup_failures_end_their_stream() {
    let g = Guest::start();
    let c = g.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "#!/bin/sh\necho no\n").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();

    for tty in [None, Some(TtySize::default())] {
        let with = |mut r: ExecRequest| {
            r.tty = tty;
            HostMsg::Exec(r)
        };
        let cases: Vec<(&str, ExecRequest, ErrorKind)> = vec![
            (
                "missing cwd",
                ExecRequest {
                    cwd: Some("/no/such/dir".into()),
                    ..exec(argv(&["true"]))
                },
                ErrorKind::NotFound,
            ),
            (
                "cwd is a file",
                ExecRequest {
                    cwd: Some("/etc/hostname".into()),
                    ..exec(argv(&["true"]))
                },
                ErrorKind::NotADirectory,
            ),
            ("empty argv", exec(vec![]), ErrorKind::InvalidInput),
            (
                "NUL in argv",
                exec(vec!["echo".into(), "a\0b".into()]),
                ErrorKind::InvalidInput,
            ),
            (
                "'=' in an env name",
                ExecRequest {
                    env: vec![("A=B".into(), "c".into())],
                    ..exec(argv(&["true"]))
                },
                ErrorKind::InvalidInput,
            ),
            (
                "empty env name",
                ExecRequest {
                    env: vec![("".into(), "c".into())],
                    ..exec(argv(&["true"]))
                },
                ErrorKind::InvalidInput,
            ),
            (
                "NUL in an env value",
                ExecRequest {
                    env: vec![("A".into(), "b\0c".into())],
                    ..exec(argv(&["true"]))
                },
                ErrorKind::InvalidInput,
            ),
            (
                // Beyond Linux's 128 KiB per argument: execve says E2BIG.
                "an argument of 200 KiB",
                exec(vec!["echo".into(), "x".repeat(200 * 1024)]),
                ErrorKind::InvalidInput,
            ),
        ];
        for (what, req, kind) in cases {
            let (_, m) = finish(&c, with(req)).await;
            println!("{what} (tty {tty:?}): {m:?}");
            assert_error(&m, kind);
        }
        // Failures that are the command's: the shell's exit codes.
        let (stderr, m) = finish(&c, with(exec(argv(&["no-such-command-ic"])))).await;
        assert!(matches!(m, GuestMsg::Exited(s) if s.code == 127), "{m:?}");
        assert!(stderr.contains("command not found"), "{stderr}");
        let (_, m) = finish(&c, with(exec(vec![plain.display().to_string()]))).await;
        assert!(matches!(m, GuestMsg::Exited(s) if s.code == 126), "{m:?}");
        // A huge missing command name: the message is bounded.
        let (stderr, m) = finish(&c, with(exec(vec!["n".repeat(100_000)]))).await;
        assert!(
            matches!(m, GuestMsg::Exited(_) | GuestMsg::Error { .. }),
            "{m:?}"
        );
        assert!(stderr.len() <= MAX_ERROR, "{}", stderr.len());
    }

    // PTY sessions fail the same way.
    let pty = |name: &str, cwd: Option<&str>| {
        HostMsg::PtyOpen(PtyOpen {
            name: name.into(),
            argv: argv(&["sh"]),
            cwd: cwd.map(Into::into),
            ..Default::default()
        })
    };
    assert_error(
        &finish(&c, pty("bad", Some("/no/such"))).await.1,
        ErrorKind::NotFound,
    );
    assert_error(&finish(&c, pty("", None)).await.1, ErrorKind::InvalidInput);
    assert_error(
        &finish(&c, pty(&"n".repeat(1000), None)).await.1,
        ErrorKind::InvalidInput,
    );
    alive(&c).await;
}

/// The guest's lowest free descriptor number: with RLIMIT_NOFILE set to it
/// the next open, pipe or PTY fails with EMFILE.
fn lowest_free_fd(pid: i32) -> u64 {
    let used: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !used.contains(n)).unwrap()
}

fn set_nofile(pid: i32, soft: u64) -> u64 {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscall; `old` is written by the kernel.
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: unsafe {
            let mut cur = std::mem::zeroed::<libc::rlimit>();
            libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut cur);
            cur.rlim_max
        },
    };
    // SAFETY: as above.
    let r = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, &mut old) };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    old.rlim_cur
}

#[tokio::test]
async fn descriptor_and_process_exhaustion_end_with_an_error() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (prlimit on the agent, pids cgroup)");
        return;
    }
    let g = Guest::start();
    let c = g.connect().await;
    let pid = g.child.id() as i32;

    // No descriptors left: pipes and PTYs cannot be made.
    let old = set_nofile(pid, lowest_free_fd(pid));
    let (_, m) = finish(&c, HostMsg::Exec(exec(argv(&["true"])))).await;
    assert_error(&m, ErrorKind::ResourceExhausted);
    let (_, m) = finish(
        &c,
        HostMsg::Exec(ExecRequest {
            tty: Some(TtySize::default()),
            ..exec(argv(&["true"]))
        }),
    )
    .await;
    assert_error(&m, ErrorKind::ResourceExhausted);
    let (_, m) = finish(
        &c,
        HostMsg::PtyOpen(PtyOpen {
            name: "nofd".into(),
            argv: argv(&["sh"]),
            ..Default::default()
        }),
    )
    .await;
    assert_error(&m, ErrorKind::ResourceExhausted);
    set_nofile(pid, old);
    alive(&c).await;

    // No processes left: fork fails (EAGAIN) in a pids cgroup at its limit.
    let root = std::path::Path::new("/sys/fs/cgroup/pids");
    if !root.join("cgroup.procs").exists() {
        eprintln!("fork failure not tested: no cgroup v1 pids controller here");
        return;
    }
    let cg = root.join(format!("ironclaw-robustness-{}", std::process::id()));
    std::fs::create_dir(&cg).unwrap();
    std::fs::write(cg.join("cgroup.procs"), pid.to_string()).unwrap();
    let current = std::fs::read_to_string(cg.join("pids.current")).unwrap();
    std::fs::write(cg.join("pids.max"), current.trim()).unwrap();
    let (_, m) = finish(&c, HostMsg::Exec(exec(argv(&["true"])))).await;
    let (_, m2) = finish(
        &c,
        HostMsg::Exec(ExecRequest {
            tty: Some(TtySize::default()),
            ..exec(argv(&["true"]))
        }),
    )
    .await;
    std::fs::write(root.join("cgroup.procs"), pid.to_string()).unwrap();
    std::fs::remove_dir(&cg).unwrap();
    assert_error(&m, ErrorKind::ResourceExhausted);
    assert_error(&m2, ErrorKind::ResourceExhausted);
    alive(&c).await;
}

#[tokio::test]
async fn big_replies_and_requests_keep_the_connection() {
    let g = Guest::start();
    let c = g.connect().await;

    // A directory of 100,000 files: more than a frame of entries.
    let dir = tempfile::tempdir().unwrap();
    let n = 100_000;
    for i in 0..n {
        std::fs::File::create(dir.path().join(format!("file-with-a-longish-name-{i:06}"))).unwrap();
    }
    let t = std::time::Instant::now();
    let entries = c.list(&dir.path().display().to_string()).await.unwrap();
    println!("listed {} entries in {:?}", entries.len(), t.elapsed());
    assert_eq!(entries.len(), n);
    assert!(entries
        .iter()
        .enumerate()
        .all(|(i, e)| e.name == format!("file-with-a-longish-name-{i:06}")));
    drop(dir);

    // 1 MiB of argv in 8,192 arguments: more than a frame, within ARG_MAX.
    let mut big = argv(&["sh", "-c", "echo $#; printf %s \"$@\" | wc -c", "sh"]);
    big.extend((0..8192).map(|i| format!("{i:0128}")));
    let out = c.exec_req(exec(big)).await;
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert_eq!(out.stdout(), format!("8192\n{}\n", 8192 * 128));

    // 3 MiB of argv: within the protocol, beyond Linux's limit: E2BIG.
    let mut huge = argv(&["true"]);
    huge.extend((0..24 * 1024).map(|i| format!("{i:0128}")));
    let (_, m) = finish(&c, HostMsg::Exec(exec(huge))).await;
    assert_error(&m, ErrorKind::InvalidInput);

    // Beyond the protocol's limit (a host that ignores it): refused.
    let pieces: Vec<HostMsg> = (0..MAX_MESSAGE / CHUNK + 2)
        .map(|i| HostMsg::Fragment {
            last: i == MAX_MESSAGE / CHUNK + 1,
            bytes: vec![0; CHUNK],
        })
        .collect();
    let m = c.open_raw(pieces).await.next().await;
    assert_error(&m, ErrorKind::InvalidInput);

    // A 20 MiB line of output.
    let len = 20 * 1024 * 1024;
    let mut s = c
        .open(HostMsg::Exec(exec(argv(&[
            "sh",
            "-c",
            &format!("head -c {len} /dev/zero | tr '\\0' a"),
        ]))))
        .await;
    let mut got = 0usize;
    loop {
        match s.next().await {
            GuestMsg::Started { .. } => {}
            GuestMsg::Stdout(b) => {
                assert!(b.len() <= CHUNK && b.iter().all(|&x| x == b'a'));
                got += b.len();
            }
            GuestMsg::Exited(st) => {
                assert_eq!(st.code, 0);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, len);

    // Error messages that would echo a huge request are bounded.
    let long = format!("/{}", "p".repeat(900 * 1024));
    for req in [
        HostMsg::Stat { path: long.clone() },
        HostMsg::List { path: long.clone() },
        HostMsg::FileRead { path: long.clone() },
        HostMsg::Mkdir {
            path: long.clone(),
            parents: true,
            mode: 0o755,
            user: None,
        },
        HostMsg::Exec(ExecRequest {
            cwd: Some(long.clone()),
            ..exec(argv(&["true"]))
        }),
    ] {
        let (_, m) = finish(&c, req).await;
        assert!(matches!(m, GuestMsg::Error { .. }), "{m:?}");
        assert_error(&m, ErrorKind::InvalidInput);
    }
    // Info, PTY listings and the like stay small.
    assert!(matches!(c.call(HostMsg::Info).await, GuestMsg::Info(_)));
    assert!(matches!(
        c.call(HostMsg::PtyList).await,
        GuestMsg::PtySessions(_)
    ));
    tokio::time::sleep(Duration::from_millis(10)).await;
    alive(&c).await;
}
