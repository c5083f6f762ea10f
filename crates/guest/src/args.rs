//! Command line. Hand-parsed: three modes with a handful of flags do not
//! justify an argument-parsing dependency in a binary that ships in every
//! image.

use std::path::PathBuf;

use crate::transport::ListenAddr;

pub const USAGE: &str = "usage:
  ironclaw-guest serve --listen unix:/path/agent.sock
  ironclaw-guest ns-init --lower L --upper U --work W --merged M --agent-dir D --hostname H
                 --uid-base B [--disk-fd N --disk-at P] [--bind HOST:GUEST:ro|rw]...
                 [--nameserver IP] [--trust-ca HOST_PEM]
  ironclaw-guest init        (PID 1 of a VM; implied when started as PID 1 without arguments)
  ironclaw-guest --version";

#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    #[error("unknown option {0:?}")]
    UnknownOption(String),
    #[error("option {0} needs a value")]
    MissingValue(String),
    #[error("missing required option {0}")]
    Required(&'static str),
    #[error("bad --listen address {0:?} (expected unix:/path)")]
    BadListen(String),
    #[error("bad --nameserver {0:?}: expected an IP address")]
    NotAnAddress(String),
    #[error("no command given")]
    NoCommand,
    #[error("bad value {value:?} for {name}: expected a number")]
    NotANumber { name: &'static str, value: String },
    #[error("--disk-fd and --disk-at go together")]
    DiskPair,
    #[error("bad --bind {0:?}: expected HOST:GUEST:ro|rw with absolute paths")]
    BadBind(String),
}

/// A host directory to bind into the sandbox (`--bind HOST:GUEST:ro|rw`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Canonical host path, opened refusing symlinks.
    pub host: PathBuf,
    /// Absolute path inside the sandbox, created refusing symlinks.
    pub guest: PathBuf,
    pub read_only: bool,
}

