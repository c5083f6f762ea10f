//! The non-streaming exec API is bounded: output beyond
//! `exec_output_limit_mib` per stream is dropped (and said so), and every
//! exec has a timeout (`exec_timeout_secs`, at most `exec_timeout_max_secs`).
//! `yes` must not grow the daemon's memory.

mod common;

use common::{rss_kib, Daemon};
use serde_json::json;

const MIB: usize = 1 << 20;
const MARKER: &str = "\n[ironclaw: output truncated at 1 MiB]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_output_is_bounded_and_every_exec_times_out() {
    let d = Daemon::start_with(
        "exec_output_limit_mib = 1\nexec_timeout_secs = 3\nexec_timeout_max_secs = 20\n",
    )
    .await;
    d.sandbox("dev", json!({})).await;
    let pid = d.child.as_ref().unwrap().id();
    // Warm up (first exec, allocator arenas), then take the baseline.
    d.exec("dev", &["true"]).await;
    let before = rss_kib(pid);

    // `yes` with no timeout: killed at the default (3 s), output capped at 1 MiB.
    let started = std::time::Instant::now();
    let r = d
        .http
        .post(d.u("/v1/sandboxes/dev/exec"))
        .bearer_auth(&d.token)
        .json(&json!({"argv": ["yes"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let raw = r.bytes().await.unwrap();
    let elapsed = started.elapsed();
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(v["timed_out"], true, "{}", v["exit_code"]);
    assert_eq!(v["truncated"], true);
    assert_eq!(v["stdout_truncated"], true);
    assert_eq!(v["stderr_truncated"], false);
    let out = v["stdout"].as_str().unwrap();
    assert!(out.ends_with(MARKER), "{:?}", &out[out.len() - 80..]);
    assert_eq!(out.len(), MIB + MARKER.len());
    assert!(out[..MIB].bytes().all(|b| b == b'y' || b == b'\n'));
    // "y\n" is three bytes of JSON ("y\\n"): 1.5 MiB at most.
    assert!(
        raw.len() < MIB * 3 / 2 + 4096,
        "response is {} bytes",
        raw.len()
    );
    assert!(elapsed.as_secs_f64() < 15.0, "took {elapsed:?}");
    let after = rss_kib(pid);
    eprintln!(
        "daemon RSS: {before} KiB before `yes`, {after} KiB after ({} s run, {} byte response)",
        elapsed.as_secs_f64(),
        raw.len()
    );
    assert!(
        after < before + 64 * 1024,
        "daemon RSS grew from {before} KiB to {after} KiB"
    );

    // The same on stderr, with a timeout the request asks for (lower).
    let started = std::time::Instant::now();
    let v = d
        .post(
            "/v1/sandboxes/dev/exec",
            json!({"argv": ["sh", "-c", "yes >&2"], "timeout_secs": 1}),
        )
        .await
        .1;
    assert_eq!(v["timed_out"], true);
    assert_eq!(v["stderr_truncated"], true);
    assert_eq!(v["stdout"], "");
    assert!(v["stderr"].as_str().unwrap().ends_with(MARKER));
    assert!(started.elapsed().as_secs_f64() < 10.0);

    // Small output: whole, not truncated; a raised timeout (under the max) is fine.
    let v = d
        .post(
            "/v1/sandboxes/dev/exec",
            json!({"argv": ["sh", "-c", "sleep 4; echo done"], "timeout_secs": 10}),
        )
        .await
        .1;
    assert_eq!(
        (
            v["stdout"].as_str(),
            v["timed_out"].as_bool(),
            v["truncated"].as_bool()
        ),
        (Some("done\n"), Some(false), Some(false)),
        "{v}"
    );
    // Exactly the limit is not truncated.
    let v = d
        .post(
            "/v1/sandboxes/dev/exec",
            json!({"argv": ["head", "-c", MIB.to_string(), "/dev/zero"]}),
        )
        .await
        .1;
    assert_eq!(v["truncated"], false, "{}", v["exit_code"]);
    assert_eq!(v["stdout"].as_str().unwrap().len(), MIB);

    // Over the maximum, or both units: 400, nothing runs.
    for body in [
        json!({"argv": ["touch", "/root/ran"], "timeout_secs": 21}),
        json!({"argv": ["touch", "/root/ran"], "timeout_ms": 21000}),
        json!({"argv": ["touch", "/root/ran"], "timeout_secs": 1, "timeout_ms": 5}),
        json!({"argv": ["touch", "/root/ran"], "timeout_secs": 0}),
    ] {
        let (st, v) = d.post("/v1/sandboxes/dev/exec", body.clone()).await;
        assert_eq!(st, 400, "{body}: {v}");
    }
    let v = d.exec("dev", &["test", "-e", "/root/ran"]).await;
    assert_eq!(v["exit_code"], 1);
    let end = rss_kib(pid);
    eprintln!("daemon RSS at the end: {end} KiB");
    assert!(
        end < before + 64 * 1024,
        "daemon RSS grew from {before} KiB to {end} KiB"
    );
}

/// A config whose default timeout exceeds its maximum is refused at start.
#[test]
fn inconsistent_exec_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    for text in [
        "exec_timeout_secs = 100\nexec_timeout_max_secs = 10\n",
        "exec_output_limit_mib = 0\n",
    ] {
        std::fs::write(&cfg, text).unwrap();
        let out = std::process::Command::new(common::workspace_bin("ironclawd"))
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("exec_"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
