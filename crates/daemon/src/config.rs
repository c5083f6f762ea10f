//! Daemon configuration: command-line flags over an optional TOML file.
//! Secrets never live here; they come from the environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "ironclawd",
    version,
    about = "The IronClaw daemon: sandboxes and agents behind one HTTP API"
)]
pub struct Args {
    /// Where the database, images, sandboxes and admin token live.
    #[arg(long, env = "IRONCLAW_DATA_DIR", default_value = "/var/lib/ironclaw")]
    pub data_dir: PathBuf,
    /// Address to listen on (host:port).
    #[arg(long, env = "IRONCLAW_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// TOML configuration file.
    #[arg(long, env = "IRONCLAW_CONFIG")]
    pub config: Option<PathBuf>,
    /// The static ironclaw-guest binary installed into images.
    #[arg(long, env = "IRONCLAW_GUEST_BIN")]
    pub guest_bin: Option<PathBuf>,
    /// The firecracker binary (default: `firecracker` on PATH).
    #[arg(long, env = "IRONCLAW_FIRECRACKER_BIN")]
    pub firecracker_bin: Option<PathBuf>,
    /// Exposed ports are served at PORT-NAME.<this> (a wildcard DNS name);
    /// overrides `[network] base_domain`. Default: an sslip.io name of the
    /// listen address.
    #[arg(long, env = "IRONCLAW_BASE_DOMAIN")]
    pub base_domain: Option<String>,
    /// The SSH endpoint's address (host:port), or `none` to turn it off;
    /// overrides `ssh_listen`. Default: the listen address's IP, port 2222.
    #[arg(long, env = "IRONCLAW_SSH_LISTEN", value_name = "ADDR|none")]
    pub ssh_listen: Option<String>,
    /// Also serve the E2B-compatible API on a port of its own (it is
    /// always on the main listener too).
    #[arg(long, env = "IRONCLAW_E2B_LISTEN", value_name = "ADDR")]
    pub e2b_listen: Option<SocketAddr>,
}

/// Where the SSH endpoint listens, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshListen {
    Off,
    /// Nothing configured: the listen address's IP, port 2222. Taken
    /// only if free (a warning otherwise), so a second daemon still starts.
    Default(SocketAddr),
    Explicit(SocketAddr),
}

/// The SSH endpoint's default port.
pub const SSH_DEFAULT_PORT: u16 = 2222;

