//! `ironclaw doctor` and `ironclaw version`.

use anyhow::Result;
use serde_json::Value;

use crate::args::GlobalArgs;
use crate::client::Client;
use crate::output::print_json;

pub async fn run(c: &Client, json: bool) -> Result<i32> {
    let v = c.get("/v1/host", "host").await?;
    if json {
        print_json(&v);
        return Ok(0);
    }
    let (text, healthy) = report(&v, &c.base);
    print!("{text}");
    Ok(if healthy { 0 } else { 1 })
}

/// Readable report; `healthy` is false when no backend is available.
pub fn report(v: &Value, url: &str) -> (String, bool) {
    let s = |x: &Value, k: &str| x.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let mut out = String::new();
    let version = s(v, "version");
    out.push_str(&format!(
        "ironclawd {} at {url} (ironclaw CLI {})\n",
        if version.is_empty() { "?" } else { &version },
        env!("CARGO_PKG_VERSION")
    ));
    let empty = vec![];
    let backends = v
        .get("backends")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let checks = v.get("checks").and_then(Value::as_array).unwrap_or(&empty);
    let width = backends
        .iter()
        .chain(checks)
        .map(|x| s(x, "name").len())
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
    for b in backends {
        let ok = b.get("available").and_then(Value::as_bool).unwrap_or(false);
        any |= ok;
        line(&mut out, ok, &s(b, "name"), &s(b, "reason"));
    }
    if backends.is_empty() {
        out.push_str("  (none reported)\n");
    }
    out.push_str("\nchecks:\n");
    for ch in checks {
        let ok = ch.get("ok").and_then(Value::as_bool).unwrap_or(false);
        line(&mut out, ok, &s(ch, "name"), &s(ch, "detail"));
    }
    if checks.is_empty() {
        out.push_str("  (none reported)\n");
    }
    acme_section(&mut out, v);
    out.push('\n');
    // Warnings (a VMM that would run as root) stand out, one per line.
    let warnings = v
        .get("warnings")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    for w in warnings.iter().filter_map(Value::as_str) {
        out.push_str(&format!("WARNING: {w}\n"));
    }
    if !warnings.is_empty() {
        out.push('\n');
    }
    match v.get("ssh").filter(|x| !x.is_null()) {
        Some(ssh) => out.push_str(&format!(
            "ssh: {} (host key {})\n",
            s(ssh, "listen"),
            s(ssh, "fingerprint")
        )),
        None => out.push_str("ssh: off\n"),
    }
    let default = s(v, "default_backend");
    if any {
        out.push_str(&format!(
            "default backend: {}\n",
            if default.is_empty() { "-" } else { &default }
        ));
    } else {
        out.push_str("no sandbox backend is available on this host; see the reasons above\n");
    }
    (out, any)
}

/// Each ACME certificate's state, with the CA's last error for a failed one.
fn acme_section(out: &mut String, v: &Value) {
    let Some(acme) = v.get("acme").filter(|a| !a.is_null()) else {
        return;
    };
    let s = |x: &Value, k: &str| x.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
    out.push_str(&format!(
        "\nACME certificates from {}:\n",
        s(acme, "directory")
    ));
    let empty = vec![];
    let certs = acme
        .get("certificates")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    if certs.is_empty() {
        out.push_str("  (none wanted yet: no port is exposed)\n");
    }
    for c in certs {
        let state = s(c, "state");
        let mut why = match c.get("not_after").and_then(Value::as_str) {
            Some(t) => format!("valid until {t}, renewed from {}", s(c, "renew_at")),
            None => "self-signed fallback until issued".to_string(),
        };
        if state == "failed" {
            why = format!(
                "{why}; {} failed attempt(s), next at {}: {}",
                c.get("failures").and_then(Value::as_u64).unwrap_or(0),
                s(c, "retry_at"),
                s(c, "last_error")
            );
        }
        out.push_str(&format!("  {state:<7}  {}  {why}\n", s(c, "host")));
    }
}

/// `ironclaw version`: the CLI version, and the daemon's if it answers.
pub async fn version(global: &GlobalArgs) -> Result<i32> {
    println!("ironclaw {}", env!("CARGO_PKG_VERSION"));
    let c = Client::new(crate::config::normalize_host(&global.host), None)?;
    match c.get("/v1/health", "health").await {
        Ok(v) => println!(
            "ironclawd {} at {}",
            v.get("version").and_then(Value::as_str).unwrap_or("?"),
            c.base
        ),
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
        let (t, ok) = report(&v, "http://x");
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
        let (t, ok) = report(&v, "http://x");
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
        let (t, _) = report(&v, "http://x");
        assert!(t.contains("\nACME certificates from https://ca.example/dir:\n  issued   80-a.example.com  valid until 2027-01-01T00:00:00Z, renewed from 2026-11-01T00:00:00Z\n"), "{t}");
        assert!(t.contains("  failed   81-a.example.com  self-signed fallback until issued; 2 failed attempt(s), next at 2026-01-01T00:01:00Z: ACME: connection refused\n"), "{t}");
        let (_, ok) = report(
            &json!({"backends":[{"name":"qemu","available":false}]}),
            "http://x",
        );
        assert!(!ok);
    }
}
