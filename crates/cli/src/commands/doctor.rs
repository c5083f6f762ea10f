//! `ironclaw doctor` and `ironclaw version`.

use anyhow::Result;
use ironclaw_api as api;

use crate::args::GlobalArgs;
use crate::client::Client;
use crate::output::print_json;

pub async fn run(c: &Client, json: bool) -> Result<i32> {
    let v = c.host().await?;
    if json {
        print_json(&v);
        return Ok(0);
    }
    let (text, healthy) = report(&v, &c.base);
    print!("{text}");
    Ok(if healthy { 0 } else { 1 })
}

/// Readable report; `healthy` is false when no backend is available.
pub fn report(v: &api::HostReport, url: &str) -> (String, bool) {
    let mut out = String::new();
    out.push_str(&format!(
        "ironclawd {} at {url} (ironclaw CLI {})\n",
        if v.version.is_empty() {
            "?"
        } else {
            &v.version
        },
        env!("CARGO_PKG_VERSION")
    ));
    let width = v
        .backends
        .iter()
        .map(|b| b.name.len())
        .chain(v.checks.iter().map(|c| c.name.len()))
        .max()
        .unwrap_or(0);
    let line = |out: &mut String, ok: bool, name: &str, why: &str| {
        let mark = if ok { "ok     " } else { "missing" };
        let line = format!("  {mark}  {name:<width$}  {why}");
        out.push_str(line.trim_end());
        out.push('\n');
    };
    out.push_str("\nbackends:\n");
    let mut any = false;
    for b in &v.backends {
        any |= b.available;
        line(&mut out, b.available, &b.name, &b.reason);
    }
    if v.backends.is_empty() {
        out.push_str("  (none reported)\n");
    }
    out.push_str("\nchecks:\n");
    for ch in &v.checks {
        line(&mut out, ch.ok, &ch.name, &ch.detail);
    }
    if v.checks.is_empty() {
        out.push_str("  (none reported)\n");
    }
    if let Some(acme) = &v.acme {
        acme_section(&mut out, acme);
    }
    out.push('\n');
    // Warnings (a VMM that would run as root) stand out, one per line.
    for w in &v.warnings {
        out.push_str(&format!("WARNING: {w}\n"));
    }
    if !v.warnings.is_empty() {
        out.push('\n');
    }
    match &v.ssh {
        Some(ssh) => out.push_str(&format!(
            "ssh: {} (host key {})\n",
            ssh.listen, ssh.fingerprint
        )),
        None => out.push_str("ssh: off\n"),
    }
    if any {
        out.push_str(&format!(
            "default backend: {}\n",
            v.default_backend.as_deref().unwrap_or("-")
        ));
    } else {
        out.push_str("no sandbox backend is available on this host; see the reasons above\n");
    }
    (out, any)
}

/// Each ACME certificate's state, with the CA's last error for a failed one.
fn acme_section(out: &mut String, acme: &api::AcmeReport) {
    let s = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    out.push_str(&format!("\nACME certificates from {}:\n", acme.directory));
    if acme.certificates.is_empty() {
        out.push_str("  (none wanted yet: no port is exposed)\n");
    }
    for c in &acme.certificates {
        let mut why = match &c.not_after {
            Some(t) => format!("valid until {t}, renewed from {}", s(&c.renew_at)),
            None => "self-signed fallback until issued".to_string(),
        };
        if c.state == "failed" {
            why = format!(
                "{why}; {} failed attempt(s), next at {}: {}",
                c.failures,
                s(&c.retry_at),
                s(&c.last_error)
            );
        }
        out.push_str(&format!("  {:<7}  {}  {why}\n", c.state, c.host));
    }
}

/// `ironclaw version`: the CLI version, and the daemon's if it answers.
pub async fn version(global: &GlobalArgs) -> Result<i32> {
    println!("ironclaw {}", env!("CARGO_PKG_VERSION"));
    let c = Client::new(crate::config::normalize_host(&global.host), None)?;
    match c.health().await {
        Ok(h) => println!("ironclawd {} at {}", h.version, c.base),
        Err(e) => println!("ironclawd: {e:#}"),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn doctor_report() {
        let v = json!({"version":"0.1.0",
            "backends":[{"name":"namespace","available":true,"reason":"unprivileged user namespaces work"},
                        {"name":"qemu","available":false,"reason":"/dev/kvm: no such file"}],
            "checks":[{"name":"cgroup","ok":true,"detail":"cgroup v1 (memory, cpu, pids)"}],
            "default_backend":"namespace"});
        let host =
            |v: &serde_json::Value| serde_json::from_value::<api::HostReport>(v.clone()).unwrap();
        let (t, ok) = report(&host(&v), "http://x");
        assert!(ok);
        assert!(
            t.contains("  ok       namespace  unprivileged user namespaces work\n"),
            "{t}"
        );
        assert!(
            t.contains("  missing  qemu       /dev/kvm: no such file\n"),
            "{t}"
        );
        assert!(
            t.contains("  ok       cgroup     cgroup v1 (memory, cpu, pids)\n"),
            "{t}"
        );
        assert!(t.contains("default backend: namespace\n"), "{t}");
        assert!(!t.contains("WARNING"), "{t}");
        let mut v = v;
        v["warnings"] = json!(["firecracker would run as root: no jailer found next to /x/firecracker; install jailer or set firecracker_jailer"]);
        let (t, ok) = report(&host(&v), "http://x");
        assert!(ok, "a warning does not make the host unhealthy");
        assert!(
            t.contains("\nWARNING: firecracker would run as root: no jailer found next to /x/firecracker; install jailer or set firecracker_jailer\n"),
            "{t}"
        );
        v["acme"] = json!({"directory": "https://ca.example/dir", "certificates": [
            {"host": "80-a.example.com", "state": "issued", "not_after": "2027-01-01T00:00:00Z",
             "renew_at": "2026-11-01T00:00:00Z", "failures": 0},
            {"host": "81-a.example.com", "state": "failed", "failures": 2,
             "retry_at": "2026-01-01T00:01:00Z", "last_error": "ACME: connection refused"}]});
        let (t, _) = report(&host(&v), "http://x");
        assert!(t.contains("\nACME certificates from https://ca.example/dir:\n  issued   80-a.example.com  valid until 2027-01-01T00:00:00Z, renewed from 2026-11-01T00:00:00Z\n"), "{t}");
        assert!(t.contains("  failed   81-a.example.com  self-signed fallback until issued; 2 failed attempt(s), next at 2026-01-01T00:01:00Z: ACME: connection refused\n"), "{t}");
        let (_, ok) = report(
            &host(&json!({"backends":[{"name":"qemu","available":false}]})),
            "http://x",
        );
        assert!(!ok);
    }
}