/// The `[daemon]`-less flat TOML file; every key optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    /// Largest file upload accepted, in bytes.
    pub max_upload_bytes: u64,
    /// Most sandboxes at once; creating one more answers 503.
    pub max_sandboxes: usize,
    /// Image used when a create request names none.
    pub default_image: String,
    pub default_vcpus: u32,
    pub default_memory_mib: u64,
    pub default_disk_mib: u64,
    /// Process limit inside each sandbox (fork bombs stop here).
    pub pids_limit: u64,
    /// Seconds a stopping sandbox gets before it is killed.
    pub stop_grace_secs: u64,
    /// The firecracker binary; the flag or IRONCLAW_FIRECRACKER_BIN wins.
    pub firecracker_bin: Option<PathBuf>,
    /// Run Firecracker through this jailer binary (chroot per VM, dropped
    /// privileges). None: the `jailer` next to the firecracker binary when
    /// there is one, else Firecracker runs directly, as root (doctor warns).
    pub firecracker_jailer: Option<PathBuf>,
    /// The uid/gid jailed Firecracker processes run as.
    pub firecracker_uid: u32,
    pub firecracker_gid: u32,
    /// The uid/gid QEMU runs as (started as that user, seccomp on). A
    /// dedicated id that owns no file: QEMU gets every file it needs as a
    /// descriptor. 0 runs QEMU as root (`ironclaw doctor` warns).
    pub qemu_uid: u32,
    pub qemu_gid: u32,
    /// Where the KVM boot probe caches its answer (per host boot).
    pub kvm_probe_cache: PathBuf,
    /// LLM providers (`[[providers]]` tables, see README); read by the agent crate.
    pub providers: Vec<toml::Value>,
    /// The model sessions use when their agent names none.
    pub default_model: Option<String>,
    /// `KEY=value` lines with provider keys, readable only by the daemon.
    pub secrets_file: Option<PathBuf>,
    /// Agents users can talk to (`[[agents]] name, model, system_prompt`).
    pub agents: Vec<AgentConfig>,
    /// Host directories bound into every agent sandbox when it is created
    /// (`agent_mounts = [{ host, guest, read_only }]`), checked against
    /// `[[mount_roots]]` like any mount.
    pub agent_mounts: Vec<crate::mounts::MountRequest>,
    /// Stop a user's agent sandbox after this long without a message.
    pub agent_idle_stop_secs: u64,
    /// Model calls per turn before the agent stops.
    pub agent_max_steps: u32,
    /// Most output the non-streaming exec API collects per stream (stdout,
    /// stderr), in MiB; the rest is dropped and the response says so.
    pub exec_output_limit_mib: u64,
    /// Timeout of an exec that asks for none (seconds); the command is
    /// killed after it and the response has `timed_out: true`.
    pub exec_timeout_secs: u64,
    /// Longest timeout an exec may ask for (seconds).
    pub exec_timeout_max_secs: u64,
    /// Per-user limits and per-user overrides (`[quotas]`, `[quotas.users.NAME]`).
    pub quotas: crate::quota::Quotas,
    /// Host directories sandboxes may mount from (`[[mount_roots]] path,
    /// writable`); none by default.
    pub mount_roots: Vec<crate::mounts::MountRoot>,
    /// Sandbox networking (`[network]`): bridge, subnet, default policy,
    /// upstream resolvers, exposed ports.
    pub network: ironclaw_net::NetworkConfig,
    /// Serve exposed ports over HTTPS on this address too (their URLs are
    /// then `https://`); None: plain HTTP on `listen` only.
    pub ports_tls_listen: Option<SocketAddr>,
    /// PEM certificate chain and key for `ports_tls_listen` (a wildcard
    /// for `*.<base_domain>`); none: a self-signed one, fingerprint printed.
    pub ports_tls_cert: Option<PathBuf>,
    pub ports_tls_key: Option<PathBuf>,
    /// ACME directory URL (RFC 8555) for `ports_tls_listen` certificates:
    /// one per exposure name `PORT-NAME.<base_domain>`, validated over
    /// HTTP-01 on `listen` (which must be reachable on port 80 from the
    /// CA). Setting it agrees to the CA's terms of service. Until a name's
    /// certificate is issued, the self-signed one serves.
    pub ports_acme_directory: Option<String>,
    /// Contact address given to the CA (expiry and policy mail).
    pub ports_acme_email: Option<String>,
    /// PEM root CA trusted for the ACME directory's own HTTPS instead of
    /// the system's roots (a test CA such as pebble's).
    pub ports_acme_ca_file: Option<PathBuf>,
    /// Also get a certificate for the base domain itself.
    pub ports_acme_base_domain: bool,
    /// The SSH endpoint: `host:port`, or `"none"` (off). Default: the
    /// listen address's IP, port 2222.
    pub ssh_listen: Option<String>,
    /// Scheduled tasks (`[tasks]`): limits, what a missed slot does.
    pub tasks: crate::tasks::TasksConfig,
    /// Deploy releases kept on disk in a sandbox (`/app/releases/N`); older
    /// ones are removed after each release, except the live one and the
    /// one a rollback would switch to.
    pub deploy_keep_releases: usize,
    /// Largest a deploy repository may grow, in bytes; a push that would
    /// take it over is refused (and nothing of it is stored).
    pub deploy_repo_max_bytes: u64,
    /// Agent memory (`[memory]`): embedder, hybrid weights, extra paths.
    pub memory: crate::memory::MemoryConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub name: String,
    pub model: Option<String>,
    pub system_prompt: Option<String>,
    /// MCP servers (`[[agents.mcp]]`): stdio ones run in the user's
    /// sandbox, HTTP ones are reached from the host.
    #[serde(default)]
    pub mcp: Vec<ironclaw_agent::McpServerConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7777".parse().unwrap(),
            max_upload_bytes: 1 << 30,
            max_sandboxes: 256,
            default_image: "base".into(),
            default_vcpus: 1,
            default_memory_mib: 512,
            default_disk_mib: 2048,
            pids_limit: 1024,
            stop_grace_secs: 10,
            firecracker_bin: None,
            firecracker_jailer: None,
            firecracker_uid: ironclaw_sandbox::firecracker::DEFAULT_FIRECRACKER_UID,
            firecracker_gid: ironclaw_sandbox::firecracker::DEFAULT_FIRECRACKER_GID,
            qemu_uid: ironclaw_sandbox::qemu::DEFAULT_QEMU_UID,
            qemu_gid: ironclaw_sandbox::qemu::DEFAULT_QEMU_GID,
            kvm_probe_cache: PathBuf::from("/run/ironclaw/kvm-probe.json"),
            providers: Vec::new(),
            default_model: None,
            secrets_file: None,
            agents: Vec::new(),
            agent_mounts: Vec::new(),
            agent_idle_stop_secs: 30 * 60,
            agent_max_steps: 25,
            exec_output_limit_mib: 16,
            exec_timeout_secs: 600,
            exec_timeout_max_secs: 24 * 3600,
            quotas: Default::default(),
            mount_roots: Vec::new(),
            network: Default::default(),
            ports_tls_listen: None,
            ports_tls_cert: None,
            ports_tls_key: None,
            ports_acme_directory: None,
            ports_acme_email: None,
            ports_acme_ca_file: None,
            ports_acme_base_domain: false,
            ssh_listen: None,
            tasks: Default::default(),
            deploy_keep_releases: 5,
            deploy_repo_max_bytes: 512 << 20,
            memory: Default::default(),
        }
    }
}

