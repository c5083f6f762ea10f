//! What this host offers sandboxes, for `ironclaw doctor` and
//! `GET /v1/host`: kernel namespaces and cgroups.

use std::path::Path;

/// One named check and what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCheck {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// The namespace and cgroup checks, in that order.
pub fn checks() -> Vec<HostCheck> {
    let ns = ["pid", "mnt", "net", "uts", "ipc", "cgroup"];
    let missing: Vec<_> = ns
        .iter()
        .filter(|n| !Path::new("/proc/self/ns").join(n).exists())
        .collect();
    let namespaces = HostCheck {
        name: "namespaces",
        ok: missing.is_empty(),
        detail: if missing.is_empty() {
            "pid, mount, net, uts, ipc, cgroup".to_string()
        } else {
            format!("missing: {missing:?}")
        },
    };
    let cgroup = match crate::cgroup::detect() {
        Ok((_, what)) => HostCheck {
            name: "cgroup",
            ok: true,
            detail: what,
        },
        Err(e) => HostCheck {
            name: "cgroup",
            ok: false,
            detail: e.to_string(),
        },
    };
    vec![namespaces, cgroup]
}
