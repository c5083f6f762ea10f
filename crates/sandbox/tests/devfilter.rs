//! The cgroup v2 device filter against the real kernel: a process in a
//! group with the filter attached opens /dev/null and /dev/zero, and gets
//! EPERM for anything else (a loop device, /dev/loop-control, /dev/kmsg).
//! Runs wherever a cgroup2 hierarchy is mounted (also on hybrid hosts,
//! whose /sys/fs/cgroup/unified is one); says why when it cannot.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use ironclaw_sandbox::{cgroup::ALLOWED_DEVICES, devfilter};

fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "cgroup2")
        .map(|f| PathBuf::from(f[1]))
}

#[test]
fn device_filter_allows_only_the_listed_nodes() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: needs root to create a cgroup and load a BPF program");
        return;
    }
    let Some(root) = cgroup2_root() else {
        eprintln!("skipping: no cgroup2 hierarchy is mounted on this host");
        return;
    };
    let group = root.join(format!("ironclaw-devtest-{}", std::process::id()));
    std::fs::create_dir(&group).unwrap();
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _cleanup = Remove(group.clone());
    let rules: Vec<_> = ALLOWED_DEVICES
        .iter()
        .map(|r| devfilter::parse_rule(r).unwrap())
        .collect();
    devfilter::attach(&group, &rules).unwrap();

    let procs = group.join("cgroup.procs");
    let probe = |dev: &str| {
        let procs = procs.clone();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &format!("exec 3<>{dev} && echo opened")]);
        // SAFETY: only write(2) in the child before exec.
        unsafe {
            cmd.pre_exec(move || std::fs::write(&procs, "0"));
        }
        let out = cmd.output().unwrap();
        (
            String::from_utf8_lossy(&out.stdout).contains("opened"),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    for dev in ["/dev/null", "/dev/zero", "/dev/urandom"] {
        let (opened, err) = probe(dev);
        assert!(opened, "{dev} must open inside the filtered group: {err}");
    }
    for dev in ["/dev/loop-control", "/dev/kmsg", "/dev/loop0"] {
        if !std::path::Path::new(dev).exists() {
            continue;
        }
        let (opened, err) = probe(dev);
        assert!(!opened, "{dev} opened despite the filter");
        assert!(err.contains("Operation not permitted"), "{dev}: {err}");
    }
}
