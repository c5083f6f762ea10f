//! Git-push deploy benchmark: push-to-serving time of the sample app (a
//! busybox `httpd` Procfile app) through the daemon's smart HTTP endpoint,
//! beside a plain `git push` of the same commits to a local bare
//! repository (no deploy) in the same run.
//! `cargo bench -p ironclaw-daemon --bench deploy` (scripts/bench.sh --deploy).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Daemon;
use serde_json::json;

const PUSHES: usize = 5;

fn git(dir: &Path, args: &[&str]) {
    let o = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "b")
        .env("GIT_AUTHOR_EMAIL", "b@example.invalid")
        .env("GIT_COMMITTER_NAME", "b")
        .env("GIT_COMMITTER_EMAIL", "b@example.invalid")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let d = Daemon::start_with("[network]\n").await;
    d.sandbox("bench", json!({"network": "internet"})).await;
    let (st, v) = d.post("/v1/sandboxes/bench/deploy", json!({})).await;
    assert_eq!(st, 201, "{v}");
    let remote =
        v["remote"]
            .as_str()
            .unwrap()
            .replacen("http://", &format!("http://x:{}@", d.token), 1);
    let work = tempfile::tempdir().unwrap();
    let w = work.path().join("app");
    let bare = work.path().join("plain.git");
    std::fs::create_dir(&w).unwrap();
    git(
        work.path(),
        &["init", "-q", "--bare", bare.to_str().unwrap()],
    );
    git(&w, &["init", "-q", "-b", "main"]);
    std::fs::write(w.join("Procfile"), "web: httpd -f -p $PORT -h .\n").unwrap();
    let host = format!(
        "8000-bench.127-0-0-1.sslip.io:{}",
        d.url.rsplit(':').next().unwrap()
    );
    let (mut serving, mut pushing, mut plain) = (vec![], vec![], vec![]);
    for i in 0..PUSHES {
        let body = format!("release {i}");
        std::fs::write(w.join("index.html"), &body).unwrap();
        git(&w, &["add", "-A"]);
        git(&w, &["commit", "-q", "-m", &body]);
        // Reference: the same commit to a local bare repository.
        let t0 = Instant::now();
        git(&w, &["push", "-q", bare.to_str().unwrap(), "main"]);
        plain.push(t0.elapsed());
        let t0 = Instant::now();
        let wd = w.clone();
        let r = remote.clone();
        tokio::task::spawn_blocking(move || git(&wd, &["push", "-q", &r, "main"]))
            .await
            .unwrap();
        pushing.push(t0.elapsed());
        loop {
            let resp = d
                .http
                .get(d.u("/index.html"))
                .header("host", &host)
                .bearer_auth(&d.token)
                .send()
                .await
                .unwrap();
            if resp.status() == 200 && resp.text().await.unwrap() == body {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(90),
                "release {i} never served"
            );
        }
        serving.push(t0.elapsed());
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("git-push deploy, {PUSHES} pushes of the sample app (busybox httpd), medians:");
    println!(
        "  push to serving (git push over the daemon + release + first answer): {:.0} ms",
        ms(median(&mut serving))
    );
    println!(
        "  git push over the daemon (returns once the release is live):      {:.0} ms",
        ms(median(&mut pushing))
    );
    println!(
        "  reference: plain git push to a local bare repository:             {:.0} ms",
        ms(median(&mut plain))
    );
}
