//! Host capability probe: do KVM guests really boot here?
//!
//! `/dev/kvm` existing is not enough: under nested virtualization without
//! full support (PVM, as on the CI machines) guests run ~100x slow and die
//! with "KVM internal error ... emulation failure". So we boot a tiny guest
//! (the image kernel plus an initramfs whose init prints a marker and powers
//! off) under `qemu -accel kvm` with a deadline, once per host boot, and
//! cache the answer keyed by the kernel's boot id.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backend::Availability;

const MARKER: &str = "IRONCLAW-PROBE-OK";
/// A healthy KVM boot of the cloud kernel takes well under a second.
const DEADLINE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KvmProbe {
    pub boot_id: String,
    pub boots: bool,
    pub reason: String,
}

impl From<&KvmProbe> for Availability {
    fn from(p: &KvmProbe) -> Self {
        Availability {
            available: p.boots,
            reason: p.reason.clone(),
        }
    }
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Quick reasons KVM cannot work, before booting anything.
pub fn kvm_device_problem() -> Option<String> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Some("/dev/kvm is absent (no hardware virtualization)".into())
        }
        Err(e) => Some(format!("/dev/kvm cannot be opened: {e}")),
    }
}

/// The cached answer for this host boot, if any.
pub fn cached(cache: &Path) -> Option<KvmProbe> {
    let p: KvmProbe = serde_json::from_str(&std::fs::read_to_string(cache).ok()?).ok()?;
    (p.boot_id == boot_id()).then_some(p)
}

/// Probe (or reuse the cached answer). `kernel` is a bzImage; `busybox` a
/// static busybox for the probe's init.
pub fn kvm_guest_boot(cache: &Path, qemu: &Path, kernel: &Path, busybox: &Path) -> KvmProbe {
    if let Some(p) = cached(cache) {
        return p;
    }
    let result = match kvm_device_problem() {
        Some(reason) => KvmProbe {
            boot_id: boot_id(),
            boots: false,
            reason,
        },
        None => boot_probe_guest(qemu, kernel, busybox, "kvm"),
    };
    if let Some(dir) = cache.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(cache, serde_json::to_string(&result).unwrap_or_default());
    result
}

/// Boot the probe guest with `accel` ("kvm" or "tcg") and report whether it reached userspace.
pub fn boot_probe_guest(qemu: &Path, kernel: &Path, busybox: &Path, accel: &str) -> KvmProbe {
    let fail = |reason: String| KvmProbe {
        boot_id: boot_id(),
        boots: false,
        reason,
    };
    let dir = match tempfile_dir() {
        Ok(d) => d,
        Err(e) => return fail(format!("probe could not create a temp dir: {e}")),
    };
    let initrd = dir.join("probe.cpio");
    if let Err(e) = write_probe_initramfs(&initrd, busybox) {
        let _ = std::fs::remove_dir_all(&dir);
        return fail(format!("probe could not build its initramfs: {e}"));
    }
    let started = Instant::now();
    let mut child = Command::new(qemu);
    child
        .args(["-M", "microvm", "-accel", accel, "-m", "128", "-smp", "1"])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-no-reboot",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // If the daemon dies mid-probe, the probe guest must not outlive it.
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        child.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = child.spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return fail(format!("could not run {}: {e}", qemu.display()));
        }
    };
    // Read output on threads so a chatty guest cannot block on a full pipe.
    let out = child
        .stdout
        .take()
        .map(|mut s| std::thread::spawn(move || read_all(&mut s)));
    let err = child
        .stderr
        .take()
        .map(|mut s| std::thread::spawn(move || read_all(&mut s)));
    let mut timed_out = false;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if started.elapsed() > DEADLINE {
            timed_out = true;
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let stdout = out.and_then(|t| t.join().ok()).unwrap_or_default();
    let stderr = err.and_then(|t| t.join().ok()).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let secs = started.elapsed().as_secs_f64();
    if stdout.contains(MARKER) {
        return KvmProbe {
            boot_id: boot_id(),
            boots: true,
            reason: format!("{accel} guests boot (probe guest reached userspace in {secs:.2} s)"),
        };
    }
    let detail = stderr
        .lines()
        .find(|l| l.contains("KVM") || l.contains("kvm"))
        .map(str::trim)
        .map(str::to_string);
    let why = match (detail, timed_out) {
        (Some(d), _) => d,
        (None, true) => format!(
            "the probe guest did not reach userspace within {}s (it runs ~100x slow: nested virtualization without full support)",
            DEADLINE.as_secs()
        ),
        (None, false) => format!("the probe guest exited without reaching userspace: {}", stderr.trim()),
    };
    fail(format!(
        "/dev/kvm is present but KVM guests cannot boot here: {why}"
    ))
}

