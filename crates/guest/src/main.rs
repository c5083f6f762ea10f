//! `ironclaw-guest`: the agent inside every IronClaw sandbox.
//!
//! The same static binary runs as a plain agent on a Unix socket (`serve`,
//! for host-side tests), as the init of a namespace sandbox (`ns-init`) and
//! as PID 1 of a VM (`init`, or implicitly when started as PID 1).

mod agent;
mod args;
mod confine;
mod connection;
mod errors;
mod exec;
mod fdio;
mod files;
mod forward;
mod info;
mod initramfs;
mod launch;
mod mounts;
mod netif;
mod nsinit;
mod pty;
mod reaper;
mod session;
mod shim;
mod shutdown;
mod spawn;
mod supervisor;
mod switch_root;
mod transport;
mod trust;
mod users;
mod vminit;
mod watch;

use std::process::ExitCode;

use agent::Role;
use args::Mode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mode = match args::parse(&argv) {
        Ok(mode) => mode,
        Err(e) => {
            eprintln!("ironclaw-guest: {e}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    match mode {
        Mode::Help => {
            println!("{}", args::USAGE);
            ExitCode::SUCCESS
        }
        Mode::Version => {
            println!("ironclaw-guest {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Mode::Serve { listen } => {
            let result = agent::start(Role::Serve, move || transport::Listener::bind(&listen));
            report(result)
        }
        // Only returns in the pid-1 child (the shim exits on its own).
        Mode::NsInit(ns) => report(nsinit::run(&ns)),
        Mode::VmInit => report(vminit::run()),
    }
}

fn report<E: std::fmt::Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ironclaw-guest: {e}");
            ExitCode::FAILURE
        }
    }
}
