//! Resource limits per sandbox through cgroups. cgroup v2 when the unified
//! hierarchy has the memory and pids controllers; otherwise the v1
//! hierarchies (memory, pids, cpu, devices), as on hosts that still boot
//! hybrid. A sandbox may open only the device nodes it is given
//! ([`ALLOWED_DEVICES`]): the v1 devices controller, or an eBPF program on v2.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backend::Resources;

const ROOT: &str = "/sys/fs/cgroup";
/// Parent group of every sandbox, so they are easy to find and account.
const PARENT: &str = "ironclaw";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no usable cgroup hierarchy: {0}")]
    Unsupported(String),
    #[error("cgroup {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// v1 hierarchies a sandbox joins, where present.
const V1_CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "devices"];

/// The device cgroup's allowlist (`type major:minor access`): null, zero,
/// full, random, urandom, tty, console, ptmx and the pty slaves. Block
/// devices and everything else are denied, whatever node a sandbox finds.
pub const ALLOWED_DEVICES: &[&str] = &[
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V2,
    V1,
}

/// Which cgroup layout this host offers, with a line for `doctor`.
pub fn detect() -> Result<(Version, String), CgroupError> {
    let controllers =
        fs::read_to_string(Path::new(ROOT).join("cgroup.controllers")).unwrap_or_default();
    let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
    if has("memory") && has("pids") {
        return Ok((Version::V2, format!("cgroup v2 ({})", controllers.trim())));
    }
    let v1: Vec<&str> = ["memory", "pids", "cpu"]
        .into_iter()
        .filter(|c| Path::new(ROOT).join(c).join("cgroup.procs").exists())
        .collect();
    if v1.contains(&"memory") && v1.contains(&"pids") {
        return Ok((
            Version::V1,
            format!(
                "cgroup v1 ({}); v2 lacks the memory/pids controllers here",
                v1.join(", ")
            ),
        ));
    }
    Err(CgroupError::Unsupported(format!(
        "neither cgroup v2 with memory+pids nor cgroup v1 memory+pids hierarchies under {ROOT}"
    )))
}

/// One sandbox's cgroup (one directory per hierarchy on v1).
#[derive(Debug, Clone)]
pub struct Cgroup {
    version: Version,
    dirs: Vec<PathBuf>,
}

impl Cgroup {
    /// The group for sandbox `id`, whether or not it exists yet.
    pub fn for_sandbox(id: &str) -> Result<Self, CgroupError> {
        let (version, _) = detect()?;
        let dirs = match version {
            Version::V2 => vec![Path::new(ROOT).join(PARENT).join(id)],
            Version::V1 => V1_CONTROLLERS
                .iter()
                .map(|c| Path::new(ROOT).join(c))
                .filter(|p| p.join("cgroup.procs").exists())
                .map(|p| p.join(PARENT).join(id))
                .collect(),
        };
        Ok(Cgroup { version, dirs })
    }

    /// The group for sandbox `id`, emptied of anything a crashed earlier run
    /// left in it, created with `res` as its limits.
    pub async fn fresh(id: &str, res: &Resources) -> Result<Self, CgroupError> {
        let cg = Self::for_sandbox(id)?;
        cg.destroy().await?;
        cg.create(res)?;
        Ok(cg)
    }

    /// Create the group(s) and set the limits.
    pub fn create(&self, res: &Resources) -> Result<(), CgroupError> {
        if self.version == Version::V2 {
            let parent = Path::new(ROOT).join(PARENT);
            fs::create_dir_all(&parent).map_err(io(&parent))?;
            // Controllers must be enabled on every ancestor to reach the leaf.
            for p in [Path::new(ROOT), parent.as_path()] {
                let f = p.join("cgroup.subtree_control");
                for c in ["+memory", "+pids", "+cpu"] {
                    let _ = fs::write(&f, c);
                }
            }
        }
        for d in &self.dirs {
            fs::create_dir_all(d).map_err(io(d))?;
        }
        let mem = res.memory_mib * 1024 * 1024;
        let quota = u64::from(res.vcpus.max(1)) * 100_000;
        match self.version {
            Version::V2 => {
                self.write("memory.max", &mem.to_string())?;
                let _ = self.write("memory.swap.max", "0");
                self.write("pids.max", &res.pids.to_string())?;
                let _ = self.write("cpu.max", &format!("{quota} 100000"));
            }
            Version::V1 => {
                self.write("memory.limit_in_bytes", &mem.to_string())?;
                let _ = self.write("memory.memsw.limit_in_bytes", &mem.to_string());
                self.write("pids.max", &res.pids.to_string())?;
                let _ = self.write("cpu.cfs_period_us", "100000");
                let _ = self.write("cpu.cfs_quota_us", &quota.to_string());
            }
        }
        Ok(())
    }

    /// Allow only [`ALLOWED_DEVICES`] to processes in the group (before any
    /// runs): cgroup v1's devices controller, or on v2 an eBPF device
    /// program ([`crate::devfilter`]).
    pub fn restrict_devices(&self) -> Result<(), CgroupError> {
        if self.version == Version::V2 {
            let group = &self.dirs[0];
            let rules: Vec<_> = ALLOWED_DEVICES
                .iter()
                .filter_map(|r| crate::devfilter::parse_rule(r))
                .collect();
            return crate::devfilter::attach(group, &rules).map_err(io(group));
        }
        if !self.dirs.iter().any(|d| d.join("devices.deny").exists()) {
            return Err(CgroupError::Unsupported(
                "the cgroup v1 devices controller is not mounted".into(),
            ));
        }
        self.write("devices.deny", "a")?;
        for rule in ALLOWED_DEVICES {
            self.write("devices.allow", rule)?;
        }
        Ok(())
    }

    /// Write `value` to the control file `file` in whichever directory has it.
    fn write(&self, file: &str, value: &str) -> Result<(), CgroupError> {
        let path = self
            .dirs
            .iter()
            .map(|d| d.join(file))
            .find(|p| p.exists())
            .ok_or_else(|| CgroupError::Unsupported(format!("no control file {file}")))?;
        fs::write(&path, value).map_err(io(&path))
    }

    fn read(&self, file: &str) -> Option<String> {
        self.dirs
            .iter()
            .map(|d| d.join(file))
            .find(|p| p.exists())
            .and_then(|p| fs::read_to_string(p).ok())
    }

    /// The `cgroup.procs` files a new process writes itself into.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    pub fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .dirs
            .iter()
            .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|s| {
                s.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<_>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Bytes of memory in use, as the kernel charges it.
    pub fn memory_used(&self) -> Option<u64> {
        let f = if self.version == Version::V2 {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        };
        self.read(f)?.trim().parse().ok()
    }

    /// How often the OOM killer acted inside this group.
    pub fn oom_kills(&self) -> u64 {
        let (file, key) = if self.version == Version::V2 {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        self.read(file)
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
            })
            .unwrap_or(0)
    }

    /// SIGKILL everything in the group until it is empty.
    pub async fn kill_all(&self) {
        if self.version == Version::V2 {
            let _ = self.write("cgroup.kill", "1");
        }
        for _ in 0..100 {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                // SAFETY: kill has no memory effects.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kill what is left and remove the group(s). Missing groups are fine.
    pub async fn destroy(&self) -> Result<(), CgroupError> {
        self.kill_all().await;
        for d in &self.dirs {
            let mut tries = 0;
            loop {
                match fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    // EBUSY while the last tasks finish exiting.
                    Err(_) if tries < 50 => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => {
                        return Err(CgroupError::Io {
                            path: d.clone(),
                            source: e,
                        })
                    }
                }
            }
        }
        Ok(())
    }
}
