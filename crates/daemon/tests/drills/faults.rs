//! Fault drills: SIGKILL of ironclawd mid-exec, mid-upload, mid-create and
//! mid-turn, then a restart. Nothing acknowledged may be lost, a
//! half-finished upload never appears as a file, and no process, cgroup,
//! loop device or directory outlives the sandboxes.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{processes_matching, Daemon};
use crate::Tally;

async fn running_pid(d: &Daemon, name: &str) -> Option<u64> {
    let (_, v) = d.get(&format!("/v1/sandboxes/{name}")).await;
    (v["state"] == "running")
        .then(|| v["pid"].as_u64())
        .flatten()
}

fn restart(d: &mut Daemon) {
    d.kill_daemon();
    d.spawn();
}

/// An exec in flight when the daemon dies: the sandbox is re-adopted (same
/// pid) and the orphaned command does not linger inside.
async fn mid_exec(d: &mut Daemon, t: &mut Tally) {
    let pid = running_pid(d, "victim").await;
    let http = d.http.clone();
    let (url, token) = (d.u("/v1/sandboxes/victim/exec"), d.token.clone());
    let pending = tokio::spawn(async move {
        http.post(url)
            .bearer_auth(token)
            .json(&json!({"argv": ["sleep", "31"]}))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    restart(d);
    let _ = pending.await;
    let after = running_pid(d, "victim").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ps = d.exec("victim", &["ps"]).await["stdout"].to_string();
    t.record(
        "fault_mid_exec",
        pid.is_none() || after != pid || ps.contains("sleep 31"),
        &format!(
            "re-adopted pid {pid:?} -> {after:?}; orphaned command gone: {}",
            !ps.contains("sleep 31")
        ),
    );
}

/// An upload cut off by the daemon's death never appears at its path.
async fn mid_upload(d: &mut Daemon, t: &mut Tally) {
    let (tx, rx) = futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(rx);
    let req = d
        .http
        .put(d.u("/v1/sandboxes/victim/files?path=/root/partial.bin"))
        .bearer_auth(&d.token)
        .body(body)
        .send();
    let feeder = async move {
        let mut tx = tx;
        for _ in 0..8 {
            let _ = tx.send(Ok(vec![7u8; 1 << 20])).await;
        }
        // Hold the request open, unfinished, until the daemon dies.
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(tx);
    };
    let pending = tokio::spawn(async move { tokio::join!(req, feeder).0 });
    tokio::time::sleep(Duration::from_millis(800)).await;
    restart(d);
    let acknowledged = matches!(pending.await, Ok(Ok(r)) if r.status().is_success());
    let ls = d.exec("victim", &["ls", "-a", "/root"]).await["stdout"].to_string();
    t.record(
        "fault_mid_upload",
        acknowledged || ls.contains("partial"),
        &format!(
            "unacknowledged upload left {:?} in /root",
            ls.trim_matches('"')
        ),
    );
}

/// A create in flight: afterwards the sandbox is either absent or a
/// complete record, and removing it leaves nothing.
async fn mid_create(d: &mut Daemon, t: &mut Tally) {
    let http = d.http.clone();
    let (url, token) = (d.u("/v1/sandboxes"), d.token.clone());
    let pending = tokio::spawn(async move {
        http.post(url)
            .bearer_auth(token)
            .json(&json!({"name": "halfborn", "image": "mini"}))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(15)).await;
    restart(d);
    let answered = matches!(pending.await, Ok(Ok(r)) if r.status().as_u16() == 201);
    let (st, v) = d.get("/v1/sandboxes/halfborn").await;
    let state = v["state"].as_str().unwrap_or("absent").to_string();
    let lost = answered && st != 200;
    if st == 200 {
        let (st, v) = d.req(Method::DELETE, "/v1/sandboxes/halfborn", None).await;
        assert_eq!(st, 204, "{v}");
    }
    t.record(
        "fault_mid_create",
        lost,
        &format!("acknowledged {answered}; after restart {st} {state}; removed cleanly"),
    );
}

/// A chat turn streaming when the daemon dies: the user's message, stored
/// before the model saw it, is in the history afterwards.
async fn mid_turn(d: &mut Daemon, t: &mut Tally) {
    let url = format!(
        "{}/v1/chat/ws?token={}",
        d.url.replacen("http", "ws", 1),
        d.token
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut session = String::new();
    let mut streaming = false;
    ws.send(Message::Text(
        json!({"type": "message", "text": "remember the walrus"}).to_string(),
    ))
    .await
    .unwrap();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
        let Message::Text(text) = m else { continue };
        let e: Value = serde_json::from_str(&text).unwrap_or_default();
        if e["type"] == "session" {
            session = e["id"].as_str().unwrap_or_default().to_string();
        }
        if e["type"] == "text_delta" {
            streaming = true;
            break;
        }
    }
    restart(d);
    let (st, v) = d.get(&format!("/v1/sessions/{session}")).await;
    let kept = v["messages"].as_array().is_some_and(|m| {
        m.iter()
            .any(|m| m["role"] == "user" && m.to_string().contains("remember the walrus"))
    });
    t.record(
        "fault_mid_turn",
        !streaming || !kept,
        &format!("streaming when killed {streaming}; session {st}; user message kept {kept}"),
    );
}

/// After every sandbox is removed: nothing of them is left on the host.
async fn nothing_left(d: &Daemon, t: &mut Tally) {
    let (_, v) = d.get("/v1/sandboxes").await;
    for s in v["sandboxes"].as_array().cloned().unwrap_or_default() {
        let path = format!(
            "/v1/sandboxes/{}?owner={}",
            s["name"].as_str().unwrap(),
            s["owner"].as_str().unwrap()
        );
        let (st, v) = d.req(Method::DELETE, &path, None).await;
        assert_eq!(st, 204, "{path}: {v}");
    }
    let data = d.data_dir().to_string_lossy().into_owned();
    let procs = processes_matching(&data)
        .into_iter()
        .filter(|p| !p.contains("ironclawd"))
        .collect::<Vec<_>>();
    let loops = std::process::Command::new("losetup")
        .arg("-a")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let loops: Vec<&str> = loops.lines().filter(|l| l.contains(&data)).collect();
    let dirs: Vec<String> = std::fs::read_dir(d.data_dir().join("sandboxes"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let cgroups: Vec<String> = ["memory", "pids", "devices", "unified"]
        .iter()
        .flat_map(|c| {
            std::fs::read_dir(format!("/sys/fs/cgroup/{c}/ironclaw"))
                .into_iter()
                .flatten()
        })
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.path().display().to_string())
        .filter(|p| dirs.iter().any(|d| p.ends_with(d)))
        .collect();
    t.record(
        "fault_nothing_left",
        !procs.is_empty() || !loops.is_empty() || !dirs.is_empty() || !cgroups.is_empty(),
        &format!("processes {procs:?}, loop devices {loops:?}, sandbox dirs {dirs:?}, cgroups {cgroups:?}"),
    );
}

pub async fn run(d: &mut Daemon, t: &mut Tally) {
    mid_exec(d, t).await;
    mid_upload(d, t).await;
    mid_create(d, t).await;
    mid_turn(d, t).await;
    nothing_left(d, t).await;
}
