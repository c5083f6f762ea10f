//! `ironclaw sandbox ...`

use anyhow::Result;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use crate::args::{CreateArgs, PolicyFlags, SandboxCmd};
use crate::client::{seg, ApiError, Client};
use crate::output::{age_since, format_bytes, format_mib, print_json, render_table};

/// The API's `Sandbox` object; lenient so a newer daemon does not break us.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Sandbox {
    pub name: String,
    pub owner: Option<String>,
    pub state: String,
    pub backend: Option<String>,
    pub image: Option<String>,
    pub vcpus: Option<u64>,
    pub memory_mib: Option<u64>,
    pub disk_mib: Option<u64>,
    pub disk_used_bytes: Option<u64>,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub state_reason: Option<String>,
    pub pid: Option<i64>,
    pub mounts: Vec<Mount>,
    pub network: Option<String>,
    pub address: Option<String>,
    pub egress: Option<Egress>,
    pub network_name: Option<String>,
    pub exposures: Vec<Exposure>,
}

/// One of a sandbox's exposed ports.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Exposure {
    pub port: u16,
    pub public: bool,
    pub url: String,
}

/// A sandbox's egress policy, as the API shows it.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct Egress {
    pub allow_all: bool,
    pub allow_domains: Vec<String>,
    pub allow_cidrs: Vec<String>,
    pub deny_cidrs: Vec<String>,
}

impl Egress {
    /// `flags` applied to `self`: `--deny-all` starts over, the rest add.
    pub fn with(mut self, f: &PolicyFlags) -> Egress {
        if f.deny_all {
            self = Egress::default();
        }
        self.allow_all |= f.allow_all;
        let add = |v: &mut Vec<String>, new: &[String]| {
            for n in new {
                if !v.contains(n) {
                    v.push(n.clone());
                }
            }
        };
        add(&mut self.allow_domains, &f.allow_domains);
        add(&mut self.allow_cidrs, &f.allow_cidrs);
        add(&mut self.deny_cidrs, &f.deny_cidrs);
        self
    }

    /// One line: "deny all; domains *.pypi.org; deny 203.0.113.0/24".
    pub fn summary(&self) -> String {
        let mut parts = vec![if self.allow_all {
            "allow all"
        } else {
            "deny all"
        }
        .to_string()];
        for (label, v) in [
            ("domains", &self.allow_domains),
            ("allow", &self.allow_cidrs),
            ("deny", &self.deny_cidrs),
        ] {
            if !v.is_empty() {
                parts.push(format!("{label} {}", v.join(",")));
            }
        }
        parts.join("; ")
    }
}

/// One of a sandbox's host directories.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Mount {
    pub host: String,
    pub guest: String,
    pub read_only: bool,
}

pub const TABLE_HEADERS: [&str; 10] = [
    "NAME",
    "OWNER",
    "STATE",
    "IP",
    "BACKEND",
    "IMAGE",
    "VCPU",
    "MEMORY",
    "DISK(used/max)",
    "AGE",
];

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_string(), T::to_string)
}

pub fn disk_cell(s: &Sandbox) -> String {
    let used = s.disk_used_bytes.map_or_else(|| "-".into(), format_bytes);
    let max = s.disk_mib.map_or_else(|| "-".into(), format_mib);
    format!("{used}/{max}")
}

pub fn table_row(s: &Sandbox, now: OffsetDateTime) -> Vec<String> {
    vec![
        s.name.clone(),
        opt(&s.owner),
        if s.state.is_empty() {
            "-".into()
        } else {
            s.state.clone()
        },
        opt(&s.address),
        opt(&s.backend),
        opt(&s.image),
        opt(&s.vcpus),
        s.memory_mib.map_or_else(|| "-".into(), format_mib),
        disk_cell(s),
        age_since(s.created_at.as_deref(), now),
    ]
}

pub fn sandboxes_table(list: &[Sandbox], now: OffsetDateTime) -> String {
    let rows: Vec<Vec<String>> = list.iter().map(|s| table_row(s, now)).collect();
    render_table(&TABLE_HEADERS, &rows)
}

pub fn ctx(name: &str) -> String {
    format!("sandbox '{name}'")
}

pub fn path(name: &str) -> String {
    format!("/v1/sandboxes/{}", seg(name))
}

