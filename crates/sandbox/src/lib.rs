//! Sandboxes: the [`Backend`] trait and its backends, images, and the host
//! side of the guest agent protocol.

pub mod agent;
pub mod backend;
pub mod cgroup;
pub mod image;
pub mod name;
pub mod namespace;
pub mod process;

pub use agent::{AgentClient, AgentError};
pub use backend::{Backend, BackendError, BackendKind, Resources, Running, SandboxSpec};
