//! Images: list, build (progress as NDJSON), remove.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/images`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildImage {
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// busybox, debian or code-interpreter.
    #[schema(value_type = ImageSource)]
    pub from: String,
}

/// What an image is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageSource {
    /// The host's static busybox: tiny, builds in milliseconds.
    Busybox,
    /// A Debian minbase with python3, git, curl...
    Debian,
    /// Debian plus a Jupyter kernel and the server of E2B's Code
    /// Interpreter SDK (port 49999), started in each sandbox.
    #[serde(rename = "code-interpreter")]
    CodeInterpreter,
}

/// What the VM backends boot from an image.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VmMeta {
    pub kernel_version: String,
    pub vmlinuz: String,
    pub vmlinux: String,
    pub initramfs: String,
    pub rootfs_ext4: String,
    pub ext4_bytes: u64,
    #[serde(default)]
    pub modules: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Image {
    pub name: String,
    /// busybox, debian or code-interpreter.
    pub source: String,
    pub created_at: String,
    /// Apparent size of the rootfs.
    pub size_bytes: u64,
    pub guest_version: String,
    pub build_seconds: f64,
    /// Kernel, initramfs and disk for the VM backends (absent in images
    /// built without them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmMeta>,
    /// Why `vm` is absent, when its build step failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_error: Option<String>,
    /// Sandboxes using it (a user's count covers only their own).
    #[serde(default)]
    pub in_use: u64,
}

/// `GET /v1/images`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImageList {
    pub images: Vec<Image>,
}

/// One line of the NDJSON stream of `POST /v1/images`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum BuildEvent {
    Progress {
        step: String,
        message: String,
        done: u64,
        /// 0: the step has no known length.
        total: u64,
    },
    Done {
        image: Box<Image>,
    },
    Error {
        message: String,
    },
}
