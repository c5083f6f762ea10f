//! Command implementations. Each returns the process exit status.

pub mod channel;
pub mod chat;
pub mod console;
pub mod cp;
pub mod deploy;
pub mod doctor;
pub mod exec;
pub mod fs;
pub mod image;
pub mod key;
pub mod mcp;
pub mod memory;
pub mod ports;
pub mod sandbox;
pub mod ssh;
pub mod task;
pub mod user;
pub mod watch;

use anyhow::Result;

use crate::args::{Cli, Command};
use crate::client::{ApiError, Client};
use crate::config;

/// Print an error the way every command does: `error: ...` (+ `hint: ...`).
pub fn report_error(e: &anyhow::Error) {
    eprintln!("error: {e:#}");
    if let Some(api) = e.downcast_ref::<ApiError>() {
        if let Some(h) = &api.hint {
            eprintln!("hint: {h}");
        }
    }
}

pub fn make_client(global: &crate::args::GlobalArgs) -> Result<Client> {
    let env = |k: &str| std::env::var(k).ok();
    let read = |p: &std::path::Path| std::fs::read_to_string(p);
    let token = config::resolve_token(global.token.as_deref(), &env, &read)?;
    Ok(Client::new(config::normalize_host(&global.host), token)?.with_owner(global.owner.clone()))
}

pub async fn run(cli: Cli) -> Result<i32> {
    if let Command::Version = cli.command {
        return doctor::version(&cli.global).await;
    }
    let c = make_client(&cli.global)?;
    match cli.command {
        Command::Sandbox(cmd) => sandbox::run(&c, cmd).await,
        Command::Exec(a) => exec::run(&c, a).await,
        Command::Console(a) => console::run(&c, a).await,
        Command::Cp(a) => cp::run(&c, a).await,
        Command::Fs(cmd) => fs::run(&c, cmd).await,
        Command::Image(cmd) => image::run(&c, cmd).await,
        Command::Ask(a) => chat::ask(&c, a).await,
        Command::Chat(a) => chat::repl(&c, a).await,
        Command::User(cmd) => user::run(&c, cmd).await,
        Command::Key(cmd) => key::run(&c, cmd).await,
        Command::Ssh(a) => ssh::run(&c, a).await,
        Command::Deploy(cmd) => deploy::run(&c, cmd).await,
        Command::Task(cmd) => task::run(&c, cmd).await,
        Command::Mcp => mcp::run(&c).await,
        Command::Memory(cmd) => memory::run(&c, cmd).await,
        Command::Watch(a) => watch::run(&c, a).await,
        Command::Channel(cmd) => channel::run(&c, cmd).await,
        Command::Pair(cmd) => channel::pair(&c, cmd).await,
        Command::Doctor(j) => doctor::run(&c, j.json).await,
        Command::Version => unreachable!(),
    }
}
