//! Shared by the VM backend tests: one data dir with one busybox image
//! (with its VM artifacts), built once per test binary.
#![allow(dead_code)]

pub mod bridge;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use ironclaw_sandbox::image::{self, BuildRequest, ImageSource};
use ironclaw_sandbox::{Resources, SandboxSpec};

/// One data dir with one busybox image, shared by the tests of this file.
/// It lives in a static, which is never dropped: [`remove_shared`] deletes
/// it when the test binary exits.
pub struct Shared {
    pub data: PathBuf,
}

static SHARED: OnceLock<Shared> = OnceLock::new();
/// Set as soon as the directory exists, so a failed build is removed too.
static SHARED_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_shared() {
    if let Some(dir) = SHARED_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

pub fn guest_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("IRONCLAW_GUEST_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let target = exe.parent()?.parent()?.parent()?;
    ["release", "debug"]
        .iter()
        .map(|p| {
            target
                .join("x86_64-unknown-linux-gnu")
                .join(p)
                .join("ironclaw-guest")
        })
        .find(|p| p.exists())
}

pub fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (cgroups)".into());
    }
    if ironclaw_sandbox::util::which("qemu-system-x86_64").is_none() {
        return Some("needs qemu-system-x86_64 (scripts/setup-host.sh)".into());
    }
    if guest_bin().is_none() {
        return Some("needs the static guest (scripts/test.sh builds it)".into());
    }
    None
}

pub fn shared() -> &'static Shared {
    SHARED.get_or_init(|| {
        // A thread with its own runtime: tests run on different runtimes.
        std::thread::spawn(|| {
            let data = tempfile::Builder::new()
                .prefix("icq")
                .tempdir()
                .unwrap()
                .keep();
            let _ = SHARED_DIR.set(data.clone());
            // SAFETY: registers a plain extern "C" fn with no arguments.
            unsafe { libc::atexit(remove_shared) };
            let rt = tokio::runtime::Runtime::new().unwrap();
            let started = Instant::now();
            let meta = rt
                .block_on(image::build(
                    &BuildRequest {
                        name: "bb".into(),
                        source: ImageSource::Busybox,
                        images_dir: data.join("images"),
                        guest_bin: guest_bin().unwrap(),
                    },
                    &|_| {},
                ))
                .expect("busybox image builds");
            assert!(meta.vm.is_some(), "no VM artifacts: {:?}", meta.vm_error);
            eprintln!(
                "busybox image with VM artifacts built in {:.2}s",
                started.elapsed().as_secs_f64()
            );
            Shared { data }
        })
        .join()
        .unwrap()
    })
}

pub fn spec(data: &Path, name: &str) -> SandboxSpec {
    let id: String = (0..6)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    SandboxSpec {
        id: id.clone(),
        name: name.into(),
        image_rootfs: image::rootfs(&data.join("images"), "bb"),
        dir: data.join("sandboxes").join(id),
        resources: Resources {
            vcpus: 1,
            memory_mib: 256,
            disk_mib: 256,
            pids: 1024,
        },
        // A slot of its own, as the store would hand out.
        uid_base: ironclaw_sandbox::userns::host_base(1000 + rand::random::<u32>() % 10_000),
        mounts: Vec::new(),
        network: None,
    }
}

/// Whether the sandbox's cgroup is still there.
pub fn cgroup_exists(spec: &SandboxSpec) -> bool {
    ["/sys/fs/cgroup/ironclaw", "/sys/fs/cgroup/memory/ironclaw"]
        .iter()
        .any(|p| Path::new(p).join(&spec.id).exists())
}

/// The real Firecracker: `IRONCLAW_FIRECRACKER_BIN` (scripts/test.sh sets
/// it), else where scripts/fetch-firecracker.sh puts it.
pub fn firecracker_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("IRONCLAW_FIRECRACKER_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let p = exe
        .parent()?
        .parent()?
        .parent()?
        .join("firecracker/firecracker");
    p.exists().then_some(p)
}

/// The shared data dir's KVM prober and its answer (probing once).
pub async fn kvm_probe() -> (
    std::sync::Arc<ironclaw_sandbox::probe::KvmProber>,
    ironclaw_sandbox::probe::KvmProbe,
) {
    let prober = ironclaw_sandbox::qemu::default_prober(&shared().data);
    let p = prober.clone();
    let probe = tokio::task::spawn_blocking(move || p.get()).await.unwrap();
    (prober, probe)
}
