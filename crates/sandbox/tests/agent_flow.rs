//! Per-stream flow control between the real host client (`AgentClient`)
//! and the real guest agent (in `serve` mode on a Unix socket): one stream
//! whose consumer stopped reading, and one whose command stopped reading
//! its stdin, hold up nothing else on the connection, and neither side
//! buffers without bound.

#[path = "common/serve_guest.rs"]
mod serve_guest;

use std::time::{Duration, Instant};

use ironclaw_proto::{ExecRequest, FileWrite, GuestMsg, HostMsg, PtyOpen, CHUNK, WINDOW};
use ironclaw_sandbox::AgentClient;
use serve_guest::{guest_bin, pattern, within, Guest, STEP};

const MIB: u64 = 1024 * 1024;

/// Resident set size of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

async fn upload(c: &AgentClient, path: &str, data: &[u8]) {
    let mut s = c
        .open(HostMsg::FileWrite(FileWrite {
            path: path.into(),
            mode: 0o600,
            parents: false,
            ..Default::default()
        }))
        .await
        .unwrap();
    s.send(HostMsg::Data(data.to_vec())).await.unwrap();
    s.send(HostMsg::Eof).await.unwrap();
    let m = s.recv().await.unwrap();
    assert!(matches!(m, GuestMsg::Stat(_)), "{m:?}");
}

