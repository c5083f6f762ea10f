//! HTTP routes under /v1, one module per resource.

pub mod console;
pub mod exec;
pub mod files;
pub mod host;
pub mod images;
pub mod openapi;
pub mod sandboxes;
pub mod users;
