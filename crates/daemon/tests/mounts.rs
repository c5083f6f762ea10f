//! Host directories in sandboxes (`mounts` / `--mount`), end to end: a real
//! daemon with `[[mount_roots]]`, real namespace sandboxes, host
//! directories under a tempdir that the test removes.

mod common;

use std::os::unix::fs::{chown, symlink};
use std::path::Path;

use common::Daemon;
use serde_json::{json, Value};

fn mount(host: &Path, guest: &str, read_only: bool) -> Value {
    json!({"host": host, "guest": guest, "read_only": read_only})
}

fn message(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Create `name` with `mounts`; expect `status` and a message containing `needle`.
async fn refused(d: &Daemon, mounts: Value, status: u16, needle: &str) {
    let (st, v) = d
        .post(
            "/v1/sandboxes",
            json!({"name": "refused", "image": "mini", "mounts": mounts}),
        )
        .await;
    assert_eq!(st, status, "{mounts}: {v}");
    assert!(
        message(&v).contains(needle),
        "{mounts}: want {needle:?}: {v}"
    );
}

async fn count(d: &Daemon) -> usize {
    d.get("/v1/sandboxes").await.1["sandboxes"]
        .as_array()
        .unwrap()
        .len()
}

/// A nosuid,nodev tmpfs mounted on the host for the test's writable root
/// (read-write mounts need one), unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let st = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                "nosuid,nodev,size=16m,mode=755",
                "tmpfs",
            ])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Whether the host's mount table mentions `path` (nothing may leak out).
