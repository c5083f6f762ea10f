//! File operations on a sandbox: stat, list, mkdir, remove, rename (upload
//! and download stream raw bytes and answer a [`FileStat`]).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Dir => "dir",
            FileKind::Symlink => "symlink",
            FileKind::Other => "other",
        }
    }
}

/// A path's metadata (`fs/stat`, and what an upload answers).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FileStat {
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    pub mode: u32,
    /// Unix seconds.
    pub mtime: i64,
}

/// One entry of a directory.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DirEntry {
    pub name: String,
    pub kind: FileKind,
    pub size: u64,
    pub mode: u32,
    pub mtime: i64,
}

/// `GET .../fs/list`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DirList {
    pub entries: Vec<DirEntry>,
}

/// `?path=` of stat, list and download.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PathQuery {
    /// Absolute path inside the sandbox.
    #[param(min_length = 1)]
    pub path: String,
}

/// `?path=&mode=` of an upload.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Absolute path inside the sandbox.
    #[param(min_length = 1)]
    pub path: String,
    /// Octal permission bits, e.g. 644.
    #[param(pattern = "^[0-7]{1,4}$")]
    pub mode: Option<String>,
}

/// `POST .../fs/mkdir`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Mkdir {
    #[schema(min_length = 1)]
    pub path: String,
    #[serde(default)]
    pub parents: bool,
}

/// `POST .../fs/remove`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Remove {
    #[schema(min_length = 1)]
    pub path: String,
    #[serde(default)]
    pub recursive: bool,
}

/// `POST .../fs/rename`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    #[schema(min_length = 1)]
    pub from: String,
    #[schema(min_length = 1)]
    pub to: String,
}

/// The query of `GET .../watch` (Server-Sent Events).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    /// The directory to watch.
    #[param(min_length = 1)]
    pub path: String,
    /// Its subdirectories too.
    #[serde(default)]
    pub recursive: bool,
    /// End the stream after this long (default: when the client leaves).
    pub timeout_secs: Option<u64>,
}

/// One Server-Sent Event of `GET .../watch` (its `data`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WatchEvent {
    /// ready (first), create, write, remove, rename, chmod or overflow.
    #[serde(rename = "type")]
    pub kind: String,
    pub path: String,
}
