//! Boot figures of the qemu backend next to a reference measured in the
//! same run: the same QEMU, kernel and modules, with an initramfs whose
//! /init only prints a marker and powers off. The difference is what our
//! initramfs, root disk and guest agent add.
//!
//! `cargo bench -p ironclaw-sandbox --bench qemu_boot [-- --runs N] [--debian]`
//! (root; the static guest from scripts/test.sh or IRONCLAW_GUEST_BIN).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ironclaw_proto::ExecRequest;
use ironclaw_sandbox::backend::Backend;
use ironclaw_sandbox::image::{self, initramfs, kernel, BuildRequest, ImageSource};
use ironclaw_sandbox::qemu::QemuBackend;
use ironclaw_sandbox::{Resources, SandboxSpec};

const MARKER: &str = "IRONCLAW-REF-BOOTED";

fn guest_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("IRONCLAW_GUEST_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().unwrap().parent().unwrap().parent().unwrap();
    target.join("x86_64-unknown-linux-gnu/release/ironclaw-guest")
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn stats(name: &str, v: &mut [f64], unit: &str) -> f64 {
    let m = median(v);
    println!(
        "{name:<44} median {m:>8.3} {unit}  (min {:.3}, max {:.3}, n={})",
        v[0],
        v[v.len() - 1],
        v.len()
    );
    m
}

fn tsc_khz() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find(|l| l.starts_with("cpu MHz"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|mhz| format!(" tsc_early_khz={}", (mhz * 1000.0).round() as u64))
        .unwrap_or_default()
}

/// Spawn to marker on the serial console for the reference initramfs.
fn reference_boot(k: &kernel::KernelInfo, initrd: &Path, disk: Option<&Path>) -> f64 {
    let started = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-M", "microvm,acpi=on", "-no-reboot", "-nodefaults"])
        .args(["-no-user-config", "-display", "none"])
        .args([
            "-accel",
            "tcg,tb-size=64",
            "-cpu",
            "max",
            "-m",
            "256M",
            "-smp",
            "1",
        ])
        .arg("-kernel")
        .arg(k.vmlinuz())
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 reboot=k panic=-1 quiet{}{}",
            tsc_khz(),
            if disk.is_some() {
                " ironclaw.marker=1"
            } else {
                ""
            }
        ))
        .args(["-serial", "stdio"])
        .args(match disk {
            Some(d) => vec![
                "-drive".to_string(),
                format!("id=root,file={},format=raw,if=none", d.display()),
                "-device".to_string(),
                "virtio-blk-device,drive=root".to_string(),
            ],
            None => vec![],
        })
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64 runs");
    let mut out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let mut at = None;
    while let Ok(n) = out.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        if at.is_none() && String::from_utf8_lossy(&seen).contains(MARKER) {
            at = Some(started.elapsed().as_secs_f64());
        }
    }
    let _ = child.wait();
    at.unwrap_or_else(|| {
        panic!(
            "reference guest never printed its marker: {}",
            String::from_utf8_lossy(&seen)
        )
    })
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

async fn build_image(images: &Path, name: &str, source: ImageSource) -> f64 {
    let t = Instant::now();
    let meta = image::build(
        &BuildRequest {
            name: name.into(),
            source,
            images_dir: images.to_path_buf(),
            guest_bin: guest_bin(),
        },
        &|_| {},
    )
    .await
    .expect("image builds");
    assert!(meta.vm.is_some(), "no VM artifacts: {:?}", meta.vm_error);
    t.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(5);
    let debian = args.iter().any(|a| a == "--debian");
    if !nix::unistd::geteuid().is_root() || !guest_bin().exists() {
        eprintln!(
            "qemu_boot: needs root and the static guest (scripts/test.sh builds it); skipped"
        );
        return;
    }
    let dir = tempfile::Builder::new().prefix("icqb").tempdir().unwrap();
    let data = dir.path();
    let images = data.join("images");

    println!("== image builds");
    let first = build_image(&images, "bb", ImageSource::Busybox).await;
    println!("busybox image, kernel not yet in this data dir   {first:>8.3} s");
    let mut bb = Vec::new();
    for i in 0..3 {
        bb.push(build_image(&images, &format!("bb{i}"), ImageSource::Busybox).await);
    }
    stats("busybox image (kernel cached)", &mut bb, "s");
    if debian {
        let t = build_image(&images, "deb", ImageSource::Debian).await;
        println!("debian image                                      {t:>8.3} s");
    }

    let k = kernel::newest_cached(&kernel::kernels_dir(&images)).unwrap();
    let ref_initrd = data.join("ref.cpio.gz");
    let ref_init = format!("#!/bin/sh\nexport PATH=/bin\necho {MARKER}\npoweroff -f\n");
    initramfs::write(&ref_initrd, &k, Path::new("/bin/busybox"), &ref_init).unwrap();

    let backend = QemuBackend::for_data_dir(data);
    println!("\n== boots ({runs} each, TCG unless the host's KVM boots guests)");
    println!("backend: {}", backend.availability().reason);
    let mut reference = Vec::new();
    let mut same_initrd = Vec::new();
    let mut ready = Vec::new();
    let mut first_exec = Vec::new();
    let mut rss = Vec::new();
    for i in 0..runs {
        // Interleaved, so drift in host load hits both sides alike.
        reference.push(reference_boot(&k, &ref_initrd, None));
        let id = format!("b{i:05}");
        let spec = SandboxSpec {
            id: id.clone(),
            name: format!("bench-{i}"),
            image_rootfs: image::rootfs(&images, "bb"),
            dir: data.join("sandboxes").join(&id),
            resources: Resources {
                vcpus: 1,
                memory_mib: 256,
                disk_mib: 256,
                pids: 1024,
            },
        };
        backend.prepare(&spec).await.unwrap();
        // The image's own initramfs and disk, stopping at a marker where the agent would start.
        let vm = image::vm::artifacts(&spec.image_rootfs).unwrap();
        same_initrd.push(reference_boot(
            &k,
            &vm.initramfs,
            Some(&spec.dir.join("disk.ext4")),
        ));
        let t = Instant::now();
        let (running, agent) = backend.start(&spec).await.expect("boots");
        ready.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let out = agent
            .exec_collect(
                ExecRequest {
                    argv: vec!["true".into()],
                    ..Default::default()
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(out.status.code, 0);
        first_exec.push(t.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss.push(rss_kib(running.pid) as f64 / 1024.0);
        backend
            .stop(&spec, &running, Some(&agent), Duration::from_secs(20))
            .await
            .unwrap();
        backend.destroy(&spec).await.unwrap();
    }
    let r = stats(
        "reference: kernel + marker-only initramfs",
        &mut reference,
        "s",
    );
    let same = stats(
        "reference: same initramfs + disk, marker",
        &mut same_initrd,
        "s",
    );
    let q = stats("qemu backend: start() to agent ready", &mut ready, "s");
    println!(
        "{:<44} {:>8.3}x  (the agent adds {:+.0}% to a boot of the same kernel and initramfs; target <= +15%)",
        "ratio vs same initramfs",
        q / same,
        (q / same - 1.0) * 100.0
    );
    println!(
        "{:<44} {:>8.3}x  (everything after the kernel: modules, disk, agent)",
        "ratio vs marker-only initramfs",
        q / r,
    );
    stats(
        "start returned -> first exec completed",
        &mut first_exec,
        "ms",
    );
    stats("QEMU RSS per running VM (256 MiB guest)", &mut rss, "MiB");
}
