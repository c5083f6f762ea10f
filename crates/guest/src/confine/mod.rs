//! What makes a namespace sandbox a security boundary: its own user
//! namespace (root inside is an unprivileged block of host ids), the image
//! shared read-only through an idmapped mount, runc's masked and read-only
//! /proc and /sys paths, Docker's default capabilities and seccomp profile,
//! and `no_new_privs`.
//!
//! Order matters and lives in [`crate::nsinit`]: everything that needs host
//! root (mounts, hostname, network) happens first; then [`userns::enter`]
//! gives that up for good, [`caps::restrict`] and [`seccomp::install`]
//! narrow what is left, and only then does the agent start.

pub mod caps;
pub mod idmap;
pub mod procfs;
pub mod seccomp;
pub mod userns;

#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("user namespace: {what}: {source}")]
    UserNs {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("idmapped mount of {path}: {what}: {source}")]
    Idmap {
        path: String,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("capabilities: {0}")]
    Caps(String),
    #[error("no_new_privs: {0}")]
    NoNewPrivs(#[source] std::io::Error),
    #[error("seccomp filter: {0}")]
    Seccomp(String),
}
