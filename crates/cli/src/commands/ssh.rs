//! `ironclaw ssh NAME [-- CMD]`: run the system `ssh` against the daemon's
//! SSH endpoint. The host is the daemon URL's; the port and host key come
//! from `/v1/host`, so the first connection needs no "trust this key?"
//! (the key is pinned in ~/.config/ironclaw/known_hosts).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::args::SshArgs;
use crate::client::Client;

/// The known_hosts name of `host:port` (`[host]:port` unless port 22).
fn known_host_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// `known` with the line for `name` replaced by `name key`.
pub fn pin(known: &str, name: &str, key: &str) -> String {
    let mut out: String = known
        .lines()
        .filter(|l| l.split_whitespace().next() != Some(name))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&format!("{name} {key}\n"));
    out
}

fn known_hosts_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("ironclaw").join("known_hosts"))
}

/// The ssh argv (without the program) for `a` against host `host`.
pub fn argv(a: &SshArgs, host: &str, port: u16, known_hosts: Option<&str>) -> Vec<String> {
    let mut v = vec!["-p".to_string(), port.to_string()];
    if let Some(k) = known_hosts {
        v.extend([
            "-o".into(),
            format!("UserKnownHostsFile={k}"),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
        ]);
    }
    if let Some(i) = &a.identity {
        v.extend([
            "-i".into(),
            i.display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
        ]);
    }
    if a.tty {
        v.push("-t".into());
    }
    v.push(format!("{}@{host}", a.name));
    if !a.command.is_empty() {
        v.push("--".into());
        v.extend(a.command.iter().cloned());
    }
    v
}

pub async fn run(c: &Client, a: SshArgs) -> Result<i32> {
    let v = c.host().await?;
    let Some(ssh) = v.ssh else {
        anyhow::bail!("the daemon's SSH endpoint is off (ssh_listen = \"none\")");
    };
    let listen: std::net::SocketAddr = ssh
        .listen
        .parse()
        .context("the daemon reported no SSH address")?;
    let url = reqwest::Url::parse(&c.base).context("the daemon URL")?;
    let host = url.host_str().context("the daemon URL has no host")?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let name = known_host_name(&host, listen.port());
    let pinned = match (known_hosts_file(), ssh.host_key.as_str()) {
        (Some(f), key) if !key.is_empty() => {
            let old = std::fs::read_to_string(&f).unwrap_or_default();
            let write = f
                .parent()
                .map(std::fs::create_dir_all)
                .transpose()
                .and_then(|_| std::fs::write(&f, pin(&old, &name, key)));
            write.ok().map(|_| f.display().to_string())
        }
        _ => None,
    };
    let args = argv(&a, &host, listen.port(), pinned.as_deref());
    if a.print {
        println!("ssh {}", args.join(" "));
        return Ok(0);
    }
    let err = std::process::Command::new("ssh").args(&args).exec();
    Err(anyhow::anyhow!(
        "running ssh: {err} (install openssh-client)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_one_line_per_host() {
        let k = "ssh-ed25519 AAAA";
        let a = pin("", "[h]:2222", k);
        assert_eq!(a, "[h]:2222 ssh-ed25519 AAAA\n");
        let b = pin(&format!("other x\n{a}"), "[h]:2222", "ssh-ed25519 BBBB");
        assert_eq!(b, "other x\n[h]:2222 ssh-ed25519 BBBB\n");
    }

    #[test]
    fn argv_names_the_sandbox_as_the_user() {
        let a = SshArgs {
            name: "dev".into(),
            tty: false,
            identity: None,
            print: false,
            command: vec!["ls".into(), "-l".into()],
        };
        assert_eq!(
            argv(&a, "example.org", 2222, None),
            ["-p", "2222", "dev@example.org", "--", "ls", "-l"]
        );
    }
}
