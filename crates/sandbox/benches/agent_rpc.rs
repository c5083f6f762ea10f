//! Throughput and latency of the host <-> guest protocol itself: the real
//! `AgentClient` against the real guest agent in `serve` mode on a Unix
//! socket (no sandbox around it).
//!
//! - `exec true` round trip, sequential (p50, p99);
//! - a 64 MiB file upload and download through the agent (MiB/s, best of 3);
//! - the same download beside a stalled stream (a `yes` whose output is
//!   never read): with per-stream flow control it runs at full speed; a
//!   protocol without it stalls (reported as such after 10 s).
//!
//! `cargo bench -p ironclaw-sandbox --bench agent_rpc [-- --runs N]`
//! with IRONCLAW_GUEST_BIN naming the guest. `scripts/bench-agent.sh` runs
//! it next to the same bench built from another commit, interleaved, so
//! before and after come from the same run.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ironclaw_proto::{ExecRequest, FileWrite, GuestMsg, HostMsg, CHUNK};
use ironclaw_sandbox::AgentClient;

const MIB: usize = 1024 * 1024;

fn guest_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("IRONCLAW_GUEST_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().unwrap().parent().unwrap().parent().unwrap();
    target.join("x86_64-unknown-linux-gnu/release/ironclaw-guest")
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
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
    for piece in data.chunks(CHUNK) {
        s.send(HostMsg::Data(piece.to_vec())).await.unwrap();
    }
    s.send(HostMsg::Eof).await.unwrap();
    assert!(matches!(s.recv().await.unwrap(), GuestMsg::Stat(_)));
}

async fn download(c: &AgentClient, path: &str) -> usize {
    let mut s = c
        .open(HostMsg::FileRead { path: path.into() })
        .await
        .unwrap();
    let mut n = 0;
    loop {
        match s.recv().await.unwrap() {
            GuestMsg::Data(d) => n += d.len(),
            GuestMsg::Eof => return n,
            other => panic!("{other:?}"),
        }
    }
}

fn main() {
    let mut runs = 3;
    // --downloads N: only N downloads, e.g. under a profiler.
    let mut downloads_only = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--runs" {
            runs = args.next().unwrap().parse().unwrap();
        } else if a == "--downloads" {
            downloads_only = Some(args.next().unwrap().parse::<usize>().unwrap());
        }
    }
    let label = std::env::var("BENCH_LABEL").unwrap_or_else(|_| "this tree".into());
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let mut child = Command::new(guest_bin())
        .arg("serve")
        .arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    while lines.next().unwrap().unwrap() != "ironclaw-guest: ready" {}
    std::thread::spawn(move || for _ in lines {});

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = AgentClient::connect_unix(&sock).await.unwrap();
        if let Some(n) = downloads_only {
            let data = vec![7u8; 64 * MIB];
            let path = dir.path().join("blob").display().to_string();
            upload(&c, &path, &data).await;
            let t = Instant::now();
            for _ in 0..n {
                assert_eq!(download(&c, &path).await, data.len());
            }
            println!(
                "[{label}] {n} downloads of 64 MiB: {:.0} MiB/s, guest pid {}",
                (64 * n) as f64 / t.elapsed().as_secs_f64(),
                child.id()
            );
            return;
        }
        let true_ = || ExecRequest {
            argv: vec!["true".into()],
            ..Default::default()
        };
        for _ in 0..20 {
            c.exec_collect(true_(), None).await.unwrap();
        }
        let mut rtt = Vec::new();
        for _ in 0..300 {
            let t = Instant::now();
            c.exec_collect(true_(), None).await.unwrap();
            rtt.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let mut ping = Vec::new();
        for _ in 0..1000 {
            let t = Instant::now();
            c.ping(Duration::from_secs(5)).await.unwrap();
            ping.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let data: Vec<u8> = (0..64 * MIB).map(|i| (i * 7 + i / 4096) as u8).collect();
        let path = dir.path().join("blob").display().to_string();
        let (mut up, mut down) = (0f64, 0f64);
        for _ in 0..runs {
            let t = Instant::now();
            upload(&c, &path, &data).await;
            up = up.max(64.0 / t.elapsed().as_secs_f64());
            let t = Instant::now();
            assert_eq!(download(&c, &path).await, data.len());
            down = down.max(64.0 / t.elapsed().as_secs_f64());
        }
        // Beside a stream whose consumer stopped reading.
        let _yes = c
            .open(HostMsg::Exec(ExecRequest {
                argv: vec!["yes".into()],
                ..Default::default()
            }))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        let stalled = match tokio::time::timeout(Duration::from_secs(10), download(&c, &path)).await
        {
            Ok(n) => {
                assert_eq!(n, data.len());
                format!("{:.0} MiB/s", 64.0 / t.elapsed().as_secs_f64())
            }
            Err(_) => "stalled (no progress within 10 s)".to_string(),
        };
        println!(
            "[{label}] ping p50 {:.3} ms | exec true round trip p50 {:.3} ms p99 {:.3} ms | 64 MiB upload {up:.0} MiB/s, download {down:.0} MiB/s | download beside a stalled stream: {stalled}",
            pct(&mut ping, 0.5),
            pct(&mut rtt.clone(), 0.5),
            pct(&mut rtt, 0.99),
        );
    });
    rt.shutdown_timeout(Duration::from_millis(100));
    // SAFETY: plain syscall on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}
