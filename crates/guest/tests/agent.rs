//! The agent in `serve` mode, driven over its socket like the host would.

mod common;

use std::time::{Duration, Instant};

use common::{alive, argv, wait_gone, Guest};
use ironclaw_proto::{
    ErrorKind, ExecRequest, ExitStatus, FileKind, FileWrite, GuestMsg, HostMsg, PtyOpen, TtySize,
    CHUNK, PROTOCOL_VERSION,
};

fn pattern(len: usize) -> Vec<u8> {
    // Not periodic at any power of two, so misplaced chunks show.
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test]
async fn exec_reports_stdout_stderr_and_exit_code() {
    let g = Guest::start();
    let c = g.connect().await;
    let out = c
        .exec(&["sh", "-c", "echo out; echo err >&2; exit 3"])
        .await;
    assert!(out.started);
    assert_eq!(out.stdout(), "out\n");
    assert_eq!(out.stderr(), "err\n");
    assert_eq!(
        out.status.unwrap(),
        ExitStatus {
            code: 3,
            signal: None,
            timed_out: false
        }
    );
}

#[tokio::test]
async fn exec_environment_is_clean_and_cwd_defaults_to_home() {
    let g = Guest::start();
    let c = g.connect().await;
    let out = c
        .exec_req(ExecRequest {
            argv: argv(&["sh", "-c", "env; pwd"]),
            env: vec![("FOO".into(), "bar".into()), ("LANG".into(), "C".into())],
            ..Default::default()
        })
        .await;
    let text = out.stdout();
    assert!(text.contains("FOO=bar\n"), "{text}");
    assert!(
        text.contains("LANG=C\n"),
        "request env overrides the base: {text}"
    );
    assert!(
        text.contains("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"),
        "{text}"
    );
    assert!(text.contains("HOME=/root\n"), "{text}");
    assert!(
        !text.contains("IRONCLAW_LEAK_CHECK"),
        "agent environment leaked: {text}"
    );
    assert!(!text.contains("TERM="), "no TERM without a tty: {text}");
    assert!(text.ends_with("/root\n"), "{text}");

    let out = c
        .exec_req(ExecRequest {
            argv: argv(&["pwd"]),
            cwd: Some("/tmp".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(out.stdout(), "/tmp\n");
    let msg = c
        .call(HostMsg::Exec(ExecRequest {
            argv: argv(&["pwd"]),
            cwd: Some("/no/such/dir".into()),
            ..Default::default()
        }))
        .await;
    assert!(
        matches!(
            msg,
            GuestMsg::Error {
                kind: ErrorKind::NotFound,
                ..
            }
        ),
        "{msg:?}"
    );
}

#[tokio::test]
async fn exec_streams_output_before_exit() {
    let g = Guest::start();
    let c = g.connect().await;
    let t0 = Instant::now();
    let req = ExecRequest {
        argv: argv(&["sh", "-c", "echo first; sleep 1; echo second"]),
        ..Default::default()
    };
    let mut s = c.open(HostMsg::Exec(req)).await;
    assert!(matches!(s.next().await, GuestMsg::Started { .. }));
    assert_eq!(s.next().await, GuestMsg::Stdout(b"first\n".to_vec()));
    let first_at = t0.elapsed();
    assert!(
        first_at < Duration::from_millis(800),
        "first line took {first_at:?}"
    );
    assert_eq!(s.next().await, GuestMsg::Stdout(b"second\n".to_vec()));
    assert!(matches!(s.next().await, GuestMsg::Exited(st) if st.code == 0));
    assert!(t0.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn exec_stdin_round_trip() {
    let g = Guest::start();
    let c = g.connect().await;
    let mut s = c
        .open(HostMsg::Exec(ExecRequest {
            argv: argv(&["cat"]),
            stdin: true,
            ..Default::default()
        }))
        .await;
    // Several MiB: more than pipes and queues hold, so back-pressure in both
    // directions is exercised.
    let payload = pattern(3 * 1024 * 1024 + 123);
    let tx = s.sender();
    let data = payload.clone();
    let writer = tokio::spawn(async move {
        for chunk in data.chunks(CHUNK) {
            tx.send(HostMsg::Stdin(chunk.to_vec())).await;
        }
        tx.send(HostMsg::StdinEof).await;
    });
    let out = s.output().await;
    writer.await.unwrap();
    assert_eq!(out.code(), 0);
    assert_eq!(out.stdout.len(), payload.len());
    assert!(
        out.stdout == payload,
        "stdin bytes differ after the round trip"
    );
}

#[tokio::test]
async fn exec_without_stdin_reads_dev_null() {
    let g = Guest::start();
    let c = g.connect().await;
    let out = c.exec(&["sh", "-c", "cat; echo done"]).await;
    assert_eq!(out.stdout(), "done\n");
}

#[tokio::test]
async fn exec_missing_command_is_127() {
    let g = Guest::start();
    let c = g.connect().await;
    let out = c.exec(&["no-such-command-xyz", "arg"]).await;
    assert_eq!(out.code(), 127);
    assert_eq!(
        out.stderr(),
        "ironclaw: no-such-command-xyz: command not found\n"
    );

    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "#!/bin/sh\necho ran\n").unwrap();
    let out = c.exec(&[plain.to_str().unwrap()]).await;
    assert_eq!(out.code(), 126, "not executable: {out:?}");
    assert!(out.stderr().contains("permission denied"), "{out:?}");
}

#[tokio::test]
async fn exec_timeout_kills_the_process_group() {
    let g = Guest::start();
    let c = g.connect().await;
    let t0 = Instant::now();
    // The grandchild holds stdout: Exited must still come promptly because
    // the whole group is killed.
    let out = c
        .exec_req(ExecRequest {
            argv: argv(&["sh", "-c", "sleep 30 & sleep 30"]),
            timeout_ms: Some(300),
            ..Default::default()
        })
        .await;
    assert_eq!(
        out.status.unwrap(),
        ExitStatus {
            code: 137,
            signal: Some(9),
            timed_out: true
        }
    );
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn exec_signal_reaches_the_process() {
    let g = Guest::start();
    let c = g.connect().await;
    let mut s = c
        .open(HostMsg::Exec(ExecRequest {
            argv: argv(&["sleep", "30"]),
            ..Default::default()
        }))
        .await;
    let GuestMsg::Started { pid } = s.next().await else {
        panic!("no Started")
    };
    assert!(alive(pid));
    s.send(HostMsg::Signal(libc::SIGTERM)).await;
    let out = s.output().await;
    assert_eq!(
        out.status.unwrap(),
        ExitStatus {
            code: 128 + libc::SIGTERM,
            signal: Some(libc::SIGTERM),
            timed_out: false
        }
    );
}

#[tokio::test]
async fn sixteen_concurrent_execs_on_one_connection() {
    let g = Guest::start();
    let c = std::sync::Arc::new(g.connect().await);
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let script = format!("sleep 0.5; echo {i}; echo e{i} >&2; exit {}", i % 4);
                (i, c.exec(&["sh", "-c", &script]).await)
            })
        })
        .collect();
    for t in tasks {
        let (i, out) = t.await.unwrap();
        assert_eq!(out.stdout(), format!("{i}\n"));
        assert_eq!(out.stderr(), format!("e{i}\n"));
        assert_eq!(out.code(), i % 4);
    }
    // Sequential would take 8 s.
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn dropping_the_connection_kills_running_execs() {
    let g = Guest::start();
    let c = g.connect().await;
    let mut s = c
        .open(HostMsg::Exec(ExecRequest {
            argv: argv(&["sleep", "30"]),
            ..Default::default()
        }))
        .await;
    let GuestMsg::Started { pid } = s.next().await else {
        panic!("no Started")
    };
    assert!(alive(pid));
    drop(s);
    drop(c);
    assert!(
        wait_gone(pid, Duration::from_secs(3)).await,
        "exec survived its connection"
    );
}

#[tokio::test]
async fn cancel_kills_an_exec() {
    let g = Guest::start();
    let c = g.connect().await;
    let mut s = c
        .open(HostMsg::Exec(ExecRequest {
            argv: argv(&["sleep", "30"]),
            ..Default::default()
        }))
        .await;
    let GuestMsg::Started { pid } = s.next().await else {
        panic!("no Started")
    };
    s.send(HostMsg::Cancel).await;
    assert!(
        wait_gone(pid, Duration::from_secs(3)).await,
        "exec survived Cancel"
    );
    assert_eq!(c.call(HostMsg::Ping).await, GuestMsg::Pong);
}

#[tokio::test]
async fn exec_on_a_tty() {
    let g = Guest::start();
    let c = g.connect().await;
    let req = ExecRequest {
        argv: argv(&[
            "sh",
            "-c",
            "tty; stty size; echo $TERM; read line; echo got:$line",
        ]),
        tty: Some(TtySize {
            rows: 30,
            cols: 100,
        }),
        stdin: true,
        ..Default::default()
    };
    let mut s = c.open(HostMsg::Exec(req)).await;
    assert!(matches!(s.next().await, GuestMsg::Started { .. }));
    let text = s.stdout_until("xterm-256color").await;
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("30 100"), "{text}");
    s.send(HostMsg::Resize(TtySize {
        rows: 40,
        cols: 120,
    }))
    .await;
    s.send(HostMsg::Stdin(b"hello\n".to_vec())).await;
    let out = s.output().await;
    assert!(out.stdout().contains("got:hello"), "{}", out.stdout());
    assert_eq!(out.code(), 0);
    assert!(out.stderr.is_empty());
}

fn pty_open(name: &str, argv_: &[&str]) -> HostMsg {
    HostMsg::PtyOpen(PtyOpen {
        name: name.into(),
        argv: argv(argv_),
        size: TtySize { rows: 24, cols: 80 },
        ..Default::default()
    })
}

#[tokio::test]
async fn pty_sessions_survive_disconnects_and_replay() {
    let g = Guest::start();
    let c1 = g.connect().await;
    let mut a = c1.open(pty_open("work", &["/bin/sh"])).await;
    let GuestMsg::PtyAttached { created: true, pid } = a.next().await else {
        panic!("not created")
    };
    a.send(HostMsg::Stdin(b"echo mark-$((6*7))\n".to_vec()))
        .await;
    a.stdout_until("mark-42").await;
    drop(a);
    drop(c1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(alive(pid), "a PTY session must outlive its connection");

    // Reattach: same process, replay holds the earlier output.
    let c2 = g.connect().await;
    let mut b = c2.open(pty_open("work", &["/bin/sh"])).await;
    assert_eq!(
        b.next().await,
        GuestMsg::PtyAttached {
            created: false,
            pid
        }
    );
    let GuestMsg::Stdout(replay) = b.next().await else {
        panic!("no replay")
    };
    assert!(
        String::from_utf8_lossy(&replay).contains("mark-42"),
        "{:?}",
        String::from_utf8_lossy(&replay)
    );

    // A second client attached at the same time sees the same output.
    let c3 = g.connect().await;
    let mut d = c3.open(pty_open("work", &[])).await;
    assert_eq!(
        d.next().await,
        GuestMsg::PtyAttached {
            created: false,
            pid
        }
    );
    assert!(matches!(d.next().await, GuestMsg::Stdout(_)));
    let GuestMsg::PtySessions(list) = c3.call(HostMsg::PtyList).await else {
        panic!()
    };
    assert_eq!(list.len(), 1);
    assert_eq!(
        (
            list[0].name.as_str(),
            list[0].pid,
            list[0].alive,
            list[0].attached
        ),
        ("work", pid, true, 2)
    );

    b.send(HostMsg::Stdin(b"echo both-$((1+1))\n".to_vec()))
        .await;
    b.stdout_until("both-2").await;
    d.stdout_until("both-2").await;

    // Kill: every attached client learns the end.
    assert_eq!(
        c3.call(HostMsg::PtyKill {
            name: "work".into()
        })
        .await,
        GuestMsg::Ok
    );
    for s in [&mut b, &mut d] {
        loop {
            match s.next().await {
                GuestMsg::Stdout(_) => continue,
                GuestMsg::Exited(st) => {
                    assert_eq!(st.signal, Some(libc::SIGHUP));
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert!(wait_gone(pid, Duration::from_secs(2)).await);
    assert_eq!(
        c3.call(HostMsg::PtyList).await,
        GuestMsg::PtySessions(vec![])
    );
    let msg = c3
        .call(HostMsg::PtyKill {
            name: "work".into(),
        })
        .await;
    assert!(
        matches!(
            msg,
            GuestMsg::Error {
                kind: ErrorKind::NotFound,
                ..
            }
        ),
        "{msg:?}"
    );
}

#[tokio::test]
async fn pty_session_ends_when_its_process_exits() {
    let g = Guest::start();
    let c = g.connect().await;
    let mut a = c.open(pty_open("short", &["/bin/sh"])).await;
    assert!(matches!(
        a.next().await,
        GuestMsg::PtyAttached { created: true, .. }
    ));
    a.send(HostMsg::Stdin(b"exit 5\n".to_vec())).await;
    loop {
        match a.next().await {
            GuestMsg::Stdout(_) => continue,
            GuestMsg::Exited(st) => {
                assert_eq!(st.code, 5);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // The name is free again: opening creates a new session.
    let mut b = c.open(pty_open("short", &["/bin/sh"])).await;
    assert!(matches!(
        b.next().await,
        GuestMsg::PtyAttached { created: true, .. }
    ));
    assert_eq!(
        c.call(HostMsg::PtyKill {
            name: "short".into()
        })
        .await,
        GuestMsg::Ok
    );
}

async fn upload(c: &common::Client, path: &str, data: &[u8], mode: u32, parents: bool) -> GuestMsg {
    let mut s = c
        .open(HostMsg::FileWrite(FileWrite {
            path: path.into(),
            mode,
            parents,
            ..Default::default()
        }))
        .await;
    for chunk in data.chunks(CHUNK) {
        s.send(HostMsg::Data(chunk.to_vec())).await;
    }
    s.send(HostMsg::Eof).await;
    s.next().await
}

async fn download(c: &common::Client, path: &str) -> Result<Vec<u8>, (ErrorKind, String)> {
    let mut s = c.open(HostMsg::FileRead { path: path.into() }).await;
    let mut data = Vec::new();
    loop {
        match s.next().await {
            GuestMsg::Data(b) => {
                assert!(b.len() <= CHUNK);
                data.extend(b);
            }
            GuestMsg::Eof => return Ok(data),
            GuestMsg::Error { kind, message } => return Err((kind, message)),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Poll `cond` for up to 3 s.
async fn eventually(cond: impl Fn() -> bool) -> bool {
    for _ in 0..150 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn file_write_and_read_round_trip() {
    let g = Guest::start();
    let c = g.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob.bin");
    let p = path.to_str().unwrap();
    let data = pattern(5 * 1024 * 1024 + 17);
    let GuestMsg::Stat(st) = upload(&c, p, &data, 0o640, false).await else {
        panic!("upload failed")
    };
    assert_eq!(
        (st.kind, st.size, st.mode),
        (FileKind::File, data.len() as u64, 0o640)
    );
    assert!(
        std::fs::read(&path).unwrap() == data,
        "bytes on disk differ"
    );
    assert!(
        download(&c, p).await.unwrap() == data,
        "downloaded bytes differ"
    );
    assert_eq!(
        names(dir.path()),
        vec!["blob.bin"],
        "no temporary files left"
    );

    // Overwrite replaces the content atomically.
    let GuestMsg::Stat(st) = upload(&c, p, b"small", 0o600, false).await else {
        panic!()
    };
    assert_eq!(st.size, 5);
    assert_eq!(download(&c, p).await.unwrap(), b"small");

    // Empty file.
    let empty = dir.path().join("empty");
    assert!(
        matches!(upload(&c, empty.to_str().unwrap(), b"", 0o644, false).await, GuestMsg::Stat(s) if s.size == 0)
    );
    assert_eq!(download(&c, empty.to_str().unwrap()).await.unwrap(), b"");

    // parents creates the missing directories.
    let deep = dir.path().join("a/b/c.txt");
    assert!(matches!(
        upload(&c, deep.to_str().unwrap(), b"x", 0o644, true).await,
        GuestMsg::Stat(_)
    ));
    assert_eq!(std::fs::read(&deep).unwrap(), b"x");
}

#[tokio::test]
async fn file_write_failures_leave_nothing_behind() {
    let g = Guest::start();
    let c = g.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing/file.txt");
    let msg = upload(&c, missing.to_str().unwrap(), b"data", 0o644, false).await;
    assert!(
        matches!(
            msg,
            GuestMsg::Error {
                kind: ErrorKind::NotFound,
                ..
            }
        ),
        "{msg:?}"
    );
    assert!(names(dir.path()).is_empty());

    // Cancel mid-upload: the old content stays, no temporary file remains.
    let target = dir.path().join("keep.txt");
    std::fs::write(&target, b"old").unwrap();
    let mut s = c
        .open(HostMsg::FileWrite(FileWrite {
            path: target.to_str().unwrap().into(),
            mode: 0o644,
            parents: false,
            ..Default::default()
        }))
        .await;
    s.send(HostMsg::Data(vec![1; 1000])).await;
    assert!(
        eventually(|| names(dir.path()).len() == 2).await,
        "no temporary file during the upload"
    );
    s.send(HostMsg::Cancel).await;
    assert_eq!(
        s.next_within(Duration::from_millis(300)).await,
        None,
        "nothing is sent after Cancel"
    );
    // The cancel is processed asynchronously.
    assert!(
        eventually(|| names(dir.path()) == vec!["keep.txt"]).await,
        "left {:?}",
        names(dir.path())
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"old");

    // A dropped connection mid-upload is the same.
    let c2 = g.connect().await;
    let s = c2
        .open(HostMsg::FileWrite(FileWrite {
            path: target.to_str().unwrap().into(),
            mode: 0o644,
            parents: false,
            ..Default::default()
        }))
        .await;
    s.send(HostMsg::Data(vec![2; 1000])).await;
    assert!(
        eventually(|| names(dir.path()).len() == 2).await,
        "no temporary file during the upload"
    );
    drop(s);
    drop(c2);
    assert!(
        eventually(|| names(dir.path()) == vec!["keep.txt"]).await,
        "left {:?}",
        names(dir.path())
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"old");

    let msg = download(&c, dir.path().to_str().unwrap())
        .await
        .unwrap_err();
    assert_eq!(msg.0, ErrorKind::IsADirectory, "{msg:?}");
    let msg = download(&c, missing.to_str().unwrap()).await.unwrap_err();
    assert_eq!(msg.0, ErrorKind::NotFound, "{msg:?}");
}

fn err_kind(m: &GuestMsg) -> Option<ErrorKind> {
    match m {
        GuestMsg::Error { kind, .. } => Some(*kind),
        _ => None,
    }
}

#[tokio::test]
async fn stat_list_mkdir_remove_rename() {
    let g = Guest::start();
    let c = g.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let at = |p: &str| dir.path().join(p).to_str().unwrap().to_string();

    assert_eq!(
        c.call(HostMsg::Mkdir {
            path: at("x/y/z"),
            parents: true,
            mode: 0o750,
            user: None,
        })
        .await,
        GuestMsg::Ok
    );
    assert_eq!(
        c.call(HostMsg::Mkdir {
            path: at("x/y/z"),
            parents: true,
            mode: 0o750,
            user: None,
        })
        .await,
        GuestMsg::Ok
    );
    let m = c
        .call(HostMsg::Mkdir {
            path: at("x"),
            parents: false,
            mode: 0o755,
            user: None,
        })
        .await;
    assert_eq!(err_kind(&m), Some(ErrorKind::AlreadyExists), "{m:?}");
    let m = c
        .call(HostMsg::Mkdir {
            path: at("nope/q"),
            parents: false,
            mode: 0o755,
            user: None,
        })
        .await;
    assert_eq!(err_kind(&m), Some(ErrorKind::NotFound), "{m:?}");

    std::fs::write(dir.path().join("x/b.txt"), b"hello").unwrap();
    std::fs::write(dir.path().join("x/a.txt"), b"hi").unwrap();
    std::os::unix::fs::symlink("a.txt", dir.path().join("x/c-link")).unwrap();

    let GuestMsg::Stat(st) = c
        .call(HostMsg::Stat {
            path: at("x/b.txt"),
        })
        .await
    else {
        panic!()
    };
    assert_eq!((st.kind, st.size), (FileKind::File, 5));
    assert_eq!(st.path, at("x/b.txt"));
    let GuestMsg::Stat(st) = c.call(HostMsg::Stat { path: at("x/y/z") }).await else {
        panic!()
    };
    assert_eq!(st.kind, FileKind::Dir);
    assert_eq!(st.mode, 0o750);
    let m = c
        .call(HostMsg::Stat {
            path: at("nothing"),
        })
        .await;
    assert_eq!(err_kind(&m), Some(ErrorKind::NotFound));

    let GuestMsg::Entries(list) = c.call(HostMsg::List { path: at("x") }).await else {
        panic!()
    };
    let got: Vec<(&str, FileKind)> = list.iter().map(|e| (e.name.as_str(), e.kind)).collect();
    assert_eq!(
        got,
        vec![
            ("a.txt", FileKind::File),
            ("b.txt", FileKind::File),
            ("c-link", FileKind::Symlink),
            ("y", FileKind::Dir)
        ]
    );
    assert_eq!(list[1].size, 5);
    let m = c
        .call(HostMsg::List {
            path: at("x/a.txt"),
        })
        .await;
    assert_eq!(err_kind(&m), Some(ErrorKind::NotADirectory), "{m:?}");

    assert_eq!(
        c.call(HostMsg::Rename {
            from: at("x/b.txt"),
            to: at("x/y/moved.txt")
        })
        .await,
        GuestMsg::Ok
    );
    assert_eq!(
        std::fs::read(dir.path().join("x/y/moved.txt")).unwrap(),
        b"hello"
    );
    let m = c
        .call(HostMsg::Rename {
            from: at("x/b.txt"),
            to: at("x/b2.txt"),
        })
        .await;
    assert_eq!(err_kind(&m), Some(ErrorKind::NotFound));

    let m = c
        .call(HostMsg::Remove {
            path: at("x/y"),
            recursive: false,
        })
        .await;
    assert_eq!(err_kind(&m), Some(ErrorKind::DirectoryNotEmpty), "{m:?}");
    assert_eq!(
        c.call(HostMsg::Remove {
            path: at("x/a.txt"),
            recursive: false
        })
        .await,
        GuestMsg::Ok
    );
    assert_eq!(
        c.call(HostMsg::Remove {
            path: at("x"),
            recursive: true
        })
        .await,
        GuestMsg::Ok
    );
    assert!(names(dir.path()).is_empty());
    let m = c
        .call(HostMsg::Remove {
            path: at("x"),
            recursive: true,
        })
        .await;
    assert_eq!(err_kind(&m), Some(ErrorKind::NotFound));
    for root in ["/", "//", "/.."] {
        let m = c
            .call(HostMsg::Remove {
                path: root.into(),
                recursive: true,
            })
            .await;
        assert_eq!(
            err_kind(&m),
            Some(ErrorKind::PermissionDenied),
            "{root}: {m:?}"
        );
    }
}

#[tokio::test]
async fn info_ping_and_unknown_streams() {
    let g = Guest::start();
    let c = g.connect().await;
    assert_eq!(c.call(HostMsg::Ping).await, GuestMsg::Pong);
    let GuestMsg::Info(info) = c.call(HostMsg::Info).await else {
        panic!()
    };
    assert_eq!(info.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.protocol_version, PROTOCOL_VERSION);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(info.hostname, host.trim());
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(info.kernel, release.trim());
    assert!(info.cpus >= 1);
    assert!(
        info.mem_total_bytes > 0 && info.mem_used_bytes <= info.mem_total_bytes,
        "{info:?}"
    );
    assert!(
        info.disk_total_bytes > 0 && info.disk_used_bytes <= info.disk_total_bytes,
        "{info:?}"
    );
    assert!(!info.pid1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let GuestMsg::Info(later) = c.call(HostMsg::Info).await else {
        panic!()
    };
    assert!(later.uptime_ms > info.uptime_ms);

    // Input for a stream that does not exist is ignored, not answered.
    let mut s = c.open(HostMsg::Stdin(b"stray".to_vec())).await;
    assert_eq!(s.next_within(Duration::from_millis(200)).await, None);
    assert_eq!(c.call(HostMsg::Ping).await, GuestMsg::Pong);
}

#[tokio::test]
async fn shutdown_stops_children_and_exits() {
    let mut g = Guest::start();
    let c = g.connect().await;
    let mut s = c
        .open(HostMsg::Exec(ExecRequest {
            argv: argv(&["sleep", "30"]),
            ..Default::default()
        }))
        .await;
    let GuestMsg::Started { pid } = s.next().await else {
        panic!()
    };
    // A shell that ignores SIGTERM must still go (SIGKILL after the grace).
    let mut p = c
        .open(pty_open(
            "stubborn",
            &["sh", "-c", "trap '' TERM; sleep 30"],
        ))
        .await;
    let GuestMsg::PtyAttached { pid: ppid, .. } = p.next().await else {
        panic!()
    };
    let t0 = Instant::now();
    assert_eq!(c.call(HostMsg::Shutdown).await, GuestMsg::Ok);
    let status = tokio::task::spawn_blocking(move || {
        let st = g.child.wait().unwrap();
        (st, g)
    })
    .await
    .unwrap()
    .0;
    assert!(status.success(), "{status:?}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(!alive(pid) && !alive(ppid), "children survived shutdown");
}

fn service(name: &str, script: &str, log: &std::path::Path) -> HostMsg {
    HostMsg::ServiceStart(ironclaw_proto::ServiceSpec {
        name: name.into(),
        argv: argv(&["sh", "-c", script]),
        env: vec![("GREETING".into(), "hi".into())],
        cwd: Some("/tmp".into()),
        log: log.to_str().unwrap().into(),
    })
}

async fn services(c: &common::Client) -> Vec<ironclaw_proto::ServiceInfo> {
    match c.call(HostMsg::ServiceList).await {
        GuestMsg::Services(v) => v,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn services_outlive_connections_restart_with_backoff_and_stop() {
    let g = Guest::start();
    let log = g.dir.path().join("logs/web.log");
    let c = g.connect().await;
    assert_eq!(
        c.call(service(
            "web",
            "echo $GREETING from $PWD; exec sleep 30",
            &log
        ))
        .await,
        GuestMsg::Ok
    );
    // The same name again is refused while it is supervised.
    assert_eq!(
        err_kind(&c.call(service("web", "true", &log)).await),
        Some(ErrorKind::AlreadyExists)
    );
    let pid = services(&c).await[0].pid.unwrap();
    drop(c);
    // It outlives the connection that started it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alive(pid), "service died with its connection");
    let c = g.connect().await;
    let list = services(&c).await;
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].pid, list[0].restarts, list[0].supervised),
        (Some(pid), 0, true)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("hi from /tmp\n"), "{text}");

    // A crashing one is started again, with a growing delay.
    let crash_log = g.dir.path().join("crash.log");
    assert_eq!(
        c.call(service("crash", "echo run; exit 7", &crash_log))
            .await,
        GuestMsg::Ok
    );
    let t0 = Instant::now();
    loop {
        let n = services(&c)
            .await
            .iter()
            .find(|s| s.name == "crash")
            .unwrap()
            .restarts;
        if n >= 2 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "not restarted: {n}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Exits at 0 s and ~1 s: the second restart waits 2 s.
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    let text = std::fs::read_to_string(&crash_log).unwrap();
    assert!(
        text.contains("exited (status 7); restart 1 in 1s"),
        "{text}"
    );
    assert!(
        text.contains("exited (status 7); restart 2 in 2s"),
        "{text}"
    );
    assert_eq!(text.matches("run\n").count(), 2, "{text}");

    // Stop: the process is gone, the service too, and it is not restarted.
    assert_eq!(
        c.call(HostMsg::ServiceStop { name: "web".into() }).await,
        GuestMsg::Ok
    );
    assert!(wait_gone(pid, Duration::from_secs(3)).await);
    assert_eq!(
        c.call(HostMsg::ServiceStop {
            name: "crash".into()
        })
        .await,
        GuestMsg::Ok
    );
    assert!(services(&c).await.is_empty());
    assert_eq!(
        err_kind(&c.call(HostMsg::ServiceStop { name: "web".into() }).await),
        Some(ErrorKind::NotFound)
    );
    // Bad requests change nothing.
    assert_eq!(
        err_kind(&c.call(service("", "true", &log)).await),
        Some(ErrorKind::InvalidInput)
    );
    assert_eq!(
        err_kind(
            &c.call(HostMsg::ServiceStart(ironclaw_proto::ServiceSpec {
                name: "nope".into(),
                argv: argv(&["/no/such/binary"]),
                log: log.to_str().unwrap().into(),
                ..Default::default()
            }))
            .await
        ),
        Some(ErrorKind::InvalidInput)
    );
    assert!(services(&c).await.is_empty());
    // A name is free again once stopped.
    assert_eq!(
        c.call(service("web", "exec sleep 30", &log)).await,
        GuestMsg::Ok
    );
    let pid = services(&c).await[0].pid.unwrap();
    drop(c);
    drop(g);
    // The agent's shutdown stops services too (nothing is left behind).
    assert!(wait_gone(pid, Duration::from_secs(5)).await);
}
