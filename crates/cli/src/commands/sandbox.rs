//! `ironclaw sandbox ...`

use anyhow::Result;
use ironclaw_api::{self as api, SandboxState};
use reqwest::Method;
use time::OffsetDateTime;

use crate::args::{CreateArgs, PolicyFlags, SandboxCmd};
use crate::client::{seg, ApiError, Client};
use crate::output::{age_since, format_bytes, format_mib, print_json, render_table};

pub use ironclaw_api::{Egress, Sandbox};

/// `flags` applied to `e`: `--deny-all` starts over, the rest add.
pub fn egress_with(mut e: Egress, f: &PolicyFlags) -> Egress {
    if f.deny_all {
        e = Egress::default();
    }
    e.allow_all |= f.allow_all;
    let add = |v: &mut Vec<String>, new: &[String]| {
        for n in new {
            if !v.contains(n) {
                v.push(n.clone());
            }
        }
    };
    add(&mut e.allow_domains, &f.allow_domains);
    add(&mut e.allow_cidrs, &f.allow_cidrs);
    add(&mut e.deny_cidrs, &f.deny_cidrs);
    e
}

/// One line: "deny all; domains *.pypi.org; deny 203.0.113.0/24".
pub fn egress_summary(e: &Egress) -> String {
    let mut parts = vec![if e.allow_all { "allow all" } else { "deny all" }.to_string()];
    for (label, v) in [
        ("domains", &e.allow_domains),
        ("allow", &e.allow_cidrs),
        ("deny", &e.deny_cidrs),
    ] {
        if !v.is_empty() {
            parts.push(format!("{label} {}", v.join(",")));
        }
    }
    parts.join("; ")
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

/// `-` for an empty string.
fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

pub fn disk_cell(s: &Sandbox) -> String {
    format!(
        "{}/{}",
        format_bytes(s.disk_used_bytes),
        format_mib(s.disk_mib)
    )
}

pub fn table_row(s: &Sandbox, now: OffsetDateTime) -> Vec<String> {
    vec![
        s.name.clone(),
        dash(&s.owner),
        s.state.as_str().to_string(),
        opt(&s.address),
        dash(&s.backend),
        dash(&s.image),
        s.vcpus.to_string(),
        format_mib(s.memory_mib),
        disk_cell(s),
        age_since(Some(&s.created_at), now),
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
            let v = c.sandboxes().await?;
            if j.json {
                print_json(&v);
                return Ok(0);
            }
            let list = v.sandboxes;
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
            let s = c.sandbox(&name).await?;
            if json.json {
                print_json(&s);
                return Ok(0);
            }
            let info = if s.state == SandboxState::Running {
                c.sandbox_info(&name).await.ok()
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
                let s = c.start_sandbox(&n).await?;
                println!("started {n} ({})", s.state.as_str());
                Ok(())
            })
            .await
        }
        SandboxCmd::Stop { names } => {
            each(&names, |n| async move {
                c.stop_sandbox(&n).await?;
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
                match c.remove_sandbox(&n).await {
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
    let req = api::CreateSandbox {
        name: a.name.clone(),
        image: a.image,
        backend: a.backend,
        vcpus: a.vcpus,
        memory_mib: a.memory,
        disk_mib: a.disk,
        mounts: a
            .mounts
            .iter()
            .map(|m| api::MountRequest {
                host: m.host.clone(),
                guest: m.guest.clone(),
                read_only: m.read_only,
            })
            .collect(),
        network: a.network,
        egress: (!a.policy.is_empty()).then(|| egress_with(Egress::default(), &a.policy)),
        join: a.join,
    };
    let s = c.create_sandbox(&req).await?;
    if a.json.json {
        print_json(&s);
        return Ok(0);
    }
    println!(
        "created sandbox '{}': {}, image {}, {} vCPU, {} memory, {} disk ({})",
        s.name,
        dash(&s.backend),
        dash(&s.image),
        s.vcpus,
        format_mib(s.memory_mib),
        format_mib(s.disk_mib),
        s.state.as_str()
    );
    eprintln!(
        "try: ironclaw exec {0} -- uname -a   or   ironclaw console {0}",
        s.name
    );
    Ok(0)
}

/// `sandbox policy NAME [flags]`: print the policy, or change it.
async fn policy(c: &Client, name: &str, flags: &PolicyFlags, json_out: bool) -> Result<i32> {
    let mut s = c.sandbox(name).await?;
    if !flags.is_empty() {
        let new = egress_with(s.egress.clone(), flags);
        s = c.set_egress(name, &new).await?;
    }
    if json_out {
        print_json(&s.egress);
        return Ok(0);
    }
    if s.network == "none" {
        println!("{name}: no network (created with --network none)");
    } else {
        println!("{name}: {}", egress_summary(&s.egress));
    }
    Ok(0)
}

pub fn show_text(s: &Sandbox, info: Option<&api::GuestInfo>, now: OffsetDateTime) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("Name", s.name.clone()),
        ("Owner", dash(&s.owner)),
        (
            "State",
            match &s.state_reason {
                Some(r) if !r.is_empty() => format!("{} ({r})", s.state.as_str()),
                _ => s.state.as_str().to_string(),
            },
        ),
        ("Backend", dash(&s.backend)),
        ("Image", dash(&s.image)),
        ("vCPUs", s.vcpus.to_string()),
        ("Memory", format_mib(s.memory_mib)),
        ("Disk", format!("{} used", disk_cell(s))),
        (
            "Created",
            format!(
                "{} ({} ago)",
                dash(&s.created_at),
                age_since(Some(&s.created_at), now)
            ),
        ),
    ];
    if let Some(t) = &s.started_at {
        rows.push(("Started", format!("{t} ({} ago)", age_since(Some(t), now))));
    }
    if let Some(p) = s.pid {
        rows.push(("PID", p.to_string()));
    }
    match (s.network.as_str(), &s.address) {
        ("internet", Some(a)) => rows.push((
            "Network",
            match &s.network_name {
                Some(n) => format!("internet, address {a}, joined {n}"),
                None => format!("internet, address {a}"),
            },
        )),
        ("", _) => {}
        (n, _) => rows.push(("Network", n.to_string())),
    }
    if s.network == "internet" {
        rows.push(("Egress", egress_summary(&s.egress)));
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
        rows.push(("Hostname", i.hostname.clone()));
        rows.push(("Kernel", i.kernel.clone()));
        rows.push((
            "Uptime",
            humantime::format_duration(std::time::Duration::from_secs(i.uptime_ms / 1000))
                .to_string(),
        ));
        rows.push((
            "Guest memory",
            format!(
                "{} / {}",
                format_bytes(i.mem_used_bytes),
                format_bytes(i.mem_total_bytes)
            ),
        ));
        rows.push((
            "Guest disk",
            format!(
                "{} / {}",
                format_bytes(i.disk_used_bytes),
                format_bytes(i.disk_total_bytes)
            ),
        ));
        rows.push((
            "Guest agent",
            format!("{} (protocol {})", i.agent_version, i.protocol_version),
        ));
    }
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{:<w$}  {v}\n", format!("{k}:"), w = w + 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
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
        s.mounts = vec![api::Mount {
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
        let cur = sample().egress;
        let add = PolicyFlags {
            allow_domains: vec!["pypi.org".into(), "*.pypi.org".into()],
            ..Default::default()
        };
        let e = egress_with(cur.clone(), &add);
        assert_eq!(e.allow_domains, vec!["*.pypi.org", "pypi.org"]);
        assert_eq!(e.deny_cidrs, cur.deny_cidrs);
        let reset = PolicyFlags {
            deny_all: true,
            allow_cidrs: vec!["198.51.100.0/24".into()],
            ..Default::default()
        };
        assert_eq!(
            egress_with(cur, &reset),
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
        stopped.state = SandboxState::Stopped;
        stopped.memory_mib = 1536;
        stopped.disk_used_bytes = 0;
        stopped.owner = String::new();
        stopped.address = None;
        let t = sandboxes_table(&[sample(), stopped], now);
        assert_eq!(
            t,
            "NAME    OWNER   STATE     IP          BACKEND     IMAGE   VCPU   MEMORY   DISK(used/max)   AGE\n\
             dev     alice   running   10.88.0.2   namespace   base    1      512M     12K/2G           2h\n\
             web-1   -       stopped   -           namespace   base    1      1.5G     0B/2G            2h\n"
        );
    }

    #[test]
    fn show() {
        let now = datetime!(2026-11-23 18:00:30 UTC);
        let info: api::GuestInfo = serde_json::from_value(json!({"agent_version":"0.1.0",
            "protocol_version":3,"hostname":"dev","kernel":"6.1","uptime_ms":1000,"cpus":1,
            "mem_total_bytes":1,"mem_used_bytes":1,"disk_total_bytes":1,"disk_used_bytes":1,"pid1":false}))
        .unwrap();
        let t = show_text(&sample(), Some(&info), now);
        // The value of row `key` (the keys are padded to the longest).
        let row = |key: &str| {
            t.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}:")))
                .map(|v| v.trim_start().to_string())
        };
        assert_eq!(row("Name").as_deref(), Some("dev"), "{t}");
        assert_eq!(
            row("Network").as_deref(),
            Some("internet, address 10.88.0.2"),
            "{t}"
        );
        assert_eq!(
            row("Egress").as_deref(),
            Some("deny all; domains *.pypi.org; deny 203.0.113.0/24"),
            "{t}"
        );
        assert_eq!(row("Disk").as_deref(), Some("12K/2G used"), "{t}");
        assert_eq!(
            row("Created").as_deref(),
            Some("2026-11-23T18:00:00Z (30s ago)"),
            "{t}"
        );
        assert_eq!(row("Hostname").as_deref(), Some("dev"), "{t}");
        assert_eq!(
            row("Guest agent").as_deref(),
            Some("0.1.0 (protocol 3)"),
            "{t}"
        );
    }
}