impl Config {
    /// The `[[providers]]` part as the agent crate reads it; from the
    /// environment (IRONCLAW_PROVIDER, ...) when the file declares none.
    pub fn providers_config(&self) -> anyhow::Result<Option<ironclaw_agent::ProvidersConfig>> {
        if self.providers.is_empty() {
            return Ok(ironclaw_agent::ProvidersConfig::from_env()?);
        }
        let mut doc = toml::value::Table::new();
        doc.insert(
            "providers".into(),
            toml::Value::Array(self.providers.clone()),
        );
        if let Some(m) = &self.default_model {
            doc.insert("default_model".into(), toml::Value::String(m.clone()));
        }
        let text = toml::to_string(&doc)?;
        Ok(Some(ironclaw_agent::ProvidersConfig::from_toml_str(&text)?))
    }

    /// Provider and embedding keys: the environment, then `secrets_file`.
    pub fn secrets(&self) -> anyhow::Result<ironclaw_agent::Secrets> {
        Ok(match &self.secrets_file {
            Some(p) => ironclaw_agent::Secrets::load(p)?,
            None => ironclaw_agent::Secrets::env_only(),
        })
    }

    /// The ACME settings, when ACME is on.
    pub fn acme(&self) -> Option<crate::exposure::acme::AcmeConfig> {
        Some(crate::exposure::acme::AcmeConfig {
            directory: self.ports_acme_directory.clone()?,
            email: self.ports_acme_email.clone(),
            ca_file: self.ports_acme_ca_file.clone(),
        })
    }

    fn check_acme(&self) -> anyhow::Result<()> {
        let Some(dir) = &self.ports_acme_directory else {
            if self.ports_acme_email.is_some() || self.ports_acme_ca_file.is_some() {
                anyhow::bail!("ports_acme_email and ports_acme_ca_file need ports_acme_directory");
            }
            return Ok(());
        };
        if self.ports_tls_cert.is_some() || self.ports_tls_key.is_some() {
            anyhow::bail!(
                "ports_acme_directory and ports_tls_cert/ports_tls_key exclude each other: \
                 certificates come either from ACME or from the files"
            );
        }
        if self.ports_tls_listen.is_none() {
            anyhow::bail!(
                "ports_acme_directory needs ports_tls_listen (where the certificates serve)"
            );
        }
        let rest = dir.strip_prefix("https://").ok_or_else(|| {
            anyhow::anyhow!("ports_acme_directory {dir:?} must be an https:// URL")
        })?;
        if rest.is_empty() || dir.parse::<axum::http::Uri>().is_err() {
            anyhow::bail!("ports_acme_directory {dir:?} is not a URL");
        }
        if let Some(e) = &self.ports_acme_email {
            let ok = e.split_once('@').is_some_and(|(u, d)| {
                !u.is_empty()
                    && d.contains('.')
                    && !e.contains(|c: char| c.is_whitespace() || c == ',')
            });
            if !ok {
                anyhow::bail!("ports_acme_email {e:?} is not an email address");
            }
        }
        Ok(())
    }

    /// Every agent's `[[agents.mcp]]` servers are well formed.
    pub fn check_agents(&self) -> anyhow::Result<()> {
        for a in &self.agents {
            ironclaw_agent::mcp::validate_all(&a.mcp)
                .with_context(|| format!("agent {:?}", a.name))?;
        }
        Ok(())
    }