pub async fn run(c: &Client, cmd: SandboxCmd) -> Result<i32> {
    match cmd {
        SandboxCmd::Create(a) => create(c, a).await,
        SandboxCmd::Ls(j) => {
            let v = c.get("/v1/sandboxes", "sandboxes").await?;
            if j.json {
                print_json(&v);
                return Ok(0);
            }
            let list: Vec<Sandbox> =
                serde_json::from_value(v.get("sandboxes").cloned().unwrap_or(json!([])))?;
            if list.is_empty() {
                eprintln!("no sandboxes; create one with: ironclaw sandbox create --name dev");
                print!("{}", render_table(&TABLE_HEADERS, &[]));
                return Ok(0);
            }
            print!("{}", sandboxes_table(&list, OffsetDateTime::now_utc()));
            Ok(0)
        }
        SandboxCmd::Logs { name, bytes } => {
            let rb = c.request(Method::GET, &format!("{}/logs?bytes={bytes}", path(&name)));
            let text = c.send(rb, &ctx(&name)).await?.text().await?;
            println!("{}", text.trim_end());
            Ok(0)
        }
        SandboxCmd::Show { name, json } => {
            let v = c.get(&path(&name), &ctx(&name)).await?;
            if json.json {
                print_json(&v);
                return Ok(0);
            }
            let s: Sandbox = serde_json::from_value(v)?;
            let info = if s.state == "running" {
                c.get(&format!("{}/info", path(&name)), &ctx(&name))
                    .await
                    .ok()
            } else {
                None
            };
            print!(
                "{}",
                show_text(&s, info.as_ref(), OffsetDateTime::now_utc())
            );
            Ok(0)
        }
        SandboxCmd::Start { names } => {
            each(&names, |n| async move {
                let v = c
                    .post(&format!("{}/start", path(&n)), &json!({}), &ctx(&n))
                    .await?;
                let s: Sandbox = serde_json::from_value(v).unwrap_or_default();
                println!(
                    "started {n} ({})",
                    if s.state.is_empty() {
                        "running"
                    } else {
                        &s.state
                    }
                );
                Ok(())
            })
            .await
        }
        SandboxCmd::Stop { names } => {
            each(&names, |n| async move {
                c.post(&format!("{}/stop", path(&n)), &json!({}), &ctx(&n))
                    .await?;
                println!("stopped {n}");
                Ok(())
            })
            .await
        }
        SandboxCmd::Expose {
            name,
            port,
            public,
            json,
        } => super::ports::expose(c, &name, port, public, json.json).await,
        SandboxCmd::Unexpose { name, port } => super::ports::unexpose(c, &name, port).await,
        SandboxCmd::Ports { name, json } => super::ports::list(c, &name, json.json).await,
        SandboxCmd::Policy { name, flags, json } => policy(c, &name, &flags, json.json).await,
        SandboxCmd::Rm { names, force } => {
            each(&names, |n| async move {
                // The daemon stops a running sandbox before removing it.
                match c.delete(&path(&n), &ctx(&n)).await {
                    Ok(()) => {
                        println!("removed {n}");
                        Ok(())
                    }
                    Err(e)
                        if force
                            && e.downcast_ref::<ApiError>()
                                .is_some_and(|a| a.status == 404) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            })
            .await
        }
    }
}

/// Run `f` for every name, report each failure, exit 1 if any failed.
async fn each<F, Fut>(names: &[String], f: F) -> Result<i32>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    if names.len() == 1 {
        f(names[0].clone()).await?;
        return Ok(0);
    }
    let mut code = 0;
    for n in names {
        if let Err(e) = f(n.clone()).await {
            super::report_error(&e);
            code = 1;
        }
    }
    Ok(code)
}

async fn create(c: &Client, a: CreateArgs) -> Result<i32> {
    let mut body = Map::new();
    body.insert("name".into(), json!(a.name));
    if let Some(v) = a.image {
        body.insert("image".into(), json!(v));
    }
    if let Some(v) = a.backend {
        body.insert("backend".into(), json!(v));
    }
    if let Some(v) = a.vcpus {
        body.insert("vcpus".into(), json!(v));
    }
    if let Some(v) = a.memory {
        body.insert("memory_mib".into(), json!(v));
    }
    if let Some(v) = a.disk {
        body.insert("disk_mib".into(), json!(v));
    }
    if !a.mounts.is_empty() {
        let mounts: Vec<Value> = a
            .mounts
            .iter()
            .map(|m| json!({"host": m.host, "guest": m.guest, "read_only": m.read_only}))
            .collect();
        body.insert("mounts".into(), Value::Array(mounts));
    }
    if let Some(n) = &a.network {
        body.insert("network".into(), json!(n));
    }
    if let Some(j) = &a.join {
        body.insert("join".into(), json!(j));
    }
    if !a.policy.is_empty() {
        body.insert(
            "egress".into(),
            serde_json::to_value(Egress::default().with(&a.policy))?,
        );
    }
    let v = c
        .post("/v1/sandboxes", &Value::Object(body), &ctx(&a.name))
        .await?;
    if a.json.json {
        print_json(&v);
        return Ok(0);
    }
    let s: Sandbox = serde_json::from_value(v).unwrap_or_default();
    println!(
        "created sandbox '{}': {}, image {}, {} vCPU, {} memory, {} disk ({})",
        s.name,
        opt(&s.backend),
        opt(&s.image),
        opt(&s.vcpus),
        s.memory_mib.map_or_else(|| "-".into(), format_mib),
        s.disk_mib.map_or_else(|| "-".into(), format_mib),
        s.state
    );
    eprintln!(
        "try: ironclaw exec {0} -- uname -a   or   ironclaw console {0}",
        s.name
    );
    Ok(0)
}