impl std::str::FromStr for Bind {
    type Err = ArgsError;
    fn from_str(s: &str) -> Result<Bind, ArgsError> {
        let bad = || ArgsError::BadBind(s.to_string());
        let mut parts = s.split(':');
        let (Some(host), Some(guest), Some(mode), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let read_only = match mode {
            "ro" => true,
            "rw" => false,
            _ => return Err(bad()),
        };
        if !host.starts_with('/') || !guest.starts_with('/') || guest == "/" {
            return Err(bad());
        }
        Ok(Bind {
            host: host.into(),
            guest: guest.into(),
            read_only,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsInitArgs {
    pub lower: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
    pub agent_dir: PathBuf,
    pub hostname: String,
    /// First host uid/gid of the sandbox's block: root inside maps to it.
    pub uid_base: u32,
    /// The sandbox's disk: an inherited descriptor of a detached mount
    /// (the host mounted it) and where to attach it before the overlay.
    pub disk: Option<(i32, PathBuf)>,
    /// Host directories bound in after the overlay, in order.
    pub binds: Vec<Bind>,
    /// The resolver /etc/resolv.conf names (the sandbox has a network card;
    /// the host configured it from outside).
    pub nameserver: Option<std::net::IpAddr>,
    /// A CA certificate on the host (read before the pivot) that the
    /// sandbox's trust store gets: the egress proxy's.
    pub trust_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Serve { listen: ListenAddr },
    NsInit(Box<NsInitArgs>),
    VmInit,
    Help,
    Version,
}

/// Pairs of `--name value` (or `--name=value`) after the command word.
fn options(rest: &[String], known: &[&str]) -> Result<Vec<(String, String)>, ArgsError> {
    let mut out = Vec::new();
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        if !known.contains(&name.as_str()) {
            return Err(ArgsError::UnknownOption(arg.clone()));
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| ArgsError::MissingValue(name.clone()))?,
        };
        out.push((name, value));
    }
    Ok(out)
}

fn take(opts: &[(String, String)], name: &'static str) -> Result<String, ArgsError> {
    take_opt(opts, name).ok_or(ArgsError::Required(name))
}

fn take_opt(opts: &[(String, String)], name: &'static str) -> Option<String> {
    opts.iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

fn number<T: std::str::FromStr>(name: &'static str, value: String) -> Result<T, ArgsError> {
    value
        .parse()
        .map_err(|_| ArgsError::NotANumber { name, value })
}

pub fn parse(argv: &[String]) -> Result<Mode, ArgsError> {
    let Some(cmd) = argv.first() else {
        // The kernel starts init without arguments; anything else without
        // arguments is a person who needs the usage text.
        return if std::process::id() == 1 {
            Ok(Mode::VmInit)
        } else {
            Err(ArgsError::NoCommand)
        };
    };
    let rest = &argv[1..];
    match cmd.as_str() {
        "serve" => {
            let opts = options(rest, &["--listen"])?;
            let listen = take(&opts, "--listen")?;
            let path = listen
                .strip_prefix("unix:")
                .filter(|p| !p.is_empty())
                .ok_or(ArgsError::BadListen(listen.clone()))?;
            Ok(Mode::Serve {
                listen: ListenAddr::Unix(PathBuf::from(path)),
            })
        }
        "ns-init" => {
            let opts = options(
                rest,
                &[
                    "--lower",
                    "--upper",
                    "--work",
                    "--merged",
                    "--agent-dir",
                    "--hostname",
                    "--uid-base",
                    "--disk-fd",
                    "--disk-at",
                    "--bind",
                    "--nameserver",
                    "--trust-ca",
                ],
            )?;
            let binds = opts
                .iter()
                .filter(|(n, _)| n == "--bind")
                .map(|(_, v)| v.parse())
                .collect::<Result<Vec<Bind>, _>>()?;
            let disk = match (take_opt(&opts, "--disk-fd"), take_opt(&opts, "--disk-at")) {
                (Some(fd), Some(at)) => Some((number("--disk-fd", fd)?, PathBuf::from(at))),
                (None, None) => None,
                _ => return Err(ArgsError::DiskPair),
            };
            Ok(Mode::NsInit(Box::new(NsInitArgs {
                lower: take(&opts, "--lower")?.into(),
                upper: take(&opts, "--upper")?.into(),
                work: take(&opts, "--work")?.into(),
                merged: take(&opts, "--merged")?.into(),
                agent_dir: take(&opts, "--agent-dir")?.into(),
                hostname: take(&opts, "--hostname")?,
                uid_base: number("--uid-base", take(&opts, "--uid-base")?)?,
                disk,
                binds,
                nameserver: take_opt(&opts, "--nameserver")
                    .map(|v| v.parse().map_err(|_| ArgsError::NotAnAddress(v)))
                    .transpose()?,
                trust_ca: take_opt(&opts, "--trust-ca").map(PathBuf::from),
            })))
        }
        // Kernels pass unknown cmdline words to init as arguments, so init
        // mode ignores whatever follows.
        "init" => Ok(Mode::VmInit),
        "-h" | "--help" | "help" => Ok(Mode::Help),
        "-V" | "--version" | "version" => Ok(Mode::Version),
        _ if std::process::id() == 1 => Ok(Mode::VmInit),
        other => Err(ArgsError::UnknownCommand(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    /// Every required ns-init option, `--hostname h` last.
    fn ns_init_argv(uid_base: &str) -> Vec<String> {
        v(&[
            "ns-init",
            "--lower",
            "/l",
            "--upper",
            "/u",
            "--work",
            "/w",
            "--merged",
            "/m",
            "--agent-dir",
            "/d",
            "--uid-base",
            uid_base,
            "--hostname",
            "h",
        ])
    }

    #[test]
    fn serve_listen() {
        let m = parse(&v(&["serve", "--listen", "unix:/tmp/a.sock"])).unwrap();
        assert_eq!(
            m,
            Mode::Serve {
                listen: ListenAddr::Unix("/tmp/a.sock".into())
            }
        );
        let m = parse(&v(&["serve", "--listen=unix:/x"])).unwrap();
        assert_eq!(
            m,
            Mode::Serve {
                listen: ListenAddr::Unix("/x".into())
            }
        );
        assert!(parse(&v(&["serve", "--listen", "tcp:1"])).is_err());
        assert!(parse(&v(&["serve"])).is_err());
        assert!(parse(&v(&["serve", "--bogus", "1"])).is_err());
    }

    #[test]
    fn binds() {
        let b: Bind = "/srv/a b:/data:ro".parse().unwrap();
        assert_eq!(
            b,
            Bind {
                host: "/srv/a b".into(),
                guest: "/data".into(),
                read_only: true
            }
        );
        assert!(!"/h:/g:rw".parse::<Bind>().unwrap().read_only);
        for bad in [
            "/h:/g",
            "/h:/g:rx",
            "h:/g:ro",
            "/h:g:ro",
            "/h:/:ro",
            "/h:/g:ro:x",
            "",
        ] {
            assert!(
                matches!(bad.parse::<Bind>(), Err(ArgsError::BadBind(_))),
                "{bad}"
            );
        }
        let mut argv = ns_init_argv("0");
        argv.extend(v(&["--bind", "/a:/x:ro", "--bind=/b:/y:rw"]));
        let Mode::NsInit(a) = parse(&argv).unwrap() else {
            panic!()
        };
        assert_eq!(a.binds.len(), 2);
        assert_eq!(
            (a.binds[1].host.as_path(), a.binds[1].read_only),
            (std::path::Path::new("/b"), false)
        );
    }

    #[test]
    fn ns_init_needs_everything() {
        let full = ns_init_argv("1073741824");
        let Mode::NsInit(a) = parse(&full).unwrap() else {
            panic!()
        };
        assert_eq!(a.hostname, "h");
        assert_eq!(a.agent_dir, PathBuf::from("/d"));
        assert_eq!((a.uid_base, a.disk), (1 << 30, None));
        assert!(a.binds.is_empty());
        let mut with_disk = full.clone();
        with_disk.extend(v(&["--disk-fd", "3", "--disk-at", "/x"]));
        let Mode::NsInit(a) = parse(&with_disk).unwrap() else {
            panic!()
        };
        assert_eq!(a.disk, Some((3, PathBuf::from("/x"))));
        assert_eq!(a.nameserver, None);
        let mut with_dns = full.clone();
        with_dns.extend(v(&["--nameserver", "10.88.0.1"]));
        let Mode::NsInit(a) = parse(&with_dns).unwrap() else {
            panic!()
        };
        assert_eq!(a.nameserver, Some("10.88.0.1".parse().unwrap()));
        with_dns.push("--nameserver=ten".into());
        assert!(matches!(parse(&with_dns), Err(ArgsError::NotAnAddress(_))));
        assert!(matches!(
            parse(&with_disk[..with_disk.len() - 2]),
            Err(ArgsError::DiskPair)
        ));
        let mut bad = full.clone();
        bad[12] = "lots".into();
        assert!(matches!(parse(&bad), Err(ArgsError::NotANumber { .. })));
        assert!(matches!(
            parse(&full[..full.len() - 2]),
            Err(ArgsError::Required("--hostname"))
        ));
        assert!(matches!(
            parse(&full[..full.len() - 1]),
            Err(ArgsError::MissingValue(_))
        ));
    }
}