    pub fn load(args: &Args) -> anyhow::Result<Config> {
        let mut cfg = match &args.config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config {}", p.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing config {}", p.display()))?
            }
            None => Config::default(),
        };
        if cfg.exec_output_limit_mib == 0 {
            anyhow::bail!("exec_output_limit_mib must be at least 1");
        }
        if cfg.exec_timeout_secs == 0 || cfg.exec_timeout_secs > cfg.exec_timeout_max_secs {
            anyhow::bail!(
                "exec_timeout_secs must be between 1 and exec_timeout_max_secs ({})",
                cfg.exec_timeout_max_secs
            );
        }
        for r in &cfg.mount_roots {
            if !r.path.is_absolute() {
                anyhow::bail!("mount_roots: path {} must be absolute", r.path.display());
            }
        }
        if cfg.deploy_keep_releases < 2 {
            anyhow::bail!("deploy_keep_releases must be at least 2 (the live release and one to roll back to)");
        }
        if cfg.deploy_repo_max_bytes < 1 << 20 {
            anyhow::bail!("deploy_repo_max_bytes must be at least 1048576 (1 MiB)");
        }
        cfg.check_acme()?;
        cfg.memory.check()?;
        cfg.check_agents()?;
        if let Some(l) = args.listen {
            cfg.listen = l;
        }
        if let Some(b) = &args.firecracker_bin {
            cfg.firecracker_bin = Some(b.clone());
        }
        if let Some(d) = &args.base_domain {
            cfg.network.base_domain = Some(d.clone());
        }
        if let Some(s) = &args.ssh_listen {
            cfg.ssh_listen = Some(s.clone());
        }
        cfg.ssh_listen()?;
        Ok(cfg)
    }

    /// The SSH endpoint's address (see [`SshListen`]).
    pub fn ssh_listen(&self) -> anyhow::Result<SshListen> {
        match self.ssh_listen.as_deref().map(str::trim) {
            None => Ok(SshListen::Default(SocketAddr::new(
                self.listen.ip(),
                SSH_DEFAULT_PORT,
            ))),
            Some("none") => Ok(SshListen::Off),
            Some(a) => a.parse().map(SshListen::Explicit).map_err(|_| {
                anyhow::anyhow!("ssh_listen: {a:?} is neither host:port nor \"none\"")
            }),
        }
    }
}

