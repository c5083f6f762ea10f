//! What this host supports (`ironclaw doctor`).

use axum::extract::State;
use ironclaw_api as api;

use crate::auth::Caller;
use crate::AppState;

#[utoipa::path(get, path = "/v1/health", operation_id = "health", tag = "host",
    summary = "Liveness (no auth)", security(()),
    responses((status = 200, description = "success", body = api::Health)))]
pub async fn health() -> axum::Json<api::Health> {
    axum::Json(api::Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

fn which(bin: &str) -> Option<String> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

fn check(name: &str, ok: bool, detail: impl Into<String>) -> api::Check {
    api::Check {
        name: name.into(),
        ok,
        detail: detail.into(),
    }
}

#[utoipa::path(get, path = "/v1/host", operation_id = "hostReport", tag = "host",
    summary = "Host capability report (doctor)",
    responses((status = 200, description = "success", body = api::HostReport),
        (status = "default", description = "error", body = api::Error)))]
pub async fn report(State(st): State<AppState>, caller: Caller) -> axum::Json<api::HostReport> {
    let m = &st.manager;
    let backends: Vec<_> = m
        .backend_report()
        .into_iter()
        .map(|(k, a)| api::BackendReport {
            name: k.as_str().into(),
            available: a.available,
            reason: a.reason,
        })
        .collect();
    let mut checks = Vec::new();
    for c in ironclaw_sandbox::host::checks() {
        checks.push(check(c.name, c.ok, c.detail));
    }
    let kvm = m.kvm.clone();
    let probe = tokio::task::spawn_blocking(move || kvm.get()).await.ok();
    match probe {
        Some(p) => checks.push(check("kvm", p.boots, p.reason)),
        None => checks.push(check("kvm", false, "KVM probe failed to run")),
    }
    for (name, bin, hint) in [
        (
            "qemu",
            "qemu-system-x86_64",
            "apt-get install qemu-system-x86",
        ),
        ("nft", "nft", "apt-get install nftables"),
        (
            "mmdebstrap",
            "mmdebstrap",
            "apt-get install mmdebstrap (needed for --from debian)",
        ),
        (
            "bwrap",
            "bwrap",
            "apt-get install bubblewrap (benchmark reference only)",
        ),
    ] {
        match which(bin) {
            Some(p) => checks.push(check(name, true, p)),
            None => checks.push(check(name, false, format!("{bin} not found; {hint}"))),
        }
    }
    match &m
        .config
        .firecracker_bin
        .clone()
        .or_else(|| which("firecracker").map(Into::into))
    {
        Some(bin) => {
            let version = std::process::Command::new(bin)
                .arg("--version")
                .env_clear()
                .output()
                .ok()
                .and_then(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .next()
                        .map(str::to_string)
                })
                .unwrap_or_else(|| "did not run".into());
            checks.push(check(
                "firecracker",
                true,
                format!("{version} at {}", bin.display()),
            ))
        }
        None => checks.push(check(
            "firecracker",
            false,
            "firecracker not found; see README: installing Firecracker",
        )),
    }
    match &m.guest_bin {
        Some(p) => checks.push(check(
            "guest",
            ironclaw_sandbox::image::check_static_elf(p).is_ok(),
            p.display().to_string(),
        )),
        None => checks.push(check(
            "guest",
            false,
            "ironclaw-guest not found; pass --guest-bin",
        )),
    }
    let net = m.net.status().await;
    checks.extend(network_checks(&net));
    // A user sees the names of their own exposures only.
    let mine = (!caller.admin).then(|| own_hosts(&st, &caller.user));
    let acme = st
        .acme
        .as_ref()
        .map(|a| a.report(|h| mine.as_ref().is_none_or(|m| m.contains(h))));
    if let Some(a) = &acme {
        checks.push(acme_check(a));
    }
    // Each VMM that would run as root here, said plainly.
    let warnings = m.privilege_warnings();
    axum::Json(api::HostReport {
        version: env!("CARGO_PKG_VERSION").into(),
        backends,
        checks,
        warnings,
        network: serde_json::to_value(&net).unwrap_or_default(),
        // The exposure module's report, in the API's shape.
        acme: acme.and_then(|a| serde_json::from_value(a).ok()),
        default_backend: m.default_backend().map(|k| k.as_str().to_string()),
        // The SSH endpoint (null when off): `ironclaw ssh` reads the port.
        ssh: st.ssh.as_deref().map(|s| api::SshInfo {
            listen: s.listen.to_string(),
            fingerprint: s.fingerprint.clone(),
            host_key: s.host_key.clone(),
        }),
    })
}

/// The bridge, NAT and proxies. Down is fine (they come up with the first
/// networked sandbox); up but incomplete is not.
fn network_checks(n: &ironclaw_net::host::NetStatus) -> Vec<api::Check> {
    let forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .map(|s| s.trim() == "1")
        .unwrap_or(false);
    if !n.up {
        return vec![check(
            "network",
            true,
            format!(
                "bridge {} ({}, gateway {}) comes up with the first networked sandbox",
                n.bridge, n.subnet, n.gateway
            ),
        )];
    }
    let addr = |a: Option<std::net::SocketAddr>| a.map(|a| a.to_string()).unwrap_or("-".into());
    vec![
        check(
            "bridge",
            n.bridge_exists,
            format!(
                "{} {} (gateway {}), {} sandbox(es) attached",
                n.bridge, n.subnet, n.gateway, n.attached
            ),
        ),
        check(
            "nat",
            n.nft_table && forward,
            format!(
                "nft table inet {}: {}; ip_forward {}",
                n.bridge,
                if n.nft_table { "present" } else { "MISSING" },
                if forward { "on" } else { "OFF" }
            ),
        ),
        check(
            "egress proxy",
            n.http_proxy.is_some() && n.tls_proxy.is_some() && n.dns.is_some(),
            format!(
                "resolver {}, http {}, tls {}",
                addr(n.dns),
                addr(n.http_proxy),
                addr(n.tls_proxy)
            ),
        ),
    ]
}

/// The exposure host names of `user`'s sandboxes.
fn own_hosts(st: &AppState, user: &str) -> std::collections::HashSet<String> {
    let base = crate::exposure::base_domain(&st.manager.config);
    st.manager
        .store
        .exposures()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            st.manager
                .store
                .sandbox_by_id(&e.sandbox_id)
                .is_ok_and(|r| r.owner == user)
        })
        .map(|e| format!("{}.{base}", e.label).to_ascii_lowercase())
        .collect()
}

/// ACME: fine while nothing failed (pending names serve the fallback).
fn acme_check(report: &serde_json::Value) -> api::Check {
    let certs = report["certificates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let count = |state: &str| certs.iter().filter(|c| c["state"] == state).count();
    let failed = count("failed");
    check(
        "acme",
        failed == 0,
        format!(
            "{}: {} issued, {} pending, {failed} failed",
            report["directory"].as_str().unwrap_or("-"),
            count("issued"),
            count("pending"),
        ),
    )
}
