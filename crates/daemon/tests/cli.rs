//! The `ironclaw` CLI against a real daemon, as a user types it.

mod common;

use common::Daemon;
use serde_json::{json, Value};

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lifecycle_exec_cp_and_errors() {
    let d = Daemon::start().await;
    let build = ok(&d.cli(&["image", "build", "mini", "--from", "busybox"]));
    assert!(build.contains("mini"), "{build}");
    let images = ok(&d.cli(&["image", "ls", "--json"]));
    assert!(images.contains("\"mini\""), "{images}");

    ok(&d.cli(&[
        "sandbox", "create", "--name", "dev", "--image", "mini", "--memory", "256M",
    ]));
    let ls = ok(&d.cli(&["sandbox", "ls"]));
    let header = ls.lines().next().unwrap();
    for col in [
        "NAME", "STATE", "BACKEND", "IMAGE", "VCPU", "MEMORY", "DISK", "AGE",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert!(
        ls.lines()
            .any(|l| l.starts_with("dev") && l.contains("running") && l.contains("namespace")),
        "{ls}"
    );
    let v: Value = serde_json::from_str(&ok(&d.cli(&["sandbox", "ls", "--json"]))).unwrap();
    let list = v
        .as_array()
        .or_else(|| v["sandboxes"].as_array())
        .unwrap()
        .clone();
    assert_eq!(list[0]["memory_mib"], 256);

    // exec streams output and exits with the command's code.
    let out = d.cli(&[
        "exec",
        "dev",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 42",
    ]);
    assert_eq!(out.status.code(), Some(42));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let out = d.cli(&["exec", "dev", "--", "no-such-thing"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("command not found"));
    // --user: a user of the sandbox (the image's `user`), or an error.
    let out = d.cli(&[
        "exec",
        "--user",
        "user",
        "dev",
        "--",
        "sh",
        "-c",
        "id -un; pwd",
    ]);
    assert_eq!(ok(&out), "user\n/home/user\n");
    let out = d.cli(&["exec", "-u", "ghost", "dev", "--", "true"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no user ghost in the sandbox's /etc/passwd"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // cp both ways, byte for byte.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("app.py");
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&src, &payload).unwrap();
    ok(&d.cli(&["cp", src.to_str().unwrap(), "dev:/root/app.py"]));
    let back = tmp.path().join("back.py");
    ok(&d.cli(&["cp", "dev:/root/app.py", back.to_str().unwrap()]));
    assert_eq!(std::fs::read(&back).unwrap(), payload);

    // stop/start keeps files; exec into a stopped sandbox says so.
    ok(&d.cli(&["sandbox", "stop", "dev"]));
    let out = d.cli(&["exec", "dev", "--", "true"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stopped"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(&d.cli(&["sandbox", "start", "dev"]));
    let out = d.cli(&["exec", "dev", "--", "wc", "-c", "/root/app.py"]);
    assert!(ok(&out).contains("300000"));

    // Errors go to stderr with a non-zero exit and name the sandbox.
    let out = d.cli(&["sandbox", "show", "ghost"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ghost"));
    let out = d.cli(&["sandbox", "create", "--name", "Bad_Name"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid name"));
    let bad = d
        .cli_command(&["sandbox", "ls"])
        .env("IRONCLAW_TOKEN", "wrong")
        .output()
        .unwrap();
    assert_ne!(bad.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&bad.stderr).contains(&d.token));
    // With no token given, the CLI finds the daemon's own admin.token through
    // IRONCLAW_DATA_DIR (the variable ironclawd reads for --data-dir).
    let out = d
        .cli_command(&["sandbox", "ls", "--json"])
        .output()
        .unwrap();
    assert!(ok(&out).contains("\"dev\""));

    let doctor = ok(&d.cli(&["doctor"]));
    assert!(doctor.contains("namespace"), "{doctor}");

    ok(&d.cli(&["sandbox", "rm", "dev"]));
    let (st, _) = d.get("/v1/sandboxes/dev").await;
    assert_eq!(st, 404);
}

/// The README's first example: python3 in the Debian image. Builds the image
/// with mmdebstrap from the Debian mirror (about 35 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_image_runs_python() {
    let d = Daemon::start().await;
    let out = d.cli(&["image", "build", "base", "--from", "debian"]);
    ok(&out);
    let (st, v) = d
        .post("/v1/sandboxes", json!({"name": "deb", "image": "base"}))
        .await;
    assert_eq!(st, 201, "{v}");
    let out = d.cli(&["exec", "deb", "--", "python3", "-c", "print(6*7)"]);
    assert_eq!(ok(&out), "42\n");
    for tool in ["bash", "git", "curl", "ps"] {
        let v = d
            .exec("deb", &["sh", "-c", &format!("command -v {tool}")])
            .await;
        assert_eq!(
            v["exit_code"], 0,
            "{tool} missing from the debian image: {v}"
        );
    }
}
