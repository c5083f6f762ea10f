//! HTTP routes under /v1, one module per resource.

pub mod channels;
pub mod chat;
pub mod console;
pub mod convert;
pub mod deploy;
pub mod exec;
pub mod files;
pub mod host;
pub mod images;
pub mod keys;
pub mod memory;
pub mod openai;
pub mod openapi;
pub mod ports;
pub mod sandboxes;
pub mod tasks;
pub mod ui;
pub mod users;
pub mod watch;