fn read_all(r: &mut impl std::io::Read) -> String {
    let mut buf = Vec::new();
    let _ = r.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

fn tempfile_dir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "ironclaw-probe-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A newc cpio archive with /bin/busybox and an /init that prints the marker
/// and powers off.
fn write_probe_initramfs(path: &Path, busybox: &Path) -> std::io::Result<()> {
    let bb = std::fs::read(busybox)?;
    let init = format!("#!/bin/busybox sh\n/bin/busybox echo {MARKER}\n/bin/busybox poweroff -f\n");
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut ino = 1;
    let mut entry = |f: &mut std::io::BufWriter<std::fs::File>,
                     name: &str,
                     mode: u32,
                     data: &[u8]|
     -> std::io::Result<()> {
        let header = format!(
            "070701{ino:08X}{mode:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            0, 0, 1, 0, data.len(), 0, 0, 0, 0, name.len() + 1, 0
        );
        ino += 1;
        f.write_all(header.as_bytes())?;
        f.write_all(name.as_bytes())?;
        f.write_all(&[0])?;
        let pad = |n: usize| (4 - n % 4) % 4;
        f.write_all(&vec![0; pad(110 + name.len() + 1)])?;
        f.write_all(data)?;
        f.write_all(&vec![0; pad(data.len())])
    };
    entry(&mut f, "bin", 0o040755, &[])?;
    entry(&mut f, "bin/busybox", 0o100755, &bb)?;
    entry(&mut f, "init", 0o100755, init.as_bytes())?;
    entry(&mut f, "TRAILER!!!", 0, &[])?;
    f.flush()
}

/// Where the probe finds its kernel (a bzImage), fetched on first use.
pub type KernelSource = Box<dyn Fn() -> Result<PathBuf, String> + Send + Sync>;

/// The KVM probe shared by the VM backends: runs at most once per daemon
/// (and once per host boot, through the cache file). Answers that could not
/// probe (no kernel yet, no qemu) are not kept, so a later call retries.
pub struct KvmProber {
    cache: PathBuf,
    kernel: KernelSource,
    /// The answer, once known (held only briefly).
    result: std::sync::Mutex<Option<KvmProbe>>,
    /// Held for the whole probe so concurrent callers wait for one boot.
    probing: std::sync::Mutex<()>,
}

impl std::fmt::Debug for KvmProber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmProber")
            .field("cache", &self.cache)
            .finish()
    }
}

impl KvmProber {
    pub fn new(cache: PathBuf, kernel: KernelSource) -> Self {
        KvmProber {
            cache,
            kernel,
            result: std::sync::Mutex::new(None),
            probing: std::sync::Mutex::new(()),
        }
    }

    /// The answer if already known (cheap; never boots anything).
    pub fn known(&self) -> Option<KvmProbe> {
        let mut r = self.result.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = cached(&self.cache);
        }
        r.clone()
    }

    /// The answer, probing now if needed (may take up to ~15 s, once).
    pub fn get(&self) -> KvmProbe {
        let _probing = self.probing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = self.known() {
            return p;
        }
        let keep = |p: KvmProbe| {
            *self.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(p.clone());
            p
        };
        let not_probed = |reason: String| KvmProbe {
            boot_id: boot_id(),
            boots: false,
            reason,
        };
        if let Some(reason) = kvm_device_problem() {
            return keep(not_probed(reason));
        }
        let Some(qemu) = crate::util::which("qemu-system-x86_64") else {
            return not_probed(
                "cannot probe whether KVM guests boot: qemu-system-x86_64 is not installed".into(),
            );
        };
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists());
        let Some(busybox) = busybox else {
            return not_probed(
                "cannot probe whether KVM guests boot: static busybox missing".into(),
            );
        };
        match (self.kernel)() {
            Ok(kernel) => keep(kvm_guest_boot(&self.cache, &qemu, &kernel, &busybox)),
            Err(e) => not_probed(format!("cannot probe whether KVM guests boot yet: {e}")),
        }
    }
}
