//! SSH endpoint benchmark: the round trip of `ssh NAME@HOST true` (the real
//! OpenSSH client: connect, key exchange, publickey login, exec, exit
//! status) against `ironclaw exec NAME -- true` (the CLI: HTTP + WebSocket
//! exec) on the same sandbox in the same run, each a fresh client process
//! as a user would run it. Run: `scripts/bench.sh --ssh [--quick]`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Daemon;
use serde_json::json;

fn timed(mut c: Command) -> Duration {
    let t = Instant::now();
    let out = c.stdin(Stdio::null()).output().unwrap();
    let took = t.elapsed();
    assert!(out.status.success(), "{c:?}: {out:?}");
    took
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (sandboxes)");
        return;
    }
    let runs = if std::env::args().any(|a| a == "--quick") {
        10
    } else {
        50
    };
    let d = Daemon::start().await;
    let sb = d.sandbox("bench", json!({})).await;
    let backend = sb["backend"].as_str().unwrap_or("?").to_string();
    let (_, host) = d.get("/v1/host").await;
    let listen: std::net::SocketAddr = host["ssh"]["listen"].as_str().unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kh = dir.path().join("known_hosts");
    std::fs::write(
        &kh,
        format!(
            "[127.0.0.1]:{} {}\n",
            listen.port(),
            host["ssh"]["host_key"].as_str().unwrap()
        ),
    )
    .unwrap();
    let key = dir.path().join("k");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let (st, v) = d
        .post(
            "/v1/keys",
            json!({"key": std::fs::read_to_string(key.with_extension("pub")).unwrap()}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let ssh = || {
        let mut c = Command::new("ssh");
        c.arg("-p")
            .arg(listen.port().to_string())
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
            ])
            .args(["-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", kh.display()))
            .arg("-i")
            .arg(&key)
            .args(["bench@127.0.0.1", "true"]);
        c
    };
    let cli = || {
        let mut c = d.cli_command(&["exec", "bench", "--", "true"]);
        c.env("IRONCLAW_TOKEN", &d.token);
        c
    };
    // Warm both paths.
    timed(ssh());
    timed(cli());
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        a.push(timed(cli()));
        b.push(timed(ssh()));
    }
    let (a50, a99) = (pct(&mut a, 0.5), pct(&mut a, 0.99));
    let (b50, b99) = (pct(&mut b, 0.5), pct(&mut b, 0.99));
    println!("`true` in a {backend} sandbox, {runs} runs each, a fresh client process per run:");
    println!(
        "  ironclaw exec bench -- true    p50 {:>7.1} ms   p99 {:>7.1} ms   (reference)",
        ms(a50),
        ms(a99)
    );
    println!(
        "  ssh bench@127.0.0.1 true       p50 {:>7.1} ms   p99 {:>7.1} ms   {:.2}x the CLI at p50",
        ms(b50),
        ms(b99),
        b50.as_secs_f64() / a50.as_secs_f64()
    );
}
