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
    if !fc.is_empty() {
        // The real Firecracker has its jailer next to it (fetch-firecracker.sh)
        // and QEMU runs as its own uid: no VMM would run as root.
        assert_eq!(host["warnings"], json!([]), "{host}");
        assert!(!doctor.contains("WARNING"), "{doctor}");
        assert!(
            fc_backend["reason"].as_str().unwrap().contains("jailed by"),
            "{fc_backend}"
        );
    }
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
    // Running as the image's user works in a VM too (real ids, no user
    // namespace; the ext4 disk kept the home's owner).
    let (st, v) = d
        .post(
            "/v1/sandboxes/vm/exec",
            json!({"argv": ["sh", "-c", "id -un; stat -c %u /home/user; grep CapEff /proc/self/status"], "user": "user"}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["stdout"], "user\n1000\nCapEff:\t0000000000000000\n",
        "{v}"
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
    // QEMU runs unprivileged (uid qemu_uid, default 10001) under seccomp.
    let pid = v["pid"].as_i64().expect("a running VM has a pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(field("Uid"), "10001 10001 10001 10001", "{status}");
    assert_eq!(field("Gid"), "10001 10001 10001 10001", "{status}");
    assert_eq!(field("Seccomp"), "2", "{status}");
    let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
        .replace('\0', " ");
    assert!(
        cmdline.contains("qemu-system") && cmdline.contains("-sandbox on,"),
        "pid {pid}: {cmdline}"
    );
    let (st, _) = d
        .req(reqwest::Method::DELETE, "/v1/sandboxes/vm", None)
        .await;
    assert_eq!(st, 204);
    let gone = |pid: i64| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| !String::from_utf8_lossy(&c).contains("qemu-system"))
            .unwrap_or(true)
    };
    assert!(gone(pid), "QEMU {pid} left running");
}

/// doctor warns plainly when a VMM would run as root (in its JSON and in
/// the CLI's report), and not otherwise: Firecracker without a jailer next
/// to it, QEMU configured as uid 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_warns_when_a_vmm_would_run_as_root() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let bin_dir = tmp.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    let fc = bin_dir.join("firecracker");
    // Stands in for the real binary: doctor only asks it for --version.
    std::fs::write(&fc, "#!/bin/sh\necho 'Firecracker v1.12.1'\n").unwrap();
    std::fs::set_permissions(&fc, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The environment (as scripts/test.sh sets it) would name the real one.
    let fc_env = fc.to_str().unwrap();

    let doctor = |d: &Daemon| {
        let out = d.cli(&["doctor"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let warnings = |v: &serde_json::Value| -> Vec<String> {
        v["warnings"]
            .as_array()
            .unwrap_or_else(|| panic!("no warnings array: {v}"))
            .iter()
            .map(|w| w.as_str().unwrap().to_string())
            .collect()
    };

    // No jailer next to firecracker, no firecracker_jailer: root.
    let d = Daemon::start_env("", &[("IRONCLAW_FIRECRACKER_BIN", fc_env)]).await;
    let (st, host) = d.get("/v1/host").await;
    assert_eq!(st, 200);
    let want = format!(
        "firecracker would run as root: no jailer found next to {}; install jailer or set firecracker_jailer",
        fc.display()
    );
    assert_eq!(warnings(&host), vec![want.clone()], "{host}");
    let text = doctor(&d);
    assert!(text.contains(&format!("WARNING: {want}\n")), "{text}");
    let fc_reason = host["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "firecracker")
        .unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        fc_reason.contains("not jailed (runs as root)"),
        "{fc_reason}"
    );
    drop(d);

    // A jailer next to it: used by default, so no warning (and QEMU runs
    // as its own uid by default).
    let jailer = bin_dir.join("jailer");
    std::fs::write(&jailer, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(&jailer, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start_env("", &[("IRONCLAW_FIRECRACKER_BIN", fc_env)]).await;
    let (_, host) = d.get("/v1/host").await;
    assert_eq!(warnings(&host), Vec::<String>::new(), "{host}");
    assert!(!doctor(&d).contains("WARNING"));
    let fc_reason = host["backends"].as_array().unwrap()[0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        fc_reason.contains(&format!("jailed by {} as uid 10000", jailer.display())),
        "{fc_reason}"
    );
    drop(d);

    // QEMU configured as root, Firecracker's jailer dropping to uid 0.
    let d = Daemon::start_env(
        "qemu_uid = 0\nqemu_gid = 0\nfirecracker_uid = 0\n",
        &[("IRONCLAW_FIRECRACKER_BIN", fc_env)],
    )
    .await;
    let (_, host) = d.get("/v1/host").await;
    let w = warnings(&host);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w
        .iter()
        .any(|w| w.starts_with("firecracker would run as root: its jailer")));
    assert!(w
        .iter()
        .any(|w| w.starts_with("qemu would run as root: qemu_uid is 0")));
    let text = doctor(&d);
    assert_eq!(text.matches("WARNING: ").count(), 2, "{text}");
}