async fn download(c: &AgentClient, path: &str) -> Vec<u8> {
    let mut s = c
        .open(HostMsg::FileRead { path: path.into() })
        .await
        .unwrap();
    let mut data = Vec::new();
    loop {
        match s.recv().await.unwrap() {
            GuestMsg::Data(d) => data.extend_from_slice(&d),
            GuestMsg::Eof => return data,
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_stalls_nothing_else() {
    let Some(bin) = guest_bin() else {
        eprintln!("skipped: needs the guest binary (IRONCLAW_GUEST_BIN)");
        return;
    };
    let g = Guest::start(&bin);
    let gpid = g.child.id();
    let me = std::process::id();
    let c = within("connect", AgentClient::connect_unix(&g.sock))
        .await
        .unwrap();

    // Endless output whose consumer never reads.
    let mut yes = c
        .open(HostMsg::Exec(ExecRequest {
            argv: vec!["yes".into()],
            ..Default::default()
        }))
        .await
        .unwrap();
    let GuestMsg::Started { pid: yes_pid } = within("yes starts", yes.recv()).await.unwrap() else {
        panic!()
    };
    // A command that never reads the stdin the host keeps sending.
    let sleeper = c
        .open(HostMsg::Exec(ExecRequest {
            argv: vec!["sleep".into(), "600".into()],
            stdin: true,
            ..Default::default()
        }))
        .await
        .unwrap();
    let sender = sleeper.sender();
    let push = tokio::spawn(async move {
        let chunk = vec![0u8; CHUNK];
        let mut sent = 0u64;
        while sender.send(HostMsg::Stdin(chunk.clone())).await.is_ok() {
            sent += CHUNK as u64;
        }
        sent
    });
    // Let both stall completely.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (guest0, me0) = (rss(gpid), rss(me));

    // 50 other execs, all at once, on the same connection.
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..50 {
        let c = c.clone();
        set.spawn(async move {
            let out = within(
                "an exec beside the stalled ones",
                c.exec_collect(
                    ExecRequest {
                        argv: vec!["sh".into(), "-c".into(), format!("echo {i}; cat")],
                        ..Default::default()
                    },
                    Some(format!("stdin {i}\n").into_bytes()),
                ),
            )
            .await
            .unwrap();
            assert_eq!(out.status.code, 0);
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                format!("{i}\nstdin {i}\n")
            );
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    let execs = t.elapsed();
    // And a file transfer both ways.
    let t = Instant::now();
    let data = pattern(16 * MIB as usize);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f").display().to_string();
    within("upload", upload(&c, &path, &data)).await;
    let back = within("download", download(&c, &path)).await;
    assert!(back == data, "the file came back different");
    let transfer = t.elapsed();
    drop((data, back));
    println!("beside a stalled stream: 50 execs in {execs:?}, 16 MiB up and down in {transfer:?}");

    // Neither side buffered the stalled streams: let them sit a while more.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (guest1, me1) = (rss(gpid), rss(me));
    println!(
        "RSS guest {} -> {} MiB, test process {} -> {} MiB",
        guest0 / MIB,
        guest1 / MIB,
        me0 / MIB,
        me1 / MIB
    );
    assert!(guest1 < guest0 + 64 * MIB, "guest RSS grew to {guest1}");
    assert!(me1 < me0 + 64 * MIB, "test process RSS grew to {me1}");
    assert!(
        !push.is_finished(),
        "a command that reads nothing took all of its stdin"
    );
    assert!(alive(yes_pid));

    // Kill the stalled exec: what is still in flight arrives, then its end.
    yes.send(HostMsg::Signal(libc::SIGKILL)).await.unwrap();
    let mut drained = 0;
    let status = loop {
        match within("the killed exec ends", yes.recv()).await.unwrap() {
            GuestMsg::Stdout(d) => drained += d.len(),
            GuestMsg::Exited(s) => break s,
            other => panic!("{other:?}"),
        }
    };
    println!("drained {drained} bytes after the kill");
    assert_eq!(status.signal, Some(libc::SIGKILL), "{status:?}");
    // Bounded by the initial window (this consumer never read a window's
    // worth, so its window never grew), the pipe and a chunk in hand.
    assert!(drained <= WINDOW + 3 * CHUNK, "{drained}");
    assert!(!alive(yes_pid));
    // Dropping the other stream cancels it; its sender stops.
    drop(sleeper);
    let sent = within("the stdin sender stops", push).await.unwrap();
    // The guest's queue (its window), the pipe, a chunk in hand.
    assert!(sent <= (WINDOW + 4 * CHUNK) as u64, "{sent}");
    within("ping", c.ping(STEP)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_console_stalls_only_itself() {
    let Some(bin) = guest_bin() else {
        eprintln!("skipped: needs the guest binary (IRONCLAW_GUEST_BIN)");
        return;
    };
    let g = Guest::start(&bin);
    let gpid = g.child.id();
    let c = within("connect", AgentClient::connect_unix(&g.sock))
        .await
        .unwrap();
    let open = || {
        HostMsg::PtyOpen(PtyOpen {
            name: "busy".into(),
            argv: vec!["yes".into(), "console output".into()],
            ..Default::default()
        })
    };
    // A console tab that stopped reading: its session keeps running.
    let mut paused = c.open(open()).await.unwrap();
    assert!(matches!(
        within("attach", paused.recv()).await.unwrap(),
        GuestMsg::PtyAttached { created: true, .. }
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let guest0 = rss(gpid);
    // Other work on the connection goes on...
    for i in 0..20 {
        let out = within(
            "an exec beside a paused console",
            c.exec_collect(
                ExecRequest {
                    argv: vec!["echo".into(), i.to_string()],
                    ..Default::default()
                },
                None,
            ),
        )
        .await
        .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{i}\n"));
    }
    // ...and a second tab on the same session sees live output.
    let mut live = c.open(open()).await.unwrap();
    assert!(matches!(
        within("reattach", live.recv()).await.unwrap(),
        GuestMsg::PtyAttached { created: false, .. }
    ));
    let mut seen = 0;
    while seen < 4 * WINDOW {
        match within("live output", live.recv()).await.unwrap() {
            GuestMsg::Stdout(d) => seen += d.len(),
            other => panic!("{other:?}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let guest1 = rss(gpid);
    println!(
        "paused console: guest RSS {} -> {} MiB",
        guest0 / MIB,
        guest1 / MIB
    );
    assert!(guest1 < guest0 + 64 * MIB, "guest RSS grew to {guest1}");
    drop(live);
    // The paused tab still gets the session's end once it reads again.
    within(
        "kill",
        c.call_ok(HostMsg::PtyKill {
            name: "busy".into(),
        }),
    )
    .await
    .unwrap();
    let end = loop {
        match within("the paused tab drains", paused.recv())
            .await
            .unwrap()
        {
            GuestMsg::Stdout(_) => {}
            other => break other,
        }
    };
    assert!(matches!(end, GuestMsg::Exited(_)), "{end:?}");
    within("ping", c.ping(STEP)).await.unwrap();
}