fn host_mounts_mention(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(&*path.to_string_lossy())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_mounts_work_and_are_rechecked_at_start() {
    let tmp = tempfile::Builder::new()
        .prefix("iclm")
        .tempdir_in("/tmp")
        .unwrap();
    let t = tmp.path();
    let (ro, rw, outside) = (t.join("ro"), t.join("rw"), t.join("outside"));
    let plain = t.join("plain");
    let tmpfs = Tmpfs::mount(&rw);
    let share = ro.join("share");
    for dir in [&share, &rw.join("out"), &outside, &plain] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(share.join("hello.txt"), "hello from the host\n").unwrap();
    std::fs::write(share.join("user.txt"), "u").unwrap();
    chown(share.join("user.txt"), Some(1000), Some(1000)).unwrap();
    std::fs::write(share.join("high.txt"), "h").unwrap();
    chown(share.join("high.txt"), Some(100_000), Some(100_000)).unwrap();
    std::fs::write(outside.join("secret"), "not for sandboxes").unwrap();
    // A symlink inside the root that points outside it, and one that
    // points inside (swapped for an outside one later).
    symlink(&outside, ro.join("escape")).unwrap();
    symlink(&share, ro.join("link")).unwrap();

    let config = format!(
        "[[mount_roots]]\npath = \"{}\"\n\n[[mount_roots]]\npath = \"{}\"\nwritable = true\n\n\
         [[mount_roots]]\npath = \"{}\"\nwritable = true\n",
        ro.display(),
        rw.display(),
        plain.display()
    );
    let d = Daemon::start_with(&config).await;

    let s = d
        .sandbox(
            "m",
            json!({"mounts": [
                mount(&share, "/data", true),
                {"host": rw.join("out"), "guest": "/mnt/out/deep", "read_only": false},
                {"host": ro.join("link"), "guest": "/linked"},
            ]}),
        )
        .await;
    assert_eq!(s["state"], "running", "{s}");
    assert_eq!(s["mounts"].as_array().unwrap().len(), 3, "{s}");
    assert_eq!(
        s["mounts"][2]["read_only"], true,
        "read-only by default: {s}"
    );
    let (_, shown) = d.get("/v1/sandboxes/m").await;
    assert_eq!(shown["mounts"], s["mounts"]);

    // Read-only: readable, not writable, not remountable.
    let out = d
        .exec("m", &["cat", "/data/hello.txt", "/linked/hello.txt"])
        .await;
    assert_eq!(
        out["stdout"], "hello from the host\nhello from the host\n",
        "{out}"
    );
    let out = d.exec("m", &["sh", "-c", "echo x > /data/new"]).await;
    assert_ne!(out["exit_code"], 0, "{out}");
    assert!(
        out["stderr"]
            .as_str()
            .unwrap()
            .contains("Read-only file system"),
        "{out}"
    );
    let out = d
        .exec(
            "m",
            &["sh", "-c", "mount -o remount,rw /data; echo x > /data/new"],
        )
        .await;
    assert_ne!(out["exit_code"], 0, "{out}");
    assert!(!share.join("new").exists());
    let out = d
        .exec(
            "m",
            &["sh", "-c", "mount -o remount,rw /data 2>&1; echo rc=$?"],
        )
        .await;
    let text = out["stdout"].as_str().unwrap();
    assert!(!text.contains("rc=0"), "remount succeeded: {out}");
    // No CAP_SYS_ADMIN over the mount namespace (the host owns it), and
    // seccomp denies mount(2) anyway.
    assert!(text.contains("permission denied"), "{out}");
    // Owners: host root's file is root's inside; host uid 1000 is 1000
    // (the image's `user` account); a host uid outside the sandbox's
    // 65,536 ids is nobody.
    let out = d
        .exec(
            "m",
            &[
                "stat",
                "-c",
                "%u:%g %U",
                "/data/hello.txt",
                "/data/user.txt",
                "/data/high.txt",
            ],
        )
        .await;
    assert_eq!(
        out["stdout"], "0:0 root\n1000:1000 user\n65534:65534 nobody\n",
        "{out}"
    );
    // nosuid and nodev on every host mount.
    let out = d.exec("m", &["cat", "/proc/self/mountinfo"]).await;
    let info = out["stdout"].as_str().unwrap();
    for guest in ["/data ", "/mnt/out/deep ", "/linked "] {
        let line = info
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(guest.trim()))
            .unwrap_or_else(|| panic!("{guest} not mounted: {info}"));
        assert!(line.contains("nosuid") && line.contains("nodev"), "{line}");
        let ro_flag = line
            .split(' ')
            .nth(5)
            .unwrap()
            .split(',')
            .any(|f| f == "ro");
        assert_eq!(ro_flag, guest != "/mnt/out/deep ", "{line}");
    }

    // Read-write where the root allows it: the file appears on the host,
    // owned by host root (root inside writes as root through the idmap).
    let out = d
        .exec(
            "m",
            &[
                "sh",
                "-c",
                "echo written inside > /mnt/out/deep/f && ls -ld /mnt/out/deep",
            ],
        )
        .await;
    assert_eq!(out["exit_code"], 0, "{out}");
    let f = rw.join("out").join("f");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "written inside\n");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&f).unwrap().uid(), 0);
    // Nothing of the sandbox's mounts shows in the host's namespace.
    assert!(
        !host_mounts_mention(&share),
        "a sandbox mount leaked to the host"
    );

    // Refusals: each a clear 400/403, nothing created.
    let before = count(&d).await;
    refused(
        &d,
        json!([mount(&outside, "/x", true)]),
        403,
        "not inside an allowed mount root",
    )
    .await;
    refused(
        &d,
        json!([mount(&ro.join("escape"), "/x", true)]),
        403,
        "not inside an allowed mount root",
    )
    .await;
    refused(
        &d,
        json!([{"host": format!("{}/share/../../outside", ro.display()), "guest": "/x"}]),
        400,
        "'..'",
    )
    .await;
    refused(&d, json!([mount(&share, "/x", false)]), 403, "is read-only").await;
    // Writable root, but on a host filesystem that honours setuid bits:
    // root inside could leave a setuid-root program for host users.
    refused(
        &d,
        json!([mount(&plain, "/x", false)]),
        403,
        "not mounted nosuid",
    )
    .await;
    let (st, v) = d
        .post(
            "/v1/sandboxes",
            json!({"name": "plainro", "image": "mini", "mounts": [mount(&plain, "/x", true)]}),
        )
        .await;
    assert_eq!(st, 201, "read-only is fine there: {v}");
    let (st, _) = d
        .req(reqwest::Method::DELETE, "/v1/sandboxes/plainro", None)
        .await;
    assert_eq!(st, 204);
    refused(
        &d,
        json!([{"host": "relative/dir", "guest": "/x"}]),
        400,
        "absolute",
    )
    .await;
    refused(
        &d,
        json!([mount(&t.join("nope"), "/x", true)]),
        400,
        "cannot be resolved",
    )
    .await;
    refused(
        &d,
        json!([mount(&share.join("hello.txt"), "/x", true)]),
        400,
        "not a directory",
    )
    .await;
    for (guest, needle) in [
        ("x", "absolute"),
        ("/", "must not be /"),
        ("/a/../b", "normalized"),
        ("/a/", "normalized"),
        ("/proc/x", "under /proc"),
        ("/sys", "under /sys"),
        ("/dev/shm", "under /dev"),
        ("/run/ironclaw/x", "under /run/ironclaw"),
    ] {
        refused(&d, json!([mount(&share, guest, true)]), 400, needle).await;
    }
    // Through a symlink or a file of the image (busybox's applets are links).
    refused(
        &d,
        json!([mount(&share, "/bin/sh/x", true)]),
        400,
        "symlink /bin/sh -> busybox",
    )
    .await;
    refused(
        &d,
        json!([mount(&share, "/bin/busybox/x", true)]),
        400,
        "not a directory in the image",
    )
    .await;
    refused(
        &d,
        json!([mount(&share, "/a", true), mount(&rw, "/a/b", true)]),
        400,
        "overlap",
    )
    .await;
    refused(
        &d,
        json!([{"host": share, "guest": "/x", "writable": true}]),
        400,
        "unknown field",
    )
    .await;
    let (st, v) = d
        .post(
            "/v1/sandboxes",
            json!({"name": "vm", "image": "mini", "backend": "qemu", "mounts": [mount(&share, "/x", true)]}),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    assert!(message(&v).contains("namespace backend only"), "{v}");
    assert_eq!(count(&d).await, before, "a refused create left a sandbox");

    // The CLI flag, and `sandbox show`.
    let spec = format!("{}:/cli", share.display());
    let out = d.cli(&["sandbox", "create", "-n", "c", "--mount", &spec]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.cli(&["sandbox", "show", "c"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{} -> /cli (ro)", share.display())),
        "{text}"
    );
    assert_eq!(
        d.exec("c", &["cat", "/cli/hello.txt"]).await["stdout"],
        "hello from the host\n"
    );
    let out = d.cli(&[
        "sandbox",
        "create",
        "-n",
        "c2",
        "--mount",
        &format!("{}:/x", outside.display()),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not inside an allowed mount root"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A symlink swapped after create to point outside: the next start
    // fails, saying why, and the sandbox stays stopped.
    let (st, _) = d.post("/v1/sandboxes/m/stop", json!({})).await;
    assert_eq!(st, 200);
    std::fs::remove_file(ro.join("link")).unwrap();
    symlink(&outside, ro.join("link")).unwrap();
    let (st, v) = d.post("/v1/sandboxes/m/start", json!({})).await;
    assert_eq!(st, 403, "{v}");
    let msg = message(&v);
    assert!(
        msg.contains("no longer allowed") && msg.contains("not inside an allowed mount root"),
        "{v}"
    );
    let (_, shown) = d.get("/v1/sandboxes/m").await;
    assert_eq!(shown["state"], "stopped");
    assert!(
        shown["state_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("no longer allowed"),
        "{shown}"
    );
    // Put back, it starts again with its files.
    std::fs::remove_file(ro.join("link")).unwrap();
    symlink(&share, ro.join("link")).unwrap();
    let (st, v) = d.post("/v1/sandboxes/m/start", json!({})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        d.exec("m", &["cat", "/linked/hello.txt"]).await["stdout"],
        "hello from the host\n"
    );

    drop(d);
    drop(tmpfs);
    assert!(!host_mounts_mention(t), "mounts left on the host");
    drop(tmp);
}

/// The paths no allowlist can open: `/`, the data dir (and what contains
/// it), the secrets file's directory, /proc, /sys, /dev, even with `/`
/// itself allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_mounted_paths_are_refused_even_under_an_allowed_root() {
    let tmp = tempfile::Builder::new()
        .prefix("iclm")
        .tempdir_in("/tmp")
        .unwrap();
    let secrets_dir = tmp.path().join("secrets");
    std::fs::create_dir_all(&secrets_dir).unwrap();
    let secrets = secrets_dir.join("secrets.env");
    std::fs::write(&secrets, "ANTHROPIC_API_KEY=sk-test\n").unwrap();
    std::fs::create_dir_all(tmp.path().join("ok")).unwrap();
    let config = format!(
        "secrets_file = \"{}\"\n[[mount_roots]]\npath = \"/\"\nwritable = true\n",
        secrets.display()
    );
    let d = Daemon::start_with(&config).await;
    let data = d.data_dir().to_path_buf();
    for (host, needle) in [
        (Path::new("/"), "is /"),
        (data.as_path(), "data dir"),
        (&data.join("sandboxes"), "data dir"),
        // A directory holding the data dir would expose it too.
        (data.parent().unwrap(), "data dir"),
        (&secrets_dir, "secrets"),
        (tmp.path(), "secrets"),
        (Path::new("/proc"), "under /proc"),
        (Path::new("/proc/self"), "under /proc"),
        (Path::new("/sys/fs"), "under /sys"),
        (Path::new("/dev"), "under /dev"),
    ] {
        refused(&d, json!([mount(host, "/x", true)]), 403, needle).await;
    }
    // The secrets file itself is not a directory, and lies in a refused one.
    refused(
        &d,
        json!([mount(&secrets, "/x", true)]),
        400,
        "not a directory",
    )
    .await;
    // A symlink to the data dir is resolved before the check.
    let link = tmp.path().join("ok").join("to-data");
    symlink(&data, &link).unwrap();
    refused(&d, json!([mount(&link, "/x", true)]), 403, "data dir").await;
    assert_eq!(count(&d).await, 0);
    drop(d);
    drop(tmp);
}

/// The sandbox owns its disk, so it can replace a directory on the way to
/// a mount point with a symlink (here one that climbs out to a host
/// directory). The next start must refuse to follow it rather than create
/// or mount anything outside the sandbox's root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_planted_inside_cannot_redirect_a_mount_point() {
    let tmp = tempfile::Builder::new()
        .prefix("iclm")
        .tempdir_in("/tmp")
        .unwrap();
    let (root, victim) = (tmp.path().join("root"), tmp.path().join("victim"));
    std::fs::create_dir_all(root.join("share")).unwrap();
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(root.join("share").join("f"), "f").unwrap();
    let config = format!("[[mount_roots]]\npath = \"{}\"\n", root.display());
    let d = Daemon::start_with(&config).await;
    d.sandbox(
        "p",
        json!({"mounts": [mount(&root.join("share"), "/work/in/data", true)]}),
    )
    .await;
    assert_eq!(
        d.exec("p", &["cat", "/work/in/data/f"]).await["stdout"],
        "f"
    );
    // Relative, with enough '..' to leave the sandbox's merged dir on the
    // host; and an absolute one for the next component.
    let climb = format!("{}{}", "../".repeat(30), victim.display());
    let out = d
        .exec(
            "p",
            &[
                "sh",
                "-c",
                &format!("mv /work /work.old && ln -s {climb} /work && ls -l /work"),
            ],
        )
        .await;
    assert_eq!(out["exit_code"], 0, "{out}");
    let (st, _) = d.post("/v1/sandboxes/p/stop", json!({})).await;
    assert_eq!(st, 200);
    let (st, v) = d.post("/v1/sandboxes/p/start", json!({})).await;
    assert_ne!(st, 200, "started through a planted symlink: {v}");
    assert!(message(&v).contains("not a symlink"), "{v}");
    assert_eq!(
        std::fs::read_dir(&victim).unwrap().count(),
        0,
        "something was created outside the sandbox"
    );
    let (st, _) = d
        .req(reqwest::Method::DELETE, "/v1/sandboxes/p", None)
        .await;
    assert_eq!(st, 204);
    drop(d);
    assert!(!host_mounts_mention(tmp.path()), "mounts left on the host");
    drop(tmp);
}
