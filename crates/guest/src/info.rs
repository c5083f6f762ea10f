//! `HostMsg::Info`: what the sandbox looks like from inside.

use std::path::{Path, PathBuf};

use ironclaw_proto::{GuestInfo, PROTOCOL_VERSION};

use crate::agent::Agent;

pub async fn gather(agent: &Agent) -> GuestInfo {
    let uptime_ms = agent.started.elapsed().as_millis() as u64;
    let collect = move || collect(uptime_ms);
    tokio::task::spawn_blocking(collect)
        .await
        .unwrap_or_else(|_| collect_fallback(uptime_ms))
}

fn collect_fallback(uptime_ms: u64) -> GuestInfo {
    GuestInfo {
        agent_version: env!("CARGO_PKG_VERSION").into(),
        protocol_version: PROTOCOL_VERSION,
        hostname: String::new(),
        kernel: String::new(),
        uptime_ms,
        cpus: 1,
        mem_total_bytes: 0,
        mem_used_bytes: 0,
        disk_total_bytes: 0,
        disk_used_bytes: 0,
        pid1: std::process::id() == 1,
    }
}

fn collect(uptime_ms: u64) -> GuestInfo {
    let mut info = collect_fallback(uptime_ms);
    info.hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    info.kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let cgroup = Cgroup::of_self();
    info.cpus = cpus(&cgroup);
    (info.mem_total_bytes, info.mem_used_bytes) = memory(&cgroup);
    if let Ok(st) = nix::sys::statvfs::statvfs("/") {
        let frsize = st.fragment_size();
        info.disk_total_bytes = st.blocks() * frsize;
        info.disk_used_bytes = st.blocks().saturating_sub(st.blocks_free()) * frsize;
    }
    info
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Where this process's cgroup limits can be read.
struct Cgroup {
    /// cgroup v2 directory.
    unified: Option<PathBuf>,
    /// cgroup v1 memory controller directory.
    v1_memory: Option<PathBuf>,
}

impl Cgroup {
    fn of_self() -> Cgroup {
        let mut cg = Cgroup {
            unified: None,
            v1_memory: None,
        };
        let Ok(text) = std::fs::read_to_string("/proc/self/cgroup") else {
            return cg;
        };
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let rel = path.trim_start_matches('/');
            if controllers.is_empty() {
                // In a cgroup namespace the path is "/" and /sys/fs/cgroup
                // is the sandbox's own group.
                let dir = Path::new("/sys/fs/cgroup").join(rel);
                if dir.join("cgroup.controllers").exists() {
                    cg.unified = Some(dir);
                }
            } else if controllers.split(',').any(|c| c == "memory") {
                let dir = Path::new("/sys/fs/cgroup/memory").join(rel);
                if dir.exists() {
                    cg.v1_memory = Some(dir);
                }
            }
        }
        cg
    }
}

fn cpus(cg: &Cgroup) -> u32 {
    let mut n = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    // "max 100000" means no quota; "150000 100000" means 1.5 CPUs.
    let quota = cg
        .unified
        .as_ref()
        .and_then(|d| read_trim(&d.join("cpu.max")))
        .and_then(|s| {
            let mut it = s.split_whitespace();
            let quota: u64 = it.next()?.parse().ok()?;
            let period: u64 = it.next()?.parse().ok()?;
            (period > 0).then(|| quota.div_ceil(period) as u32)
        });
    if let Some(q) = quota {
        n = n.min(q.max(1));
    }
    n
}

fn meminfo() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    };
    let total = field("MemTotal:")?;
    let avail = field("MemAvailable:").or_else(|| field("MemFree:"))?;
    Some((total, total.saturating_sub(avail)))
}

/// (total, used): the cgroup limit and usage when one is set, else the
/// machine's.
fn memory(cg: &Cgroup) -> (u64, u64) {
    let machine = meminfo().unwrap_or((0, 0));
    let num = |p: PathBuf| read_trim(&p).and_then(|s| s.parse::<u64>().ok());
    let limited = if let Some(d) = &cg.unified {
        num(d.join("memory.max")).zip(num(d.join("memory.current")))
    } else if let Some(d) = &cg.v1_memory {
        num(d.join("memory.limit_in_bytes")).zip(num(d.join("memory.usage_in_bytes")))
    } else {
        None
    };
    match limited {
        // v1 reports "no limit" as a huge number: then the machine's total
        // is the real bound.
        Some((limit, usage)) if machine.0 == 0 || limit < machine.0 => (limit, usage),
        _ => machine,
    }
}
