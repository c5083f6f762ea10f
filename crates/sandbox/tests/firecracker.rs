//! The firecracker backend against the real Firecracker binary (v1.12.1;
//! scripts/fetch-firecracker.sh fetches it, sha256-pinned, and test.sh
//! exports IRONCLAW_FIRECRACKER_BIN).
//!
//! Where KVM guests boot, a full lifecycle runs. Where they do not (nested
//! virtualization as on the CI machines, which the probe detects), the test
//! still drives the real VMM: every API call must be accepted, InstanceStart
//! issued, and the guest's death reported as a crash with the KVM error from
//! Firecracker's log, within a bounded time and leaving nothing behind.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{cgroup_exists, firecracker_bin, shared, skip_reason, spec};
use ironclaw_proto::ExecRequest;
use ironclaw_sandbox::backend::Backend;
use ironclaw_sandbox::firecracker::FirecrackerBackend;
use ironclaw_sandbox::{BackendError, SandboxSpec};

fn firecracker_processes(spec: &SandboxSpec) -> usize {
    let want = format!("ironclaw-{}", spec.id);
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| c.split(|&b| b == 0).any(|a| a == want.as_bytes()))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firecracker_boots_or_reports_the_kvm_failure() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let Some(bin) = firecracker_bin() else {
        eprintln!("skipped: no firecracker binary (run scripts/fetch-firecracker.sh or set IRONCLAW_FIRECRACKER_BIN)");
        return;
    };
    let data = shared().data.clone();
    let (prober, probe) = common::kvm_probe().await;
    eprintln!("KVM probe: {probe:?}");
    // First unjailed (explicitly: a jailer next to the binary is used by default).
    let mut fc = FirecrackerBackend::new(Some(bin), Arc::clone(&prober)).without_jailer();
    assert!(fc.version().unwrap().contains("v1.12.1"));
    let w = fc
        .privilege_warning()
        .expect("unjailed firecracker runs as root");
    assert!(
        w.starts_with("firecracker would run as root: no jailer found next to"),
        "{w}"
    );
    let s = spec(&data, "fc-test");

    if probe.boots {
        // A host where KVM guests boot: the whole lifecycle.
        let (running, agent) = fc.start(&s).await.expect("firecracker boots");
        let out = agent
            .exec_collect(
                ExecRequest {
                    argv: vec!["sh".into(), "-c".into(), "hostname; exit 4".into()],
                    ..Default::default()
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(out.status.code, 4);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "fc-test\n");
        fc.stop(&s, &running, Some(&agent), Duration::from_secs(10))
            .await
            .unwrap();
    } else {
        eprintln!("full Firecracker end-to-end skipped: {}", probe.reason);
        // Unavailable through the normal path, with the probe's reason, at once.
        let t = Instant::now();
        match fc.start(&s).await {
            Err(BackendError::Unavailable(_, why)) => assert!(why.contains("cannot boot"), "{why}"),
            other => panic!("expected Unavailable, got {:?}", other.map(|_| ())),
        }
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "must fail fast, took {:?}",
            t.elapsed()
        );
        assert!(!fc.availability().available);

        // Driving the real VMM anyway: the boot dies and is reported as a crash.
        fc.ignore_probe = true;
        let t = Instant::now();
        let err = match fc.start(&s).await {
            Err(e) => e,
            Ok(_) => panic!("a guest booted although the probe said KVM guests cannot boot here"),
        };
        let took = t.elapsed();
        eprintln!("firecracker boot failure reported after {took:?}");
        let BackendError::Crashed(report) = err else {
            panic!("expected Crashed, got {err}")
        };
        assert!(
            report.contains("KVM_EXIT_INTERNAL_ERROR") || report.contains("KVM internal error"),
            "{report}"
        );
        assert!(took < Duration::from_secs(65), "bounded: {took:?}");
        // Every API call was accepted (a rejected one fails as Setup, not Crashed).
        let log = std::fs::read_to_string(s.dir.join("firecracker.log")).unwrap();
        assert!(
            log.contains("InstanceStart"),
            "InstanceStart was not issued"
        );
        assert!(
            !log.contains("Status code: 400"),
            "firecracker rejected a request:\n{log}"
        );
        assert_eq!(
            fc.logs(&s, 100_000).contains("KVM_EXIT_INTERNAL_ERROR"),
            report.contains("KVM_EXIT_INTERNAL_ERROR")
        );
    }
    assert_eq!(firecracker_processes(&s), 0, "firecracker left running");
    assert!(!cgroup_exists(&s), "cgroup left behind");
    fc.destroy(&s).await.unwrap();
    assert!(!s.dir.exists());

    // The same through the real jailer, as an unprivileged user in a chroot:
    // with no jailer configured, the one next to the binary is used.
    let jailer = bin_dir_file("jailer");
    let Some(jailer) = jailer else {
        eprintln!("jailer phase skipped: no jailer binary next to firecracker");
        return;
    };
    let mut jailed = FirecrackerBackend::new(firecracker_bin(), Arc::clone(&prober));
    let found = jailed
        .jailer()
        .expect("the jailer next to firecracker is used by default");
    assert_eq!(found.bin, jailer);
    assert_eq!((found.uid, found.gid), (10_000, 10_000));
    assert_eq!(jailed.privilege_warning(), None);
    jailed.ignore_probe = !probe.boots;
    let s = spec(&data, "fc-jailed");
    let jail_root = s
        .dir
        .join("jail/firecracker")
        .join(format!("ironclaw-{}", s.id))
        .join("root");
    // Watch the VMM while it lives: uid 10000, chrooted into its jail.
    let watch = {
        let want = format!("ironclaw-{}", s.id);
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(60);
            while Instant::now() < until {
                for pid in firecracker_pids(&want) {
                    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
                    let root = std::fs::read_link(format!("/proc/{pid}/root")).ok();
                    let status =
                        std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                    let uid = status
                        .lines()
                        .find_map(|l| l.strip_prefix("Uid:"))
                        .map(|u| u.split_whitespace().collect::<Vec<_>>().join(" "));
                    if exe.as_ref().is_some_and(|e| e.ends_with("firecracker")) {
                        return Some((uid, exe, root));
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            None
        })
    };
    match jailed.start(&s).await {
        Ok((running, agent)) => {
            assert!(probe.boots);
            jailed
                .stop(&s, &running, Some(&agent), Duration::from_secs(10))
                .await
                .unwrap();
        }
        Err(BackendError::Crashed(report)) => {
            assert!(!probe.boots);
            assert!(
                report.contains("KVM_EXIT_INTERNAL_ERROR") || report.contains("KVM internal error"),
                "{report}"
            );
            let log = std::fs::read_to_string(jail_root.join("firecracker.log")).unwrap();
            assert!(
                log.contains("InstanceStart") && !log.contains("Status code: 400"),
                "{log}"
            );
        }
        Err(e) => panic!("jailed firecracker: {e}"),
    }
    let seen = watch.join().unwrap();
    eprintln!("jailed firecracker seen as (uid, exe, root): {seen:?}");
    let (uid, exe, _root) = seen.expect("no firecracker process seen");
    assert_eq!(uid.as_deref(), Some("10000 10000 10000 10000"));
    // The jailer runs the copy of firecracker inside the jail.
    assert!(
        exe.as_ref().is_some_and(|e| e.starts_with(&jail_root) || e == std::path::Path::new("/firecracker")),
        "exe {exe:?}, jail {}",
        jail_root.display()
    );
    assert_eq!(
        firecracker_processes(&s),
        0,
        "jailed firecracker left running"
    );
    assert!(!cgroup_exists(&s), "cgroup left behind");
    jailed.destroy(&s).await.unwrap();
    assert!(!s.dir.exists());
}

/// Pids whose command line has the argument `want` (the VMM's `--id`).
fn firecracker_pids(want: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|&b| b == 0).any(|a| a == want.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

fn bin_dir_file(name: &str) -> Option<PathBuf> {
    let p = firecracker_bin()?.parent()?.join(name);
    p.exists().then_some(p)
}
