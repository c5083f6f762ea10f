//! The VM backends through the daemon: QEMU gives a real microVM (TCG where
//! KVM guests cannot boot), Firecracker fails fast with the probe's reason
//! where KVM guests cannot boot, and doctor says why.

mod common;

use std::time::{Duration, Instant};

use common::Daemon;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_microvm_and_firecracker_through_the_api() {
    let fc = std::env::var("IRONCLAW_FIRECRACKER_BIN").unwrap_or_default();
    let d = Daemon::start_with(&format!("firecracker_bin = {fc:?}\n")).await;
    d.build_image("mini", "busybox").await;

    // doctor: the KVM probe has an answer, and names why when guests cannot boot.
    let (st, host) = d.get("/v1/host").await;
    assert_eq!(st, 200);
    let kvm = host["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "kvm")
        .unwrap()
        .clone();
    let backends = host["backends"].as_array().unwrap();
    let fc_backend = backends
        .iter()
        .find(|b| b["name"] == "firecracker")
        .unwrap();
    let out = d.cli(&["doctor"]);
    let doctor = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        doctor.contains("kvm") && doctor.contains("qemu"),
        "{doctor}"
    );
    if kvm["ok"] == false {
        assert!(kvm["detail"].as_str().unwrap().contains("cannot"), "{kvm}");
        assert_eq!(fc_backend["available"], false);
        assert_ne!(host["default_backend"], "firecracker");
        assert_ne!(host["default_backend"], "qemu", "TCG is never the default");
        // Asking for it anyway fails fast with the reason, and leaves nothing.
        let t = Instant::now();
        let (st, v) = d
            .post(
                "/v1/sandboxes",
                json!({"name": "fc", "backend": "firecracker"}),
            )
            .await;
        assert_eq!(st, 503, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("cannot boot"),
            "{v}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
        let (st, _) = d.get("/v1/sandboxes/fc").await;
        assert_eq!(st, 404);
    }

    // A real microVM through the same API and CLI.
    let t = Instant::now();
    let (st, v) = d
        .post(
            "/v1/sandboxes",
            json!({"name": "vm", "backend": "qemu", "memory_mib": 256}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    eprintln!("qemu sandbox created in {:?}", t.elapsed());
    let out = d
        .exec("vm", &["sh", "-c", "uname -r; cat /proc/1/comm; hostname"])
        .await;
    let stdout = out["stdout"].as_str().unwrap();
    assert!(
        stdout.contains("cloud-amd64"),
        "a real guest kernel: {stdout}"
    );
    assert!(
        stdout.contains("ironclaw-guest") && stdout.ends_with("vm\n"),
        "{stdout}"
    );
    d.exec("vm", &["sh", "-c", "echo persisted > /root/f; sync"])
        .await;
    let (st, _) = d.post("/v1/sandboxes/vm/stop", json!({})).await;
    assert_eq!(st, 200);
    let (st, _) = d.post("/v1/sandboxes/vm/start", json!({})).await;
    assert_eq!(st, 200);
    assert_eq!(
        d.exec("vm", &["cat", "/root/f"]).await["stdout"],
        "persisted\n"
    );
    let (_, v) = d.get("/v1/sandboxes/vm").await;
    assert!(v["disk_used_bytes"].as_u64().unwrap() > 0);
    let (st, logs) = d.get("/v1/sandboxes/vm/logs").await;
    assert_eq!(st, 200);
    assert!(
        !logs.as_str().unwrap_or_default().trim().is_empty(),
        "the serial console is captured"
    );
    let (st, _) = d
        .req(reqwest::Method::DELETE, "/v1/sandboxes/vm", None)
        .await;
    assert_eq!(st, 204);
    assert!(common::processes_matching("qemu-system")
        .iter()
        .all(|p| !p.contains(&d.data_dir().display().to_string())));
}
