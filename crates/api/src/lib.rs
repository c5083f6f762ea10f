//! The `/v1` request and response types of ironclawd, shared by the daemon
//! (which serves them and generates `/v1/openapi.json` from their
//! [`utoipa::ToSchema`] derives) and the `ironclaw` CLI (which reads them).
//! One module per resource; everything is re-exported at the crate root.
//!
//! Response types are lenient to read (`#[serde(default)]` on what a
//! newer or older daemon may leave out); request types refuse unknown
//! fields, as the daemon always has.

pub mod channels;
pub mod deploy;
pub mod errors;
pub mod exec;
pub mod files;
pub mod host;
pub mod images;
pub mod keys;
pub mod memory;
pub mod openai;
pub mod ports;
pub mod sandboxes;
pub mod sessions;
pub mod tasks;
pub mod users;
pub mod ws;

pub use channels::*;
pub use deploy::*;
pub use errors::*;
pub use exec::*;
pub use files::*;
pub use host::*;
pub use images::*;
pub use keys::*;
pub use memory::*;
pub use openai::*;
pub use ports::*;
pub use sandboxes::*;
pub use sessions::*;
pub use tasks::*;
pub use users::*;
pub use ws::*;

/// A DNS label: the form of sandbox, user, image, task and channel names.
pub const NAME_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

/// `?owner=USER`: the admin acts in that user's namespace.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OwnerQuery {
    /// Admin only: the user whose object this is (default: the caller's
    /// own; at most once). Another user's is a 404 for non-admins.
    pub owner: Option<String>,
}

/// A DNS label (the schema of names in requests).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
pub struct Name(pub String);
