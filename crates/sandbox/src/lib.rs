//! Sandboxes: the [`Backend`] trait and its backends, images, and the host
//! side of the guest agent protocol.

pub mod agent;
pub mod agent_files;
pub mod backend;
pub mod cgroup;
pub mod devfilter;
pub mod firecracker;
pub mod guest_files;
pub mod guest_process;
pub mod guest_pty;
pub mod guest_session;
pub mod guest_watch;
pub mod host;
pub mod image;
pub mod loopdisk;
pub mod name;
pub mod namespace;
pub mod netdev;
pub mod probe;
pub mod process;
pub mod qemu;
pub mod types;
pub mod userns;
pub mod util;
pub mod vmdisk;

pub use agent::{AgentClient, AgentError};
pub use agent_files::FileContents;
pub use backend::{Backend, BackendError, BackendKind, BindMount, Resources, Running, SandboxSpec};
pub use guest_session::{Session, SessionEvent};
pub use namespace::NamespaceBackend;
