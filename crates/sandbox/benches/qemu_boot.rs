//! Boot figures of the qemu backend next to two references booted in the
//! same run, interleaved, with the same QEMU, kernel and modules:
//! - a plain boot: an initramfs whose /init is a busybox shell script that
//!   prints a marker and powers off;
//! - the image's own initramfs and disk under `ironclaw.marker=1`: the
//!   agent's stage one loads the modules and mounts the root disk, then
//!   prints the marker where it would switch root and serve.
//!
//! From the second to agent-ready is what the agent adds.
//!
//! `cargo bench -p ironclaw-sandbox --bench qemu_boot [-- --runs N] [--debian]`
//! (root; the static guest from scripts/test.sh or IRONCLAW_GUEST_BIN).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ironclaw_proto::boot::BOOT_MARKER as MARKER;
use ironclaw_proto::ExecRequest;
use ironclaw_sandbox::agent::ExecOutput;
use ironclaw_sandbox::backend::Backend;
use ironclaw_sandbox::image::{self, initramfs, kernel, BuildRequest, ImageSource};
use ironclaw_sandbox::qemu::QemuBackend;
use ironclaw_sandbox::{AgentClient, Resources, SandboxSpec};

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

/// VMMs outlive their parent on purpose (the daemon re-adopts them): when
/// an assertion fails mid-run, kill the VM instead of leaving it behind.
/// (Its cgroup goes on the next run, which reuses the sandbox ids.)
struct KillOnPanic(i32);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // SAFETY: kill has no memory effects.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

/// A one-vCPU sandbox of image `image` in the bench's data dir.
fn bench_spec(data: &Path, image: &str, id: &str, memory_mib: u64, disk_mib: u64) -> SandboxSpec {
    SandboxSpec {
        id: id.into(),
        name: format!("bench-{id}"),
        image_rootfs: image::rootfs(&data.join("images"), image),
        dir: data.join("sandboxes").join(id),
        resources: Resources {
            vcpus: 1,
            memory_mib,
            disk_mib,
            pids: 1024,
        },
        uid_base: ironclaw_sandbox::userns::host_base(0),
        mounts: Vec::new(),
        network: None,
    }
}

/// Run `argv` to completion; its output and the milliseconds it took.
async fn timed_exec(agent: &AgentClient, argv: &[&str]) -> (ExecOutput, f64) {
    let t = Instant::now();
    let out = agent
        .exec_collect(
            ExecRequest {
                argv: argv.iter().map(|a| a.to_string()).collect(),
                ..Default::default()
            },
            None,
        )
        .await
        .expect("exec runs");
    (out, t.elapsed().as_secs_f64() * 1000.0)
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
    initramfs::write(
        &ref_initrd,
        &k,
        initramfs::Init::Shell {
            busybox: Path::new("/bin/busybox"),
            script: &ref_init,
        },
    )
    .unwrap();

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
        let spec = bench_spec(data, "bb", &format!("b{i:05}"), 256, 256);
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
        let _vm = KillOnPanic(running.pid);
        ready.push(t.elapsed().as_secs_f64());
        let (out, ms) = timed_exec(&agent, &["true"]).await;
        assert_eq!(out.status.code, 0);
        first_exec.push(ms);
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss.push(rss_kib(running.pid) as f64 / 1024.0);
        backend
            .stop(&spec, &running, Some(&agent), Duration::from_secs(20))
            .await
            .unwrap();
        backend.destroy(&spec).await.unwrap();
    }
    let r = stats(
        "reference: plain boot, shell /init marker",
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
        "{:<44} {:>8.3}x  (everything after the kernel: modules, root disk, agent)",
        "ratio vs plain shell boot",
        q / r,
    );
    stats(
        "start returned -> first exec completed",
        &mut first_exec,
        "ms",
    );
    stats("QEMU RSS per running VM (256 MiB guest)", &mut rss, "MiB");
    if debian {
        debian_boot(&backend, data).await;
    }
}

/// One boot of the Debian image: its root disk is larger and its first
/// command (python3) reads far more from it than busybox's `true`.
async fn debian_boot(backend: &QemuBackend, data: &Path) {
    let spec = bench_spec(data, "deb", "d00000", 512, 2048);
    backend.prepare(&spec).await.unwrap();
    let t = Instant::now();
    let (running, agent) = backend.start(&spec).await.expect("debian image boots");
    let _vm = KillOnPanic(running.pid);
    let ready = t.elapsed().as_secs_f64();
    let (out, exec_ms) = timed_exec(&agent, &["python3", "-c", "print(6*7)"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    println!("debian image: start() to agent ready             {ready:>8.3} s");
    println!("debian image: first exec, python3 -c 'print(6*7)' {exec_ms:>8.1} ms");
    backend
        .stop(&spec, &running, Some(&agent), Duration::from_secs(20))
        .await
        .unwrap();
    backend.destroy(&spec).await.unwrap();
}