/// `sandbox policy NAME [flags]`: print the policy, or change it.
async fn policy(c: &Client, name: &str, flags: &PolicyFlags, json_out: bool) -> Result<i32> {
    let v = c.get(&path(name), &ctx(name)).await?;
    let s: Sandbox = serde_json::from_value(v.clone())?;
    let current = s.egress.clone().unwrap_or_default();
    let (v, s) = if flags.is_empty() {
        (v, s)
    } else {
        let new = current.with(flags);
        let rb = c
            .request(Method::PUT, &format!("{}/egress", path(name)))
            .json(&new);
        let v: Value = c.send(rb, &ctx(name)).await?.json().await?;
        let s: Sandbox = serde_json::from_value(v.clone())?;
        (v, s)
    };
    if json_out {
        print_json(v.get("egress").unwrap_or(&Value::Null));
        return Ok(0);
    }
    if s.network.as_deref() == Some("none") {
        println!("{name}: no network (created with --network none)");
    } else {
        println!("{name}: {}", s.egress.unwrap_or_default().summary());
    }
    Ok(0)
}

pub fn show_text(s: &Sandbox, info: Option<&Value>, now: OffsetDateTime) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("Name", s.name.clone()),
        ("Owner", opt(&s.owner)),
        (
            "State",
            match &s.state_reason {
                Some(r) if !r.is_empty() => format!("{} ({r})", s.state),
                _ => s.state.clone(),
            },
        ),
        ("Backend", opt(&s.backend)),
        ("Image", opt(&s.image)),
        ("vCPUs", opt(&s.vcpus)),
        (
            "Memory",
            s.memory_mib.map_or_else(|| "-".into(), format_mib),
        ),
        ("Disk", format!("{} used", disk_cell(s))),
        (
            "Created",
            format!(
                "{} ({} ago)",
                opt(&s.created_at),
                age_since(s.created_at.as_deref(), now)
            ),
        ),
    ];
    if let Some(t) = &s.started_at {
        rows.push(("Started", format!("{t} ({} ago)", age_since(Some(t), now))));
    }
    if let Some(p) = s.pid {
        rows.push(("PID", p.to_string()));
    }
    match (s.network.as_deref(), &s.address) {
        (Some("internet"), Some(a)) => rows.push((
            "Network",
            match &s.network_name {
                Some(n) => format!("internet, address {a}, joined {n}"),
                None => format!("internet, address {a}"),
            },
        )),
        (Some(n), _) => rows.push(("Network", n.to_string())),
        _ => {}
    }
    if s.network.as_deref() == Some("internet") {
        if let Some(e) = &s.egress {
            rows.push(("Egress", e.summary()));
        }
    }
    for m in &s.mounts {
        let mode = if m.read_only { "ro" } else { "rw" };
        rows.push(("Mount", format!("{} -> {} ({mode})", m.host, m.guest)));
    }
    for e in &s.exposures {
        let who = if e.public { "public" } else { "private" };
        rows.push(("Port", format!("{} -> {} ({who})", e.port, e.url)));
    }
    if let Some(i) = info {
        let g = |k: &str| i.get(k).filter(|v| !v.is_null());
        let st = |k: &str| {
            g(k).map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
        };
        let b = |k: &str| g(k).and_then(Value::as_u64).map(format_bytes);
        if let Some(h) = st("hostname") {
            rows.push(("Hostname", h));
        }
        if let Some(k) = st("kernel") {
            rows.push(("Kernel", k));
        }
        if let Some(u) = g("uptime_ms").and_then(Value::as_u64) {
            rows.push((
                "Uptime",
                humantime::format_duration(std::time::Duration::from_secs(u / 1000)).to_string(),
            ));
        }
        if let (Some(u), Some(t)) = (b("mem_used_bytes"), b("mem_total_bytes")) {
            rows.push(("Guest memory", format!("{u} / {t}")));
        }
        if let (Some(u), Some(t)) = (b("disk_used_bytes"), b("disk_total_bytes")) {
            rows.push(("Guest disk", format!("{u} / {t}")));
        }
        if let Some(a) = st("agent_version") {
            let p = st("protocol_version")
                .map(|p| format!(" (protocol {p})"))
                .unwrap_or_default();
            rows.push(("Guest agent", format!("{a}{p}")));
        }
    }
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{:<w$}  {v}\n", format!("{k}:"), w = w + 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn create_mount_flags() {
        use crate::args::{Cli, Command};
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "ironclaw",
            "sandbox",
            "create",
            "-n",
            "dev",
            "--mount",
            "/srv/data/a:/data",
            "--mount",
            "/srv/out:/out:rw",
        ])
        .unwrap();
        let Command::Sandbox(SandboxCmd::Create(a)) = cli.command else {
            panic!()
        };
        assert_eq!(a.mounts.len(), 2);
        assert_eq!(
            (a.mounts[0].guest.as_str(), a.mounts[0].read_only),
            ("/data", true)
        );
        assert_eq!(
            (a.mounts[1].host.as_str(), a.mounts[1].read_only),
            ("/srv/out", false)
        );
        for bad in ["/srv:/x:wr", "relative:/x", "/only-one"] {
            assert!(
                Cli::try_parse_from(["ironclaw", "sandbox", "create", "-n", "d", "--mount", bad])
                    .is_err(),
                "{bad}"
            );
        }
        let mut s = sample();
        s.mounts = vec![Mount {
            host: "/srv/data/a".into(),
            guest: "/data".into(),
            read_only: true,
        }];
        let text = show_text(&s, None, datetime!(2026-11-23 18:00 UTC));
        assert!(text.contains("/srv/data/a -> /data (ro)"), "{text}");
    }

    fn sample() -> Sandbox {
        serde_json::from_value(
            json!({"name":"dev","owner":"alice","state":"running","backend":"namespace","image":"base",
         "vcpus":1,"memory_mib":512,"disk_mib":2048,"disk_used_bytes":12345,
         "created_at":"2026-11-23T18:00:00Z","started_at":"2026-11-23T18:00:00Z",
         "state_reason":null,"pid":1234, "future_field": true,
         "network":"internet","address":"10.88.0.2",
         "egress":{"allow_all":false,"allow_domains":["*.pypi.org"],"allow_cidrs":[],"deny_cidrs":["203.0.113.0/24"]}}),
        )
        .unwrap()
    }

    #[test]
    fn policy_flags_edit_the_current_policy() {
        let cur = sample().egress.unwrap();
        let add = PolicyFlags {
            allow_domains: vec!["pypi.org".into(), "*.pypi.org".into()],
            ..Default::default()
        };
        let e = cur.clone().with(&add);
        assert_eq!(e.allow_domains, vec!["*.pypi.org", "pypi.org"]);
        assert_eq!(e.deny_cidrs, cur.deny_cidrs);
        let reset = PolicyFlags {
            deny_all: true,
            allow_cidrs: vec!["198.51.100.0/24".into()],
            ..Default::default()
        };
        assert_eq!(
            cur.with(&reset),
            Egress {
                allow_cidrs: vec!["198.51.100.0/24".into()],
                ..Default::default()
            }
        );
    }

    #[test]
    fn table_rows() {
        let now = datetime!(2026-11-23 20:00:00 UTC);
        let mut stopped = sample();
        stopped.name = "web-1".into();
        stopped.state = "stopped".into();
        stopped.memory_mib = Some(1536);
        stopped.disk_used_bytes = None;
        stopped.owner = None;
        stopped.address = None;
        let t = sandboxes_table(&[sample(), stopped], now);
        assert_eq!(
            t,
            "NAME    OWNER   STATE     IP          BACKEND     IMAGE   VCPU   MEMORY   DISK(used/max)   AGE\n\
             dev     alice   running   10.88.0.2   namespace   base    1      512M     12K/2G           2h\n\
             web-1   -       stopped   -           namespace   base    1      1.5G     -/2G             2h\n"
        );
    }

    #[test]
    fn show() {
        let now = datetime!(2026-11-23 18:00:30 UTC);
        let t = show_text(
            &sample(),
            Some(&json!({"hostname":"dev","kernel":"6.1"})),
            now,
        );
        assert!(t.contains("Name:      dev\n"), "{t}");
        assert!(
            t.contains("Network:   internet, address 10.88.0.2\n"),
            "{t}"
        );
        assert!(
            t.contains("Egress:    deny all; domains *.pypi.org; deny 203.0.113.0/24\n"),
            "{t}"
        );
        assert!(t.contains("Disk:      12K/2G used\n"), "{t}");
        assert!(
            t.contains("Created:   2026-11-23T18:00:00Z (30s ago)\n"),
            "{t}"
        );
        assert!(t.contains("Hostname:  dev\n"), "{t}");
    }
}