/// Find the static guest binary: the flag, else next to this executable,
/// else where `cargo build --target x86_64-unknown-linux-gnu` puts it.
pub fn find_guest_bin(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let profile = dir.file_name()?.to_owned();
    let mut candidates = vec![dir.join("ironclaw-guest")];
    // target/<profile>/ironclawd -> target/x86_64-unknown-linux-gnu/<profile>/ironclaw-guest;
    // test binaries live one level deeper, in target/<profile>/deps.
    for base in [dir.parent(), dir.parent().and_then(Path::parent)]
        .into_iter()
        .flatten()
    {
        for prof in [profile.as_os_str(), "release".as_ref(), "debug".as_ref()] {
            candidates.push(
                base.join("x86_64-unknown-linux-gnu")
                    .join(prof)
                    .join("ironclaw-guest"),
            );
        }
    }
    candidates.into_iter().find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in README.md parses, providers included.
    #[test]
    fn readme_example_config_parses() {
        let readme = include_str!("../../../README.md");
        let toml_text = readme
            .split("```toml\n")
            .nth(1)
            .unwrap()
            .split("```")
            .next()
            .unwrap();
        let cfg: Config = toml::from_str(toml_text).unwrap();
        assert_eq!(cfg.agents[0].model.as_deref(), Some("sonnet"));
        let providers = cfg.providers_config().unwrap().unwrap();
        let secrets = ironclaw_agent::Secrets::parse("ANTHROPIC_API_KEY=x\n").unwrap();
        let reg = ironclaw_agent::Registry::new(&providers, &secrets).unwrap();
        assert_eq!(reg.default_model().unwrap().name, "sonnet");
        assert!(reg.resolve("llama").is_ok());
        assert_eq!(cfg.exec_output_limit_mib, 16);
        let bob = cfg.quotas.for_user("bob", false);
        assert_eq!((bob.max_sandboxes, bob.max_vcpus), (Some(3), Some(16)));
    }

    #[test]
    fn readme_mcp_servers_parse_and_bad_ones_are_named() {
        let cfg = readme_toml("#### Agents using MCP servers");
        cfg.check_agents().unwrap();
        let mcp = &cfg.agents[0].mcp;
        assert_eq!(mcp[0].command.as_deref(), Some("python3"));
        assert_eq!(mcp[1].bearer_env.as_deref(), Some("ISSUES_MCP_TOKEN"));
        let bad: Config = toml::from_str(
            "[[agents]]\nname = \"a\"\n[[agents.mcp]]\nname = \"my_server\"\ncommand = \"x\"\n",
        )
        .unwrap();
        let e = format!("{:#}", bad.check_agents().unwrap_err());
        assert!(
            e.contains("agent \"a\"") && e.contains("\"my_server\" is invalid"),
            "{e}"
        );
    }

    /// The first TOML block after `heading` in README.md, parsed.
    fn readme_toml(heading: &str) -> Config {
        let readme = include_str!("../../../README.md");
        let section = readme.split(heading).nth(1).unwrap();
        let toml_text = section
            .split("```toml\n")
            .nth(1)
            .unwrap()
            .split("```")
            .next()
            .unwrap();
        toml::from_str(toml_text).unwrap()
    }

    /// The "Host directories" example in README.md parses.
    #[test]
    fn readme_mount_roots_parse() {
        let cfg = readme_toml("### Host directories");
        assert_eq!(cfg.mount_roots.len(), 2);
        assert!(!cfg.mount_roots[0].writable && cfg.mount_roots[1].writable);
        assert!(toml::from_str::<Config>("[[mount_roots]]\npath = \"/a\"\nrw = true\n").is_err());
    }

    /// The "Networking" example in README.md parses.
    #[test]
    fn readme_network_parses() {
        let cfg = readme_toml("### Networking");
        assert_eq!(cfg.network.bridge, "ironclaw0");
        assert!(cfg.network.default_policy.allow_all);
        assert_eq!(cfg.network.egress_headers[0].header, "Authorization");
    }

    /// The "ACME certificates" example in README.md parses and checks.
    #[test]
    fn readme_acme_parses() {
        let cfg = readme_toml("#### ACME certificates");
        cfg.check_acme().unwrap();
        let acme = cfg.acme().unwrap();
        assert!(acme.directory.starts_with("https://acme-v02"));
        assert_eq!(acme.email.as_deref(), Some("ops@example.com"));
        assert!(acme.ca_file.is_none() && !cfg.ports_acme_base_domain);
    }

    /// The "Memory" example in README.md parses and checks.
    #[test]
    fn readme_memory_parses() {
        let cfg = readme_toml("### Memory");
        cfg.memory.check().unwrap();
        assert_eq!(cfg.memory.embedder, crate::memory::EmbedderKind::Local);
        assert_eq!(cfg.memory.paths, ["/root/notes"]);
        let bad = |t: &str| toml::from_str::<Config>(t).unwrap().memory.check().is_err();
        assert!(bad("[memory]\npaths = [\"notes\"]\n"));
        assert!(bad("[memory]\nembedder = \"openai\"\n"));
        assert!(bad("[memory]\nvector_weight = 0.0\ntext_weight = 0.0\n"));
        assert!(toml::from_str::<Config>("[memory]\nembedder = \"gpu\"\n").is_err());
    }

    #[test]
    fn acme_settings_are_checked() {
        let check = |t: &str| toml::from_str::<Config>(t).unwrap().check_acme();
        let ok = "ports_tls_listen = \"127.0.0.1:0\"\nports_acme_directory = \"https://acme.example/dir\"\n";
        check(ok).unwrap();
        check(&format!("{ok}ports_acme_email = \"ops@example.com\"\n")).unwrap();
        let err = |t: &str| check(t).unwrap_err().to_string();
        assert!(err(&format!(
            "{ok}ports_tls_cert = \"/c\"\nports_tls_key = \"/k\"\n"
        ))
        .contains("exclude each other"));
        assert!(err("ports_acme_directory = \"https://acme.example/dir\"\n")
            .contains("needs ports_tls_listen"));
        assert!(err(&ok.replace("https://", "http://")).contains("https:// URL"));
        assert!(err(&format!("{ok}ports_acme_email = \"nobody\"\n")).contains("email"));
        assert!(err("ports_acme_email = \"a@b.c\"\n").contains("need ports_acme_directory"));
    }

    #[test]
    fn ssh_listen_default_off_and_explicit() {
        let mut cfg = Config::default();
        assert_eq!(
            cfg.ssh_listen().unwrap(),
            SshListen::Default("127.0.0.1:2222".parse().unwrap())
        );
        cfg.ssh_listen = Some("none".into());
        assert_eq!(cfg.ssh_listen().unwrap(), SshListen::Off);
        cfg.ssh_listen = Some("0.0.0.0:22".into());
        assert_eq!(
            cfg.ssh_listen().unwrap(),
            SshListen::Explicit("0.0.0.0:22".parse().unwrap())
        );
        cfg.ssh_listen = Some("port 22".into());
        assert!(cfg.ssh_listen().is_err());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<Config>("listen_addr = \"x\"").is_err());
    }
}
